package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// TestDemoContract builds pscsd, runs `pscsd --demo --state DIR`, and uses
// what it writes as the demo delegate would: DIR/demo/client.conf and
// DIR/demo/vpin.
func TestDemoContract(t *testing.T) {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--demo", "--state", state)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		logMu sync.Mutex
		log   strings.Builder
	)
	logText := func() string { logMu.Lock(); defer logMu.Unlock(); return log.String() }
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
		}
	}()
	defer func() {
		cancel()
		cmd.Wait()
		<-logDone
		if t.Failed() {
			t.Logf("pscsd said:\n%s", logText())
		}
	}()
	conf := filepath.Join(state, "demo", "client.conf")
	waitForFile(t, conf)
	vpin, err := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer tcancel()
	c, err := client.Dial(tctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello, err := c.Hello(tctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hello.Catalogue.Slots) != 1 || hello.Catalogue.Slots[0].Cards != 3 {
		t.Fatalf("the demo delegate sees %+v, want the parallel remote card of 3", hello.Catalogue.Slots)
	}
	if _, err := c.Login(tctx, 1, []byte("00000000")); !strings.Contains(err.Error(), "wrong virtual PIN") {
		t.Errorf("a wrong virtual PIN: %v", err)
	}
	if _, err := c.Login(tctx, 1, []byte(strings.TrimSpace(string(vpin)))); err != nil {
		t.Fatal(err)
	}
	doc := []byte("demo document")
	resp, err := c.Sign(tctx, &transport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1044, Data: doc})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(doc)
	n := len(resp.Signature) / 2
	if !ecdsa.Verify(cert.PublicKey.(*ecdsa.PublicKey), digest[:], new(big.Int).SetBytes(resp.Signature[:n]), new(big.Int).SetBytes(resp.Signature[n:])) {
		t.Error("the demo's signature does not verify")
	}
	// Metrics count what happened; health is good.
	var metricsAddr string
	for deadline := time.Now().Add(60 * time.Second); metricsAddr == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, rest, ok := strings.Cut(logText(), "metrics and health: http://"); ok {
			metricsAddr, _, _ = strings.Cut(rest, "/")
		}
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d %s", code, body)
	}
	_, m := get("/metrics")
	for _, want := range []string{`pscs_requests_total{code="0",op="sign"} 1`, `pscs_requests_total{code="104",op="login"} 1`,
		`pscs_refusals_total{reason="wrong_vpin"} 1`, `pscs_cards_present{card="mayor"} 3`, "pscs_card_seconds_count",
		`pscs_limit{limit="connections_per_identity"} 16`, `pscs_limit_refusals_total{code="23",limit="request_rate"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Every request is in the audit log, chained, with the delegate's
	// signed requests as evidence that verifies under its certificate.
	c.Close()
	cancel()
	cmd.Wait()
	f, err := os.Open(filepath.Join(state, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ownerCfg, err := client.LoadConfig(filepath.Join(state, "demo", "owner", "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var signed, admin int
	records, err := audit.Verify(f, nil, func(r *audit.Record) error {
		switch {
		case r.Evidence == nil:
			return nil
		case r.Identity == "demo-owner" && strings.HasPrefix(r.Op, "admin:"):
			admin++
			_, err := transport.VerifyPayload(r.Evidence, ownerCfg.Certificate.Leaf.PublicKey)
			return err
		}
		signed++
		_, err := transport.VerifyPayload(r.Evidence, cfg.Certificate.Leaf.PublicKey)
		return err
	})
	if err != nil || records < 5 || signed != 3 || admin != 2 {
		t.Errorf("audit log: %d records, %d signed by the delegate, %d administration requests, %v; want the wrong login, the login and the signature, the PIN registration and the delegation", records, signed, admin, err)
	}
	// The real PIN is nowhere in the state directory.
	filepath.Walk(state, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), "123456") {
			t.Errorf("%s holds the real PIN in clear", path)
		}
		return nil
	})
}
