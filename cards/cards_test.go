package cards

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeConn is an in-memory card connection that fails on command.
type fakeConn struct {
	id        int
	mu        sync.Mutex
	inTx      bool
	failNext  error
	failEnd   error
	failBegin error
	failReset error
	reply     []byte // the answer to every command, if set
	closed    bool
	resets    int
}

func (c *fakeConn) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inTx {
		return nil, errors.New("transmit outside a transaction")
	}
	if err := c.failNext; err != nil {
		c.failNext = nil
		return nil, err
	}
	if c.reply != nil {
		return bytes.Clone(c.reply), nil
	}
	return []byte{byte(c.id), 0x90, 0x00}, nil
}
func (c *fakeConn) Begin(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failBegin; err != nil {
		c.failBegin = nil
		return err
	}
	c.inTx = true
	return nil
}
func (c *fakeConn) End() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inTx = false
	err := c.failEnd
	c.failEnd = nil
	return err
}
func (c *fakeConn) Reset(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failReset; err != nil {
		c.failReset = nil
		return err
	}
	c.resets++
	return nil
}
func (c *fakeConn) Close() error { c.mu.Lock(); c.closed = true; c.mu.Unlock(); return nil }

type fakeReader struct {
	mu    sync.Mutex
	conns []*fakeConn
	fail  error
}

func (r *fakeReader) open(context.Context) (Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	c := &fakeConn{id: len(r.conns) + 1}
	r.conns = append(r.conns, c)
	return c, nil
}

func TestWorkerSerializesRequests(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := w.Do(t.Context(), func(ctx context.Context, tx Transmitter) error {
				n := inside.Add(1)
				if n > max.Load() {
					max.Store(n)
				}
				defer inside.Add(-1)
				time.Sleep(time.Millisecond)
				_, err := tx.Transmit(ctx, []byte{0, 0xCA, 0, 0})
				return err
			})
			if err != nil {
				t.Errorf("Do: %v", err)
			}
		}()
	}
	wg.Wait()
	if got := max.Load(); got != 1 {
		t.Errorf("%d requests ran at once, want 1", got)
	}
	if len(r.conns) != 1 {
		t.Errorf("opened %d connections, want 1", len(r.conns))
	}
}

func TestWorkerRetriesAfterReset(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	calls := 0
	var got []byte
	err := w.Do(t.Context(), func(ctx context.Context, tx Transmitter) error {
		calls++
		if calls == 1 {
			r.conns[0].failNext = ErrCardReset
		}
		rsp, err := tx.Transmit(ctx, []byte{0, 0xCA, 0, 0})
		got = rsp
		return err
	})
	if err != nil {
		t.Fatalf("Do after a reset: %v", err)
	}
	if calls != 2 || !bytes.Equal(got, []byte{2, 0x90, 0x00}) {
		t.Errorf("calls = %d, response %X; want 2 calls answered by the second connection", calls, got)
	}
	if !r.conns[0].closed {
		t.Errorf("the reset connection was not closed")
	}
}

// TestWorkerDoesNotRepeatSuccess: a request that succeeded is not run
// again when ending its transaction reports a reset.
func TestWorkerDoesNotRepeatSuccess(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	calls := 0
	err := w.Do(t.Context(), func(ctx context.Context, tx Transmitter) error {
		calls++
		r.conns[len(r.conns)-1].failEnd = ErrCardReset
		return nil
	})
	if err != nil || calls != 1 {
		t.Fatalf("Do = %v after %d calls; want success after exactly 1", err, calls)
	}
	if err := w.Do(t.Context(), func(context.Context, Transmitter) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(r.conns) != 2 {
		t.Errorf("%d connections; want a new one after the reset", len(r.conns))
	}
}

// TestWorkerIsolatesPrincipals: the card is reset before a request of
// another principal, and on a new connection; not between requests of the
// same principal.
func TestWorkerIsolatesPrincipals(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	nop := func(context.Context, Transmitter) error { return nil }
	steps := []struct {
		who    string // "" for Do
		resets int    // total resets of the connection after the step
	}{{"alice", 1}, {"alice", 1}, {"bob", 2}, {"", 2}, {"bob", 2}, {"alice", 3}}
	for i, s := range steps {
		var err error
		if s.who == "" {
			err = w.Do(t.Context(), nop)
		} else {
			err = w.DoAs(t.Context(), s.who, nop)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := r.conns[0].resets; got != s.resets {
			t.Errorf("step %d (%q): %d resets, want %d", i, s.who, got, s.resets)
		}
	}
}

func TestWorkerRemovedCardFailsThenReconnects(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	transmit := func(ctx context.Context, tx Transmitter) error {
		_, err := tx.Transmit(ctx, []byte{0, 0xCA, 0, 0})
		return err
	}
	if err := w.Do(t.Context(), transmit); err != nil {
		t.Fatal(err)
	}
	r.conns[0].failNext = ErrCardRemoved
	if err := w.Do(t.Context(), transmit); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("Do on a removed card: %v, want ErrCardRemoved", err)
	}
	r.fail = ErrNoCard
	if err := w.Do(t.Context(), transmit); !errors.Is(err, ErrNoCard) {
		t.Fatalf("Do with the reader empty: %v, want ErrNoCard", err)
	}
	r.fail = nil
	if err := w.Do(t.Context(), transmit); err != nil {
		t.Fatalf("Do after reinsertion: %v", err)
	}
}

func TestWorkerContext(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	block := make(chan struct{})
	started := make(chan struct{})
	go w.Do(t.Context(), func(context.Context, Transmitter) error { close(started); <-block; return nil })
	<-started
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := w.Do(ctx, func(context.Context, Transmitter) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do behind a busy card with an expiring context: %v", err)
	}
	close(block)
	w.Close()
	if err := w.Do(t.Context(), func(context.Context, Transmitter) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}

// echo answers AA BB 90 00, or the scripted replies in order.
type echo struct{ replies [][]byte }

func (e *echo) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	if len(e.replies) > 0 {
		r := e.replies[0]
		e.replies = e.replies[1:]
		return r, nil
	}
	return []byte{0xAA, 0xBB, 0x90, 0x00}, nil
}

// insRedactor hides the command data of the instructions in cmd and the
// response data of those in rsp: a stand-in for a profile's redactor
// (profiles/registry tests the real ones through Trace).
type insRedactor struct{ cmd, rsp []byte }

func (r insRedactor) Redact(c []byte) (bool, bool) {
	return bytes.IndexByte(r.cmd, c[1]) >= 0, bytes.IndexByte(r.rsp, c[1]) >= 0
}

func TestTraceRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := Trace(&echo{}, log, insRedactor{cmd: []byte{0x20, 0x24}})
	pin := []byte{0x00, 0x20, 0x00, 0x80, 0x08, '9', '8', '7', '6', '5', '4', 0xFF, 0xFF}
	tr.Transmit(t.Context(), pin)
	change := append([]byte{0x00, 0x24, 0x00, 0x80, 0x10}, []byte("98765432ABCDEFGH")...)
	tr.Transmit(t.Context(), change)
	tr.Transmit(t.Context(), []byte{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00})
	out := buf.String()
	for _, secret := range []string{"39 38 37", "98765", "41 42 43", "ABCDEF"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace shows secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"00 20 00 80 [9 bytes redacted]", "00 24 00 80 [17 bytes redacted]", "00 CB 3F FF 05 5C 03 5F C1 05 00", "AA BB 90 00"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
}

// TestTraceRedactsAcrossExchanges: secrets that span several APDUs (a
// chained key import, a decryption fetched with GET RESPONSE) stay hidden.
func TestTraceRedactsAcrossExchanges(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	card := &echo{replies: [][]byte{
		{0x90, 0x00}, {0x90, 0x00}, // two blocks of a key import
		{0x7C, 0x05, 0x82, 0x03, 0x5E, 0xC2, 0xE7, 0x61, 0x02}, // decryption, more to come
		{0x5E, 0xC2, 0x90, 0x00},                               // the rest
		{0x01, 0x02, 0x90, 0x00},                               // an ordinary GET DATA
	}}
	tr := Trace(card, log, insRedactor{cmd: []byte{0xDB}, rsp: []byte{0x87}})
	ctx := t.Context()
	tr.Transmit(ctx, []byte{0x10, 0xDB, 0x3F, 0xFF, 0x06, 0x4D, 0x04, 0x53, 0x45, 0x43, 0x52})
	tr.Transmit(ctx, []byte{0x00, 0xDB, 0x3F, 0xFF, 0x04, 0x53, 0x45, 0x43, 0x52})
	tr.Transmit(ctx, []byte{0x00, 0x87, 0x07, 0x9D, 0x04, 0x7C, 0x02, 0x82, 0x00, 0x00})
	tr.Transmit(ctx, []byte{0x00, 0xC0, 0x00, 0x00, 0x02})
	tr.Transmit(ctx, []byte{0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00})
	out := buf.String()
	for _, secret := range []string{"53 45 43 52", "5E C2"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace shows secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"10 DB 3F FF [7 bytes redacted]", "00 DB 3F FF [5 bytes redacted]",
		"[7 bytes redacted] 61 02", "[2 bytes redacted] 90 00", "01 02 90 00"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
}

// TestTraceWithoutRedactor: a tracer given no Redactor hides the data of
// every command and response, and still shows headers and status words.
func TestTraceWithoutRedactor(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := Trace(&echo{}, log, nil)
	tr.Transmit(t.Context(), []byte{0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00})
	out := buf.String()
	for _, want := range []string{"00 CB 3F FF [5 bytes redacted]", "[2 bytes redacted] 90 00"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "5C 01 7E") || strings.Contains(out, "AA BB") {
		t.Errorf("trace shows data:\n%s", out)
	}
}

// errUnresponsive is a failure of a card that names no sentinel, as
// pcsc-lite's SCARD_W_UNRESPONSIVE_CARD does.
var errUnresponsive = errors.New("pcsc: card is unresponsive")

// errOpaque is what a request's function may make of any error (a code
// for the wire): it wraps nothing.
var errOpaque = errors.New("card error")

// TestWorkerMarksCardFailures: a failure of the card at any step of a
// request (connecting, the reset for a new principal, beginning the
// transaction, an exchange) comes back marked ErrCardFailed, with its
// cause still in the chain, even when the request's function hid it; the
// connection is dropped. The request's own errors and the end of its
// context are not marked, and keep the connection.
func TestWorkerMarksCardFailures(t *testing.T) {
	transmit := func(ctx context.Context, tx Transmitter) error {
		_, err := tx.Transmit(ctx, []byte{0, 0xCA, 0, 0})
		return err
	}
	hide := func(ctx context.Context, tx Transmitter) error {
		if err := transmit(ctx, tx); err != nil {
			return errOpaque
		}
		return nil
	}
	for _, tc := range []struct {
		name   string
		arm    func(r *fakeReader, c *fakeConn)
		fn     func(context.Context, Transmitter) error
		cause  error // in the chain, besides ErrCardFailed; nil: just marked
		calls  int   // runs of fn
		reopen bool  // the connection is dropped
	}{
		{"connect", func(r *fakeReader, c *fakeConn) { r.fail = ErrNoCard; c.failNext = errUnresponsive }, transmit, ErrNoCard, 0, true},
		{"reset unresponsive", func(r *fakeReader, c *fakeConn) { c.failReset = errUnresponsive }, transmit, errUnresponsive, 0, true},
		{"reset reset", func(r *fakeReader, c *fakeConn) { c.failReset = ErrCardReset }, transmit, ErrCardReset, 0, true},
		{"begin", func(r *fakeReader, c *fakeConn) { c.failBegin = errUnresponsive }, transmit, errUnresponsive, 0, true},
		{"transmit", func(r *fakeReader, c *fakeConn) { c.failNext = errUnresponsive }, transmit, errUnresponsive, 1, true},
		{"transmit hidden", func(r *fakeReader, c *fakeConn) { c.failNext = errUnresponsive }, hide, errUnresponsive, 1, true},
		{"transmit removed hidden", func(r *fakeReader, c *fakeConn) { c.failNext = ErrCardRemoved }, hide, ErrCardRemoved, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeReader{}
			w := NewWorker(r.open, nil)
			defer w.Close()
			if err := w.DoAs(t.Context(), "alice", transmit); err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			tc.arm(r, r.conns[0])
			r.mu.Unlock()
			if tc.name == "connect" {
				// Drop the connection first: the next request connects.
				if err := w.DoAs(t.Context(), "alice", transmit); !errors.Is(err, ErrCardFailed) {
					t.Fatalf("dropping the connection: %v", err)
				}
			}
			calls := 0
			err := w.DoAs(t.Context(), "bob", func(ctx context.Context, tx Transmitter) error {
				calls++
				return tc.fn(ctx, tx)
			})
			if !errors.Is(err, ErrCardFailed) {
				t.Errorf("err = %v, want ErrCardFailed", err)
			}
			if tc.cause != nil && !errors.Is(err, tc.cause) {
				t.Errorf("err = %v, want its cause %v in the chain", err, tc.cause)
			}
			if calls != tc.calls {
				t.Errorf("fn ran %d times, want %d", calls, tc.calls)
			}
			r.mu.Lock()
			r.fail = nil
			before := len(r.conns)
			r.mu.Unlock()
			if err := w.DoAs(t.Context(), "bob", transmit); err != nil {
				t.Fatalf("the next request: %v", err)
			}
			if got := len(r.conns) > before; got != tc.reopen {
				t.Errorf("a new connection for the next request: %v, want %v", got, tc.reopen)
			}
		})
	}
}

// TestWorkerAnswersAreNotCardFailures: the request's own errors (a status
// word such as a wrong PIN, its context) are not marked, and the
// connection stays.
func TestWorkerAnswersAreNotCardFailures(t *testing.T) {
	r := &fakeReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	wrongPIN := errors.New("63C2")
	if err := w.DoAs(t.Context(), "alice", func(context.Context, Transmitter) error { return wrongPIN }); err != wrongPIN {
		t.Errorf("the request's error: %v, want it as it is", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	err := w.DoAs(ctx, "alice", func(ctx context.Context, tx Transmitter) error {
		cancel()
		_, err := tx.Transmit(ctx, []byte{0, 0xCA, 0, 0})
		if err == nil {
			err = ctx.Err() // the fake does not look at ctx
		}
		return err
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrCardFailed) {
		t.Errorf("a request whose context ended: %v, want context.Canceled, not ErrCardFailed", err)
	}
	r.mu.Lock()
	r.conns[0].failReset = context.DeadlineExceeded
	r.mu.Unlock()
	if err := w.DoAs(t.Context(), "bob", func(context.Context, Transmitter) error { return nil }); errors.Is(err, ErrCardFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a reset cut short by its context: %v, want DeadlineExceeded, not ErrCardFailed", err)
	}
	if len(r.conns) != 1 {
		t.Errorf("%d connections, want the first kept", len(r.conns))
	}
}

// TestWorkerExecutionErrorIsCardFailure: a request that fails right after
// the card answered with an execution error (64xx, 65xx, 6Fxx) failed
// because of the card; one that fails after any other status word (a wrong
// PIN, a blocked one, a missing object) failed of itself; a request that
// got over an execution error and succeeded succeeded.
func TestWorkerExecutionErrorIsCardFailure(t *testing.T) {
	for _, tc := range []struct {
		sw     []byte
		fnErr  bool // the request's function fails on the answer
		marked bool
	}{
		{[]byte{0x65, 0x81}, true, true},
		{[]byte{0x64, 0x00}, true, true},
		{[]byte{0x6F, 0x00}, true, true},
		{[]byte{0x6F, 0x00}, false, false},
		{[]byte{0x63, 0xC2}, true, false},
		{[]byte{0x69, 0x83}, true, false},
		{[]byte{0x6A, 0x82}, true, false},
	} {
		t.Run(fmt.Sprintf("%X fails=%v", tc.sw, tc.fnErr), func(t *testing.T) {
			r := &fakeReader{}
			w := NewWorker(r.open, nil)
			defer w.Close()
			nop := func(context.Context, Transmitter) error { return nil }
			if err := w.DoAs(t.Context(), "alice", nop); err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			r.conns[0].mu.Lock()
			r.conns[0].reply = tc.sw
			r.conns[0].mu.Unlock()
			r.mu.Unlock()
			wire := errors.New("card status") // wraps nothing, as a wire code
			err := w.DoAs(t.Context(), "alice", func(ctx context.Context, tx Transmitter) error {
				rsp, err := tx.Transmit(ctx, []byte{0, 0x20, 0, 0x80})
				if err != nil {
					return err
				}
				if tc.fnErr && !bytes.Equal(rsp, []byte{0x90, 0x00}) {
					return wire
				}
				return nil
			})
			if got := errors.Is(err, ErrCardFailed); got != tc.marked {
				t.Errorf("err = %v: marked %v, want %v", err, got, tc.marked)
			}
			if tc.fnErr && !errors.Is(err, wire) {
				t.Errorf("err = %v, want the function's error in the chain", err)
			}
			if !tc.fnErr && err != nil {
				t.Errorf("err = %v, want success", err)
			}
		})
	}
}
