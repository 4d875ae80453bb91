// Package swtpm runs swtpm, a software TPM 2.0: as a real TPM for tests
// (through internal/swtpmtest) and as the demo's simulated TPM.
//
// # What it starts
//
// [New] runs
//
//	swtpm socket --tpm2 --server type=unixio,path=DIR/tpm.sock \
//	    --ctrl type=unixio,path=DIR/ctrl.sock --tpmstate dir=DIR/state \
//	    --flags startup-clear,not-need-init
//
// in a directory of its own, so no ports are used and parallel test runs
// never collide. The TPM speaks the raw TPM 2.0 command stream on DIR/tpm.sock,
// one connection per command; [TPM.Open] returns a go-tpm link for it
// (linuxudstpm). go-tpm's tcp transport speaks the Microsoft simulator's
// framing and is not for swtpm.
//
// swtpm has no resource manager: transient handles that a client does not
// flush stay loaded, and after three of them the TPM answers
// TPM_RC_OBJECT_MEMORY. Code under test must flush what it loads.
//
// # State and restarts
//
// The TPM's persistent state (its seeds, NV, persistent handles) lives in
// DIR/state. [TPM.Restart] shuts swtpm down cleanly (swtpm_ioctl -s) and
// starts it again on the same state, which is what a reboot of the machine
// looks like to the TPM: the same seeds, no transient objects. Two [TPM]
// values never share state, so they are two different TPMs.
//
// # Requirements
//
// swtpm and swtpm_ioctl (Debian: apt-get install swtpm swtpm-tools). When they
// are missing, [Start] fails the test, unless PSCS_SKIP_SWTPM=1, in which case
// it skips it.
//
// # Lifetime
//
// swtpm is started with Pdeathsig, so the kernel kills it if the test binary
// dies. (Pdeathsig follows the OS thread that started swtpm: do not call
// Start or Restart from a goroutine that locked its thread and then exits.)
// [Start] registers [TPM.Stop] with t.Cleanup.
//
// A [TPM] is safe for concurrent use; Restart and Stop wait for each other.
// The links returned by Open are not safe for concurrent use (go-tpm's
// linuxudstpm is not): give each goroutine its own, or serialize.
package swtpm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// SkipEnv is the environment variable that, set to 1, turns a missing swtpm
// into a skipped test instead of a failed one.
const SkipEnv = "PSCS_SKIP_SWTPM"

// startTimeout bounds the wait for swtpm's socket after starting it, and
// stopTimeout the wait for its exit after a clean shutdown request.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// Check reports whether swtpm and swtpm_ioctl can be found, with the command
// that installs them when not.
func Check() error {
	for _, bin := range []string{"swtpm", "swtpm_ioctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("swtpm: %s not found (apt-get install swtpm swtpm-tools): %w", bin, err)
		}
	}
	return nil
}

// TPM is one running swtpm with its own state directory.
type TPM struct {
	dir string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	stderr  *syncBuffer
	stopped bool
}

// New starts a swtpm whose sockets and state live in dir, which must exist.
// The caller must call [TPM.Stop].
func New(dir string) (*TPM, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	s := &TPM{dir: dir}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// Pid is the process id of the running swtpm, or 0.
func (s *TPM) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// SocketPath is the unix socket that carries TPM commands.
func (s *TPM) SocketPath() string { return filepath.Join(s.dir, "tpm.sock") }

// StateDir is the directory with the TPM's persistent state.
func (s *TPM) StateDir() string { return filepath.Join(s.dir, "state") }

func (s *TPM) ctrlPath() string { return filepath.Join(s.dir, "ctrl.sock") }

// Open returns a new link to the TPM. Closing it does not stop swtpm.
// The link connects once per command, so it keeps working across
// [TPM.Restart].
func (s *TPM) Open() (transport.TPMCloser, error) {
	return linuxudstpm.Open(s.SocketPath())
}

// Restart shuts swtpm down cleanly and starts it again on the same state
// directory, like a reboot: the same TPM, with no transient objects or
// sessions loaded.
func (s *TPM) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("swtpm: restart after stop")
	}
	if err := s.stopLocked(); err != nil {
		return err
	}
	return s.startLocked()
}

// Stop shuts swtpm down (cleanly if it can, killing it otherwise) and waits
// for it to exit. Stop is idempotent.
func (s *TPM) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	return s.stopLocked()
}

func (s *TPM) startLocked() error {
	// Old sockets from a previous run would make the wait below succeed
	// before the new swtpm listens.
	for _, p := range []string{s.SocketPath(), s.ctrlPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("swtpm: %w", err)
		}
	}
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+s.SocketPath(),
		"--ctrl", "type=unixio,path="+s.ctrlPath(),
		"--tpmstate", "dir="+s.StateDir(),
		"--flags", "startup-clear,not-need-init")
	stderr := new(syncBuffer)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("swtpm: start swtpm: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.stderr = cmd, exited, stderr

	deadline := time.Now().Add(startTimeout)
	for {
		if ready(s.SocketPath()) && ready(s.ctrlPath()) {
			return nil
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("swtpm: swtpm exited at start (%v): %s", cmd.ProcessState, bytes.TrimSpace(stderr.Bytes()))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.killLocked()
			return fmt.Errorf("swtpm: swtpm did not listen on %s within %v: %s", s.SocketPath(), startTimeout, bytes.TrimSpace(stderr.Bytes()))
		}
	}
}

// ready reports whether path is a socket that accepts connections. The TPM
// socket accepts a connection that closes without a command.
func ready(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (s *TPM) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	out, err := exec.Command("swtpm_ioctl", "--unix", s.ctrlPath(), "-s").CombinedOutput()
	if err != nil {
		kerr := s.killLocked()
		return errors.Join(fmt.Errorf("swtpm: swtpm_ioctl -s: %v: %s", err, bytes.TrimSpace(out)), kerr)
	}
	select {
	case <-s.exited:
		s.cmd = nil
		return nil
	case <-time.After(stopTimeout):
		return errors.Join(fmt.Errorf("swtpm: swtpm did not exit within %v of swtpm_ioctl -s", stopTimeout), s.killLocked())
	}
}

func (s *TPM) killLocked() error {
	if s.cmd == nil {
		return nil
	}
	err := s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
	if errors.Is(err, os.ErrProcessDone) {
		err = nil
	}
	return err
}

// syncBuffer collects swtpm's output for error messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 { // keep error messages bounded
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
