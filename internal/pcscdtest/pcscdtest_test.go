package pcscdtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
)

// needPCSCD fails the test when pcscd cannot run, unless PSCS_SKIP_PCSCD=1.
func needPCSCD(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		if os.Getenv(SkipEnv) == "1" {
			t.Skipf("%v (%s=1)", err, SkipEnv)
		}
		t.Fatalf("%v; set %s=1 to skip", err, SkipEnv)
	}
}

func start(t *testing.T, opts Options) *PCSCD {
	t.Helper()
	p, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return p
}

// probeCard records what vpcd asks of it.
type probeCard struct {
	mu   sync.Mutex
	atrs int
	seen chan struct{}
}

func (c *probeCard) ATR() []byte {
	c.mu.Lock()
	c.atrs++
	c.mu.Unlock()
	select {
	case c.seen <- struct{}{}:
	default:
	}
	return []byte{0x3B, 0x80, 0x80, 0x01, 0x01}
}

func (c *probeCard) Transmit(context.Context, []byte) ([]byte, error) {
	return []byte{0x90, 0x00}, nil
}
func (c *probeCard) Reset() {}

// expectPolled waits until pcscd asks the card for its ATR: the card is in
// a reader of that pcscd.
func expectPolled(t *testing.T, c *probeCard) {
	t.Helper()
	select {
	case <-c.seen:
	case <-time.After(5 * time.Second):
		t.Fatal("pcscd never asked the card for its ATR")
	}
}

func alive(pid int) bool {
	if pid == 0 {
		return false
	}
	// A zombie is dead too: look at the state in /proc.
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestStartStop(t *testing.T) {
	needPCSCD(t)
	p := start(t, Options{Entries: 2})
	if got, want := p.Readers, []string{"pscs sim 0 00 00", "pscs sim 0 00 01", "pscs sim 1 00 00", "pscs sim 1 00 01"}; !slices.Equal(got, want) {
		t.Errorf("Readers = %q, want %q", got, want)
	}
	if st, err := os.Stat(p.Socket); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket %s: %v", p.Socket, err)
	}
	pid := p.Pid()
	if !alive(pid) {
		t.Fatalf("pcscd pid %d not running", pid)
	}

	// The real reader names, as a PC/SC client sees them.
	if scan, err := exec.LookPath("pcsc_scan"); err == nil {
		cmd := exec.CommandContext(t.Context(), scan, "-r")
		cmd.Env = append(os.Environ(), p.Env())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pcsc_scan -r: %v\n%s", err, out)
		}
		for i, r := range p.Readers {
			if line := itoa(i) + ": " + r; !bytes.Contains(out, []byte(line)) {
				t.Errorf("pcsc_scan -r output lacks %q:\n%s", line, out)
			}
		}
	} else {
		t.Log("pcsc_scan not installed (apt-get install pcsc-tools): reader names not checked against pcscd")
	}

	// Every reader's port reaches this pcscd.
	for i := range p.Readers {
		card := &probeCard{seen: make(chan struct{}, 1)}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- vpcd.Serve(ctx, p.CardAddr(i), card) }()
		t.Logf("reader %d: %s", i, p.CardAddr(i))
		expectPolled(t, card)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reader %d: Serve = %v", i, err)
		}
	}

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop = %v, want nil", err)
	}
	if alive(pid) {
		t.Errorf("pcscd %d still running after Stop", pid)
	}
	if _, err := os.Stat(p.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary dir %s left after Stop: %v", p.Dir, err)
	}
	if err := p.Restart(t.Context()); err == nil {
		t.Error("Restart after Stop = nil, want an error")
	}
}

// TestParallelStarts: simultaneous pcscds get distinct ports and sockets.
func TestParallelStarts(t *testing.T) {
	needPCSCD(t)
	const n = 4
	ps := make([]*PCSCD, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { ps[i], errs[i] = Start(t.Context(), Options{Entries: 2}) })
	}
	wg.Wait()
	for i, p := range ps {
		if errs[i] != nil {
			t.Fatalf("Start %d: %v", i, errs[i])
		}
		t.Cleanup(func() { p.Stop() })
	}
	seen := map[string]int{}
	for i, p := range ps {
		for r := range p.Readers {
			if j, dup := seen[p.CardAddr(r)]; dup {
				t.Errorf("pcscd %d and %d share %s", j, i, p.CardAddr(r))
			}
			seen[p.CardAddr(r)] = i
		}
		if j, dup := seen[p.Socket]; dup {
			t.Errorf("pcscd %d and %d share socket %s", j, i, p.Socket)
		}
		seen[p.Socket] = i
	}
}

// TestRestart: same socket and ports after a restart; a plugged card comes
// back by itself.
func TestRestart(t *testing.T) {
	needPCSCD(t)
	dir := t.TempDir()
	var log bytes.Buffer
	var logMu sync.Mutex
	p := start(t, Options{Dir: dir, Log: lockedWriter{&logMu, &log}})
	card := &probeCard{seen: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go vpcd.Plug(ctx, p.CardAddr(1), card)
	expectPolled(t, card)

	pid, socket, addr := p.Pid(), p.Socket, p.CardAddr(1)
	start := time.Now()
	if err := p.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(start))
	if alive(pid) {
		t.Errorf("old pcscd %d still running", pid)
	}
	if p.Pid() == pid || !alive(p.Pid()) {
		t.Errorf("new pid %d (old %d) not running", p.Pid(), pid)
	}
	if p.Socket != socket || p.CardAddr(1) != addr {
		t.Errorf("after restart socket, addr = %s, %s; want %s, %s", p.Socket, p.CardAddr(1), socket, addr)
	}
	for len(card.seen) > 0 {
		<-card.seen
	}
	expectPolled(t, card)
	if filepath.Dir(p.Socket) != filepath.Join(dir, "run") {
		t.Errorf("socket %s not under %s", p.Socket, dir)
	}
	p.Stop()
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("Stop removed the caller's Dir: %v", err)
	}
	if alive(pid) {
		t.Error("pcscd still running")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
