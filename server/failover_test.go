package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/pscs/pscs/cards"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/transport"
)

// pulledMidSignature is a simulated card that is pulled while it signs:
// its GENERAL AUTHENTICATE fails as a removed card's exchange does, once,
// after pulled has run.
type pulledMidSignature struct {
	*pivsim.Card
	pulled func()
	done   atomic.Bool
}

func (c *pulledMidSignature) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if len(cmd) > 1 && cmd[1] == 0x87 && c.done.CompareAndSwap(false, true) {
		c.pulled()
		return nil, fmt.Errorf("sim: %w", cards.ErrCardRemoved)
	}
	return c.Card.Transmit(ctx, cmd)
}

// TestCardPulledMidSignatureMovesRequest: through pscsd, whose request
// function turns a card's errors into wire codes, a card pulled in the
// middle of a signature still hands the request to another card of the
// parallel remote card (its cards hold the same keys: in a remote card
// of different keys, a raw signature goes to the card holding its key
// only), and the delegate gets that card's signature.
func TestCardPulledMidSignatureMovesRequest(t *testing.T) {
	r := newSameKeysRig(t, 1)
	other := r.pool.Members()[0]
	sim, err := pivsim.New(pivsim.Config{Seed: []byte("server"), Slots: cardSlots})
	if err != nil {
		t.Fatal(err)
	}
	// The card is the remote card's only one until it is pulled; then the
	// other card is there to take the request.
	flaky := &pulledMidSignature{Card: sim, pulled: func() {
		if err := r.pool.Add(other); err != nil {
			t.Error(err)
		}
	}}
	m := testrig.Member(t, "flaky", flaky, nil)
	r.pool.Remove(other.ID)
	if err := r.pool.Add(m); err != nil {
		t.Fatal(err)
	}
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	doc := []byte("signed while a card was pulled")
	digest := sha256.Sum256(doc)
	resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: doc})
	if err != nil {
		t.Fatalf("request lost: %v", err)
	}
	if !flaky.done.Load() {
		t.Fatal("the card was not pulled")
	}
	if want := other.Certificate("9a").Raw; !bytes.Equal(resp.Certificate, want) {
		t.Error("the signature does not come with the remote card's certificate")
	}
	if rec := r.audit.last(); rec.Card != other.ID {
		t.Errorf("signed by %q, want the other card %q", rec.Card, other.ID)
	}
	verifyRaw(t, resp.Certificate, digest[:], resp.Signature)
	for _, id := range r.pool.Members() {
		if id.ID == "flaky" {
			t.Error("the pulled card is still in the remote card")
		}
	}
	if got := r.audit.codes(); len(got) != 2 || got[1] != 0 {
		t.Errorf("audit codes %v, want a login and a signature", got)
	}
}
