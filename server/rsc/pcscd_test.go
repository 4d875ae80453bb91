//go:build cgo

package rsc_test

// A parallel remote card of simulated cards in a real pcscd (through
// vpcd), driven by cards/pcsc as pscsd drives it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

var daemon *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 6}, func(p *pcscdtest.PCSCD) { daemon = p })
}

// rig is n simulated cards plugged into readers of the private pcscd.
type rig struct {
	t     testing.TB
	pc    *pcsc.Context
	sims  []vpcd.Card
	pulls []func()
}

func newRig(t testing.TB, n int, lat pivsim.Latency) *rig {
	t.Helper()
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	pc, err := pcsc.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	r := &rig{t: t, pc: pc}
	for i := range n {
		r.sims = append(r.sims, newSim(t, fmt.Sprint("rig", i), lat))
		r.pulls = append(r.pulls, nil)
		r.plug(i)
	}
	return r
}

// plug inserts card i into reader i and waits until pcscd sees it; the
// test's end pulls it and waits until pcscd sees the reader empty, so that
// the next test finds it so.
func (r *rig) plug(i int) {
	r.t.Helper()
	r.pulls[i] = daemon.Plug(r.t, i, r.sims[i], pcscdtest.PlugOptions{
		Logger: slog.New(slog.DiscardHandler),
		Probe:  daemon.ContextProbe(r.pc),
	})
}

func (r *rig) pull(i int) { r.pulls[i]() }

func (r *rig) wait(i int, present bool) {
	r.t.Helper()
	name := daemon.Readers[i]
	var last any
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		rs, err := r.pc.Readers(context.Background())
		if err != nil {
			last = err
			continue
		}
		last = rs
		for _, rd := range rs {
			if rd.Name == name && rd.Present == present {
				return
			}
		}
	}
	r.t.Fatalf("reader %s: present=%v not seen (last: %v)", name, present, last)
}

// member connects a worker to reader i and reads the card's keys.
func (r *rig) member(i int) *rsc.Member {
	r.t.Helper()
	reader := daemon.Readers[i]
	return testrig.MemberOf(r.t, fmt.Sprint("card", i), func(ctx context.Context) (cards.Conn, error) { return r.pc.Connect(ctx, reader) }, nil)
}

// TestPullUnderLoadThroughPCSCD: 16 delegates sign on a parallel remote
// card of 4 cards behind pcscd; one card is pulled, then put back. No
// request is lost, and the card serves again once back.
func TestPullUnderLoadThroughPCSCD(t *testing.T) {
	r := newRig(t, 4, pivsim.Latency{SignECCP256: 20 * time.Millisecond})
	// changed is signalled after every change of the pool's members.
	changed := make(chan struct{}, 1)
	p := rsc.NewPool("mayor", rsc.Options{OnChange: func(int) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}})
	defer p.Close()
	for i := range 4 {
		if err := p.Add(r.member(i)); err != nil {
			t.Fatal(err)
		}
	}
	// size waits until the pool has want members.
	size := func(want int) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for len(p.Members()) != want {
			select {
			case <-changed:
			case <-timeout:
				t.Fatalf("pool has %d members, want %d", len(p.Members()), want)
			}
		}
	}
	size(4)
	digest := sha256.Sum256([]byte("under load"))
	stop := make(chan struct{})
	var ok, lost atomic.Int64
	// signed receives ok's count after every signature, dropped when
	// nobody waits.
	signed := make(chan int64, 1)
	var wg sync.WaitGroup
	defer func() {
		select {
		case <-stop:
		default:
			close(stop) // a failure: stop the delegates before the test ends
		}
		wg.Wait()
	}()
	for d := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sig, by, err := sign(context.Background(), p, fmt.Sprint("delegate", d), digest[:])
				if err != nil {
					lost.Add(1)
					t.Errorf("request lost: %v", err)
					continue
				}
				verifyBy(t, by, digest[:], sig)
				n := ok.Add(1)
				select {
				case signed <- n:
				default:
				}
			}
		}()
	}
	// signing waits until cond holds after a signature.
	signing := func(what string, cond func() bool) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for !cond() {
			select {
			case <-signed:
			case <-timeout:
				t.Fatalf("%s: not seen in 30 s (%d signatures)", what, ok.Load())
			}
		}
	}
	// Every card serves under load, then card 2 is pulled in the middle
	// of it: pull returns once pcscd shows the reader empty and its
	// reader thread saw it go (see pcscdtest.PCSCD.Plug), and the pool
	// drops the card when a request finds it gone.
	signing("every card serving", func() bool {
		for _, m := range p.Members() {
			if m.Served() == 0 {
				return false
			}
		}
		return true
	})
	r.pull(2)
	size(3)
	before := ok.Load()
	signing("signatures on 3 cards", func() bool { return ok.Load() >= before+16 })
	// The three cards left go on signing; card 2 goes back at once (plug
	// returns once pcscd shows it), rejoins and serves.
	r.plug(2)
	back := r.member(2)
	if err := p.Add(back); err != nil {
		t.Fatal(err)
	}
	size(4)
	signing("the returned card serving", func() bool { return back.Served() > 0 })
	close(stop)
	wg.Wait()
	t.Logf("%d signatures, %d lost; the returned card served %d", ok.Load(), lost.Load(), back.Served())
}

var (
	benchOnce sync.Once
	benchPool *rsc.Pool
)

// benchMember is member without cleanup: it lives as long as the binary.
func (r *rig) benchMember(i int) *rsc.Member {
	reader := daemon.Readers[i]
	w := cards.NewWorker(func(ctx context.Context) (cards.Conn, error) { return r.pc.Connect(ctx, reader) }, nil)
	m, err := rsc.NewMember(context.Background(), fmt.Sprint("card", i), w, piv.Profile{})
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

// BenchmarkParallelThroughPCSCD: signatures/s of 4 cards behind pcscd that
// take 100 ms each, with 16 delegates.
func BenchmarkParallelThroughPCSCD(b *testing.B) {
	// One rig for every run of the benchmark: the cards stay plugged in
	// (on readers 4-7) until pcscd stops at the end of the test binary.
	benchOnce.Do(func() {
		r := &rig{t: b}
		if daemon == nil {
			b.Skip("no private pcscd")
		}
		var err error
		if r.pc, err = pcsc.Open(); err != nil {
			b.Fatal(err)
		}
		for i := range 8 {
			r.sims = append(r.sims, newSim(b, fmt.Sprint("bench", i), pivsim.Latency{SignECCP256: 100 * time.Millisecond}))
			r.pulls = append(r.pulls, nil)
		}
		for i := 4; i < 8; i++ {
			ctx := context.Background()
			card, addr := r.sims[i], daemon.CardAddr(i)
			go vpcd.Plug(ctx, addr, card)
			r.wait(i, true)
		}
		benchPool = rsc.NewPool("bench", rsc.Options{QueueSize: 256})
		for i := 4; i < 8; i++ {
			r.t = b
			if err := benchPool.Add(r.benchMember(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	throughput(b, benchPool, 16, 4)
}

// TestManagerFollowsReaders: the manager, fed by pcsc.Watch, adds inserted
// cards to their pool, takes pulled ones out, and lets them rejoin.
func TestManagerFollowsReaders(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd")
	}
	pc, err := pcsc.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() }) // after the cleanups that wait for readers
	r := &rig{t: t, pc: pc}
	serials := map[string]bool{}
	for i := range 6 {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(fmt.Sprint("mgr", i)), Serial: uint32(7700 + i),
			Slots: map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256}}})
		if err != nil {
			t.Fatal(err)
		}
		r.sims = append(r.sims, sim)
		r.pulls = append(r.pulls, nil)
		if i >= 4 {
			serials[fmt.Sprint(sim.Serial())] = true
		}
	}
	pool := rsc.NewPool("mgr", rsc.Options{})
	defer pool.Close()
	m := &rsc.Manager{
		Pools:    map[string]*rsc.Pool{"mgr": pool},
		Profiles: []profiles.Profile{piv.Profile{}},
		Assign: func(profile string, info profiles.Info, keys []profiles.Key) (string, bool) {
			return "mgr", serials[info.Serial]
		},
		Open: func(reader string) cards.Opener {
			return func(ctx context.Context) (cards.Conn, error) { return pc.Connect(ctx, reader) }
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	raw := make(chan pcsc.Event, 16)
	events := make(chan rsc.Event, 16)
	go pc.Watch(ctx, raw)
	go func() {
		for ev := range raw {
			switch ev.Kind {
			case pcsc.Inserted:
				events <- rsc.Event{Reader: ev.Reader, Present: true}
			case pcsc.Removed:
				events <- rsc.Event{Reader: ev.Reader}
			}
		}
	}()
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx, events) }()
	defer func() { cancel(); <-done }()

	members := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if len(pool.Members()) == want {
				return
			}
		}
		t.Fatalf("pool has %d members, want %d", len(pool.Members()), want)
	}
	r.plug(4)
	r.plug(5)
	members(2)
	digest := sha256.Sum256([]byte("managed"))
	if _, _, err := sign(context.Background(), pool, "alice", digest[:]); err != nil {
		t.Fatal(err)
	}
	r.pull(5)
	members(1)
	r.plug(5)
	members(2)
	for range 10 {
		if _, _, err := sign(context.Background(), pool, "alice", digest[:]); err != nil {
			t.Fatal(err)
		}
	}
}

// resetFails is a simulated card in a reader of pcscd that, once armed,
// dies in its next reset: it gives no ATR, so its connection to vpcd
// closes (through vpcd, the only way a card fails a reset: vpcd reads it
// as "no card", and pcscd answers the SCardReconnect that reset the card
// with SCARD_W_UNRESPONSIVE_CARD, the failure of issue 9), and it stays
// out until the test plugs it in again.
type resetFails struct {
	*pivsim.Card
	armed, dying atomic.Bool
	die          context.CancelFunc // ends the card's connection to vpcd
	fired        chan struct{}
}

func (c *resetFails) Reset() {
	c.Card.Reset()
	if c.armed.CompareAndSwap(true, false) {
		c.dying.Store(true)
	}
}

func (c *resetFails) ATR() []byte {
	if c.dying.CompareAndSwap(true, false) {
		c.die()
		close(c.fired)
		return nil
	}
	return c.Card.ATR()
}

// TestResetFailureMovesRequestThroughPCSCD: through pcscd, a card that
// fails the reset for a new principal hands the request to the other card
// of the pool, which signs it; the failed card, back, serves again.
func TestResetFailureMovesRequestThroughPCSCD(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	pc, err := pcsc.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() }) // after the cleanups that wait for readers
	// Readers 8 and 9 are this test's alone.
	r := &rig{t: t, pc: pc, sims: make([]vpcd.Card, 10), pulls: make([]func(), 10)}
	fa := &resetFails{Card: newSim(t, "pcscd failover a", pivsim.Latency{}), fired: make(chan struct{})}
	r.sims[8], r.sims[9] = fa, newSim(t, "pcscd failover b", pivsim.Latency{})
	// Card a is plugged by hand: it pulls itself when it dies.
	ctx, cancel := context.WithCancel(context.Background())
	fa.die = cancel
	plugged := make(chan struct{})
	go func() { defer close(plugged); vpcd.Plug(ctx, daemon.CardAddr(8), fa) }()
	t.Cleanup(func() { cancel(); <-plugged; r.wait(8, false) })
	r.wait(8, true)
	r.plug(9)
	a, b := r.member(8), r.member(9)
	var logs bytes.Buffer
	var logMu sync.Mutex
	p, release := holdPoolWith(t, a, b, rsc.Options{Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))})
	fa.armed.Store(true)
	digest := sha256.Sum256([]byte("through pcscd"))
	type result struct {
		sig []byte
		by  *rsc.Member
		err error
	}
	done := make(chan result, 1)
	go func() {
		sig, by, err := sign(context.Background(), p, "bob", digest[:])
		done <- result{sig, by, err}
	}()
	<-fa.fired // a dies in its reset
	release()  // b is free, and takes the request
	res := <-done
	if res.err != nil {
		t.Fatalf("request lost: %v", res.err)
	}
	if res.by != b {
		t.Errorf("signed by %s, want %s", res.by.ID, b.ID)
	}
	verifyBy(t, b, digest[:], res.sig)
	logMu.Lock()
	log := logs.String()
	logMu.Unlock()
	t.Logf("pool log:\n%s", log)
	if !strings.Contains(log, "reset before a new principal") {
		t.Errorf("the pool did not log a's failed reset")
	}
	// a comes back: as a member still (a card that failed), or as a card
	// that left and rejoins (a card that disappeared), it serves again.
	<-plugged
	r.wait(8, false) // pcscd saw it go
	plugged = make(chan struct{})
	ctx, cancel = context.WithCancel(context.Background())
	go func() { defer close(plugged); vpcd.Plug(ctx, daemon.CardAddr(8), fa) }()
	t.Cleanup(func() { cancel(); <-plugged; r.wait(8, false) })
	r.wait(8, true)
	if !slices.Contains(joined(p), a.ID) {
		a = r.member(8)
		if err := p.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Worker.DoAs(context.Background(), "carol", func(ctx context.Context, tr cards.Transmitter) error {
		_, err := piv.Open(ctx, tr)
		return err
	}); err != nil {
		t.Fatalf("the failed card's next request: %v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
