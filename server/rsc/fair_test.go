package rsc_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

// recorder is a pool of one card, held by a request of "holder" until
// release, whose requests record their principal in the order the card
// runs them.
type recorder struct {
	t       *testing.T
	p       *rsc.Pool
	release func()

	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
	errs  chan error
}

func newRecorder(t *testing.T, opts rsc.Options) *recorder {
	t.Helper()
	p := rsc.NewPool("fair", opts)
	t.Cleanup(p.Close)
	if err := p.Add(member(t, "card", newSim(t, "fair", pivsim.Latency{}))); err != nil {
		t.Fatal(err)
	}
	r := &recorder{t: t, p: p, errs: make(chan error, 1024)}
	r.release = holdCard(t, p)
	return r
}

// do makes a request of who that records who when it runs.
func (r *recorder) do(ctx context.Context, who string) error {
	return r.p.Do(ctx, who, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		r.mu.Lock()
		r.order = append(r.order, who)
		r.mu.Unlock()
		return nil
	})
}

// queue makes n requests of who in the background and returns once they
// all wait (the card is held).
func (r *recorder) queue(who string, n int) {
	r.t.Helper()
	want := r.p.Waiting() + n
	for range n {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.errs <- r.do(context.Background(), who)
		}()
	}
	waitFor(r.t, r.p, want)
}

// finish releases the card and returns the order in which it served the
// requests queued, each of which must succeed.
func (r *recorder) finish() []string {
	r.t.Helper()
	r.release()
	r.wg.Wait()
	close(r.errs)
	for err := range r.errs {
		if err != nil {
			r.t.Errorf("a queued request: %v", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

// waitFor returns once n requests wait in p. The requests are made by
// goroutines that cannot be observed otherwise; no sleep, only yielding.
func waitFor(t *testing.T, p *rsc.Pool, n int) {
	t.Helper()
	for p.Waiting() < n {
		runtime.Gosched()
	}
	if got := p.Waiting(); got != n {
		t.Fatalf("%d requests waiting, want %d", got, n)
	}
}

// TestPrincipalShare: a principal with its share of requests waiting is
// refused at once with ErrBusy; another principal's requests still wait
// and are served; only when the queue holds QueueSize requests of all
// principals is everyone refused.
func TestPrincipalShare(t *testing.T) {
	r := newRecorder(t, rsc.Options{QueueSize: 8, PerPrincipal: 3})
	r.queue("flooder", 3)
	for range 5 {
		if err := r.do(refusable(t), "flooder"); !errors.Is(err, rsc.ErrBusy) {
			t.Fatalf("flooder beyond its share: %v, want ErrBusy", err)
		}
	}
	r.queue("honest", 3) // not busy: its own share
	if err := r.do(refusable(t), "honest"); !errors.Is(err, rsc.ErrBusy) {
		t.Errorf("honest beyond its share: %v, want ErrBusy", err)
	}
	r.queue("third", 2) // the queue is full: 8
	if err := r.do(refusable(t), "fourth"); !errors.Is(err, rsc.ErrBusy) {
		t.Errorf("with QueueSize requests waiting: %v, want ErrBusy", err)
	}
	order := r.finish()
	for who, want := range map[string]int{"flooder": 3, "honest": 3, "third": 2, "fourth": 0} {
		if got := count(order, who); got != want {
			t.Errorf("%s: %d requests served, want %d", who, got, want)
		}
	}
	if n := r.p.Waiting(); n != 0 {
		t.Errorf("%d requests still waiting", n)
	}
}

// TestLightPrincipalServedNext: with 60 requests of one principal waiting
// and one of another, the card serves the one first; two principals with
// requests waiting are served in turn, one request each.
func TestLightPrincipalServedNext(t *testing.T) {
	r := newRecorder(t, rsc.Options{QueueSize: 128, PerPrincipal: 64})
	r.queue("flooder", 60)
	r.queue("honest", 1)
	order := r.finish()
	if len(order) != 61 {
		t.Fatalf("%d requests served, want 61", len(order))
	}
	if i := slices.Index(order, "honest"); i != 0 {
		t.Errorf("honest's request served after %d of flooder's, want first", i)
	}

	r = newRecorder(t, rsc.Options{QueueSize: 128, PerPrincipal: 64})
	r.queue("a", 10)
	r.queue("b", 10)
	r.queue("c", 3)
	order = r.finish()
	// In turns, one request of each principal with some left per turn,
	// in any order (a card may keep the principal it served last, saving
	// a reset); c, with fewest waiting, first.
	queued := map[string]int{"a": 10, "b": 10, "c": 3}
	rest := order
	for turn := 0; len(rest) > 0; turn++ {
		var want []string
		for who, n := range queued {
			if n > turn {
				want = append(want, who)
			}
		}
		if len(want) > len(rest) {
			t.Fatalf("turn %d: %v served, want one each of %v (order %v)", turn, rest, want, order)
		}
		got := slices.Clone(rest[:len(want)])
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("turn %d: %v served, want one each of %v (order %v)", turn, got, want, order)
		}
		rest = rest[len(want):]
	}
	if order[0] != "c" {
		t.Errorf("order %v, want c, with fewest waiting, first", order)
	}
}

// TestGivenUpRequestFreesShare: a request whose context ends while it
// waits leaves its principal's share at once.
func TestGivenUpRequestFreesShare(t *testing.T) {
	r := newRecorder(t, rsc.Options{QueueSize: 8, PerPrincipal: 2})
	r.queue("a", 1)
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- r.do(ctx, "a") }()
	waitFor(t, r.p, 2)
	if err := r.do(refusable(t), "a"); !errors.Is(err, rsc.ErrBusy) {
		t.Fatalf("a beyond its share: %v, want ErrBusy", err)
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the request given up: %v, want context.Canceled", err)
	}
	if n := r.p.Waiting(); n != 1 {
		t.Errorf("%d requests waiting after one was given up, want 1", n)
	}
	r.queue("a", 1) // its place
	if order := r.finish(); !slices.Equal(order, []string{"a", "a"}) {
		t.Errorf("served %v, want a's two requests (not the one given up)", order)
	}
}

// TestRetriedRequestsCountInShare: requests a card failed wait for
// another card beyond their principal's share (they are never refused),
// and count in it: the principal's next request is refused, another
// principal's is served by the card that failed them.
func TestRetriedRequestsCountInShare(t *testing.T) {
	fa, fb := newFaulty(t, "share a"), newFaulty(t, "share b")
	a, b := faultyMember(t, "a", fa), faultyMember(t, "b", fb)
	p, release := holdPoolWith(t, a, b, rsc.Options{QueueSize: 8, PerPrincipal: 1})
	digest := sha256.Sum256([]byte("share"))
	results := make(chan error, 2)
	bob := func() {
		_, by, err := sign(context.Background(), p, "bob", digest[:])
		if err == nil && by != b {
			err = fmt.Errorf("signed by %s, want b", by.ID)
		}
		results <- err
	}
	// a fails bob's first request at the reset for him; meanwhile his
	// second waits (his share), and a takes it next, and fails it too.
	fa.armHook(stepReset, errUnresponsive, func() {
		go bob()
		for p.Waiting() == 0 {
			runtime.Gosched()
		}
	})
	fa.arm(stepReset, errUnresponsive)
	go bob()
	<-fa.fired
	<-fa.fired
	waitFor(t, p, 2) // both in the retries: b has not tried them
	if _, _, err := sign(refusable(t), p, "bob", digest[:]); !errors.Is(err, rsc.ErrBusy) {
		t.Errorf("bob with two requests retried: %v, want ErrBusy", err)
	}
	if _, by, err := sign(context.Background(), p, "carol", digest[:]); err != nil || by != a {
		t.Errorf("carol, while bob's requests wait for b: %v (by %v), want signed by a", err, by)
	}
	release()
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("bob's retried request: %v", err)
		}
	}
	if n := p.Waiting(); n != 0 {
		t.Errorf("%d requests still waiting", n)
	}
}

// refusable is the context of a request that should be refused at once: if
// it waits instead, it gives up after a while, and the test fails rather
// than hangs (nothing passes by time).
func refusable(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
