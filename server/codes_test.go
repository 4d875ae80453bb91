package server_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// answering is a simulated card that answers GENERAL AUTHENTICATE (the
// signature) with sw, or, with block set, only once block is closed.
type answering struct {
	*pivsim.Card
	sw      []byte
	block   chan struct{}
	entered chan struct{}
}

func (c *answering) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if len(cmd) > 1 && cmd[1] == 0x87 {
		if c.block != nil {
			c.entered <- struct{}{}
			<-c.block
		}
		if c.sw != nil {
			return c.sw, nil
		}
	}
	return c.Card.Transmit(ctx, cmd)
}

func answeringMember(t *testing.T, id string, c *answering) *rsc.Member {
	t.Helper()
	return testrig.Member(t, id, c, nil)
}

// serve serves srv on loopback for the rig's identities and returns a
// client of alice's.
func (r *rig) serve(t *testing.T, srv *server.Server) *client.Client {
	t.Helper()
	return testrig.Dial(t, client.Config{Addr: testrig.Serve(t, srv, r.enroll, r.ca, nil), Certificate: r.alice, RootCAs: r.ca.Pool})
}

type failingAudit struct{}

func (failingAudit) Record(context.Context, *server.AuditRecord) error {
	return errors.New("disk full")
}

// TestServerRefusalCodes: the codes of the server's refusals that other
// tests do not reach, each from the situation that gives it.
func TestServerRefusalCodes(t *testing.T) {
	sign := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: make([]byte, 32)}
	t.Run("no such key 109", func(t *testing.T) {
		r := newRig(t, 1)
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 99, Mechanism: 0x1041, Data: make([]byte, 32)}); !isCode(err, transport.CodeNoSuchKey) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("card error 200", func(t *testing.T) {
		r := newRig(t, 0)
		sim, _ := pivsim.New(pivsim.Config{Seed: []byte("codes")})
		r.pool.Add(answeringMember(t, "wrong data", &answering{Card: sim, sw: []byte{0x6A, 0x80}}))
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx(t), sign); !isCode(err, transport.CodeCardError) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("card unavailable 201", func(t *testing.T) {
		r := newRig(t, 1)
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		for _, m := range r.pool.Members() {
			r.pool.Remove(m.ID)
		}
		if _, err := c.Sign(ctx(t), sign); !isCode(err, transport.CodeCardUnavailable) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("internal 20: the audit record cannot be written", func(t *testing.T) {
		r := newRig(t, 1, failingAudit{})
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); !isCode(err, transport.CodeInternal) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("busy 18: the remote card's queue is full", func(t *testing.T) {
		r := newRig(t, 0)
		sim, _ := pivsim.New(pivsim.Config{Seed: []byte("codes")})
		slow := &answering{Card: sim, block: make(chan struct{}), entered: make(chan struct{}, 1)}
		pool := rsc.NewPool("mayor", rsc.Options{QueueSize: 1})
		t.Cleanup(pool.Close)
		pool.Add(answeringMember(t, "slow", slow))
		srv := server.New(server.Config{Book: r.book, Vault: r.vault, Audit: r.audit,
			Cards: []server.Card{{Name: "mayor", Slot: 7, Pool: pool}}})
		c := r.serve(t, srv)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer close(slow.block)
		// One signature on the card, one waiting: the queue is full.
		wg.Add(1)
		go func() { defer wg.Done(); c.Sign(context.Background(), sign) }()
		<-slow.entered
		wg.Add(1)
		go func() { defer wg.Done(); c.Sign(context.Background(), sign) }()
		for deadline := time.Now().Add(20 * time.Second); pool.Waiting() < 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the second request never queued")
			}
		}
		if _, err := c.Sign(ctx(t), sign); !isCode(err, transport.CodeBusy) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no CA 115", func(t *testing.T) {
		r := newRig(t, 1)
		srv := server.New(server.Config{Book: r.book, Vault: r.vault, Audit: r.audit,
			Cards: []server.Card{{Name: "mayor", Slot: 7, Owner: "alice", Pool: r.pool}},
			Admin: &server.Admin{Enrollment: r.enroll}})
		c := r.serve(t, srv)
		err := c.Do(ctx(t), transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminIssue, Name: "dave"}, nil, nil)
		if !isCode(err, transport.CodeNoCA) {
			t.Fatalf("got %v", err)
		}
	})
}
