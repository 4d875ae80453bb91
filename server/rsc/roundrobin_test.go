package rsc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"testing"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/internal/memcard"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/rsc"
)

// memPool is a pool of n in-memory cards "c0", "c1", …, each with a key
// "sig" of its own (and "aut" on every other card).
func memPool(t *testing.T, n int, opts rsc.Options) *rsc.Pool {
	t.Helper()
	p := rsc.NewPool("pool", opts)
	t.Cleanup(p.Close)
	for i := range n {
		if err := p.Add(memMember(t, fmt.Sprint("c", i), i%2 == 0)); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func memMember(t *testing.T, id string, aut bool) *rsc.Member {
	t.Helper()
	keys := []memcard.Key{{ID: "sig", Label: "Signature", Private: newKey(t)}}
	if aut {
		keys = append(keys, memcard.Key{ID: "aut", Label: "Authentication", Private: newKey(t)})
	}
	card := memcard.New(memcard.Config{Serial: id, Keys: keys})
	return testrig.ProfileMember(t, id, cards.Direct(card), card.Profile(), nil)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func served(p *rsc.Pool) map[string]int64 {
	out := map[string]int64{}
	for _, m := range p.Members() {
		out[m.ID] = m.Served()
	}
	return out
}

// TestRoundRobinSequential: requests one after the other on idle cards go
// to the cards in turn: 30 on 3 cards, exactly 10 each, in the order
// c0, c1, c2, c0, …
func TestRoundRobinSequential(t *testing.T) {
	p := memPool(t, 3, rsc.Options{})
	var order []string
	for range 30 {
		err := p.Do(context.Background(), "alice", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			order = append(order, m.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range order {
		if want := fmt.Sprint("c", i%3); id != want {
			t.Fatalf("request %d went to %s, want %s (order %v)", i, id, want, order)
		}
	}
	if got := served(p); got["c0"] != 10 || got["c1"] != 10 || got["c2"] != 10 {
		t.Errorf("served %v, want 10 each", got)
	}
}

// inflight is a request held on its card until released.
type inflight struct {
	card    string
	release chan struct{}
	done    chan error
}

// start makes a request of who that holds its card until released, and
// returns once a card runs it.
func start(p *rsc.Pool, who string, on func(*rsc.Member) bool) *inflight {
	r := &inflight{release: make(chan struct{}), done: make(chan error, 1)}
	took := make(chan string, 1)
	go func() {
		r.done <- p.DoOn(context.Background(), who, on, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			took <- m.ID
			<-r.release
			return nil
		})
	}()
	select {
	case r.card = <-took:
	case err := <-r.done:
		r.done <- err
	}
	return r
}

// finish releases r and waits for its answer.
func (r *inflight) finish(t *testing.T) {
	t.Helper()
	close(r.release)
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}

// TestRoundRobinConcurrent: with requests running at once (up to two on
// three cards, released in an order the test draws), each request goes to
// the free card that took a request longest ago (of cards that took none,
// the first by ID): the test keeps that model and checks every choice
// against it, so a busy card is skipped and takes the next request once
// free. Released oldest first, the split is exact: 10 each.
func TestRoundRobinConcurrent(t *testing.T) {
	for _, seed := range []uint64{0, 1, 2, 3} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			p := memPool(t, 3, rsc.Options{})
			rng := mrand.New(mrand.NewPCG(seed, 7))
			last := map[string]int{} // the step at which a card last took a request
			var running []*inflight
			for step := 1; step <= 30; step++ {
				for len(running) == 2 || len(running) > 0 && seed != 0 && rng.IntN(3) == 0 {
					i := 0 // seed 0: oldest first
					if seed != 0 {
						i = rng.IntN(len(running))
					}
					running[i].finish(t)
					running = slices.Delete(running, i, i+1)
				}
				want := ""
				for _, id := range []string{"c0", "c1", "c2"} {
					if slices.ContainsFunc(running, func(r *inflight) bool { return r.card == id }) {
						continue
					}
					if want == "" || last[id] < last[want] {
						want = id
					}
				}
				r := start(p, fmt.Sprint("delegate", step%4), nil)
				if r.card != want {
					t.Fatalf("step %d: request went to %s, want %s (free the longest)", step, r.card, want)
				}
				last[r.card] = step
				running = append(running, r)
			}
			for _, r := range running {
				r.finish(t)
			}
			got := served(p)
			t.Logf("served %v", got)
			if seed == 0 && (got["c0"] != 10 || got["c1"] != 10 || got["c2"] != 10) {
				t.Errorf("served %v, want 10 each", got)
			}
		})
	}
}

// TestRequestsForOneCard: in a pool of cards with different keys, a
// request for a key goes to the card that holds it; while that card is
// busy, requests for the others' keys are served, and the one for it
// waits; a request for a card that left fails with ErrNoCard, at once or
// when its card leaves while it waits.
func TestRequestsForOneCard(t *testing.T) {
	p := memPool(t, 3, rsc.Options{})
	for range 6 {
		err := p.DoOn(context.Background(), "alice", rsc.Holds(rsc.KeyRef{Card: "c1", ID: "sig"}), func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			if m.ID != "c1" {
				t.Errorf("a request for c1's key ran on %s", m.ID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// "aut" is on c0 and c2 only: they take turns.
	var by []string
	for range 4 {
		err := p.DoOn(context.Background(), "alice", rsc.Holds(rsc.KeyRef{ID: "aut"}), func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			by = append(by, m.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(by, []string{"c0", "c2", "c0", "c2"}) {
		t.Errorf("requests for aut ran on %v, want c0 and c2 in turn", by)
	}

	onC1 := rsc.Holds(rsc.KeyRef{Card: "c1", ID: "sig"})
	held := start(p, "alice", onC1)
	if held.card != "c1" {
		t.Fatalf("held on %s", held.card)
	}
	// c1 is busy: a request for it waits, without keeping a later
	// request of the same delegate for c0's key from c0.
	waiting := make(chan error, 1)
	go func() {
		waiting <- p.DoOn(context.Background(), "alice", onC1, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			if m.ID != "c1" {
				return fmt.Errorf("ran on %s", m.ID)
			}
			return nil
		})
	}()
	waitFor(t, p, 1)
	other := start(p, "alice", rsc.Holds(rsc.KeyRef{Card: "c0", ID: "sig"}))
	if other.card != "c0" {
		t.Fatalf("the request for c0 ran on %q", other.card)
	}
	other.finish(t)
	held.finish(t)
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}

	// c1 leaves while a request for it waits.
	held = start(p, "alice", onC1)
	go func() {
		waiting <- p.DoOn(context.Background(), "alice", onC1, func(context.Context, profiles.Card, *rsc.Member) error { return nil })
	}()
	waitFor(t, p, 1)
	p.Remove("c1")
	if err := <-waiting; !errors.Is(err, rsc.ErrNoCard) {
		t.Errorf("waiting for a card that left: %v, want ErrNoCard", err)
	}
	held.finish(t) // its request in progress ends well
	err := p.DoOn(context.Background(), "alice", onC1, func(context.Context, profiles.Card, *rsc.Member) error { return nil })
	if !errors.Is(err, rsc.ErrNoCard) {
		t.Errorf("a request for a card gone: %v, want ErrNoCard", err)
	}
	if p.Waiting() != 0 {
		t.Errorf("%d requests still waiting", p.Waiting())
	}
}

// TestNumbersOfDifferentKeys: a pool of cards with different keys shows
// every card's keys, each under a number of its own that stays with the
// card and key ID when the card leaves and comes back; a pool with
// SameKeys shows one card's, numbered by ID.
func TestNumbersOfDifferentKeys(t *testing.T) {
	p := memPool(t, 3, rsc.Options{})
	shown := p.Shown()
	if len(shown) != 5 { // sig on 3 cards, aut on c0 and c2
		t.Fatalf("%d keys shown, want 5: %+v", len(shown), shown)
	}
	before := map[rsc.KeyRef]int{}
	for _, k := range shown {
		ref := rsc.KeyRef{Card: k.Card, ID: k.ID}
		if _, dup := before[ref]; dup || k.Card == "" {
			t.Fatalf("key %+v shown twice or without its card", ref)
		}
		before[ref] = k.Number
		got, ok := p.KeyRef(k.Number)
		if !ok || got != ref {
			t.Errorf("number %d names %+v, want %+v", k.Number, got, ref)
		}
		key, ok := p.Key(k.Number)
		if !ok || !key.Public.(*ecdsa.PublicKey).Equal(k.Public) {
			t.Errorf("Key(%d) is not %+v's key", k.Number, ref)
		}
	}
	p.Remove("c1")
	if _, ok := p.Key(before[rsc.KeyRef{Card: "c1", ID: "sig"}]); ok {
		t.Error("the key of a card gone is still found")
	}
	if err := p.Add(memMember(t, "c3", true)); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(memMember(t, "c1", false)); err != nil {
		t.Fatal(err)
	}
	after := map[rsc.KeyRef]int{}
	for _, k := range p.Shown() {
		after[rsc.KeyRef{Card: k.Card, ID: k.ID}] = k.Number
	}
	for ref, n := range before {
		if after[ref] != n {
			t.Errorf("key %+v: number %d, was %d", ref, after[ref], n)
		}
	}
	if n := after[rsc.KeyRef{Card: "c3", ID: "sig"}]; n < 5 {
		t.Errorf("the new card's key took number %d, an old key's", n)
	}

	same := rsc.NewPool("same", rsc.Options{SameKeys: true})
	t.Cleanup(same.Close)
	if err := same.Add(memMember(t, "only", true)); err != nil {
		t.Fatal(err)
	}
	for _, k := range same.Shown() {
		if ref, _ := same.KeyRef(k.Number); k.Card != "" || ref != (rsc.KeyRef{ID: k.ID}) {
			t.Errorf("same keys: %+v numbered as %+v", k, ref)
		}
	}
}
