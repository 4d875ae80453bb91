package rsc_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/cards"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

// Steps of a request where a faulty card can fail: connecting, the reset
// for a new principal, beginning the transaction, or the exchange of a
// command with the instruction byte ins (stepINS).
const (
	stepConnect = "connect"
	stepReset   = "reset"
	stepBegin   = "begin"
)

func stepINS(ins byte) string { return fmt.Sprintf("ins %02X", ins) }

// faulty is a simulated card whose connection fails at the steps armed,
// each once, in the order armed.
type faulty struct {
	card  *pivsim.Card
	mu    sync.Mutex
	armed []fault
	fired chan string // the steps that failed
	opens atomic.Int64
}

type fault struct {
	step string
	err  error
	hook func() // runs when the fault fires, before the error returns
}

// answer is an error armed at an exchange that makes the card answer with
// the status word sw instead of executing the command.
type answer struct{ sw uint16 }

func (a answer) Error() string { return fmt.Sprintf("answer %04X", a.sw) }

func newFaulty(t testing.TB, seed string) *faulty {
	return &faulty{card: newSim(t, seed, pivsim.Latency{}), fired: make(chan string, 16)}
}

func (f *faulty) arm(step string, err error) { f.armHook(step, err, nil) }

func (f *faulty) armHook(step string, err error, hook func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = append(f.armed, fault{step, err, hook})
}

// take returns the error armed for step, if it is the next one armed.
func (f *faulty) take(step string) error {
	f.mu.Lock()
	if len(f.armed) == 0 || f.armed[0].step != step {
		f.mu.Unlock()
		return nil
	}
	ft := f.armed[0]
	f.armed = f.armed[1:]
	f.mu.Unlock()
	if ft.hook != nil {
		ft.hook()
	}
	f.fired <- step
	return ft.err
}

func (f *faulty) open(ctx context.Context) (cards.Conn, error) {
	if err := f.take(stepConnect); err != nil {
		return nil, err
	}
	f.opens.Add(1)
	return faultyConn{f}, nil
}

type faultyConn struct{ f *faulty }

func (c faultyConn) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if len(cmd) > 1 {
		if err := c.f.take(stepINS(cmd[1])); err != nil {
			if a, ok := err.(answer); ok {
				return []byte{byte(a.sw >> 8), byte(a.sw)}, nil
			}
			return nil, err
		}
	}
	return c.f.card.Transmit(ctx, cmd)
}

func (c faultyConn) Begin(ctx context.Context) error {
	if err := c.f.take(stepBegin); err != nil {
		return err
	}
	return ctx.Err()
}

func (c faultyConn) End() error { return nil }

func (c faultyConn) Reset(ctx context.Context) error {
	if err := c.f.take(stepReset); err != nil {
		return err
	}
	c.f.card.Reset()
	return nil
}

func (c faultyConn) Close() error { return nil }

func faultyMember(t testing.TB, id string, f *faulty) *rsc.Member {
	t.Helper()
	return testrig.MemberOf(t, id, f.open, nil)
}

// holdPool makes a pool of a and b in which the next request goes to a:
// b is busy with another request until release is called, and a has
// served "alice" last, so that a request of anyone else starts with the
// reset for a new principal.
func holdPool(t *testing.T, a, b *rsc.Member) (p *rsc.Pool, release func()) {
	t.Helper()
	return holdPoolWith(t, a, b, rsc.Options{})
}

func holdPoolWith(t *testing.T, a, b *rsc.Member, opts rsc.Options) (p *rsc.Pool, release func()) {
	t.Helper()
	p = rsc.NewPool("mayor", opts)
	t.Cleanup(p.Close)
	digest := sha256.Sum256([]byte("warm"))
	if err := p.Add(a); err != nil {
		t.Fatal(err)
	}
	if _, by, err := sign(context.Background(), p, "alice", digest[:]); err != nil || by != a {
		t.Fatalf("warming %s: %v", a.ID, err)
	}
	p.Remove(a.ID)
	if err := p.Add(b); err != nil {
		t.Fatal(err)
	}
	release = holdCard(t, p)
	if err := p.Add(a); err != nil { // back, its worker and connection as they were
		t.Fatal(err)
	}
	return p, release
}

// holdCard keeps one card of p busy with a request of "holder" until
// release is called (at the latest at cleanup), so that other requests
// wait, or go to another card.
func holdCard(t *testing.T, p *rsc.Pool) (release func()) {
	t.Helper()
	started, hold := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- p.Do(context.Background(), "holder", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			close(started)
			<-hold
			return nil
		})
	}()
	<-started
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(hold)
			if err := <-held; err != nil {
				t.Errorf("the request holding a card: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

type reqKey struct{}

// errWire is what pscsd's request function makes of a card's error: a code
// for the wire, wrapping nothing.
var errWire = errors.New("pscs: card error (200)")

// signAs is sign, also reporting the request's context value reqKey as
// every run of fn saw it; with hide, fn returns errWire for every error of
// the card, as pscsd does.
func signAs(ctx context.Context, p *rsc.Pool, who string, digest []byte, seen *[]any, hide bool) ([]byte, *rsc.Member, error) {
	var sig []byte
	var by *rsc.Member
	var mu sync.Mutex
	err := p.Do(ctx, who, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		mu.Lock()
		*seen = append(*seen, ctx.Value(reqKey{}))
		mu.Unlock()
		if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
			if hide {
				return errWire
			}
			return err
		}
		var err error
		sig, err = c.Sign(ctx, "9a", digest, crypto.SHA256)
		by = m
		if err != nil && hide {
			return errWire
		}
		return err
	})
	return sig, by, err
}

// errUnresponsive is what cards/pcsc returned in the request lost under load
// (issue 9): SCardReconnect answered SCARD_W_UNRESPONSIVE_CARD, and the
// reader's state said the card was reset.
var errUnresponsive = fmt.Errorf("pcsc: SCardReconnect \"Virtual PCD 00 00\": %w (0x80100066: Card is unresponsive)", cards.ErrCardReset)

// TestCardFailureMovesRequest: a card that fails a request before it
// answers (at the reset for a new principal, connecting, beginning the
// transaction, SELECT, VERIFY or the signature) hands it to another card,
// which signs it with the request's own context. The failing card stays in
// the pool and connects afresh, unless it is gone, and then it leaves.
func TestCardFailureMovesRequest(t *testing.T) {
	opaque := errors.New("sim: card is unresponsive") // no sentinel at all
	for _, tc := range []struct {
		name  string
		step  string
		err   error
		stays bool
		hide  bool // the request's function hides the card's error
	}{
		{"principal-change reset, unresponsive", stepReset, errUnresponsive, true, false},
		{"principal-change reset, card pulled", stepReset, fmt.Errorf("sim: %w", cards.ErrCardRemoved), false, false},
		{"connect", stepConnect, fmt.Errorf("sim: %w", cards.ErrSharingViolation), true, false},
		{"begin transaction", stepBegin, opaque, true, false},
		{"select", stepINS(0xA4), opaque, true, false},
		{"verify", stepINS(0x20), opaque, true, false},
		{"verify, card reset twice", stepINS(0x20), fmt.Errorf("sim: %w", cards.ErrCardReset), true, false},
		{"signature", stepINS(0x87), opaque, true, false},
		{"signature, card pulled", stepINS(0x87), fmt.Errorf("sim: %w", cards.ErrCardRemoved), false, false},
		{"verify, error hidden", stepINS(0x20), opaque, true, true},
		{"verify, memory failure 6581", stepINS(0x20), answer{0x6581}, true, false},
		{"verify, no precise diagnosis 6F00, hidden", stepINS(0x20), answer{0x6F00}, true, true},
		{"signature, execution error 6400", stepINS(0x87), answer{0x6400}, true, false},
		{"signature, card pulled, error hidden", stepINS(0x87), fmt.Errorf("sim: %w", cards.ErrCardRemoved), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa, fb := newFaulty(t, "failover a"), newFaulty(t, "failover b")
			a, b := faultyMember(t, "a", fa), faultyMember(t, "b", fb)
			p, release := holdPool(t, a, b)
			switch tc.step {
			case stepConnect:
				// a connects afresh for the request: its last request
				// lost the card (a reset twice over), and the reset
				// before the request is the new connection's.
				fa.arm(stepINS(0xA4), fmt.Errorf("sim: %w", cards.ErrCardReset))
				fa.arm(stepINS(0xA4), fmt.Errorf("sim: %w", cards.ErrCardReset))
				if err := a.Worker.Do(context.Background(), func(ctx context.Context, tr cards.Transmitter) error {
					_, err := piv.Open(ctx, tr)
					return err
				}); !errors.Is(err, cards.ErrCardFailed) {
					t.Fatalf("dropping a's connection: %v", err)
				}
				<-fa.fired
				<-fa.fired
				fa.arm(stepConnect, tc.err)
			case stepINS(0x20):
				fa.arm(tc.step, tc.err)
				if errors.Is(tc.err, cards.ErrCardReset) {
					// The worker runs a request the card's reset broke
					// once more on a fresh connection: fail that too.
					fa.arm(tc.step, tc.err)
				}
			default:
				fa.arm(tc.step, tc.err)
			}
			done := make(chan struct{})
			var sig []byte
			var by *rsc.Member
			var err error
			var seen []any
			digest := sha256.Sum256([]byte(tc.name))
			go func() {
				defer close(done)
				ctx := context.WithValue(context.Background(), reqKey{}, "bob's")
				sig, by, err = signAs(ctx, p, "bob", digest[:], &seen, tc.hide)
			}()
			if got := <-fa.fired; got != tc.step {
				t.Fatalf("fault at %q, want %q", got, tc.step)
			}
			if tc.step == stepINS(0x20) && errors.Is(tc.err, cards.ErrCardReset) {
				<-fa.fired
			}
			release() // b is free now, and takes the request
			<-done
			if err != nil {
				t.Fatalf("request lost: %v", err)
			}
			if by != b {
				t.Errorf("signed by %s, want b", by.ID)
			}
			verifyBy(t, b, digest[:], sig)
			for i, v := range seen {
				if v != "bob's" {
					t.Errorf("run %d of the request saw context value %v, want the request's own", i, v)
				}
			}
			if got, want := slices.Contains(joined(p), "a"), tc.stays; got != want {
				t.Errorf("the failing card in the pool: %v, want %v (members %v)", got, want, joined(p))
			}
			if !tc.stays {
				return
			}
			// a serves again, on a fresh connection.
			opens := fa.opens.Load()
			if err := a.Worker.DoAs(context.Background(), "carol", func(ctx context.Context, tr cards.Transmitter) error {
				_, err := piv.Open(ctx, tr)
				return err
			}); err != nil {
				t.Fatalf("the failed card's next request: %v", err)
			}
			if fa.opens.Load() == opens && tc.step != stepConnect {
				t.Error("the failed card kept its connection")
			}
		})
	}
}

// TestWrongPINStaysOnItsCard: a wrong PIN is the card's answer, not its
// failure: the request fails at once with it, and no other card of the
// pool is tried (it would spend that card's PIN tries).
func TestWrongPINStaysOnItsCard(t *testing.T) {
	fa, fb := newFaulty(t, "pin a"), newFaulty(t, "pin b")
	a, b := faultyMember(t, "a", fa), faultyMember(t, "b", fb)
	p, release := holdPool(t, a, b)
	defer release()
	runs := 0
	err := p.Do(context.Background(), "bob", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		runs++
		return c.VerifyPIN(ctx, piv.PIN, []byte("654321"))
	})
	// b is still held: the request came back without waiting for it.
	if !errors.Is(err, apdu.ErrWrongPIN) || errors.Is(err, cards.ErrCardFailed) {
		t.Errorf("wrong PIN: %v, want apdu.ErrWrongPIN", err)
	}
	if runs != 1 {
		t.Errorf("the request ran %d times, want 1", runs)
	}
	if got := fa.card.PINRetries(); got != 2 {
		t.Errorf("a has %d PIN tries left, want 2", got)
	}
	if got := fb.card.PINRetries(); got != 3 {
		t.Errorf("b has %d PIN tries left, want 3: the wrong PIN was tried on it", got)
	}
	if !slices.Contains(joined(p), "a") {
		t.Error("a card that refused a PIN left the pool")
	}
}

// TestCardFailuresBounded: a request whose every card fails runs at most
// MaxAttempts times, each time on a card that has not failed it while one
// is left, then fails with ErrNoCard wrapping the last card's error.
func TestCardFailuresBounded(t *testing.T) {
	p := rsc.NewPool("failing", rsc.Options{})
	defer p.Close()
	var fs []*faulty
	for i := range rsc.MaxAttempts + 2 {
		f := newFaulty(t, fmt.Sprint("bounded", i))
		if err := p.Add(faultyMember(t, fmt.Sprint("card", i), f)); err != nil {
			t.Fatal(err)
		}
		for range 2 { // more than enough: a request fails each card once
			f.arm(stepReset, errUnresponsive)
		}
		fs = append(fs, f)
	}
	digest := sha256.Sum256([]byte("bounded"))
	_, _, err := sign(context.Background(), p, "bob", digest[:])
	if !errors.Is(err, rsc.ErrNoCard) || !errors.Is(err, cards.ErrCardReset) || !errors.Is(err, cards.ErrCardFailed) {
		t.Errorf("err = %v, want ErrNoCard wrapping the card's failure", err)
	}
	var failed, twice int
	for _, f := range fs {
		switch len(f.fired) {
		case 0:
		case 1:
			failed++
		default:
			twice++
		}
	}
	if failed != rsc.MaxAttempts || twice != 0 {
		t.Errorf("%d cards failed the request once, %d more than once; want %d once, none twice", failed, twice, rsc.MaxAttempts)
	}
}

// TestSingleCardRetriesOnFreshConnection: a remote card of one card that
// fails the reset once signs on its next connection; one that fails every
// time gives up after MaxAttempts runs.
func TestSingleCardRetriesOnFreshConnection(t *testing.T) {
	f := newFaulty(t, "single")
	p := rsc.NewPool("single", rsc.Options{})
	defer p.Close()
	m := faultyMember(t, "only", f)
	if err := p.Add(m); err != nil {
		t.Fatal(err)
	}
	f.arm(stepReset, errUnresponsive)
	digest := sha256.Sum256([]byte("single"))
	sig, by, err := sign(context.Background(), p, "bob", digest[:])
	if err != nil {
		t.Fatalf("after one failed reset: %v", err)
	}
	verifyBy(t, by, digest[:], sig)
	if len(f.fired) != 1 || f.opens.Load() != 2 {
		t.Errorf("%d faults, %d connections; want 1 fault, then a second connection", len(f.fired), f.opens.Load())
	}
	for range rsc.MaxAttempts + 1 {
		f.arm(stepReset, errUnresponsive)
	}
	if _, _, err := sign(context.Background(), p, "carol", digest[:]); !errors.Is(err, rsc.ErrNoCard) || !errors.Is(err, cards.ErrCardReset) {
		t.Errorf("a card that always fails: %v, want ErrNoCard wrapping its failure", err)
	}
	if got := len(f.fired); got != 1+rsc.MaxAttempts {
		t.Errorf("%d faults in all, want 1 + %d", got, rsc.MaxAttempts)
	}
}

// TestCardFailureAfterDeadline: a request whose context ends while a card
// fails it is not run again: its caller has its context's error.
func TestCardFailureAfterDeadline(t *testing.T) {
	fa, fb := newFaulty(t, "deadline a"), newFaulty(t, "deadline b")
	a, b := faultyMember(t, "a", fa), faultyMember(t, "b", fb)
	p, release := holdPool(t, a, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fa.armHook(stepReset, errUnresponsive, cancel)
	runs := atomic.Int64{}
	done := make(chan error, 1)
	go func() {
		done <- p.Do(ctx, "bob", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			runs.Add(1)
			return nil
		})
	}()
	<-fa.fired
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	release()
	// b, free, serves the next request: the abandoned one is not run.
	digest := sha256.Sum256([]byte("next"))
	if _, _, err := sign(context.Background(), p, "carol", digest[:]); err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("the abandoned request ran %d times", n)
	}
	if n := p.Waiting(); n != 0 {
		t.Errorf("%d requests still waiting", n)
	}
}

// TestLastCardLeavesAsAnotherJoins: when the last card leaves while
// another joins, a request made once the new card is in the pool is served
// by it; it is not failed with the requests that were waiting for no card
// (the leaving card's pool used to fail "every request waiting" after it
// had let go of the pool's lock, when the new card could be serving them).
func TestLastCardLeavesAsAnotherJoins(t *testing.T) {
	a := &flaky{Card: newSim(t, "leaving", pivsim.Latency{})}
	b := member(t, "b", newSim(t, "joining", pivsim.Latency{}))
	var p *rsc.Pool
	digest := sha256.Sum256([]byte("joins"))
	hold := make(chan struct{})
	held := make(chan error, 1)
	joined := make(chan error, 1)
	ready := make(chan struct{}) // b is busy, carol's request waits in the queue
	var once sync.Once
	p = rsc.NewPool("mayor", rsc.Options{OnChange: func(n int) {
		if n != 0 {
			return
		}
		once.Do(func() {
			// a has left, the pool is empty: b joins, and is kept busy
			// while a request comes in and waits in the queue.
			if err := p.Add(b); err != nil {
				t.Error(err)
				return
			}
			started := make(chan struct{})
			go func() {
				held <- p.Do(context.Background(), "holder", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
					close(started)
					<-hold
					return nil
				})
			}()
			<-started
			go func() {
				_, _, err := sign(context.Background(), p, "carol", digest[:])
				joined <- err
			}()
			for p.Waiting() == 0 { // carol's request is in the queue
				runtime.Gosched()
			}
			close(ready)
		})
	}})
	defer p.Close()
	if err := p.Add(member(t, "a", a)); err != nil {
		t.Fatal(err)
	}
	a.pulled.Store(true)
	// bob's request fails on a, which leaves; it and carol's go to b.
	bob := make(chan error, 1)
	go func() { _, _, err := sign(context.Background(), p, "bob", digest[:]); bob <- err }()
	<-ready
	close(hold)
	if err := <-held; err != nil {
		t.Errorf("the request holding b: %v", err)
	}
	if err := <-joined; err != nil {
		t.Errorf("a request made while b was in the pool: %v", err)
	}
	if err := <-bob; err != nil {
		t.Errorf("the request a failed: %v", err)
	}
}
