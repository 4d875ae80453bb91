package rsc

import (
	"context"
	"fmt"
	"testing"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// TestPrincipalsRemembered: the pool remembers at most QueueSize
// principals with no request waiting, however many come and go, and its
// count of them stays true.
func TestPrincipalsRemembered(t *testing.T) {
	sim, err := pivsim.New(pivsim.Config{Seed: []byte("remembered")})
	if err != nil {
		t.Fatal(err)
	}
	w := cards.NewWorker(cards.Direct(sim), nil)
	defer w.Close()
	m, err := NewMember(context.Background(), "card", w, piv.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool("remembered", Options{QueueSize: 8})
	defer p.Close()
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	most := 0
	for i := range 100 {
		err := p.Do(context.Background(), fmt.Sprint("delegate", i), func(context.Context, profiles.Card, *Member) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		n, idle := len(p.principals), 0
		for _, pr := range p.principals {
			if pr.waiting() == 0 {
				idle++
			}
		}
		if idle != p.idle {
			t.Errorf("after %d requests: %d principals idle, counted %d", i+1, idle, p.idle)
		}
		p.mu.Unlock()
		most = max(most, n)
	}
	if most > 8 {
		t.Errorf("%d principals remembered at once, want at most QueueSize (8)", most)
	}
	if most < 2 {
		t.Errorf("at most %d principal remembered: the test did not fill the memory", most)
	}
}
