package main

// pscsd as a site runs it: a configuration file, cards in PC/SC readers
// (a private pcscd with simulated cards behind vpcd), a TPM on a socket
// (swtpm), an owner enrolled by pscsd init who administers with pscs
// admin, a delegate whose identity the owner had issued, signing.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

var daemon *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 3}, func(p *pcscdtest.PCSCD) { daemon = p })
}

// logBuffer collects a process's output for waiting on and for failures.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) waitFor(t testing.TB, re *regexp.Regexp, n int) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); len(re.FindAllString(l.String(), -1)) < n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %d × %q after 60 s in:\n%s", n, re, l.String())
		}
	}
}

func freeUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

func TestConfiguredServer(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	pscsdBin := buildPSCSD(t)
	pscsBin := filepath.Join(t.TempDir(), "pscs")
	if out, err := exec.Command("go", "build", "-o", pscsBin, "../../../client/cmd/pscs").CombinedOutput(); err != nil {
		t.Fatalf("go build pscs: %v\n%s", err, out)
	}
	dir := t.TempDir()

	// Two cards with the same key pair in the private pcscd's readers: one
	// parallel remote card.
	ctx, cancel := context.WithCancel(context.Background())
	var plugged sync.WaitGroup
	defer func() { cancel(); plugged.Wait() }()
	var sims []*pivsim.Card
	for i := range 2 {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte("configured"), Serial: uint32(7100 + i)})
		if err != nil {
			t.Fatal(err)
		}
		sims = append(sims, sim)
		plugged.Add(1)
		go func() { defer plugged.Done(); vpcd.Plug(ctx, daemon.CardAddr(i), sim) }()
	}
	tpm, err := swtpm.New(filepath.Join(dir, "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Stop()

	addr := freeUDP(t)
	conf := filepath.Join(dir, "pscsd.json")
	cfg := map[string]any{"state": "state", "listen": addr, "metrics": "off", "tpm": "unix:" + tpm.SocketPath(),
		"server_names": []string{"127.0.0.1"},
		"cards":        []map[string]any{{"name": "mayor", "slot": 1, "owner": "alice", "serials": []string{"7100", "7101"}}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), daemon.Env())
	run := func(bin string, extra []string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(append([]string{}, env...), extra...)
		out, err := cmd.CombinedOutput()
		t.Logf("$ %s %s\n%s", filepath.Base(bin), strings.Join(args, " "), out)
		return string(out), err
	}
	if _, err := run(pscsdBin, nil, "init", "-config", conf, "-owner", "alice", "-out", filepath.Join(dir, "alice")); err != nil {
		t.Fatal(err)
	}

	start := func() (*logBuffer, func()) {
		var log logBuffer
		cmd := exec.Command(pscsdBin, "-config", conf)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				cmd.Process.Signal(os.Interrupt)
				cmd.Wait()
			}
		}
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				t.Logf("pscsd said:\n%s", log.String())
			}
		})
		log.waitFor(t, regexp.MustCompile(`card joined.* members=2`), 1)
		log.waitFor(t, regexp.MustCompile(`pscsd serving`), 1)
		return &log, stop
	}
	_, stop := start()

	alice := []string{"PSCS_CONFIG=" + filepath.Join(dir, "alice", "client.conf")}
	admin := func(extra []string, args ...string) (string, error) {
		return run(pscsBin, append(append([]string{}, alice...), extra...), append([]string{"admin"}, args...)...)
	}
	// The owner has the server's CA certify a delegate.
	if _, err := admin(nil, "issue", "-name", "bob", "-out", filepath.Join(dir, "bob")); err != nil {
		t.Fatal(err)
	}
	if out, err := admin(nil, "issue", "-name", "bob", "-out", filepath.Join(dir, "bob2")); err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("a second bob: %v, want already exists", err)
	}
	pass := []string{"PSCS_PASSPHRASE=correct horse battery"}
	// Delegating before the PIN is registered is refused with its reason.
	if out, err := admin(pass, "delegate", "-card", "mayor", "-to", "bob", "-for", "1h"); err == nil || !strings.Contains(out, "card PIN not registered") {
		t.Errorf("delegation without a registered PIN: %v", err)
	}
	if _, err := admin(append(pass, "PSCS_PIN=123456"), "register-pin", "-card", "mayor"); err != nil {
		t.Fatal(err)
	}
	for _, s := range sims {
		if s.PINRetries() != 3 {
			t.Errorf("card %d: %d PIN tries left after the registration, want 3", s.Serial(), s.PINRetries())
		}
	}
	if out, err := admin([]string{"PSCS_PASSPHRASE=wrong passphrase"}, "delegate", "-card", "mayor", "-to", "bob", "-for", "1h"); err == nil || !strings.Contains(out, "wrong virtual PIN") {
		t.Errorf("delegation with a wrong passphrase: %v", err)
	}
	if out, err := admin(pass, "delegate", "-card", "ceo", "-to", "bob", "-for", "1h"); err == nil || !strings.Contains(out, "unknown name") {
		t.Errorf("delegation of an unknown card: %v", err)
	}
	out, err := admin(pass, "delegate", "-card", "mayor", "-to", "bob", "-for", "1h", "-per-hour", "100")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`delegation (d-[0-9a-f]+)\nvirtual PIN ([0-9]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no delegation and virtual PIN in %q", out)
	}
	id, vpin := m[1], m[2]

	// The delegate signs with its virtual PIN.
	bob := []string{"PSCS_CONFIG=" + filepath.Join(dir, "bob", "client.conf"), "PSCS_VPIN=" + vpin}
	doc := filepath.Join(dir, "doc.txt")
	os.WriteFile(doc, []byte("the council's decision"), 0o600)
	sign := func() (string, error) {
		return run(pscsBin, bob, "remote", "sign", "-slot", "1", "-in", doc, "-out", doc+".sig", "-cert", doc+".pem")
	}
	if _, err := sign(); err != nil {
		t.Fatal(err)
	}
	verifyECDSA(t, doc, doc+".sig", doc+".pem")
	// The owner sees it; the delegate does not administer.
	if out, err := admin(nil, "list"); err != nil || !regexp.MustCompile(id+`\tmayor\tto bob\tuntil \S+\tactive\tused 1`).MatchString(out) {
		t.Errorf("list: %v %q", err, out)
	}
	if out, err := run(pscsBin, bob, "admin", "list"); err == nil || !strings.Contains(out, "not the owner") {
		t.Errorf("a delegate administering: %v", err)
	}
	// Revocation: the next request is refused.
	if _, err := admin(nil, "revoke", id); err != nil {
		t.Fatal(err)
	}
	if out, err := sign(); err == nil || !strings.Contains(out, "delegation revoked") {
		t.Errorf("signature after revocation: %v", err)
	}
	// The owner exports the records of the card, every signed request
	// checked against its signer's certificate.
	export := filepath.Join(dir, "export.jsonl")
	if out, err := admin(nil, "export", "-out", export); err != nil || !strings.Contains(out, "0 signed requests that do not verify") {
		t.Errorf("export: %v %q", err, out)
	}
	ops := exportedOps(t, export)
	for _, want := range []string{"alice admin:issue\n", "alice admin:register-pin\n", "alice admin:delegate refused", "alice admin:delegate\n",
		"bob login\n", "bob sign counted (1)\n", "alice admin:revoke\n", "bob login refused"} {
		if !strings.Contains(ops, want) {
			t.Errorf("the export lacks %q: %s", want, ops)
		}
	}

	// Started again, pscsd keeps all of it: the revocation, the identities.
	stop()
	start()
	if out, err := sign(); err == nil || !strings.Contains(out, "delegation revoked") {
		t.Errorf("signature after revocation and restart: %v", err)
	}
	out, err = admin(pass, "delegate", "-card", "mayor", "-to", "bob", "-for", "1h")
	if err != nil {
		t.Fatal(err)
	}
	m = regexp.MustCompile(`virtual PIN ([0-9]+)`).FindStringSubmatch(out)
	bob[1] = "PSCS_VPIN=" + m[1]
	if _, err := sign(); err != nil {
		t.Errorf("signature under a new delegation after restart: %v", err)
	}
	// Neither PIN is anywhere in the state directory in clear.
	filepath.Walk(filepath.Join(dir, "state"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, secret := range []string{"123456", "correct horse battery", vpin} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s holds a secret in clear", path)
			}
		}
		return nil
	})
}

// exportedOps summarises an export: "identity op[ refused][ counted (used)]"
// per line.
func exportedOps(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r struct {
			Identity, Op string
			Decision     uint32
			Verified     bool `json:"signature_verified"`
			Policy       *struct {
				Events uint64 `json:"events"`
				Used   uint64 `json:"used"`
			} `json:"policy"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Op == "" || r.Identity == "pscsd" {
			continue // the header, the chain's digests, and pscsd's own records
		}
		if !r.Verified {
			t.Errorf("record of %s %s: signature not verified", r.Identity, r.Op)
		}
		fmt.Fprintf(&sb, "%s %s", r.Identity, r.Op)
		if r.Decision != 0 {
			sb.WriteString(" refused")
		}
		if r.Policy != nil && r.Policy.Events&1 != 0 { // policy.EventCounted
			fmt.Fprintf(&sb, " counted (%d)", r.Policy.Used)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

func verifyECDSA(t *testing.T, doc, sigFile, certFile string) {
	t.Helper()
	data, _ := os.ReadFile(doc)
	sig, _ := os.ReadFile(sigFile)
	pemBytes, _ := os.ReadFile(certFile)
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatalf("%s: no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	pub := cert.PublicKey.(*ecdsa.PublicKey)
	ok := ecdsa.VerifyASN1(pub, h[:], sig)
	if !ok && len(sig) == 64 {
		ok = ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	if !ok {
		t.Error("the signature does not verify")
	}
}
