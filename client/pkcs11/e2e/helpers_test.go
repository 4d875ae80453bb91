// Package e2e tests the pscs PKCS #11 module as the applications that load
// it: pkcs11-tool, p11tool, OpenSSL's pkcs11 engine, OpenSSH and Go
// through miekg/pkcs11, against pscsd --demo (simulated cards, swtpm),
// against a server in this process (for round-trip counts), and against
// pscsd configured as a site serving a simulated card in a private
// pcscd's reader, which yubico-piv-tool provisions meanwhile.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tmp holds what TestMain builds, removed when the tests end.
var tmp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pscs-pkcs11-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmp = dir
	code := m.Run()
	if judgePCSCD != nil {
		judgePCSCD.Stop()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce            sync.Once
	soPath, pscsdPath    string
	buildOut             []byte
	buildErr             error
	debianPackagesNeeded = "apt-get install gnutls-bin libengine-pkcs11-openssl openssh-client openssh-server opensc openssl swtpm yubico-piv-tool (make deps)"
)

// binaries builds the module (without the race detector, as applications
// load it) and pscsd, once per test binary.
func binaries(t testing.TB) (so, pscsd string) {
	t.Helper()
	buildOnce.Do(func() {
		soPath, pscsdPath = filepath.Join(tmp, "pscs-pkcs11.so"), filepath.Join(tmp, "pscsd")
		buildOut, buildErr = exec.Command("go", "build", "-buildmode=c-shared", "-o", soPath, "github.com/pscs/pscs/client/pkcs11").CombinedOutput()
		if buildErr == nil {
			buildOut, buildErr = exec.Command("go", "build", "-o", pscsdPath, "github.com/pscs/pscs/server/cmd/pscsd").CombinedOutput()
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return soPath, pscsdPath
}

// need fails the test if a tool is missing: make deps installs them all.
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: %s", tool, debianPackagesNeeded)
		}
	}
}

// demo is a running pscsd --demo and the delegate's side of it.
type demo struct {
	dir  string // the test's directory: cache, outputs
	conf string // the delegate's client.conf
	vpin string
	addr string
	cmd  *exec.Cmd
	so   string
	env  []string // for the applications: PSCS_CONFIG, a private cache
	log  *bytes.Buffer
	mu   sync.Mutex
}

// startDemo starts pscsd --demo in a temporary directory with private
// ports and waits until it serves; the test's end stops it and everything
// it started (its process group).
func startDemo(t *testing.T) *demo {
	t.Helper()
	need(t, "swtpm")
	so, pscsd := binaries(t)
	d := &demo{dir: t.TempDir(), so: so, log: &bytes.Buffer{}}
	state := filepath.Join(d.dir, "state")
	d.launch(t, pscsd, "127.0.0.1:0")
	t.Cleanup(func() { d.stop(t) })
	d.conf = filepath.Join(state, "demo", "client.conf")
	vpin, err := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	if err != nil {
		t.Fatal(err)
	}
	d.vpin = strings.TrimSpace(string(vpin))
	d.env = append(os.Environ(), "PSCS_CONFIG="+d.conf, "XDG_CACHE_HOME="+filepath.Join(d.dir, "cache"),
		"HOME="+d.dir, "PSCS_TIMEOUT=20s")
	return d
}

// launch starts pscsd --demo on the test's state, listening at listen,
// and waits until it serves.
func (d *demo) launch(t *testing.T, pscsd, listen string) {
	t.Helper()
	state := filepath.Join(d.dir, "state")
	d.cmd = exec.Command(pscsd, "--demo", "--state", state, "--listen", listen, "--admin", "127.0.0.1:0")
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.log.WriteString(line + "\n")
			d.mu.Unlock()
			if _, rest, ok := strings.Cut(line, "pscsd demo serving on "); ok {
				addr, _, _ := strings.Cut(rest, " ")
				select {
				case serving <- addr:
				default:
				}
			}
		}
	}()
	select {
	case d.addr = <-serving:
	case <-time.After(90 * time.Second):
		d.stop(t)
		t.Fatalf("pscsd --demo did not serve within 90 s:\n%s", d.output())
	}
}

// restart stops pscsd and starts it again on the same state and address,
// as an administrator restarting the server: every login it held is gone.
func (d *demo) restart(t *testing.T) {
	t.Helper()
	_, pscsd := binaries(t)
	d.stop(t)
	addr := d.addr
	d.launch(t, pscsd, addr)
	if d.addr != addr {
		t.Fatalf("pscsd restarted on %s, want %s", d.addr, addr)
	}
}

func (d *demo) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// stop interrupts pscsd (it stops its swtpm), then kills whatever is left
// of its process group.
func (d *demo) stop(t *testing.T) {
	if d.cmd.Process == nil {
		return
	}
	pgid := d.cmd.Process.Pid
	d.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("pscsd did not stop within 15 s of SIGINT")
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-done
	if t.Failed() {
		t.Logf("pscsd said:\n%s", d.output())
	}
}

// run runs an application with env and returns its combined output; it
// fails the test if the application fails.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs an application, killed after two minutes.
func runErr(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second // a child it left holding the output
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// certPEM reads the certificate with CKA_ID id from the token with
// pkcs11-tool, and writes its public key as PEM for openssl; it returns
// the certificate and the public key's path.
func (d *demo) certPEM(t *testing.T, id string) (*x509.Certificate, string) {
	t.Helper()
	der := filepath.Join(d.dir, "cert"+id+".der")
	run(t, d.env, "pkcs11-tool", "--module", d.so, "--read-object", "--type", "cert", "--id", id, "-o", der)
	b, err := os.ReadFile(der)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(b)
	if err != nil {
		t.Fatalf("certificate %s from the token: %v", id, err)
	}
	pub := filepath.Join(d.dir, "pub"+id+".pem")
	run(t, d.env, "openssl", "x509", "-inform", "der", "-in", der, "-pubkey", "-noout", "-out", pub)
	return cert, pub
}

func (d *demo) file(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(d.dir, name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// background starts a daemon in its own process group; the returned
// function stops it and everything it started.
func background(t *testing.T, env []string, name string, args ...string) func() {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor waits for path to exist; the minute is a hang guard.
func waitFor(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("no %s after 60 s", path)
}

// runIn runs an application with the file stdin as its standard input.
func runIn(t *testing.T, env []string, stdin, name string, args ...string) string {
	t.Helper()
	f, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Stdin = env, f
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
