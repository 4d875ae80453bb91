package main

// The pscs command, built and run as a user runs it, against a private pcscd
// with cards plugged in by `pscs sim`.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

var (
	daemon *pcscdtest.PCSCD
	pscs   string // the built binary
)

func build(t *testing.T) {
	t.Helper()
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	if pscs != "" {
		return
	}
	out := filepath.Join(daemon.Dir, "pscs") // removed with the daemon's directory
	if b, err := exec.Command("go", "build", "-o", out, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	pscs = out
}

// runPSCS runs pscs with args and extra environment, and returns stdout,
// stderr and the error.
func runPSCS(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pscs, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("$ pscs %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String(), stderr.String(), err
}

// startSim plugs two simulated cards with `pscs sim` and waits until
// `pscs readers` shows both.
func startSim(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sim := exec.CommandContext(ctx, pscs, "sim", "-vpcd", daemon.CardAddr(0)+","+daemon.CardAddr(1), "-latency", "none", "-seed", "cli")
	sim.Cancel = func() error { return sim.Process.Signal(os.Interrupt) }
	logf, _ := os.Create(filepath.Join(t.TempDir(), "sim.log"))
	sim.Stdout, sim.Stderr = logf, logf
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := sim.Wait(); err != nil && ctx.Err() == nil {
			t.Errorf("pscs sim: %v", err)
		}
		// Wait for pcscd to see the cards go, so the next test starts clean.
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if out, _, _ := runPSCS(t, nil, "readers"); !strings.Contains(out, "present") {
				return
			}
		}
		t.Errorf("the simulated cards did not go away")
	})
	deadline := time.Now().Add(60 * time.Second) // a hang guard
	for {
		out, _, _ := runPSCS(t, nil, "readers")
		if strings.Count(out, "present") == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pscs readers does not show the two simulated cards")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestCommands(t *testing.T) {
	build(t)
	startSim(t)
	dir := t.TempDir()

	out, _, err := runPSCS(t, nil, "readers")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range daemon.Readers {
		if !strings.Contains(out, r) {
			t.Errorf("readers: %q missing", r)
		}
	}
	if strings.Count(out, " piv ") != 2 {
		t.Errorf("readers: want both cards detected as piv")
	}

	out, _, err = runPSCS(t, nil, "card", "info", "-r", daemon.Readers[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"profile:  piv", "3 tries left", "9a", "9c", "9d", "9e", "ECCP256", "RSA2048", "ECCP384", "always", "never"} {
		if !strings.Contains(out, want) {
			t.Errorf("card info lacks %q", want)
		}
	}

	doc := filepath.Join(dir, "doc.txt")
	os.WriteFile(doc, []byte("signed on the command line\n"), 0o644)
	for _, c := range []struct {
		key, hash string
		pss       bool
	}{{"9a", "sha256", false}, {"9c", "sha256", false}, {"9c", "sha384", true}, {"9d", "sha512", false}, {"9e", "sha384", false}} {
		name := c.key + "-" + c.hash
		if c.pss {
			name += "-pss"
		}
		t.Run(name, func(t *testing.T) {
			sig, certFile := filepath.Join(dir, name+".sig"), filepath.Join(dir, name+".pem")
			args := []string{"card", "sign", "-r", daemon.Readers[0], "-k", c.key, "-hash", c.hash, "-in", doc, "-out", sig, "-cert", certFile}
			if c.pss {
				args = append(args, "-pss")
			}
			if _, _, err := runPSCS(t, []string{"PSCS_PIN=123456"}, args...); err != nil {
				t.Fatal(err)
			}
			verifyFile(t, doc, sig, certFile, c.hash, c.pss)
		})
	}
}

func verifyFile(t *testing.T, doc, sigFile, certFile, hash string, pss bool) {
	t.Helper()
	data, _ := os.ReadFile(doc)
	sig, _ := os.ReadFile(sigFile)
	p, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(p)
	if block == nil {
		t.Fatal("no certificate written")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var h crypto.Hash
	var digest []byte
	switch hash {
	case "sha256":
		s := sha256.Sum256(data)
		h, digest = crypto.SHA256, s[:]
	case "sha384":
		s := sha512.Sum384(data)
		h, digest = crypto.SHA384, s[:]
	case "sha512":
		s := sha512.Sum512(data)
		h, digest = crypto.SHA512, s[:]
	}
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			t.Error("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		if pss {
			err = rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(pub, h, digest, sig)
		}
		if err != nil {
			t.Errorf("RSA signature does not verify: %v", err)
		}
	}
}

func TestTraceRedactsPIN(t *testing.T) {
	build(t)
	startSim(t)
	dir := t.TempDir()
	doc := filepath.Join(dir, "doc.txt")
	os.WriteFile(doc, []byte("traced\n"), 0o644)
	_, stderr, err := runPSCS(t, []string{"PSCS_PIN=987654"}, "-trace", "card", "sign", "-r", daemon.Readers[1], "-k", "9a", "-in", doc, "-out", filepath.Join(dir, "sig"))
	if err == nil {
		t.Fatal("signed with a wrong PIN")
	}
	if !strings.Contains(stderr, "00 20 00 80 [9 bytes redacted]") {
		t.Errorf("trace does not show the redacted VERIFY")
	}
	if !strings.Contains(stderr, "63 C2") || !strings.Contains(stderr, "wrong PIN, 2 tries left") {
		t.Errorf("a wrong PIN is not reported with the tries left")
	}
	for _, secret := range []string{"39 38 37 36 35 34", "987654"} {
		if strings.Contains(stderr, secret) {
			t.Errorf("the PIN %q appears in the trace", secret)
		}
	}
	// The right PIN resets the counter, as a card does.
	if _, _, err := runPSCS(t, []string{"PSCS_PIN=123456"}, "card", "sign", "-r", daemon.Readers[1], "-k", "9a", "-in", doc, "-out", filepath.Join(dir, "sig")); err != nil {
		t.Fatal(err)
	}
}

func TestUsage(t *testing.T) {
	build(t)
	for _, args := range [][]string{{}, {"nonsense"}, {"card"}, {"card", "sign"}, {"sim", "-profile", "nope"}} {
		if _, _, err := runPSCS(t, nil, args...); err == nil {
			t.Errorf("pscs %v succeeded", args)
		}
	}
}

type fixedMAC []byte

func (k fixedMAC) MAC(label string, data []byte) ([]byte, error) {
	h := hmac.New(sha256.New, k)
	h.Write([]byte(label))
	h.Write(data)
	return h.Sum(nil), nil
}

// TestAuditVerify: `pscs audit verify` accepts a good log whose signed
// requests verify, and names the record someone altered.
func TestAuditVerify(t *testing.T) {
	build(t)
	dir := t.TempDir()
	alice := testpki.NewCA("audit CA").Issue("alice", testpki.Options{})
	certs := filepath.Join(dir, "certs")
	os.Mkdir(certs, 0o755)
	os.WriteFile(filepath.Join(certs, "alice.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: alice.Leaf.Raw}), 0o644)
	path := filepath.Join(dir, "audit.log")
	log, err := audit.Open(path, fixedMAC("k"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ev, err := transport.SignPayload(alice.PrivateKey.(crypto.Signer), &transport.SignedPayload{
			Op: transport.OpSign, Nonce: bytes.Repeat([]byte{byte(i)}, 16), Time: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := log.Append(context.Background(), &audit.Record{Identity: "alice", Op: "sign", Evidence: ev, Result: []byte{1, 2, 3}}); err != nil {
			t.Fatal(err)
		}
	}
	log.Close()
	out, _, err := runPSCS(t, nil, "audit", "verify", "-certs", certs, path)
	if err != nil || !strings.Contains(out, "OK: 5 records") || !strings.Contains(out, "5 signed requests verified") {
		t.Fatalf("a good log: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(path)
	i := bytes.LastIndex(b, []byte{1, 2, 3}) // the last record's result
	b[i+1] ^= 0xFF
	os.WriteFile(path, b, 0o644)
	out, _, err = runPSCS(t, nil, "audit", "verify", "-certs", certs, path)
	if err == nil || !strings.Contains(out, "BAD: record 5") {
		t.Errorf("an altered record 5: %v\n%s", err, out)
	}
}

// TestSimOpenPGP: `pscs sim -profile openpgp` plugs an OpenPGP card that
// OpenSC's openpgp-tool reads, with the serial pscs sim logged.
func TestSimOpenPGP(t *testing.T) {
	build(t)
	ctx, cancel := context.WithCancel(context.Background())
	sim := exec.CommandContext(ctx, pscs, "sim", "-profile", "openpgp", "-vpcd", daemon.CardAddr(0), "-latency", "none", "-seed", "cli")
	sim.Cancel = func() error { return sim.Process.Signal(os.Interrupt) }
	logPath := filepath.Join(t.TempDir(), "sim.log")
	logf, _ := os.Create(logPath)
	sim.Stdout, sim.Stderr = logf, logf
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		sim.Wait()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if out, _, _ := runPSCS(t, nil, "readers"); !strings.Contains(out, "present") {
				return
			}
		}
		t.Errorf("the simulated card did not go away")
	})
	var tool string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, _ := exec.Command("openpgp-tool", "-r", "0", "-C").CombinedOutput()
		if tool = string(out); strings.Contains(tool, "Manufacturer:    Yubico") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("openpgp-tool does not see the OpenPGP card:\n%s", tool)
		}
	}
	log, _ := os.ReadFile(logPath)
	m := regexp.MustCompile(`serial=([0-9A-F]{8})`).FindSubmatch(log)
	if m == nil || !strings.Contains(tool, "Serial number:   "+string(m[1])) {
		t.Errorf("openpgp-tool shows\n%s\nthe sim logged\n%s", tool, log)
	}
}
