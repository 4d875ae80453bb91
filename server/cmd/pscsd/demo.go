package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/metrics"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/server/vault"
	"github.com/pscs/pscs/transport"
)

const demoWarning = `
  *******************************************************************
  *  pscsd DEMO MODE: simulated cards, a simulated TPM (swtpm), a     *
  *  throw-away CA and a printed virtual PIN. NOT FOR PRODUCTION.     *
  *******************************************************************
`

// runDemo sets up and serves the demo: four simulated PIV cards in
// process (three sharing one key pair: a parallel remote card "mayor";
// one on its own: "ceo"), a swtpm as the TPM, a CA that issues the server
// and the demo delegate certificates, a delegation of "mayor" to the demo
// delegate with a fresh virtual PIN, and the delegate's configuration in
// DIR/demo. It serves until ctx ends.
func runDemo(ctx context.Context, log *slog.Logger, state, listen, admin string) error {
	fmt.Fprint(os.Stderr, demoWarning)
	demoDir := filepath.Join(state, "demo")
	if err := os.MkdirAll(demoDir, 0o700); err != nil {
		return err
	}

	// The TPM: swtpm, started and stopped with pscsd.
	tpmDir := filepath.Join(state, "tpm")
	os.RemoveAll(tpmDir)
	sw, err := swtpm.New(tpmDir)
	if err != nil {
		return fmt.Errorf("demo TPM (swtpm): %w", err)
	}
	defer sw.Stop()
	tpm, err := sw.Open()
	if err != nil {
		return err
	}
	defer tpm.Close()
	vaultDir := filepath.Join(state, "vault")
	os.RemoveAll(vaultDir)
	v, err := vault.Open(tpm, vaultDir)
	if err != nil {
		return err
	}
	defer v.Close()

	// The cards.
	mayor := rsc.NewPool("mayor", rsc.Options{SameKeys: true, Logger: log})
	ceo := rsc.NewPool("ceo", rsc.Options{Logger: log})
	defer mayor.Close()
	defer ceo.Close()
	for i := range 4 {
		seed, pool := "demo mayor", mayor
		if i == 3 {
			seed, pool = "demo ceo", ceo
		}
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(seed), Serial: uint32(4242000 + i), Latency: pivsim.RealLatency})
		if err != nil {
			return err
		}
		w := cards.NewWorker(cards.Direct(sim), log.With("card", i))
		defer w.Close()
		m, err := rsc.NewMember(ctx, fmt.Sprint(sim.Serial()), w, piv.Profile{})
		if err != nil {
			return err
		}
		if err := pool.Add(m); err != nil {
			return err
		}
	}

	// The owner registers the card's real PIN, checked on a card whose
	// retry counter is full, and delegates "mayor" to the demo delegate.
	realPIN := []byte("123456")
	err = mayor.Do(ctx, "owner", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		st, err := c.PINStatus(ctx)
		if err != nil {
			return err
		}
		if st.Retries < 3 {
			return fmt.Errorf("card %s: PIN retry counter not full (%d): refusing to try the PIN", m.ID, st.Retries)
		}
		return c.VerifyPIN(ctx, realPIN)
	})
	if err != nil {
		return fmt.Errorf("registering the real PIN: %w", err)
	}
	book := policy.NewBook(nil)
	del := policy.Delegation{ID: "demo-1", Owner: "mayor", Delegate: "demo-delegate", Card: "mayor",
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * 24 * time.Hour), PerHour: 1000}
	book.Grant(del)
	vpin := fmt.Sprintf("%08d", mustRandInt(100000000))
	pins := &server.VaultPINs{Vault: v}
	if err := pins.Register(del.ID, []byte(vpin), realPIN); err != nil {
		return err
	}
	clear(realPIN)

	// The CA, the server's certificate, the delegate's.
	ca, caKey, err := newCA()
	if err != nil {
		return err
	}
	srvCert, err := issue(ca, caKey, "pscsd demo", true)
	if err != nil {
		return err
	}
	delegate, err := issue(ca, caKey, "demo-delegate", false)
	if err != nil {
		return err
	}
	enroll := transport.NewStaticEnrollment()
	enroll.Add("demo-delegate", delegate.Leaf)

	// The audit log, authenticated with a key only this TPM can derive.
	mac, err := server.NewTPMKeyedMAC(v)
	if err != nil {
		return err
	}
	os.Remove(filepath.Join(state, "audit.log")) // a new demo, a new TPM: a new log
	alog, err := audit.Open(filepath.Join(state, "audit.log"), mac, audit.Options{})
	if err != nil {
		return err
	}
	defer alog.Close()

	// Metrics and health on the admin listener (loopback).
	met := metrics.New()
	met.AddCheck("tpm", func(ctx context.Context) error { _, err := v.MAC("health", nil); return err })
	met.AddCheck("cards", func(ctx context.Context) error {
		if len(mayor.Members()) == 0 {
			return fmt.Errorf("no card serves mayor")
		}
		return nil
	})
	adminLn, err := net.Listen("tcp", admin)
	if err != nil {
		return err
	}
	adminSrv := &http.Server{Handler: met.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go adminSrv.Serve(adminLn)
	defer adminSrv.Close()

	srv := server.New(server.Config{Book: book, Vault: pins, Logger: log, Name: "pscsd demo", Audit: server.AuditLog{Log: alog}, Metrics: met,
		Cards: []server.Card{{Name: "mayor", Slot: 1, Pool: mayor}, {Name: "ceo", Slot: 2, Pool: ceo}}})
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	defer pc.Close()
	ts := &transport.Server{Handler: srv, Enrollment: enroll, Logger: log,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}}}

	// The delegate's side: certificate, key, CA, configuration, vPIN.
	keyDER, err := x509.MarshalPKCS8PrivateKey(delegate.PrivateKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		"delegate.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: delegate.Leaf.Raw}),
		"delegate.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"vpin":         []byte(vpin + "\n"),
	}
	conf, _ := json.MarshalIndent(client.File{Server: pc.LocalAddr().String(), ServerName: "127.0.0.1",
		CA: "ca.pem", Certificate: "delegate.pem", Key: "delegate.key"}, "", "  ")
	files["client.conf"] = append(conf, '\n')
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(demoDir, name), b, 0o600); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, `pscsd demo serving on %s (metrics and health: http://%s/metrics, /healthz)
  remote cards: 1 "mayor" (parallel: 3 cards, one key pair), 2 "ceo" (1 card)
  delegation:   demo-1, "mayor" to demo-delegate for 30 days
  virtual PIN:  %s  (also in %s)
next:
  PSCS_CONFIG=%s bin/pscs slots
  PSCS_CONFIG=%s PSCS_VPIN=%s bin/pscs remote sign -slot 1 -in FILE -out FILE.sig -cert signer.pem
`, pc.LocalAddr(), adminLn.Addr(), vpin, filepath.Join(demoDir, "vpin"), filepath.Join(demoDir, "client.conf"),
		filepath.Join(demoDir, "client.conf"), vpin)
	return ts.Serve(ctx, pc)
}

func mustRandInt(n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return v.Int64()
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pscsd demo CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, isServer bool) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if isServer {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, err
}
