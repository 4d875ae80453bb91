package cards

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// checkedConn is a fakeConn that also answers Check, as cards/pcsc.Card
// does with SCardStatus.
type checkedConn struct {
	*fakeConn
	failCheck error // the next Check's answer
	checks    int
}

func (c *checkedConn) Check(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	err := c.failCheck
	c.failCheck = nil
	return err
}

type checkedReader struct {
	mu    sync.Mutex
	conns []*checkedConn
}

func (r *checkedReader) open(context.Context) (Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &checkedConn{fakeConn: &fakeConn{id: len(r.conns) + 1}}
	r.conns = append(r.conns, c)
	return c, nil
}

// TestWorkerSeesResetsByOthers: another client's reset of the card shows
// in Connections, whether the worker meets it ending a transaction of the
// same principal (SCARD_W_RESET_CARD from Begin) or before its own reset
// for another principal, which would hide it (SCardReconnect clears the
// flag): the worker asks the connection first.
func TestWorkerSeesResetsByOthers(t *testing.T) {
	r := &checkedReader{}
	w := NewWorker(r.open, nil)
	defer w.Close()
	var seen uint64
	saw := func(context.Context, Transmitter) error { seen = w.Connections(); return nil }

	steps := []struct {
		name  string
		who   string
		setup func()
		conns uint64 // Connections() inside the request
	}{
		{"first request", "alice", nil, 1},
		{"same principal", "alice", nil, 1},
		{"another principal, card untouched", "bob", nil, 1},
		{"another principal after a reset by another client", "alice", func() { r.conns[0].failCheck = ErrCardReset }, 2},
		{"same principal after a reset by another client", "alice", func() { r.conns[1].failBegin = ErrCardReset }, 3},
	}
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		if err := w.DoAs(t.Context(), s.who, saw); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if seen != s.conns {
			t.Errorf("%s: Connections() = %d in the request, want %d", s.name, seen, s.conns)
		}
	}
	if !r.conns[0].closed || !r.conns[1].closed {
		t.Error("the connections to a card reset by another client were not closed")
	}
	if got := r.conns[1].resets; got != 1 {
		t.Errorf("the connection made after the reset was reset %d times before the request, want 1 (a new connection)", got)
	}
	if got := r.conns[0].checks; got != 2 {
		t.Errorf("%d checks of the first connection, want 2 (one per change of principal)", got)
	}
}

// TestTraceConn: a worker whose connections are traced logs their
// exchanges at debug level with the PIN redacted, keeps the connection's
// Checker, and logs nothing above debug.
func TestTraceConn(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
		r := &checkedReader{}
		open := func(ctx context.Context) (Conn, error) {
			c, err := r.open(ctx)
			if err != nil {
				return nil, err
			}
			tc := TraceConn(c, log, insRedactor{cmd: []byte{0x20}})
			if _, ok := tc.(Checker); !ok {
				t.Error("a traced connection lost its Checker")
			}
			return tc, nil
		}
		w := NewWorker(open, nil)
		pin := []byte{0x00, 0x20, 0x00, 0x80, 0x08, '9', '8', '7', '6', '5', '4', 0xFF, 0xFF}
		for _, who := range []string{"alice", "bob"} {
			if err := w.DoAs(t.Context(), who, func(ctx context.Context, tx Transmitter) error {
				_, err := tx.Transmit(ctx, pin)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		out := buf.String()
		if got := strings.Count(out, `cmd="00 20 00 80 [9 bytes redacted]"`); level == slog.LevelDebug && got != 2 || level != slog.LevelDebug && out != "" {
			t.Errorf("level %v: %d redacted VERIFYs traced, log:\n%s", level, got, out)
		}
		if strings.Contains(out, "39 38 37") {
			t.Errorf("the trace shows the PIN:\n%s", out)
		}
		if r.conns[0].checks != 1 {
			t.Errorf("level %v: %d checks through the traced connection, want 1 (the change of principal)", level, r.conns[0].checks)
		}
	}
}
