package transport_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/transport"
)

// TestRequestTimeout: a request the handler does not finish within the
// server's RequestTimeout is answered with CodeTimeout (19).
func TestRequestTimeout(t *testing.T) {
	e := &env{ca: testpki.NewCA("pscs test CA"), handler: newHandler(), enroll: transport.NewStaticEnrollment()}
	e.alice = e.ca.Issue("alice", testpki.Options{})
	e.enroll.Add("alice", e.alice.Leaf)
	e.server = &transport.Server{
		Handler: transport.HandlerFunc(func(ctx context.Context, call *transport.Call) (any, error) {
			if call.Op == transport.OpPing {
				<-ctx.Done() // a card that never answers
				return nil, ctx.Err()
			}
			return e.handler.Handle(ctx, call)
		}),
		Enrollment:     e.enroll,
		TLSConfig:      &tls.Config{Certificates: []tls.Certificate{e.ca.Issue("pscsd", testpki.Options{Server: true})}},
		RequestTimeout: 300 * time.Millisecond,
	}
	e.start(t, "127.0.0.1:0")
	c := e.dial(t, e.config(e.alice))
	err := c.Ping(ctxT(t))
	if !errors.Is(err, &transport.Error{Code: transport.CodeTimeout}) {
		t.Fatalf("got %v, want code %d", err, transport.CodeTimeout)
	}
}
