package rsc_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/pscs/pscs/internal/swapcard"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

// TestChangedCardLeavesParallelPool: in a parallel remote card (SameKeys),
// a card whose keys another program changed no longer matches the others:
// reading its keys again fails with ErrMixedKeys, the card leaves the pool,
// and the request goes to a card that still holds the pool's keys.
func TestChangedCardLeavesParallelPool(t *testing.T) {
	var changes atomic.Int64
	left := make(chan struct{})
	var leaving atomic.Bool
	p := rsc.NewPool("mayor", rsc.Options{SameKeys: true, OnChange: func(n int) {
		changes.Add(1)
		if n == 1 && leaving.CompareAndSwap(true, false) {
			close(left)
		}
	}})
	defer p.Close()
	if err := p.Add(member(t, "b", newSim(t, "same", pivsim.Latency{}))); err != nil {
		t.Fatal(err)
	}
	release := holdCard(t, p) // b is busy: the next request goes to a
	changing := swapcard.New(newSim(t, "same", pivsim.Latency{}))
	if err := p.Add(member(t, "a", changing)); err != nil {
		t.Fatal(err)
	}
	changing.Swap(newSim(t, "other", pivsim.Latency{}))
	joined := changes.Load()
	leaving.Store(true)

	var tried []string
	var reread error
	done := make(chan error, 1)
	go func() {
		done <- p.Do(t.Context(), "alice", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			tried = append(tried, m.ID)
			if m.ID == "a" {
				// What pscsd does when a's signature does not verify.
				_, _, reread = m.Reread(ctx, c)
				return reread
			}
			return nil
		})
	}()
	select {
	case <-left:
	case err := <-done:
		t.Fatalf("the request ended before the changed card left: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("the request: %v, want it served by the card that kept the pool's keys", err)
	}
	if !errors.Is(reread, rsc.ErrMixedKeys) {
		t.Errorf("Reread on the changed card: %v, want ErrMixedKeys", reread)
	}
	if len(tried) != 2 || tried[0] != "a" || tried[1] != "b" {
		t.Errorf("the request ran on %v, want [a b]", tried)
	}
	if ms := p.Members(); len(ms) != 1 || ms[0].ID != "b" {
		t.Errorf("members after the change: %d, want b alone", len(ms))
	}
	if changes.Load() != joined+1 {
		t.Errorf("%d changes told after the card left, want 1", changes.Load()-joined)
	}
}
