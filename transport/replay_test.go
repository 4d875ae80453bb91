package transport_test

import (
	"crypto"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/transport"
)

// clock is a frozen clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// TestResendPeriod: the same identity resending a signed request (same
// nonce and time, bound to its new connection) gets the first answer
// while the server keeps it, [transport.Server.ResendPeriod] after the
// answer or after the last resend that read it; after that the resend is
// still refused with CodeReplay, without the answer, and never runs. Real
// QUIC, the server's clock frozen and moved by the test, the sweeper run
// by the test.
func TestResendPeriod(t *testing.T) {
	t0 := time.Now().Truncate(time.Millisecond)
	clk := &clock{t: t0}
	e := newEnvWith(t, func(s *transport.Server) { s.Now = clk.now })
	key := e.alice.PrivateKey.(crypto.Signer)
	login := &transport.LoginRequest{Slot: 1}
	var nonce []byte
	// send sends the login with the nonce of the first, its time t0,
	// bound to a new connection of alice: what the client does when it
	// resends after losing its connection.
	send := func() *transport.Response {
		t.Helper()
		r := e.raw(t, e.alice)
		req := signed(t, key, transport.OpLogin, login, func(p *transport.SignedPayload) {
			if nonce == nil {
				nonce = p.Nonce
			}
			p.Nonce, p.Time, p.Binding = nonce, t0.UnixMilli(), r.binding(t)
		})
		resp := r.send(t, req)
		r.qc.CloseWithError(0, "")
		return resp
	}
	if got := send().Status; got != transport.CodeWrongPIN {
		t.Fatalf("first request: %v, want wrong PIN (the handler ran)", got)
	}
	resend := func(at time.Duration, wantOriginal bool) {
		t.Helper()
		clk.set(t0.Add(at))
		e.server.Sweep()
		resp := send()
		if resp.Status != transport.CodeReplay {
			t.Fatalf("resend at +%v: %v, want replay", at, resp.Status)
		}
		switch {
		case wantOriginal && (resp.Original == nil || resp.Original.Status != transport.CodeWrongPIN):
			t.Fatalf("resend at +%v: original %+v, want the first answer (wrong PIN)", at, resp.Original)
		case !wantOriginal && resp.Original != nil:
			t.Fatalf("resend at +%v: original %+v, want none past the resend period", at, resp.Original)
		}
	}
	period := transport.DefaultResendPeriod
	resend(0, true)
	resend(period-time.Millisecond, true) // within the period of the first answer
	// This resend read the answer: the period starts again from it.
	resend(period-time.Millisecond+period-time.Millisecond, true)
	resend(3*period, false) // 2 periods after the last resend that read it
	resend(3*period, false)
	if got := e.handler.logins.Load(); got != 1 {
		t.Errorf("the handler ran %d times, want once", got)
	}
	if got := e.server.Stats().Replays.Load(); got != 5 {
		t.Errorf("replays counted: %d, want 5", got)
	}
	if n := e.limit(t, "nonces_per_identity").InUse; n != 1 {
		t.Errorf("%v nonces remembered, want 1", n)
	}
	// Past twice the replay window the nonce is forgotten, and a request
	// with it is stale.
	clk.set(t0.Add(2*2*time.Minute + time.Millisecond))
	e.server.Sweep()
	if n := e.limit(t, "nonces_per_identity").InUse; n != 0 {
		t.Errorf("%v nonces remembered after their expiry, want 0", n)
	}
	if got := send().Status; got != transport.CodeStale {
		t.Errorf("after the expiry: %v, want stale", got)
	}
	if got := e.handler.logins.Load(); got != 1 {
		t.Errorf("the handler ran %d times, want once", got)
	}
}
