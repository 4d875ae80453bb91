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
	"strings"
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
	"github.com/pscs/pscs/server/store"
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
// DIR/demo. All state (enrollment, delegation, sealed PIN, sealed CA key)
// lives in DIR: started again on the same DIR, it resumes, at the same
// address, and the delegate's configuration and vPIN still work. It serves
// until ctx ends.
func runDemo(ctx context.Context, log *slog.Logger, state, listen, admin string) error {
	fmt.Fprint(os.Stderr, demoWarning)
	demoDir := filepath.Join(state, "demo")
	if err := os.MkdirAll(demoDir, 0o700); err != nil {
		return err
	}
	storePath := filepath.Join(state, "store")
	_, statErr := os.Stat(storePath)
	fresh := statErr != nil
	tpmDir, vaultDir, auditPath := filepath.Join(state, "tpm"), filepath.Join(state, "vault"), filepath.Join(state, "audit.log")
	if fresh {
		// A new demo: a new TPM, vault and log.
		for _, p := range []string{tpmDir, vaultDir, auditPath} {
			os.RemoveAll(p)
		}
	}

	// The TPM: swtpm, started and stopped with pscsd, its state kept in DIR.
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
	v, err := vault.Open(tpm, vaultDir)
	if err != nil {
		return err
	}
	defer v.Close()
	// Records of the store and the audit log are authenticated with a key
	// only this TPM can derive.
	mac, err := server.NewTPMKeyedMAC(v)
	if err != nil {
		return err
	}
	st, err := store.Open(storePath, mac)
	if err != nil {
		return fmt.Errorf("store: %w", err) // an altered store is reported, not used
	}
	defer st.Close()
	alog, err := audit.Open(auditPath, mac, audit.Options{})
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	defer alog.Close()
	if r := alog.Recovered(); r != nil {
		log.Warn("audit log: a record cut by a crash was dropped", "seq", r.Seq)
	}

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

	pins := &server.VaultPINs{Vault: v}
	book := policy.NewBook(nil)
	var vpin string
	if fresh {
		if vpin, err = demoSetup(ctx, st, pins, mayor, demoDir); err != nil {
			return err
		}
	}
	// Everything below comes from the store, on the first start as on
	// every restart.
	enroll := transport.NewStaticEnrollment()
	ids, err := st.List(store.KindIdentity)
	if err != nil {
		return err
	}
	for _, id := range ids {
		der, err := st.Get(store.KindIdentity, id)
		if err != nil {
			return err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		enroll.Add(id, cert)
	}
	dels, err := st.List(store.KindDelegation)
	if err != nil {
		return err
	}
	for _, id := range dels {
		b, err := st.Get(store.KindDelegation, id)
		if err != nil {
			return err
		}
		d, err := store.DecodeDelegation(b)
		if err != nil {
			return err
		}
		book.Grant(d)
		eb, err := st.Get(store.KindVault, id)
		if err != nil {
			return err
		}
		var e vault.Entry
		if err := e.UnmarshalBinary(eb); err != nil {
			return err
		}
		pins.Load(id, &e)
	}
	caDER, err := st.Get(store.KindConfig, "ca-certificate")
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	sealed, err := st.Get(store.KindVault, "ca-key")
	if err != nil {
		return err
	}
	var caEntry vault.Entry
	if err := caEntry.UnmarshalBinary(sealed); err != nil {
		return err
	}
	caKeyDER, err := v.Unseal(&caEntry, caKeyVPIN, []byte("pscs demo CA key"))
	if err != nil {
		return fmt.Errorf("the CA key: %w", err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(caKeyDER)
	clear(caKeyDER)
	if err != nil {
		return err
	}
	srvCert, err := issue(ca, caKey.(*ecdsa.PrivateKey), "pscsd demo", true)
	if err != nil {
		return err
	}

	// Metrics and health on the admin listener (loopback).
	met := metrics.New()
	met.AddCheck("tpm", func(ctx context.Context) error { _, err := v.MAC("health", nil); return err })
	met.AddCheck("cards", func(ctx context.Context) error {
		if mayor.Len() == 0 {
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
	// The same address on every start, so that the delegate's
	// configuration stays valid.
	if addr, err := st.Get(store.KindConfig, "listen"); err == nil && listen == "127.0.0.1:0" {
		listen = string(addr)
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	defer pc.Close()
	if err := st.Put(store.KindConfig, "listen", []byte(pc.LocalAddr().String())); err != nil {
		return err
	}
	ts := &transport.Server{Handler: srv, Enrollment: enroll, Logger: log,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}}}

	conf := filepath.Join(demoDir, "client.conf")
	if fresh {
		b, _ := json.MarshalIndent(client.File{Server: pc.LocalAddr().String(), ServerName: "127.0.0.1",
			CA: "ca.pem", Certificate: "delegate.pem", Key: "delegate.key"}, "", "  ")
		if err := os.WriteFile(conf, append(b, '\n'), 0o600); err != nil {
			return err
		}
	} else {
		b, _ := os.ReadFile(filepath.Join(demoDir, "vpin"))
		vpin = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(os.Stderr, `pscsd demo serving on %s (metrics and health: http://%s/metrics, /healthz)
  remote cards: 1 "mayor" (parallel: 3 cards, one key pair), 2 "ceo" (1 card)
  delegation:   demo-1, "mayor" to demo-delegate for 30 days
  virtual PIN:  %s  (also in %s)
next:
  PSCS_CONFIG=%s bin/pscs slots
  PSCS_CONFIG=%s PSCS_VPIN=%s bin/pscs remote sign -slot 1 -in FILE -out FILE.sig -cert signer.pem
`, pc.LocalAddr(), adminLn.Addr(), vpin, filepath.Join(demoDir, "vpin"), conf, conf, vpin)
	return ts.Serve(ctx, pc)
}

// demoSetup makes a new demo's state in st: the CA (its key sealed by the
// vault), the demo delegate enrolled (its certificate and key written to
// demoDir for the delegate's side), the owner's real PIN checked on a card
// whose retry counter is full, a delegation of "mayor" with a fresh
// virtual PIN under which the real PIN is sealed. It returns the vPIN.
func demoSetup(ctx context.Context, st *store.Store, pins *server.VaultPINs, mayor *rsc.Pool, demoDir string) (string, error) {
	realPIN := []byte("123456")
	defer clear(realPIN)
	err := mayor.Do(ctx, "owner", func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		ps, err := c.PINStatus(ctx)
		if err != nil {
			return err
		}
		if ps.Retries < 3 {
			return fmt.Errorf("card %s: PIN retry counter not full (%d): refusing to try the PIN", m.ID, ps.Retries)
		}
		return c.VerifyPIN(ctx, realPIN)
	})
	if err != nil {
		return "", fmt.Errorf("registering the real PIN: %w", err)
	}
	ca, caKey, err := newCA()
	if err != nil {
		return "", err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return "", err
	}
	// The CA key is sealed to the TPM alone: its "vPIN" is a fixed label.
	sealed, err := pins.Vault.Seal(caKeyVPIN, caKeyDER, []byte("pscs demo CA key"))
	clear(caKeyDER)
	if err != nil {
		return "", err
	}
	sealedBytes, err := sealed.MarshalBinary()
	if err != nil {
		return "", err
	}
	delegate, err := issue(ca, caKey, "demo-delegate", false)
	if err != nil {
		return "", err
	}
	del := policy.Delegation{ID: "demo-1", Owner: "mayor", Delegate: "demo-delegate", Card: "mayor",
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * 24 * time.Hour), PerHour: 1000}
	delBytes, err := store.EncodeDelegation(del)
	if err != nil {
		return "", err
	}
	vpin := fmt.Sprintf("%08d", mustRandInt(100000000))
	if err := pins.Register(del.ID, []byte(vpin), realPIN); err != nil {
		return "", err
	}
	entry, _ := pins.Entry(del.ID)
	entryBytes, err := entry.MarshalBinary()
	if err != nil {
		return "", err
	}
	for _, r := range []struct {
		kind, key string
		value     []byte
	}{
		{store.KindConfig, "ca-certificate", ca.Raw},
		{store.KindVault, "ca-key", sealedBytes},
		{store.KindIdentity, "demo-delegate", delegate.Leaf.Raw},
		{store.KindDelegation, del.ID, delBytes},
		{store.KindVault, del.ID, entryBytes},
	} {
		if err := st.Put(r.kind, r.key, r.value); err != nil {
			return "", err
		}
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(delegate.PrivateKey)
	if err != nil {
		return "", err
	}
	for name, b := range map[string][]byte{
		"ca.pem":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		"delegate.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: delegate.Leaf.Raw}),
		"delegate.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"vpin":         []byte(vpin + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(demoDir, name), b, 0o600); err != nil {
			return "", err
		}
	}
	return vpin, nil
}

var caKeyVPIN = []byte("pscs demo CA")

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
