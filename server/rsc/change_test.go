//go:build cgo

package rsc_test

import (
	"crypto"
	"crypto/sha256"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/swapcard"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

// readerChange is the reader of TestKeysReadAgainAfterReset (the other
// tests use readers 0 to 9).
const readerChange = 10

// TestKeysReadAgainAfterReset: another program changes the key in a slot
// of a card in a pool's reader, through pcscd, and resets the card (as
// PIV tools do when they disconnect). The member reads the card's keys
// again before it serves the next request, which signs with the new key;
// the pool tells of the change. Both ways pscsd meets the reset are
// covered: a request of another principal than the last (whose own reset
// of the card would hide the other program's), and one of the same
// principal (SCARD_W_RESET_CARD when the transaction begins).
func TestKeysReadAgainAfterReset(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	r := newRig(t, 0, pivsim.Latency{})
	// The rig's slices are by reader: readers below readerChange stay out.
	r.sims, r.pulls = make([]vpcd.Card, readerChange), make([]func(), readerChange)
	// The same seed and serial; in slot 9A a P-256 key, then a P-384 one,
	// then P-256 again (the first key back).
	version := func(alg pivsim.Algorithm) *pivsim.Card {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte("changing"), Serial: 7800,
			Slots: map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: alg}}})
		if err != nil {
			t.Fatal(err)
		}
		return sim
	}
	card := swapcard.New(version(pivsim.ECCP256))
	r.sims, r.pulls = append(r.sims, card), append(r.pulls, nil)
	r.plug(readerChange)

	var changes atomic.Int64
	p := rsc.NewPool("changing", rsc.Options{SameKeys: true, OnChange: func(int) { changes.Add(1) }})
	defer p.Close()
	m := r.member(readerChange)
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	joined := changes.Load()
	digest := sha256.Sum256([]byte("changing card"))
	if sig, by, err := sign(t.Context(), p, "alice", digest[:]); err != nil {
		t.Fatal(err)
	} else {
		verifyBy(t, by, digest[:], sig)
	}

	// otherProgram changes the card's key in 9A to one of alg (none: it
	// changes nothing) and resets the card through a PC/SC connection of
	// its own.
	otherProgram := func(alg pivsim.Algorithm) {
		t.Helper()
		if alg != 0 {
			card.Swap(version(alg))
		}
		c, err := r.pc.Connect(t.Context(), daemon.Readers[readerChange])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Reset(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	for i, step := range []struct {
		alg     pivsim.Algorithm
		who     string // the request after the change
		wantAlg string
	}{
		{pivsim.ECCP384, "bob", "ECCP384"}, // another principal: the worker's own reset would hide it
		{pivsim.ECCP256, "bob", "ECCP256"}, // the same principal: the transaction meets the reset
		{0, "alice", "ECCP256"},            // reset, nothing changed: no news
	} {
		otherProgram(step.alg)
		sig, by, err := sign(t.Context(), p, step.who, digest[:])
		if err != nil {
			t.Fatalf("step %d: the first signature after the change: %v", i, err)
		}
		if got := by.Keys()[0].Algorithm; got != step.wantAlg {
			t.Errorf("step %d: the member's key in 9A is %s after the change, want %s", i, got, step.wantAlg)
		}
		if !by.Certificate("9a").PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(card.Sim().PublicKey(pivsim.SlotAuthentication)) {
			t.Errorf("step %d: the member's certificate is not the card's new one", i)
		}
		verifyBy(t, by, digest[:], sig)
		if want := joined + int64(min(i+1, 2)); changes.Load() != want {
			t.Errorf("step %d: the pool told of %d changes since the card joined, want %d", i, changes.Load()-joined, want-joined)
		}
	}
	if k, ok := p.Key(0); !ok || k.ID != "9a" || k.Algorithm != "ECCP256" {
		t.Errorf("the pool's key 0 is %+v, %v; want 9a ECCP256", k, ok)
	}
}

// TestIdleCardCheckedAfterReset: with CheckEvery, a card that another
// program changed and reset while no request came is read again by the
// pool itself: the pool tells of the change before any request.
func TestIdleCardCheckedAfterReset(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	const reader = readerChange + 1
	r := newRig(t, 0, pivsim.Latency{})
	r.sims, r.pulls = make([]vpcd.Card, reader), make([]func(), reader)
	newCard := func(alg pivsim.Algorithm) *pivsim.Card {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte("idle"), Serial: 7801,
			Slots: map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: alg}}})
		if err != nil {
			t.Fatal(err)
		}
		return sim
	}
	card := swapcard.New(newCard(pivsim.ECCP256))
	r.sims, r.pulls = append(r.sims, card), append(r.pulls, nil)
	r.plug(reader)

	changed := make(chan int, 4)
	p := rsc.NewPool("idle", rsc.Options{CheckEvery: 10 * time.Millisecond, OnChange: func(n int) { changed <- n }})
	defer p.Close()
	m := r.member(reader)
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	<-changed // joined

	after := newCard(pivsim.ECCP384)
	card.Swap(after)
	c, err := r.pc.Connect(t.Context(), daemon.Readers[reader])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("the pool did not read the idle card's keys again within 30 s of its reset")
	}
	if k := m.Keys(); len(k) != 1 || k[0].Algorithm != "ECCP384" || !k[0].Certificate.Equal(after.Certificate(pivsim.SlotAuthentication)) {
		t.Errorf("the member's keys after the check: %+v, want the new P-384 key and certificate", k)
	}
}
