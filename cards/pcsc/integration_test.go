//go:build cgo

package pcsc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
)

// srv is the private pcscd of this test binary; nil with PSCS_SKIP_PCSCD=1
// on a machine without pcscd.
var srv *pcscdtest.PCSCD

// Readers of srv, one per test so that tests do not see each other's cards.
const (
	readerTransmit = iota
	readerWatch
	readerRemoved
	readerRestart
	readerBench
	readerBenchInsert
)

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 3}, func(p *pcscdtest.PCSCD) { srv = p })
}

// timeout bounds every wait for pcscd to notice a card, a hang guard
// generous for a loaded machine: pcscd polls about every 400 ms.
// Latencies are measured in BenchmarkInsertRemove.
const timeout = 60 * time.Second

var echoATR = []byte{0x3B, 0x80, 0x80, 0x01, 0x01}

// echoCard answers a command with its data field, then 9000.
type echoCard struct {
	atr    []byte
	resets atomic.Int32
	apdus  atomic.Int32
}

func newEchoCard() *echoCard { return &echoCard{atr: echoATR} }

func (c *echoCard) ATR() []byte { return c.atr }
func (c *echoCard) Reset()      { c.resets.Add(1) }

func (c *echoCard) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	c.apdus.Add(1)
	var data []byte
	if len(cmd) > 5 {
		data = cmd[5:min(len(cmd), 5+int(cmd[4]))]
	}
	return append(bytes.Clone(data), 0x90, 0x00), nil
}

func setup(t testing.TB) *pcsc.Context {
	t.Helper()
	if srv == nil {
		t.Skip("no private pcscd: " + pcscdtest.SkipEnv + "=1 and pcscd or vpcd missing")
	}
	c, err := pcsc.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// insert serves card in reader until the test ends or the returned
// function pulls it. With plug, the card stays inserted across pcscd
// restarts. pull returns once pcscd has noticed, so that a card inserted
// next in the same reader is not mistaken for this one.
func insert(t testing.TB, c *pcsc.Context, reader int, card vpcd.Card, plug bool) (pull func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		if plug {
			done <- vpcd.Plug(ctx, srv.CardAddr(reader), card)
		} else {
			done <- vpcd.Serve(ctx, srv.CardAddr(reader), card)
		}
	}()
	var pulled bool
	pull = func() {
		if pulled {
			return
		}
		pulled = true
		in, _ := readerState(c, srv.Readers[reader])
		cancel()
		if err := <-done; err != nil {
			t.Errorf("vpcd serve of reader %d: %v", reader, err)
		}
		waitPresent(t, c, srv.Readers[reader], false)
		if in.Present {
			waitEvents(t, c, srv.Readers[reader], in.Events)
		}
	}
	t.Cleanup(pull)
	return pull
}

// readerState returns reader's state from c.Readers.
func readerState(c *pcsc.Context, reader string) (pcsc.Reader, error) {
	rs, err := c.Readers(context.Background())
	if err != nil {
		return pcsc.Reader{}, err
	}
	i := slices.IndexFunc(rs, func(r pcsc.Reader) bool { return r.Name == reader })
	if i < 0 {
		return pcsc.Reader{}, fmt.Errorf("reader %q not listed", reader)
	}
	return rs[i], nil
}

// waitEvents polls Readers until reader's event counter differs from old:
// pcscd's reader thread saw a card go in or out (see Reader.Events).
func waitEvents(t testing.TB, c *pcsc.Context, reader string, old uint16) pcsc.Reader {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := readerState(c, reader)
		if err == nil && r.Events != old {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader %q: event counter still %d after %v (last: %+v, %v)", reader, old, timeout, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPresent polls Readers until reader holds a card (or not).
func waitPresent(t testing.TB, c *pcsc.Context, reader string, want bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rs, err := c.Readers(context.Background())
		if err == nil {
			i := slices.IndexFunc(rs, func(r pcsc.Reader) bool { return r.Name == reader })
			if i >= 0 && rs[i].Present == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader %q: present=%v not seen within %v (last: %v, %v)", reader, want, timeout, rs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stamped is an event with the time Watch delivered it.
type stamped struct {
	pcsc.Event
	at time.Time
}

// watch runs c.Watch until the test ends.
func watch(t testing.TB, c *pcsc.Context) <-chan stamped {
	t.Helper()
	events := make(chan pcsc.Event)
	out := make(chan stamped, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, events) }()
	go func() {
		for {
			select {
			case ev := <-events:
				select {
				case out <- stamped{ev, time.Now()}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch = %v, want nil after cancel", err)
			}
		case <-time.After(timeout):
			t.Error("Watch did not return after cancel")
		}
	})
	return out
}

// expectEvent waits for an event of kind in reader, skipping other readers'
// events, and returns it with the time Watch delivered it.
func expectEvent(t testing.TB, events <-chan stamped, reader string, kind pcsc.EventKind) (pcsc.Event, time.Time) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-events:
			if ev.Reader != reader {
				continue
			}
			if ev.Kind != kind {
				t.Fatalf("event %v in %q, want %v", ev.Kind, reader, kind)
			}
			return ev.Event, ev.at
		case <-deadline:
			t.Fatalf("no %v event for %q within %v", kind, reader, timeout)
		}
	}
}

func TestReaders(t *testing.T) {
	c := setup(t)
	rs, err := c.Readers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, srv.Readers) {
		t.Errorf("Readers = %q, want %q", names, srv.Readers)
	}
}

func TestTransmit(t *testing.T) {
	c := setup(t)
	reader := srv.Readers[readerTransmit]
	card := newEchoCard()
	insert(t, c, readerTransmit, card, false)
	waitPresent(t, c, reader, true)

	k, err := c.Connect(t.Context(), reader)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if got := k.ATR(); !bytes.Equal(got, echoATR) {
		t.Errorf("ATR = %X, want %X", got, echoATR)
	}
	if got := k.Reader(); got != reader {
		t.Errorf("Reader = %q, want %q", got, reader)
	}

	for _, tc := range []struct{ cmd, want []byte }{
		{[]byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00}, []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x90, 0x00}},
		{[]byte{0x00, 0x84, 0x00, 0x00, 0x08}, []byte{0x90, 0x00}},
		{append([]byte{0x80, 0x01, 0x00, 0x00, 0xFF}, bytes.Repeat([]byte{0x5A}, 255)...), append(bytes.Repeat([]byte{0x5A}, 255), 0x90, 0x00)},
	} {
		got, err := k.Transmit(t.Context(), tc.cmd)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("Transmit(%X) = %X, %v; want %X", tc.cmd[:4], got, err, tc.want)
		}
	}

	if err := k.Begin(t.Context()); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if got, err := k.Transmit(t.Context(), []byte{0x00, 0xCA, 0x01, 0x02, 0x01, 0x77}); err != nil || !bytes.Equal(got, []byte{0x77, 0x90, 0x00}) {
		t.Errorf("Transmit in transaction = %X, %v", got, err)
	}
	if err := k.End(); err != nil {
		t.Fatalf("End: %v", err)
	}

	if _, err := k.Transmit(t.Context(), nil); err == nil {
		t.Error("Transmit(nil) = nil error")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	before := card.apdus.Load()
	if _, err := k.Transmit(ctx, []byte{0, 0xB0, 0, 0, 0}); !errors.Is(err, context.Canceled) {
		t.Errorf("Transmit(cancelled ctx) = %v, want context.Canceled", err)
	}
	if err := k.Begin(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Begin(cancelled ctx) = %v, want context.Canceled", err)
	}
	if got := card.apdus.Load(); got != before {
		t.Errorf("a cancelled Transmit reached the card")
	}

	// A second client shares the card.
	k2, err := c.Connect(t.Context(), reader)
	if err != nil {
		t.Fatalf("second Connect: %v", err)
	}
	if _, err := k2.Transmit(t.Context(), []byte{0, 0xB0, 0, 0, 0}); err != nil {
		t.Errorf("second card: %v", err)
	}
	k2.Close()

	if err := k.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := k.Transmit(t.Context(), []byte{0, 0xB0, 0, 0, 0}); !errors.Is(err, cards.ErrClosed) {
		t.Errorf("Transmit after Close = %v, want ErrClosed", err)
	}
}

func TestConnectErrors(t *testing.T) {
	c := setup(t)
	for _, tc := range []struct {
		reader string
		want   error
	}{
		{srv.Readers[readerRemoved], cards.ErrNoCard}, // nobody inserts a card here in this test
		{"no such reader 00 00", cards.ErrNoReader},
	} {
		k, err := c.Connect(t.Context(), tc.reader)
		if !errors.Is(err, tc.want) {
			t.Errorf("Connect(%q) = %v, want %v", tc.reader, err, tc.want)
		}
		if k != nil {
			k.Close()
		}
	}
	c.Close()
	if _, err := c.Readers(t.Context()); !errors.Is(err, cards.ErrClosed) {
		t.Errorf("Readers after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Connect(t.Context(), srv.Readers[0]); !errors.Is(err, cards.ErrClosed) {
		t.Errorf("Connect after Close = %v, want ErrClosed", err)
	}
	if err := c.Watch(t.Context(), make(chan pcsc.Event, 16)); !errors.Is(err, cards.ErrClosed) {
		t.Errorf("Watch after Close = %v, want ErrClosed", err)
	}
}

// TestWatch: a card pulled and inserted again is seen by Watch.
func TestWatch(t *testing.T) {
	c := setup(t)
	reader := srv.Readers[readerWatch]
	events := watch(t, c)

	for round := range 2 {
		start := time.Now()
		pull := insert(t, c, readerWatch, newEchoCard(), false)
		ev, at := expectEvent(t, events, reader, pcsc.Inserted)
		if !bytes.Equal(ev.ATR, echoATR) {
			t.Errorf("Inserted ATR = %X, want %X", ev.ATR, echoATR)
		}
		t.Logf("round %d: insertion seen after %v", round, at.Sub(start))
		start = time.Now()
		pull()
		_, at = expectEvent(t, events, reader, pcsc.Removed)
		t.Logf("round %d: removal seen after %v", round, at.Sub(start))
	}
}

// TestWatchInitialState: cards present when Watch starts are reported.
func TestWatchInitialState(t *testing.T) {
	c := setup(t)
	reader := srv.Readers[readerWatch]
	insert(t, c, readerWatch, newEchoCard(), false)
	waitPresent(t, c, reader, true)
	events := watch(t, c)
	expectEvent(t, events, reader, pcsc.Inserted)
}

// TestReaderEvents: pcscd's event counter of a reader (Reader.Events)
// moves when a card goes in, and again when it goes out, and not while it
// stays.
func TestReaderEvents(t *testing.T) {
	c := setup(t)
	reader := srv.Readers[readerRemoved]
	before, err := readerState(c, reader)
	if err != nil {
		t.Fatal(err)
	}
	if before.Present {
		t.Fatalf("reader %q holds a card", reader)
	}
	pull := insert(t, c, readerRemoved, newEchoCard(), false)
	waitPresent(t, c, reader, true)
	in, err := readerState(c, reader)
	if err != nil || !in.Present || in.Events == before.Events {
		t.Fatalf("card inserted: %+v, %v; want present, event counter moved from %d", in, err, before.Events)
	}
	k, err := c.Connect(t.Context(), reader)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if _, err := k.Transmit(t.Context(), []byte{0, 0xB0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if still, err := readerState(c, reader); err != nil || still.Events != in.Events {
		t.Errorf("card in use: %+v, %v; want event counter %d still", still, err, in.Events)
	}
	pull() // returns once the counter moved again
	if out, err := readerState(c, reader); err != nil || out.Present || out.Events == in.Events {
		t.Errorf("card pulled: %+v, %v; want empty, event counter moved from %d", out, err, in.Events)
	}
}

// TestCallsHonourContext: with pcscd stopped (SIGSTOP: libpcsclite waits
// for its answer without a timeout), Readers and Connect return when their
// ctx ends; once pcscd goes on, the same Context works again.
func TestCallsHonourContext(t *testing.T) {
	c := setup(t)
	if _, err := c.Readers(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid := srv.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	// call runs f with a ctx that ends soon, by when f is most likely
	// waiting for pcscd (if not, it returns ctx's error all the same), and
	// fails the test if f does not return within timeout of that.
	call := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s with pcscd stopped = %v, want its ctx's end", what, err)
			}
		case <-time.After(timeout):
			resume()
			t.Fatalf("%s with pcscd stopped: no return within %v of ctx's end", what, timeout)
		}
	}
	// The first Readers reaches pcscd before its ctx ends, or not: either
	// way it returns; the second waits for the first, left to finish.
	call("Readers", func(ctx context.Context) error { _, err := c.Readers(ctx); return err })
	call("Readers after an abandoned Readers", func(ctx context.Context) error { _, err := c.Readers(ctx); return err })
	call("Connect", func(ctx context.Context) error {
		k, err := c.Connect(ctx, srv.Readers[readerTransmit])
		if err == nil {
			k.Close()
		}
		return err
	})
	resume()
	if _, err := c.Readers(t.Context()); err != nil {
		t.Fatalf("Readers once pcscd goes on: %v", err)
	}
}

// TestRemovedCard: Transmit to a pulled card fails with ErrCardRemoved or
// ErrNoCard, and Reconnect works once a card is back.
func TestRemovedCard(t *testing.T) {
	c := setup(t)
	reader := srv.Readers[readerRemoved]
	pull := insert(t, c, readerRemoved, newEchoCard(), false)
	waitPresent(t, c, reader, true)
	k, err := c.Connect(t.Context(), reader)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if _, err := k.Transmit(t.Context(), []byte{0, 0xB0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}

	pull()
	waitPresent(t, c, reader, false)
	removed := func(err error) bool { return errors.Is(err, cards.ErrCardRemoved) || errors.Is(err, cards.ErrNoCard) }
	for range 2 {
		rsp, err := k.Transmit(t.Context(), []byte{0, 0xB0, 0, 0, 0})
		if !removed(err) {
			t.Errorf("Transmit to a removed card = %X, %v; want ErrCardRemoved or ErrNoCard", rsp, err)
		}
		t.Logf("Transmit to a removed card: %v", err)
	}
	if err := k.Begin(t.Context()); !removed(err) {
		t.Errorf("Begin on a removed card = %v, want ErrCardRemoved or ErrNoCard", err)
	}
	if err := k.Reconnect(t.Context()); !removed(err) {
		t.Errorf("Reconnect with no card = %v, want ErrCardRemoved or ErrNoCard", err)
	}

	card := newEchoCard()
	insert(t, c, readerRemoved, card, false)
	waitPresent(t, c, reader, true)
	if err := k.Reconnect(t.Context()); err != nil {
		t.Fatalf("Reconnect: %v", err)
	}
	if got, err := k.Transmit(t.Context(), []byte{0, 0xCA, 0, 0, 1, 0x42}); err != nil || !bytes.Equal(got, []byte{0x42, 0x90, 0x00}) {
		t.Errorf("Transmit after Reconnect = %X, %v", got, err)
	}
}

// TestRestart: pcscd killed and started again under a running Context,
// Watch and Card.
func TestRestart(t *testing.T) {
	c := setup(t)
	reader := srv.Readers[readerRestart]
	events := watch(t, c)
	insert(t, c, readerRestart, newEchoCard(), true)
	expectEvent(t, events, reader, pcsc.Inserted)
	k, err := c.Connect(t.Context(), reader)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	apdu := []byte{0, 0xCA, 0, 0, 2, 0xBE, 0xEF}
	want := []byte{0xBE, 0xEF, 0x90, 0x00}
	if _, err := k.Transmit(t.Context(), apdu); err != nil {
		t.Fatal(err)
	}

	for round := range 2 {
		start := time.Now()
		if err := srv.Restart(t.Context()); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		restarted := time.Now()
		_, at := expectEvent(t, events, reader, pcsc.Removed)
		t.Logf("round %d: restart %v, removal seen %v after restart began", round, restarted.Sub(start), at.Sub(start))
		_, at = expectEvent(t, events, reader, pcsc.Inserted)
		t.Logf("round %d: card back in Watch %v after restart", round, at.Sub(restarted))

		rsp, err := k.Transmit(t.Context(), apdu)
		if !errors.Is(err, cards.ErrServiceUnavailable) && !errors.Is(err, cards.ErrCardRemoved) {
			t.Errorf("Transmit on a handle from before the restart = %X, %v; want ErrServiceUnavailable", rsp, err)
		}
		t.Logf("round %d: old handle: %v", round, err)

		waitPresent(t, c, reader, true) // Readers works again on the same Context
		if err := k.Reconnect(t.Context()); err != nil {
			t.Fatalf("Reconnect after restart: %v", err)
		}
		if got, err := k.Transmit(t.Context(), apdu); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Transmit after Reconnect = %X, %v; want %X", got, err, want)
		}
		k2, err := c.Connect(t.Context(), reader)
		if err != nil {
			t.Fatalf("Connect after restart: %v", err)
		}
		if got, err := k2.Transmit(t.Context(), apdu); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Transmit on a new connection = %X, %v; want %X", got, err, want)
		}
		k2.Close()
	}
}

// BenchmarkTransmitRoundTrip: one APDU through libpcsclite, pcscd, vpcd and
// the in-process card.
func BenchmarkTransmitRoundTrip(b *testing.B) {
	c := setup(b)
	reader := srv.Readers[readerBench]
	card := newEchoCard()
	insert(b, c, readerBench, card, false)
	waitPresent(b, c, reader, true)
	k, err := c.Connect(b.Context(), reader)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	apdu := []byte{0x80, 0xCA, 0x00, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF, 0x00}
	b.ResetTimer()
	for b.Loop() {
		if _, err := k.Transmit(b.Context(), apdu); err != nil {
			b.Fatal(err)
		}
	}
	if got := card.apdus.Load(); got < int32(b.N) {
		b.Fatalf("card saw %d APDUs, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/apdu")
}

// BenchmarkInsertRemove: how long Watch takes to report a card inserted
// and pulled (pcscd polls vpcd about every 400 ms). Use -benchtime=10x.
func BenchmarkInsertRemove(b *testing.B) {
	c := setup(b)
	reader := srv.Readers[readerBenchInsert]
	events := watch(b, c)
	var ins, rem time.Duration
	for b.Loop() {
		start := time.Now()
		pull := insert(b, c, readerBenchInsert, newEchoCard(), false)
		_, at := expectEvent(b, events, reader, pcsc.Inserted)
		ins += at.Sub(start)
		start = time.Now()
		pull()
		_, at = expectEvent(b, events, reader, pcsc.Removed)
		rem += at.Sub(start)
	}
	b.ReportMetric(float64(ins.Milliseconds())/float64(b.N), "ms/insert")
	b.ReportMetric(float64(rem.Milliseconds())/float64(b.N), "ms/remove")
}
