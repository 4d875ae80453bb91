// Package pcscdtest starts a private pcscd, with vsmartcard's vpcd driver as
// its readers, for integration tests.
//
// # Isolation
//
// pcscd hard-codes its socket directory /run/pcscd. Each [PCSCD] therefore
// runs in its own mount namespace (unshare -m) with a directory of its own
// bind-mounted over /run/pcscd, and reads its reader configuration from its
// own directory (pcscd -c), with vpcd ports found free at start. Clients
// reach it through libpcsclite's PCSCLITE_CSOCK_NAME, which libpcsclite reads
// once per process: one pcscd per test binary, set up in TestMain with
// [Main] before the first PC/SC call. Test binaries of different packages
// run in parallel, each with its own pcscd; a lock file serializes the
// choice of ports between them.
//
// Starting pcscd needs root (for the mount namespace), unshare (util-linux),
// pcscd and the vpcd driver:
//
//	apt-get install pcscd vsmartcard-vpcd
//
// Every process started is killed by [PCSCD.Stop], and by the kernel if the
// test binary dies first.
package pcscdtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SkipEnv is the environment variable that, set to 1, lets [Main] run the
// tests without a pcscd when pcscd, unshare or the vpcd driver is missing.
// Unset, a missing dependency fails the test binary.
const SkipEnv = "PSCS_SKIP_PCSCD"

// driverPaths are where distributions install the vpcd driver.
var driverPaths = []string{
	"/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
	"/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
	"/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
}

// Ports are chosen below Linux's ephemeral range (32768-60999), so that
// outgoing connections do not take them between a check and pcscd's bind.
const (
	portMin = 20000
	portMax = 32700
)

// Options configure [Start].
type Options struct {
	// Entries is the number of vpcd entries in the reader configuration;
	// each gives two readers (two slots). Zero means 1; pcscd allows at
	// most 8 (16 readers).
	Entries int
	// Dir is the directory for the configuration, the socket and the log.
	// Empty means a new directory from os.MkdirTemp, removed by Stop.
	Dir string
	// Log receives pcscd's output. Nil means the file pcscd.log in Dir.
	Log io.Writer
	// LogAPDUs runs pcscd with -a, which logs every APDU in clear, PINs
	// included. Off unless the environment variable PSCS_PCSCD_APDUS is 1:
	// for debugging a card conversation, never by default.
	//
	// The environment variable PSCS_PCSCD_DEBUG=1 adds -d: pcscd's debug
	// log (its reader threads' polls, every client command), about 1 MB a
	// minute, kept with the log when a test fails. It shows, for example,
	// whether pcscd's reader thread saw a card go ("Card Removed From")
	// or only a client's failed reset did ("Error resetting card").
	LogAPDUs bool
}

// PCSCD is a running private pcscd. Its methods are safe for concurrent use.
type PCSCD struct {
	// Dir holds conf/ (the reader configuration), run/ (bind-mounted over
	// /run/pcscd), drivers/ (a copy of the vpcd driver per entry) and
	// pcscd.log.
	Dir string
	// Socket is the path of pcscd's socket, for PCSCLITE_CSOCK_NAME.
	Socket string
	// Readers are the names of the readers, in order: reader i is slot
	// i%2 of entry i/2, named "pscs sim <i/2> 00 0<i%2>".
	Readers []string

	ports     []int // vpcd port of each entry; slot 1 is port+1
	driver    string
	log       io.Writer
	apdus     bool
	removeDir bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	logFile *os.File
	stopped bool // Stop was called: Restart refuses
}

// Check reports what is missing to run pcscd with vpcd, or nil.
func Check() error {
	var missing []string
	for _, bin := range []string{"unshare", "pcscd", "mount"} {
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if findDriver() == "" {
		missing = append(missing, "vpcd driver ("+driverPaths[0]+")")
	}
	if len(missing) > 0 {
		return fmt.Errorf("pcscdtest: missing %s: apt-get install pcscd vsmartcard-vpcd util-linux", strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		return errors.New("pcscdtest: needs root for a private mount namespace (unshare -m)")
	}
	return nil
}

// lookPath finds bin on PATH or in the sbin directories, which a non-login
// PATH may lack.
func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, bin)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", bin)
}

func findDriver() string {
	for _, p := range driverPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start starts a private pcscd with opts.Entries vpcd entries on free ports
// and returns once its socket exists and its vpcd ports listen. ctx bounds
// the start only, not the life of pcscd: call [PCSCD.Stop].
func Start(ctx context.Context, opts Options) (*PCSCD, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	n := opts.Entries
	if n <= 0 {
		n = 1
	}
	if n > 8 {
		return nil, fmt.Errorf("pcscdtest: %d entries, pcscd allows at most 8", n)
	}
	p := &PCSCD{Dir: opts.Dir, log: opts.Log, driver: findDriver(),
		apdus: opts.LogAPDUs || os.Getenv("PSCS_PCSCD_APDUS") == "1"}
	if p.Dir == "" {
		d, err := os.MkdirTemp("", "pcscdtest-")
		if err != nil {
			return nil, err
		}
		p.Dir, p.removeDir = d, true
	}
	p.Socket = filepath.Join(p.Dir, "run", "pcscd.comm")
	for i := range n {
		p.Readers = append(p.Readers, fmt.Sprintf("%s 00 00", friendlyName(i)), fmt.Sprintf("%s 00 01", friendlyName(i)))
	}
	for _, d := range []string{"run", "conf", "drivers"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, d), 0o755); err != nil {
			p.cleanup()
			return nil, err
		}
	}

	if err := p.copyDrivers(n); err != nil {
		p.cleanup()
		return nil, err
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = p.startFreshPorts(ctx, n); err == nil || ctx.Err() != nil || !errors.Is(err, errPortsTaken) {
			break
		}
	}
	if err != nil {
		p.cleanup()
		return nil, err
	}
	return p, nil
}

func friendlyName(entry int) string { return fmt.Sprintf("pscs sim %d", entry) }

var errPortsTaken = errors.New("pcscdtest: vpcd ports taken by another process")

// startFreshPorts picks free ports under the machine-wide lock, writes the
// configuration and starts pcscd, keeping the lock until pcscd holds the
// ports.
func (p *PCSCD) startFreshPorts(ctx context.Context, n int) error {
	unlock, err := lockPorts(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	ports, err := freePorts(n)
	if err != nil {
		return err
	}
	p.ports = ports
	if err := p.writeConf(); err != nil {
		return err
	}
	return p.launch(ctx)
}

// lockPorts takes the machine-wide lock that serializes port choice
// between test processes.
func lockPorts(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "pscs-pcscdtest.lock"), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("pcscdtest: lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freePorts returns n ports P such that P and P+1 are free on every address
// (vpcd binds INADDR_ANY), in distinct pairs.
func freePorts(n int) ([]int, error) {
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("pcscdtest: no free port pair found")
		}
		p := portMin + rand.IntN(portMax-portMin-1)
		if slices.ContainsFunc(ports, func(q int) bool { return q-1 <= p && p <= q+1 }) {
			continue
		}
		if portFree(p) && portFree(p+1) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp4", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// copyDrivers gives every entry its own copy of the vpcd driver. The driver
// keeps its per-slot state in globals indexed by slot number, so entries
// loading the same file share slots 0 and 1: only the last entry's ports
// would ever see a card. A copy is a distinct file for the dynamic loader,
// hence distinct globals.
func (p *PCSCD) copyDrivers(n int) error {
	src, err := os.ReadFile(p.driver)
	if err != nil {
		return fmt.Errorf("pcscdtest: %w", err)
	}
	for i := range n {
		if err := os.WriteFile(p.driverCopy(i), src, 0o644); err != nil {
			return fmt.Errorf("pcscdtest: %w", err)
		}
	}
	return nil
}

func (p *PCSCD) driverCopy(entry int) string {
	return filepath.Join(p.Dir, "drivers", fmt.Sprintf("libifdvpcd-%d.so", entry))
}

func (p *PCSCD) writeConf() error {
	var b strings.Builder
	for i, port := range p.ports {
		fmt.Fprintf(&b, "FRIENDLYNAME \"%s\"\nDEVICENAME   /dev/null:%d\nLIBPATH      %s\nCHANNELID    %d\n\n",
			friendlyName(i), port, p.driverCopy(i), port)
	}
	return os.WriteFile(filepath.Join(p.Dir, "conf", "vpcd"), []byte(b.String()), 0o644)
}

// launch starts pcscd on the current configuration and waits until it is
// ready.
func (p *PCSCD) launch(ctx context.Context) error {
	runDir := filepath.Join(p.Dir, "run")
	// A pcscd that was killed leaves its socket and pid file behind.
	for _, f := range []string{"pcscd.comm", "pcscd.pid"} {
		os.Remove(filepath.Join(runDir, f))
	}
	if err := os.MkdirAll("/run/pcscd", 0o755); err != nil {
		return fmt.Errorf("pcscdtest: %w", err)
	}
	unshare, _ := lookPath("unshare")
	pcscd, _ := lookPath("pcscd")
	// unshare and sh exec, so the process is pcscd itself.
	flags := "-f"
	if p.apdus {
		flags = "-f -a" // logs every APDU, PINs included: for debugging only
	}
	if os.Getenv("PSCS_PCSCD_DEBUG") == "1" {
		flags += " -d"
	}
	cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /run/pcscd && exec "$2" $3 -c "$4"`,
		"sh", runDir, pcscd, flags, filepath.Join(p.Dir, "conf"))
	// pcscd dies with the test binary, even on a crash or a timeout panic.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.log != nil {
		cmd.Stdout, cmd.Stderr = p.log, p.log
	} else {
		f, err := os.OpenFile(filepath.Join(p.Dir, "pcscd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = f, f
		p.mu.Lock()
		p.logFile = f
		p.mu.Unlock()
	}
	if err := cmd.Start(); err != nil {
		p.closeLog()
		return fmt.Errorf("pcscdtest: start pcscd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()

	if err := p.waitReady(ctx, cmd.Process.Pid, exited); err != nil {
		p.kill()
		return err
	}
	return nil
}

// waitReady waits until pcscd's socket exists and pcscd listens on all its
// vpcd ports.
func (p *PCSCD) waitReady(ctx context.Context, pid int, exited <-chan struct{}) error {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	want := p.allPorts()
	for {
		if st, err := os.Stat(p.Socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			held, err := listeningPorts(pid)
			if err == nil && !slices.ContainsFunc(want, func(port int) bool { return !held[port] }) {
				return nil
			}
			// pcscd creates its vpcd listeners before its socket: a
			// port it does not hold is held by someone else.
			for _, port := range want {
				if !held[port] && !portFree(port) {
					return fmt.Errorf("%w: port %d (log: %s)", errPortsTaken, port, p.logHint())
				}
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("pcscdtest: pcscd exited during start (log: %s)", p.logHint())
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("pcscdtest: pcscd not ready after 10s (log: %s)", p.logHint())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (p *PCSCD) logHint() string {
	if p.log != nil {
		return "Options.Log"
	}
	return filepath.Join(p.Dir, "pcscd.log")
}

func (p *PCSCD) allPorts() []int {
	var ports []int
	for _, port := range p.ports {
		ports = append(ports, port, port+1)
	}
	return ports
}

// listeningPorts returns the TCP ports on which process pid listens, from
// /proc (pcscd shares our network namespace).
func listeningPorts(pid int) (map[int]bool, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if port, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports[int(port)] = true
			}
		}
		f.Close()
	}
	return ports, nil
}

// CardAddr returns the address a card simulator connects to, to be inserted
// in reader i (an index into Readers).
func (p *PCSCD) CardAddr(reader int) string {
	if reader < 0 || reader >= 2*len(p.ports) {
		panic(fmt.Sprintf("pcscdtest: reader %d out of range [0, %d)", reader, 2*len(p.ports)))
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.ports[reader/2]+reader%2))
}

// SetEnv points libpcsclite at this pcscd. Call it before the process's
// first PC/SC call: libpcsclite reads the variable once.
func (p *PCSCD) SetEnv() {
	os.Setenv("PCSCLITE_CSOCK_NAME", p.Socket)
}

// Env returns the environment entry that points a child process at this
// pcscd, for exec.Cmd.Env.
func (p *PCSCD) Env() string { return "PCSCLITE_CSOCK_NAME=" + p.Socket }

// Pid returns the process ID of the running pcscd, or 0.
func (p *PCSCD) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// kill stops the running pcscd, if any: SIGTERM (pcscd removes its socket),
// then SIGKILL after a second, and waits for it.
func (p *PCSCD) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd, p.exited = nil, nil
	p.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	p.closeLog()
}

func (p *PCSCD) closeLog() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logFile != nil {
		p.logFile.Close()
		p.logFile = nil
	}
}

func (p *PCSCD) cleanup() {
	p.kill()
	if p.removeDir {
		os.RemoveAll(p.Dir)
	}
}

// Stop kills pcscd and waits for it to exit; if Start created Dir, Stop
// removes it. Stop is idempotent; after it, Restart fails.
func (p *PCSCD) Stop() error {
	p.mu.Lock()
	already := p.stopped
	p.stopped = true
	p.mu.Unlock()
	if already {
		return nil
	}
	p.cleanup()
	return nil
}

// Restart kills pcscd and starts it again on the same directory, socket and
// ports, as a crash and restart of the PC/SC service. Cards connected with
// vpcd.Plug come back by themselves.
func (p *PCSCD) Restart(ctx context.Context) error {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		return errors.New("pcscdtest: Restart after Stop")
	}
	p.kill()
	// The ports may be in TIME_WAIT for a moment; vpcd binds with
	// SO_REUSEADDR, but retry a little in case.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = p.launch(ctx); err == nil || ctx.Err() != nil || !errors.Is(err, errPortsTaken) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// Main runs the tests of a package against a private pcscd: it starts one
// with opts, points libpcsclite at it (before any PC/SC call), calls ready,
// runs m.Run, stops pcscd and exits with the tests' code. Call it from
// TestMain.
//
// If pcscd, unshare or the vpcd driver is missing, or pcscd fails to start,
// Main fails the test binary, unless the environment variable PSCS_SKIP_PCSCD
// is 1: then it runs the tests without calling ready, and tests that need
// pcscd skip themselves. On failure Main keeps the pcscd log and prints
// where it is.
func Main(m *testing.M, opts Options, ready func(*PCSCD)) {
	os.Exit(run(m, opts, ready))
}

// Run is Main without the exit: it returns the tests' exit code, for a
// TestMain that wraps m (testscript.Main, which runs the package's
// commands in process, runs Run as its testing.M).
func Run(m *testing.M, opts Options, ready func(*PCSCD)) int {
	return run(m, opts, ready)
}

func run(m *testing.M, opts Options, ready func(*PCSCD)) int {
	// A fuzzing worker runs no test that needs pcscd; don't start one per
	// worker.
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzzworker") {
			return m.Run()
		}
	}
	if err := Check(); err != nil {
		if os.Getenv(SkipEnv) == "1" {
			fmt.Fprintf(os.Stderr, "pcscdtest: %v; %s=1: tests needing pcscd skip\n", err, SkipEnv)
			return m.Run()
		}
		fmt.Fprintf(os.Stderr, "FAIL: %v\n(set %s=1 to skip the tests that need pcscd)\n", err, SkipEnv)
		return 1
	}
	keep := opts.Dir != ""
	if opts.Dir == "" && opts.Log == nil {
		d, err := os.MkdirTemp("", "pcscdtest-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: pcscdtest: %v\n", err)
			return 1
		}
		opts.Dir = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	p, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	p.SetEnv()
	if ready != nil {
		ready(p)
	}
	code := m.Run()
	p.Stop()
	if code != 0 && opts.Log == nil {
		fmt.Fprintf(os.Stderr, "pcscdtest: pcscd log kept in %s\n", filepath.Join(p.Dir, "pcscd.log"))
	} else if !keep {
		os.RemoveAll(p.Dir)
	}
	return code
}
