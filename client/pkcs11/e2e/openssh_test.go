package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sshdPath is where Debian's openssh-server installs sshd; sshd wants to
// be started by its absolute path.
const sshdPath = "/usr/sbin/sshd"

// startSSHD starts a private sshd on a free loopback port, with its own
// configuration and host key in dir, accepting the public keys in
// authorized (OpenSSH lines) for any user, and returns its port. Started
// by root, it runs in a mount namespace of its own with a private /run,
// where it finds the empty directory root's sshd needs for privilege
// separation (/run/sshd), so that nothing of the system's sshd is touched:
// not /etc/ssh, not port 22, not /run. The test's end stops it.
func startSSHD(t *testing.T, dir string, authorized []string) int {
	t.Helper()
	need(t, "ssh-keygen", "unshare")
	if _, err := os.Stat(sshdPath); err != nil {
		t.Fatalf("no %s: apt-get install openssh-server (make deps)", sshdPath)
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	keys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keys, []byte(strings.Join(authorized, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile none
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
`, port, hostKey, keys)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", conf)
	if os.Geteuid() == 0 {
		// Only root's sshd wants the directory (for its privilege
		// separation chroot).
		script := `mount --make-rprivate / && mount -t tmpfs -o mode=0755 pscs-test-run /run && mkdir -m 0755 /run/sshd && exec "$0" "$@"`
		cmd = exec.Command("unshare", "-m", "sh", "-c", script, sshdPath, "-D", "-e", "-f", conf)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	logDone := make(chan struct{})
	listening := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), fmt.Sprintf("Server listening on 127.0.0.1 port %d", port)) {
				close(listening)
			}
		}
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
		<-logDone
		if t.Failed() {
			t.Logf("sshd said:\n%s", log.String())
		}
	})
	select {
	case <-listening:
	case <-logDone:
		t.Fatal("sshd ended before it listened")
	case <-time.After(30 * time.Second):
		t.Fatal("sshd did not listen within 30 s")
	}
	return port
}

// askpass writes an SSH_ASKPASS program that answers the vPIN and counts
// its calls in a file; it returns the environment for OpenSSH's tools
// (which then always ask through it) and the call counter.
func askpass(t *testing.T, d *demo) (env []string, calls func() int) {
	t.Helper()
	count := filepath.Join(d.dir, "askpass.calls")
	prog := d.file(t, "askpass", []byte("#!/bin/sh\necho \"$1\" >> "+count+"\necho "+d.vpin+"\n"))
	os.Chmod(prog, 0o700)
	env = append(append([]string{}, d.env...), "SSH_ASKPASS="+prog, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	return env, func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "\n")
	}
}

// sshUser is the user the test logs in as: the test's own, the only one a
// private sshd lets in.
func sshUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// sshArgs are the options of an ssh client that reads no configuration of
// the machine's, trusts the test's sshd at port and authenticates with
// public keys only.
func sshArgs(d *demo, port int) []string {
	return []string{"-F", "/dev/null", "-p", fmt.Sprint(port), "-o", "BatchMode=no",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=" + filepath.Join(d.dir, "known_hosts"),
		"-o", "PreferredAuthentications=publickey", "-o", "ConnectTimeout=30"}
}

// publicKeys lists the token's public keys as OpenSSH lines, with
// ssh-keygen -D: PIV 9A (ECDSA P-256), 9C (RSA, PIN always), 9D, 9E.
func publicKeys(t *testing.T, d *demo) []string {
	t.Helper()
	out := run(t, d.env, "ssh-keygen", "-D", d.so)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("ssh-keygen -D: %d keys, want 4\n%s", len(lines), out)
	}
	return lines
}

// TestSSHLoginPINAlways: ssh -I with the module logs into a private sshd
// that knows only the card's PIV 9C key (PIN always, CKA_ALWAYS_AUTHENTICATE):
// ssh logs in to the token (C_Login, the one vPIN prompt) and signs once,
// without a context-specific login, which a local PIV card under OpenSC
// accepts, and so does pscs.
func TestSSHLoginPINAlways(t *testing.T) {
	need(t, "ssh", "ssh-keygen")
	d := startDemo(t)
	keys := publicKeys(t, d)
	port := startSSHD(t, t.TempDir(), []string{keys[1]})
	env, calls := askpass(t, d)
	args := append(sshArgs(d, port), "-I", d.so, sshUser(t)+"@127.0.0.1", "echo logged in with PIV 9C")
	out := run(t, env, "ssh", args...)
	if !strings.Contains(out, "logged in with PIV 9C") {
		t.Errorf("ssh -I: no output of the remote command:\n%s", out)
	}
	if n := calls(); n != 1 {
		t.Errorf("ssh -I asked for the vPIN %d times, want once", n)
	}
}

// TestSSHAgentAfterRestart: an ssh-agent loads the module (ssh-add -s,
// the one vPIN prompt) and logs into a private sshd; pscsd restarts on the
// same state and port, forgetting the login; the agent logs in again at
// once, without a prompt and without ssh-add: the module logged in again
// with the vPIN it keeps in memory.
func TestSSHAgentAfterRestart(t *testing.T) {
	need(t, "ssh", "ssh-agent", "ssh-add", "ssh-keygen")
	d := startDemo(t)
	keys := publicKeys(t, d)
	port := startSSHD(t, t.TempDir(), []string{keys[0]}) // PIV 9A: no PIN per signature
	env, calls := askpass(t, d)
	sock := filepath.Join(d.dir, "agent.sock")
	background(t, env, "ssh-agent", "-D", "-a", sock, "-P", d.so)
	waitFor(t, sock)
	env = append(env, "SSH_AUTH_SOCK="+sock)
	run(t, env, "ssh-add", "-s", d.so)
	login := func(when string) {
		t.Helper()
		out, err := runErr(t, env, "ssh", append(sshArgs(d, port), sshUser(t)+"@127.0.0.1", "echo logged in "+when)...)
		if err != nil || !strings.Contains(out, "logged in "+when) {
			t.Fatalf("ssh through the agent %s: %v\n%s", when, err, out)
		}
	}
	login("before the restart")
	d.restart(t)
	login("after the restart")
	d.restart(t)
	login("after the second restart")
	if n := calls(); n != 1 {
		t.Errorf("%d vPIN prompts, want the one of ssh-add -s", n)
	}
}
