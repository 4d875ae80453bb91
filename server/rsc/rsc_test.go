package rsc_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/cards"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

// flaky is a simulator that can be "pulled": afterwards every command fails
// as a removed card does.
type flaky struct {
	*pivsim.Card
	pulled atomic.Bool
}

func (f *flaky) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if f.pulled.Load() {
		return nil, fmt.Errorf("sim: %w", cards.ErrCardRemoved)
	}
	return f.Card.Transmit(ctx, cmd)
}

// member makes a pool member from a simulator in process.
func member(t testing.TB, id string, card interface {
	cards.Transmitter
	Reset()
}) *rsc.Member {
	t.Helper()
	return testrig.Member(t, id, card, nil)
}

func newSim(t testing.TB, seed string, lat pivsim.Latency) *pivsim.Card {
	t.Helper()
	c, err := pivsim.New(pivsim.Config{Seed: []byte(seed), Latency: lat,
		Slots: map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sign is a delegate's request: VERIFY and sign with 9A; it returns the
// signature and the member that made it.
func sign(ctx context.Context, p *rsc.Pool, who string, digest []byte) ([]byte, *rsc.Member, error) {
	var sig []byte
	var by *rsc.Member
	err := p.Do(ctx, who, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
			return err
		}
		var err error
		sig, err = c.Sign(ctx, "9a", digest, crypto.SHA256)
		by = m
		return err
	})
	return sig, by, err
}

func verifyBy(t testing.TB, m *rsc.Member, digest, sig []byte) {
	t.Helper()
	pub := m.Certificate("9a").PublicKey.(*ecdsa.PublicKey)
	if !ecdsa.VerifyASN1(pub, digest, sig) {
		t.Errorf("signature does not verify under member %s's certificate", m.ID)
	}
}

func TestParallelPoolServesOnEveryCard(t *testing.T) {
	p := rsc.NewPool("mayor", rsc.Options{})
	defer p.Close()
	for i := range 4 {
		p.Add(member(t, fmt.Sprint("card", i), newSim(t, fmt.Sprint("seed", i), pivsim.Latency{SignECCP256: 5 * time.Millisecond})))
	}
	digest := sha256.Sum256([]byte("budget"))
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sig, by, err := sign(context.Background(), p, fmt.Sprint("delegate", i%8), digest[:])
			if err != nil {
				t.Errorf("sign: %v", err)
				return
			}
			verifyBy(t, by, digest[:], sig)
		}()
	}
	wg.Wait()
	for _, m := range p.Members() {
		if m.Served() == 0 {
			t.Errorf("member %s served nothing", m.ID)
		}
	}
}

func TestSameKeysPool(t *testing.T) {
	p := rsc.NewPool("one key", rsc.Options{SameKeys: true})
	defer p.Close()
	if err := p.Add(member(t, "a", newSim(t, "shared key", pivsim.Latency{}))); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(member(t, "b", newSim(t, "shared key", pivsim.Latency{}))); err != nil {
		t.Errorf("a card with the same keys: %v", err)
	}
	if err := p.Add(member(t, "c", newSim(t, "other key", pivsim.Latency{}))); !errors.Is(err, rsc.ErrMixedKeys) {
		t.Errorf("a card with other keys: %v, want ErrMixedKeys", err)
	}
}

// TestCardLeavesMidRequest: a card fails as removed in the middle of
// requests; every request still succeeds on the others, and the card,
// back, serves again.
func TestCardLeavesMidRequest(t *testing.T) {
	// One principal's 60 requests at once: its share is the whole queue.
	p := rsc.NewPool("mayor", rsc.Options{PerPrincipal: 64})
	defer p.Close()
	sims := make([]*flaky, 3)
	for i := range sims {
		sims[i] = &flaky{Card: newSim(t, fmt.Sprint("leave", i), pivsim.Latency{SignECCP256: 2 * time.Millisecond})}
		p.Add(member(t, fmt.Sprint("card", i), sims[i]))
	}
	digest := sha256.Sum256([]byte("x"))
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 20 {
				sims[1].pulled.Store(true)
			}
			if _, _, err := sign(context.Background(), p, "alice", digest[:]); err != nil {
				failed.Add(1)
				t.Errorf("request lost: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := len(p.Members()); n != 2 {
		t.Errorf("%d members after one card left, want 2", n)
	}
	sims[1].pulled.Store(false)
	back := member(t, "card1", sims[1])
	p.Add(back)
	for range 30 {
		if _, _, err := sign(context.Background(), p, "bob", digest[:]); err != nil {
			t.Fatal(err)
		}
	}
	if back.Served() == 0 {
		t.Error("the card that came back serves nothing")
	}
}

func TestLastCardGone(t *testing.T) {
	p := rsc.NewPool("single", rsc.Options{})
	defer p.Close()
	sim := &flaky{Card: newSim(t, "single", pivsim.Latency{})}
	p.Add(member(t, "only", sim))
	sim.pulled.Store(true)
	digest := sha256.Sum256([]byte("x"))
	if _, _, err := sign(context.Background(), p, "alice", digest[:]); !errors.Is(err, rsc.ErrNoCard) {
		t.Errorf("sign with the only card gone: %v, want ErrNoCard", err)
	}
	if _, _, err := sign(context.Background(), p, "alice", digest[:]); !errors.Is(err, rsc.ErrNoCard) {
		t.Errorf("sign on an empty pool: %v, want ErrNoCard", err)
	}
}

// hold has principal occupy p's card: it returns once the card runs the
// request, which then waits for release before it calls then (if not
// nil); done gets its error.
func hold(t *testing.T, p *rsc.Pool, principal string, then func(ctx context.Context, c profiles.Card) error) (release func(), done <-chan error) {
	t.Helper()
	running, free, result := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		result <- p.Do(context.Background(), principal, func(ctx context.Context, c profiles.Card, _ *rsc.Member) error {
			close(running)
			<-free
			if then != nil {
				return then(ctx, c)
			}
			return nil
		})
	}()
	select {
	case <-running:
	case err := <-result:
		t.Fatalf("the request to hold the card: %v", err)
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("the card never ran the request to hold it")
	}
	var once sync.Once
	release = func() { once.Do(func() { close(free) }) }
	t.Cleanup(release)
	return release, result
}

// waitWaiting waits until n requests wait in p's queue.
func waitWaiting(t *testing.T, p *rsc.Pool, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); p.Waiting() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // a hang guard
			t.Fatalf("%d requests waiting, want %d", p.Waiting(), n)
		}
	}
}

// recv returns what ch delivers; a hang guard fails the test if nothing
// comes.
func recv(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer", what)
		return nil
	}
}

func TestQueueLimitsAndDeadlines(t *testing.T) {
	// The queue's bound for all principals: alice may fill it alone.
	p := rsc.NewPool("slow", rsc.Options{QueueSize: 2, PerPrincipal: 2})
	defer p.Close()
	p.Add(member(t, "slow", newSim(t, "slow", pivsim.Latency{})))
	digest := sha256.Sum256([]byte("x"))
	release, held := hold(t, p, "alice", nil) // one running
	results := make(chan error, 2)
	for range 2 { // two waiting
		go func() {
			_, _, err := sign(context.Background(), p, "alice", digest[:])
			results <- err
		}()
	}
	waitWaiting(t, p, 2)
	if _, _, err := sign(context.Background(), p, "bob", digest[:]); !errors.Is(err, rsc.ErrBusy) {
		t.Errorf("with the queue full: %v, want ErrBusy", err)
	}
	release()
	if err := recv(t, held, "the running request"); err != nil {
		t.Errorf("running request: %v", err)
	}
	for range 2 {
		if err := recv(t, results, "a queued request"); err != nil {
			t.Errorf("queued request: %v", err)
		}
	}
	// The card is busy until carol's deadline has passed: she is answered
	// at it, in the queue.
	release, held = hold(t, p, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := sign(ctx, p, "carol", digest[:]); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a request whose deadline passes in the queue: %v", err)
	}
	release()
	recv(t, held, "the running request")
}

// TestPrincipalsIsolated: a delegate who did not verify the PIN never
// signs on another's verification, whichever card serves it.
func TestPrincipalsIsolated(t *testing.T) {
	p := rsc.NewPool("mayor", rsc.Options{})
	defer p.Close()
	p.Add(member(t, "card", newSim(t, "iso", pivsim.Latency{})))
	digest := sha256.Sum256([]byte("x"))
	if _, _, err := sign(context.Background(), p, "alice", digest[:]); err != nil {
		t.Fatal(err)
	}
	err := p.Do(context.Background(), "mallory", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		_, err := c.Sign(ctx, "9a", digest[:], crypto.SHA256)
		return err
	})
	if !errors.Is(err, apdu.ErrSecurityStatus) {
		t.Errorf("mallory without the PIN after alice: %v, want security status not satisfied", err)
	}
}

// BenchmarkParallelThroughput: signatures/s of a parallel remote card of n
// cards that each take 100 ms to sign, with 16 delegates (or 2n, if more)
// signing concurrently; efficiency is throughput / (n × 10 sig/s).
func BenchmarkParallelThroughput(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8, 16, 32} {
		b.Run(fmt.Sprintf("cards=%d", n), func(b *testing.B) {
			p := rsc.NewPool("bench", rsc.Options{QueueSize: 256})
			defer p.Close()
			for i := range n {
				p.Add(member(b, fmt.Sprint("card", i), newSim(b, fmt.Sprint("bench", i), pivsim.Latency{SignECCP256: 100 * time.Millisecond})))
			}
			throughput(b, p, max(16, 2*n), n)
		})
	}
}

// TestWaitingRequestsEnd: a request waiting for a busy card returns at its
// deadline, not when the card frees up; requests queued when the last card
// leaves fail at once.
func TestWaitingRequestsEnd(t *testing.T) {
	p := rsc.NewPool("slow", rsc.Options{})
	defer p.Close()
	sim := &flaky{Card: newSim(t, "slow2", pivsim.Latency{})}
	p.Add(member(t, "slow", sim))
	digest := sha256.Sum256([]byte("x"))
	// The card stays busy until carol has her answer: had she waited for
	// the card, she would have none.
	release, held := hold(t, p, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	carol := make(chan error, 1)
	go func() { _, _, err := sign(ctx, p, "carol", digest[:]); carol <- err }()
	if err := recv(t, carol, "carol, waiting for a card that stays busy"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting request: %v", err)
	}
	release()
	recv(t, held, "the running request")
	// The card leaves while requests wait: they fail, none hangs. The
	// running request finds it gone.
	release, held = hold(t, p, "alice", func(ctx context.Context, c profiles.Card) error {
		return c.VerifyPIN(ctx, piv.PIN, []byte("123456"))
	})
	waiting := make(chan error, 3)
	for range 3 {
		go func() { _, _, err := sign(context.Background(), p, "bob", digest[:]); waiting <- err }()
	}
	waitWaiting(t, p, 3)
	sim.pulled.Store(true)
	release()
	for range 3 {
		if err := recv(t, waiting, "a request waiting when the last card left"); !errors.Is(err, rsc.ErrNoCard) {
			t.Errorf("a request waiting when the last card left: %v", err)
		}
	}
	recv(t, held, "the running request")
}

// throughput has delegates sign b.N times in all on p, a pool of cards
// that each sign at 10 sig/s, and reports signatures/s and the efficiency.
func throughput(b *testing.B, p *rsc.Pool, delegates, cards int) {
	digest := sha256.Sum256([]byte("bench"))
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for d := range delegates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, _, err := sign(context.Background(), p, fmt.Sprint("delegate", d), digest[:]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "sigs/s")
	b.ReportMetric(100*rate/(float64(cards)*10), "%efficiency")
}

// rogue shows the victim's serial, certificates and public keys, but signs
// with keys of its own, as a card imitating a pool member would.
type rogue struct {
	victim, own *pivsim.Card
}

func (r rogue) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if len(cmd) > 1 && (cmd[1] == 0x87 || cmd[1] == 0x20) {
		return r.own.Transmit(ctx, cmd)
	}
	return r.victim.Transmit(ctx, cmd)
}

func (r rogue) Reset() { r.victim.Reset(); r.own.Reset() }

// TestManagerRefusesImpostor: a card that shows a member's identity and
// keys but cannot sign with them is not admitted (it would be sent the real
// PIN); a genuine card is.
func TestManagerRefusesImpostor(t *testing.T) {
	victim, err := pivsim.New(pivsim.Config{Seed: []byte("victim"), Serial: 1111})
	if err != nil {
		t.Fatal(err)
	}
	own, _ := pivsim.New(pivsim.Config{Seed: []byte("impostor"), Serial: 2222})
	genuine, _ := pivsim.New(pivsim.Config{Seed: []byte("genuine"), Serial: 3333})
	pool := rsc.NewPool("p", rsc.Options{})
	defer pool.Close()
	openers := map[string]cards.Opener{"r1": cards.Direct(rogue{victim, own}), "r2": cards.Direct(genuine)}
	m := &rsc.Manager{
		Pools:    map[string]*rsc.Pool{"p": pool},
		Profiles: []profiles.Profile{piv.Profile{}},
		Assign:   func(string, profiles.Info, []profiles.Key) (string, bool) { return "p", true },
		Open:     func(reader string) cards.Opener { return openers[reader] },
	}
	events := make(chan rsc.Event, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx, events) }()
	defer func() { cancel(); <-done }()
	events <- rsc.Event{Reader: "r1", Present: true} // the impostor first
	events <- rsc.Event{Reader: "r2", Present: true}
	for deadline := time.Now().Add(10 * time.Second); len(pool.Members()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no card joined")
		}
	}
	// The manager admits cards one event after the other: once r2's card
	// is in, r1's was decided.
	if got := joined(pool); len(got) != 1 || got[0] != "piv:3333" {
		t.Errorf("members %v, want only the genuine card piv:3333", got)
	}
	if victim.PINRetries() != 3 || own.PINRetries() != 3 {
		t.Error("a PIN was tried on a card that was being admitted")
	}
}

func joined(p *rsc.Pool) []string {
	var ids []string
	for _, m := range p.Members() {
		ids = append(ids, m.ID)
	}
	return ids
}

// counting counts the APDUs a simulator receives.
type counting struct {
	*pivsim.Card
	n atomic.Int64
}

func (c *counting) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	c.n.Add(1)
	return c.Card.Transmit(ctx, cmd)
}

// TestSignSendsFewAPDUs: a signature on a pool member costs SELECT, GET
// VERSION, VERIFY and GENERAL AUTHENTICATE; the card's inventory, read when
// it joined, is not read again on every request.
func TestSignSendsFewAPDUs(t *testing.T) {
	card := &counting{Card: newSim(t, "few", pivsim.Latency{})}
	p := rsc.NewPool("few", rsc.Options{})
	defer p.Close()
	p.Add(member(t, "few", card))
	digest := sha256.Sum256([]byte("x"))
	if _, _, err := sign(context.Background(), p, "alice", digest[:]); err != nil {
		t.Fatal(err)
	}
	before := card.n.Load()
	if _, _, err := sign(context.Background(), p, "alice", digest[:]); err != nil {
		t.Fatal(err)
	}
	if got := card.n.Load() - before; got != 4 {
		t.Errorf("a signature sent %d APDUs, want 4 (select, version, verify, sign)", got)
	}
}
