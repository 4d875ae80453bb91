package vpcd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoCard answers every command with its bytes after the header, then 9000.
type echoCard struct {
	mu     sync.Mutex
	atr    []byte
	resets int
	fail   error  // returned by Transmit when set
	big    []byte // returned by Transmit when set
}

func (c *echoCard) ATR() []byte { return c.atr }

func (c *echoCard) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, c.fail
	}
	if c.big != nil {
		return c.big, nil
	}
	return append(bytes.Clone(cmd[min(4, len(cmd)):]), 0x90, 0x00), nil
}

func (c *echoCard) Reset() {
	c.mu.Lock()
	c.resets++
	c.mu.Unlock()
}

func (c *echoCard) resetCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resets
}

// fakeVPCD is the vpcd end of one card connection.
type fakeVPCD struct {
	t    *testing.T
	conn net.Conn
}

func (f *fakeVPCD) send(payload []byte) {
	f.t.Helper()
	b, err := appendFrame(nil, payload)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.conn.Write(b); err != nil {
		f.t.Fatalf("write to card: %v", err)
	}
}

func (f *fakeVPCD) recv() []byte {
	f.t.Helper()
	f.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := readFrame(f.conn, make([]byte, MaxFrame))
	if err != nil {
		f.t.Fatalf("read from card: %v", err)
	}
	return bytes.Clone(b)
}

// expectClosed checks that the card side closed the connection.
func (f *fakeVPCD) expectClosed() {
	f.t.Helper()
	f.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := f.conn.Read(make([]byte, 1))
	if err != io.EOF {
		f.t.Fatalf("read after close: n=%d err=%v, want EOF", n, err)
	}
}

// listen starts a fake vpcd on a free loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func accept(t *testing.T, l net.Listener) *fakeVPCD {
	t.Helper()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeVPCD{t: t, conn: c}
}

// serve runs s.Serve in a goroutine and returns its result channel.
func serve(ctx context.Context, s *Server, addr string, card Card) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, addr, card) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

// lineLog is a slog text handler's writer that logs to t and keeps the
// lines.
type lineLog struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSuffix(p, []byte("\n")))
	l.t.Log(line)
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return len(p), nil
}

// count counts the lines that contain every one of subs.
func (l *lineLog) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// values returns the values of attribute key on every line that has it.
func (l *lineLog) values(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var vs []string
	for _, line := range l.lines {
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				vs = append(vs, v)
			}
		}
	}
	return vs
}

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	return len(p), nil
}

func TestServeProtocol(t *testing.T) {
	l := listen(t)
	card := &echoCard{atr: []byte{0x3B, 0x80, 0x80, 0x01, 0x01}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := serve(ctx, &Server{Logger: testLogger(t)}, l.Addr().String(), card)
	v := accept(t, l)

	v.send([]byte{ctrlPowerOn})
	v.send([]byte{ctrlGetATR})
	if got, want := v.recv(), card.atr; !bytes.Equal(got, want) {
		t.Errorf("GET ATR = %X, want %X", got, want)
	}
	if got, want := card.resetCount(), 1; got != want {
		t.Errorf("resets after power on = %d, want %d", got, want)
	}
	v.send([]byte{0x03}) // unknown control: ignored, no answer
	for _, tc := range []struct{ cmd, want []byte }{
		{[]byte{0x00, 0xA4, 0x04, 0x00}, []byte{0x90, 0x00}},
		{[]byte{0x80, 0xCA, 0x00, 0x00, 0x02, 0xAA, 0xBB, 0x00}, []byte{0x02, 0xAA, 0xBB, 0x00, 0x90, 0x00}},
		{bytes.Repeat([]byte{0x55}, 4+3+4000+2), append(bytes.Repeat([]byte{0x55}, 3+4000+2), 0x90, 0x00)},
	} {
		v.send(tc.cmd)
		if got := v.recv(); !bytes.Equal(got, tc.want) {
			t.Errorf("Transmit(%X) = %X, want %X", tc.cmd[:4], got, tc.want)
		}
	}
	v.send([]byte{ctrlReset})
	v.send([]byte{ctrlPowerOff})
	v.send([]byte{ctrlGetATR}) // in-order barrier: the resets happened before
	v.recv()
	if got, want := card.resetCount(), 3; got != want {
		t.Errorf("resets = %d, want %d", got, want)
	}

	cancel()
	if err := wait(t, done); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	v.expectClosed()
}

func TestServeEnds(t *testing.T) {
	errCard := errors.New("card broke")
	for _, tc := range []struct {
		name    string
		card    *echoCard
		do      func(v *fakeVPCD)
		wantErr error // errors.Is target; nil: any non-nil error
	}{
		{"vpcd closed", &echoCard{}, func(v *fakeVPCD) { v.conn.Close() }, io.EOF},
		{"card error", &echoCard{fail: errCard}, func(v *fakeVPCD) { v.send([]byte{0, 0xB0, 0, 0, 0}) }, errCard},
		{"empty frame", &echoCard{}, func(v *fakeVPCD) { v.conn.Write([]byte{0, 0}) }, errEmptyFrame},
		{"no ATR", &echoCard{}, func(v *fakeVPCD) { v.send([]byte{ctrlGetATR}) }, errNoATR},
		{"truncated frame", &echoCard{}, func(v *fakeVPCD) {
			v.conn.Write([]byte{0, 10, 1, 2, 3})
			v.conn.(*net.TCPConn).CloseWrite()
		}, io.ErrUnexpectedEOF},
		{"oversize response", &echoCard{big: make([]byte, MaxFrame+1)}, func(v *fakeVPCD) { v.send([]byte{0, 0xB0, 0, 0, 0}) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t)
			done := serve(t.Context(), &Server{Logger: testLogger(t)}, l.Addr().String(), tc.card)
			v := accept(t, l)
			tc.do(v)
			err := wait(t, done)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("Serve = %v, want %v", err, tc.wantErr)
			}
			if tc.name != "vpcd closed" {
				v.expectClosed()
			}
		})
	}
}

func TestServeDialError(t *testing.T) {
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	if err := Serve(t.Context(), addr, &echoCard{}); err == nil {
		t.Fatal("Serve to a closed port = nil, want an error")
	}
}

// TestPlugReconnects: Plug keeps the card inserted while "pcscd" closes the
// connection, and while the port is closed and opened again.
func TestPlugReconnects(t *testing.T) {
	l := listen(t)
	addr := l.Addr().String()
	card := &echoCard{atr: []byte{0x3B, 0x00}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	rec := &lineLog{t: t}
	log := slog.New(slog.NewTextHandler(rec, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { done <- (&Server{Logger: log}).Plug(ctx, addr, card) }()

	v := accept(t, l)
	v.send([]byte{ctrlGetATR})
	v.recv()
	v.conn.Close() // vpcd dropped the card

	v = accept(t, l)
	v.send([]byte{ctrlGetATR})
	v.recv()

	// pcscd goes away and comes back on the same port.
	l.Close()
	v.conn.Close()
	// A few failed dials, enough for the backoff to reach its cap.
	refused := func() int { return rec.count("vpcd: reconnecting", "connection refused") }
	for deadline := time.Now().Add(30 * time.Second); refused() < 6; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) { // a hang guard
			t.Fatalf("%d failed dials logged, want 6", refused())
		}
	}
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	t.Cleanup(func() { l2.Close() })
	v = accept(t, l2)
	// The wait between attempts grows to the 100 ms cap and no further.
	for _, b := range rec.values("backoff") {
		if d, err := time.ParseDuration(b); err != nil || d > 100*time.Millisecond {
			t.Errorf("a backoff of %s, want at most 100 ms", b)
		}
	}
	v.send([]byte{0x00, 0x01, 0x02, 0x03, 0x04})
	if got, want := v.recv(), []byte{0x04, 0x90, 0x00}; !bytes.Equal(got, want) {
		t.Errorf("Transmit = %X, want %X", got, want)
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Errorf("Plug = %v, want nil", err)
	}
	v.expectClosed()
}

func TestReadFrame(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{"one byte", []byte{0, 1, 4}, []byte{4}, nil},
		{"apdu", []byte{0, 4, 0, 0xA4, 4, 0}, []byte{0, 0xA4, 4, 0}, nil},
		{"empty stream", nil, nil, io.EOF},
		{"half header", []byte{0}, nil, io.ErrUnexpectedEOF},
		{"short payload", []byte{0, 3, 1}, nil, io.ErrUnexpectedEOF},
		{"no payload", []byte{0, 3}, nil, io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0}, nil, errEmptyFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readFrame(bytes.NewReader(tc.in), make([]byte, MaxFrame))
			if !errors.Is(err, tc.wantErr) || !bytes.Equal(got, tc.want) {
				t.Errorf("readFrame(%X) = %X, %v; want %X, %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
	// The largest frame fits; a buffer too small is an error, not a panic.
	big := binary.BigEndian.AppendUint16(nil, MaxFrame)
	big = append(big, make([]byte, MaxFrame)...)
	if got, err := readFrame(bytes.NewReader(big), make([]byte, MaxFrame)); err != nil || len(got) != MaxFrame {
		t.Errorf("readFrame(max) = %d bytes, %v", len(got), err)
	}
	if _, err := readFrame(bytes.NewReader(big), make([]byte, 10)); err == nil {
		t.Error("readFrame into a small buffer = nil error")
	}
	if _, err := appendFrame(nil, make([]byte, MaxFrame+1)); err == nil {
		t.Error("appendFrame(MaxFrame+1) = nil error")
	}
}

// FuzzReadFrame: any byte stream splits into frames that re-encode to the
// bytes they were read from, or into an error; never a panic.
func FuzzReadFrame(f *testing.F) {
	for _, p := range [][]byte{{ctrlGetATR}, {ctrlPowerOn}, {0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00}} {
		b, _ := appendFrame(nil, p)
		f.Add(b)
	}
	f.Add([]byte{0, 0})
	f.Add([]byte{0xFF, 0xFF, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		buf := make([]byte, MaxFrame)
		var out []byte
		for {
			before := len(in) - r.Len()
			p, err := readFrame(r, buf)
			if err != nil {
				if errors.Is(err, io.EOF) && before != len(in) {
					t.Fatalf("io.EOF with %d bytes unread", len(in)-before)
				}
				break
			}
			if len(p) == 0 || len(p) > MaxFrame {
				t.Fatalf("payload of %d bytes", len(p))
			}
			if out, err = appendFrame(out, p); err != nil {
				t.Fatal(err)
			}
			if consumed := in[:len(in)-r.Len()]; !bytes.Equal(out, consumed) {
				t.Fatalf("re-encoded %X, read from %X", out, consumed)
			}
		}
	})
}

// FuzzSession: a hostile vpcd stream ends the session with an error, never
// a panic, and every answer is a well-formed frame.
func FuzzSession(f *testing.F) {
	var seed []byte
	for _, p := range [][]byte{{ctrlPowerOn}, {ctrlGetATR}, {0x00, 0xA4, 0x04, 0x00, 0x01, 0xA0}, {0x09}, {ctrlPowerOff}} {
		seed, _ = appendFrame(seed, p)
	}
	f.Add(seed)
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 2, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		var w bytes.Buffer
		card := &echoCard{atr: []byte{0x3B, 0x80, 0x80, 0x01, 0x01}}
		err := serveSession(t.Context(), bytes.NewReader(in), &w, card, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Fatal("serveSession returned nil")
		}
		buf := make([]byte, MaxFrame)
		for w.Len() > 0 {
			if _, err := readFrame(&w, buf); err != nil {
				t.Fatalf("answer is not a frame: %v", err)
			}
		}
	})
}
