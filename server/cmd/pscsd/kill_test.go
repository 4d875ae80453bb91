package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// TestKill9UnderLoad: pscsd is killed with SIGKILL while eight delegates
// sign; its audit log still verifies, and every signature a delegate
// received is in it (the record is durable before the answer leaves).
// Started again on the same state, pscsd opens its store and log cleanly,
// serves at the same address, and the delegate signs with the same
// configuration and virtual PIN.
func TestKill9UnderLoad(t *testing.T) {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(bin, "--demo", "--state", state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
		}
		cmd.Wait()
		// The demo's swtpm dies with pscsd (it is started with Pdeathsig).
	}()
	conf := filepath.Join(state, "demo", "client.conf")
	waitForFile(t, conf)
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Retries = -1 // no resend: count only what came back
	l := startLoad(cfg, bytes.TrimSpace(vpin))
	l.waitFor(t, 16) // signing, with signatures in flight
	cmd.Process.Signal(syscall.SIGKILL)
	killed = true
	received := l.stop()
	if len(received) == 0 {
		t.Fatal("no signature before the kill")
	}

	logged, n, err := signaturesInLog(t, filepath.Join(state, "audit.log"))
	if err != nil && !errors.Is(err, audit.ErrTorn) { // a record cut by the kill is fine
		t.Fatalf("audit log after SIGKILL: %d records, then %v", n, err)
	}
	missing := 0
	for _, sig := range received {
		if !logged[string(sig)] {
			missing++
		}
	}
	t.Logf("%d signatures received before SIGKILL, %d audit records", len(received), n)
	if missing > 0 {
		t.Errorf("%d of %d signatures a delegate received are not in the audit log", missing, len(received))
	}

	// Restart on the same state.
	again := exec.Command(bin, "--demo", "--state", state)
	again.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	again.Stderr = &stderr
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		again.Process.Signal(syscall.SIGTERM)
		again.Wait()
		if t.Failed() {
			t.Logf("the restarted pscsd said:\n%s", stderr.String())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.Retries = 0
	var c *client.Client
	for {
		if c, err = client.Dial(ctx, cfg); err == nil {
			if _, err = c.Login(ctx, 1, bytes.TrimSpace(vpin)); err == nil {
				break
			}
			c.Close()
		}
		if ctx.Err() != nil {
			t.Fatalf("the restarted pscsd does not take the old configuration and vPIN: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer c.Close()
	if _, err := c.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 10, Mechanism: 0x1045, Data: []byte("after restart")}); err != nil {
		t.Fatalf("sign after restart: %v", err)
	}
}

// TestGracefulShutdown: SIGTERM while eight delegates sign. Requests in
// progress finish, later ones are refused or find no server, pscsd exits
// 0, and its audit log ends cleanly (no cut record) holding every
// signature a delegate received.
func TestGracefulShutdown(t *testing.T) {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(bin, "--demo", "--state", state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	conf := filepath.Join(state, "demo", "client.conf")
	waitForFile(t, conf)
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Retries = -1 // no resend: count only what came back
	l := startLoad(cfg, bytes.TrimSpace(vpin))
	l.waitFor(t, 16)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("pscsd after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("pscsd did not exit within 30 s of SIGTERM")
	}
	received := l.stop()
	logged, n, err := signaturesInLog(t, filepath.Join(state, "audit.log"))
	if err != nil {
		t.Fatalf("audit log after a clean shutdown: %d records, then %v", n, err)
	}
	for _, sig := range received {
		if !logged[string(sig)] {
			t.Errorf("a signature a delegate received is not in the audit log")
			break
		}
	}
	t.Logf("%d signatures before and during shutdown, %d audit records", len(received), n)
}

// load is eight delegates signing with 9E (no card PIN) until stopped or
// until the server is gone.
type load struct {
	mu       sync.Mutex
	received [][]byte
	clients  []*client.Client
	stopped  bool
	done     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(cfg client.Config, vpin []byte) *load {
	l := &load{done: make(chan struct{})}
	for range 8 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// A hang guard: stop ends the load, closing the clients.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				return
			}
			defer c.Close()
			l.mu.Lock()
			l.clients = append(l.clients, c)
			stopped := l.stopped
			l.mu.Unlock()
			if stopped {
				return
			}
			if _, err := c.Login(ctx, 1, vpin); err != nil {
				return
			}
			for {
				select {
				case <-l.done:
					return
				default:
				}
				resp, err := c.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 10, Mechanism: 0x1045, Data: []byte("load")})
				if err != nil {
					return
				}
				l.mu.Lock()
				l.received = append(l.received, resp.Signature)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// waitFor waits until the delegates have received n signatures; the
// deadline is a hang guard.
func (l *load) waitFor(t *testing.T, n int) {
	t.Helper()
	got := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.received)
	}
	for deadline := time.Now().Add(2 * time.Minute); got() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d signatures received after 2 minutes, want %d", got(), n)
		}
	}
}

// stop ends the load and returns the signatures the delegates received.
func (l *load) stop() [][]byte {
	close(l.done)
	l.mu.Lock()
	l.stopped = true
	for _, c := range l.clients { // a request to a killed server ends now
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return l.received
}

// signaturesInLog verifies the audit log at path and returns the
// signatures it records as made, and the number of records.
func signaturesInLog(t *testing.T, path string) (map[string]bool, int, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	logged := map[string]bool{}
	n, err := audit.Verify(f, nil, func(r *audit.Record) error {
		if r.Op == "sign" && r.Decision == 0 {
			logged[string(r.Result)] = true
		}
		return nil
	})
	return logged, n, err
}
