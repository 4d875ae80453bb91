package pgpsim_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit"
)

const scdaemonPath = "/usr/lib/gnupg/scdaemon"

// gnupg is a private GnuPG home whose scdaemon talks to the private pcscd
// (not to the CCID driver) and reads only the simulator's reader.
type gnupg struct {
	*judge
	home string
}

// PIN is PW1 and PW3 at once: GnuPG's loopback prompts do not say which
// PIN they want.
const gpgPIN = "12345678"

func newGnuPG(t *testing.T, reader int, keys map[pgpsim.Key]simkit.Alg) *gnupg {
	t.Helper()
	if _, err := os.Stat(scdaemonPath); err != nil {
		t.Fatalf("scdaemon not installed (make deps installs it): %v", err)
	}
	j := plug(t, reader, pgpsim.Config{PW1: gpgPIN, PW3: gpgPIN, Keys: keys}, "gpg", "gpgconf")
	// A short home: the agent's socket path must fit in sun_path.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o700)
	g := &gnupg{judge: j, home: home}
	// PCSCLITE_CSOCK_NAME (set by pcscdtest for this process) reaches
	// scdaemon through gpg, which starts gpg-agent with its environment,
	// which starts scdaemon with its own.
	g.env = append(j.env, "GNUPGHOME="+home)
	os.WriteFile(filepath.Join(home, "scdaemon.conf"), []byte(fmt.Sprintf(
		"disable-ccid\npcsc-driver /usr/lib/x86_64-linux-gnu/libpcsclite.so.1\nreader-port %s\ncard-timeout 1\n", env.Readers[reader])), 0o600)
	os.WriteFile(filepath.Join(home, "gpg-agent.conf"), []byte("allow-loopback-pinentry\n"), 0o600)
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = g.env
		cmd.Run()
		os.RemoveAll(home)
	})
	return g
}

func (g *gnupg) gpg(args ...string) string {
	g.t.Helper()
	return g.run("", "gpg", append([]string{"--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", gpgPIN}, args...)...)
}

// dialogue runs gpg with --command-fd and --status-fd and answers its
// prompts from answers (keyword to the answers in order; the last one
// repeats), and PIN prompts with gpgPIN.
func (g *gnupg) dialogue(answers map[string][]string, args ...string) string {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "gpg", append([]string{"--no-tty", "--command-fd", "0", "--status-fd", "1",
		"--pinentry-mode", "loopback"}, args...)...)
	cmd.Env = g.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	var transcript strings.Builder
	var mu sync.Mutex
	asked := map[string]int{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		mu.Lock()
		transcript.WriteString(line + "\n")
		mu.Unlock()
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "[GNUPG:]" || (f[1] != "GET_LINE" && f[1] != "GET_BOOL" && f[1] != "GET_HIDDEN") {
			continue
		}
		kw := f[2]
		var answer string
		switch {
		case kw == "passphrase.enter":
			answer = gpgPIN
		case len(answers[kw]) > 0:
			list := answers[kw]
			answer = list[min(asked[kw], len(list)-1)]
		default:
			answer = ""
		}
		asked[kw]++
		if asked[kw] > 20 {
			cmd.Process.Kill()
			g.t.Fatalf("gpg asks %s again and again:\n%s\n%s", kw, transcript.String(), stderr.String())
		}
		if kw != "passphrase.enter" {
			transcript.WriteString("> " + answer + "\n")
		}
		io.WriteString(stdin, answer+"\n")
	}
	stdin.Close()
	err := cmd.Wait()
	g.t.Logf("$ gpg %s\n%s\n%s", strings.Join(args, " "), transcript.String(), stderr.String())
	if err != nil {
		g.t.Fatalf("gpg: %v", err)
	}
	return transcript.String() + stderr.String()
}

// TestGnuPG: GnuPG's scdaemon reads the card (gpg --card-status shows the
// keys the simulator holds), generates keys on it (gpg --card-edit,
// generate, with the algorithms of the card's attributes), signs with the
// card's signature key (verified by gpg --verify) and decrypts a message
// encrypted to the card's decryption key (RSA, ECDH on P-256 and X25519).
func TestGnuPG(t *testing.T) {
	for i, layout := range []map[pgpsim.Key]simkit.Alg{
		pgpsim.DefaultKeys,
		{pgpsim.KeySign: simkit.Ed25519, pgpsim.KeyDecrypt: simkit.X25519, pgpsim.KeyAuth: simkit.Ed25519},
		{pgpsim.KeySign: simkit.ECCP256, pgpsim.KeyDecrypt: simkit.ECCP256, pgpsim.KeyAuth: simkit.ECCP256},
	} {
		t.Run(layout[pgpsim.KeySign].String()+"+"+layout[pgpsim.KeyDecrypt].String(), func(t *testing.T) { testGnuPG(t, 2+i, layout) })
	}
}

func testGnuPG(t *testing.T, reader int, layout map[pgpsim.Key]simkit.Alg) {
	g := newGnuPG(t, reader, layout)
	status := g.gpg("--card-status")
	for k := pgpsim.KeySign; k <= pgpsim.KeyAuth; k++ {
		fp := g.card.KeyFingerprint(k)
		if !strings.Contains(strings.ReplaceAll(status, " ", ""), fmt.Sprintf("%X", fp[:])) {
			t.Errorf("gpg --card-status does not show the %v key %X", k, fp)
		}
	}
	if serial := fmt.Sprintf("%08X", g.card.Serial()); !strings.Contains(status, serial) {
		t.Errorf("gpg --card-status does not show the serial %s", serial)
	}

	g.dialogue(map[string][]string{
		"cardedit.prompt":               {"admin", "generate", "quit"},
		"cardedit.genkeys.backup_enc":   {"n"},
		"cardedit.genkeys.replace_keys": {"y"},
		"keygen.valid":                  {"0"},
		"keygen.name":                   {"Card Holder"},
		"keygen.email":                  {"holder@example.org"},
		"keygen.comment":                {""},
		"keygen.userid.cmd":             {"O"},
	}, "--card-edit")
	status = g.gpg("--card-status")
	for k := pgpsim.KeySign; k <= pgpsim.KeyAuth; k++ {
		fp := g.card.KeyFingerprint(k)
		if fp == [20]byte{} || !strings.Contains(strings.ReplaceAll(status, " ", ""), fmt.Sprintf("%X", fp[:])) {
			t.Errorf("after generation, gpg --card-status does not show the %v key %X", k, fp)
		}
	}

	os.WriteFile(g.path("message"), []byte("signed and sealed by a simulated card\n"), 0o644)
	before := g.card.SignatureCount()
	g.gpg("--local-user", "holder@example.org", "--detach-sign", "--output", g.path("message.sig"), g.path("message"))
	if g.card.SignatureCount() <= before {
		t.Errorf("the card's signature counter did not move: gpg did not sign with the card")
	}
	out := g.gpg("--verify", g.path("message.sig"), g.path("message"))
	if !strings.Contains(out, "Good signature") {
		t.Errorf("gpg --verify: no good signature")
	}

	g.gpg("--trust-model", "always", "--recipient", "holder@example.org", "--encrypt", "--output", g.path("message.gpg"), g.path("message"))
	g.gpg("--output", g.path("message.out"), "--decrypt", g.path("message.gpg"))
	got, _ := os.ReadFile(g.path("message.out"))
	want, _ := os.ReadFile(g.path("message"))
	if !bytes.Equal(got, want) {
		t.Errorf("gpg --decrypt gave %q, want %q", got, want)
	}
	for k, alg := range layout {
		if got := g.card.Algorithm(k); got != alg {
			t.Errorf("the %v key is %v after generation, want %v", k, got, alg)
		}
	}
}
