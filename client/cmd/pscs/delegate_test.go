package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDelegateCommands: pscs whoami and pscs sign against pscsd --demo,
// as the demo delegate; sign keeps the session ticket in the user's cache
// directory with mode 0600, and each signature verifies against the
// certificate of the card that made it.
func TestDelegateCommands(t *testing.T) {
	dir := t.TempDir()
	bin := func(name, pkg string) string {
		out := filepath.Join(dir, name)
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return out
	}
	defer func(old string) { pscs = old }(pscs) // cli runs pscs; the binary goes with dir
	pscs = bin("pscs", ".")
	pscsd := bin("pscsd", "github.com/pscs/pscs/server/cmd/pscsd")
	state := filepath.Join(dir, "state")
	cmd := exec.Command(pscsd, "--demo", "--state", state, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "pscsd demo serving on") {
				close(serving)
			}
		}
	}()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("pscsd did not stop after SIGINT")
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	select {
	case <-serving:
	case <-time.After(90 * time.Second):
		t.Fatal("pscsd --demo did not serve within 90 s")
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	cache := filepath.Join(dir, "cache")
	env := []string{"PSCS_CONFIG=" + filepath.Join(state, "demo", "client.conf"), "XDG_CACHE_HOME=" + cache,
		"PSCS_VPIN=" + strings.TrimSpace(string(vpin))}

	out, _, err := runPSCS(t, env, "whoami")
	if err != nil || !strings.Contains(out, "identity: demo-delegate") || !strings.Contains(out, "mayor") {
		t.Errorf("pscs whoami: %v\n%s", err, out)
	}
	doc := filepath.Join(dir, "doc.txt")
	os.WriteFile(doc, []byte("signed by a delegate\n"), 0o644)
	for _, tc := range []struct {
		key, mech, hash string
		pss             bool
	}{
		{"1", "ecdsa-sha256", "sha256", false},
		{"4", "rsa-sha384", "sha384", false},
		{"4", "rsa-pss-sha256", "sha256", true},
		{"10", "ecdsa-sha384", "sha384", false},
	} {
		sig, cert := filepath.Join(dir, "sig"), filepath.Join(dir, "cert.pem")
		if _, _, err := runPSCS(t, env, "sign", "-key", tc.key, "-m", tc.mech, "-in", doc, "-out", sig, "-cert", cert); err != nil {
			t.Fatalf("pscs sign -key %s -m %s: %v", tc.key, tc.mech, err)
		}
		verifyFile(t, doc, sig, cert, tc.hash, tc.pss)
	}
	tickets, _ := filepath.Glob(filepath.Join(cache, "pscs", "tickets-*"))
	if len(tickets) != 1 {
		t.Fatalf("ticket files %v, want one", tickets)
	}
	if fi, err := os.Stat(tickets[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ticket file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	if _, stderr, err := runPSCS(t, append(env, "PSCS_VPIN=0"), "sign", "-in", doc, "-out", filepath.Join(dir, "x")); err == nil || !strings.Contains(stderr, "wrong virtual PIN") {
		t.Errorf("a wrong vPIN: %v %s", err, stderr)
	}
}
