//go:build cgo

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/transport"
)

// TestCardChangesUnderModule is TestCardChangesUnderPSCSD's
// yubico-piv-tool variant (server/cmd/pscsd) as an application sees it
// through the module: pscsd, configured as a site (swtpm, pscsd init,
// the owner's register-pin and delegation), serves a simulated PIV card
// in a reader of a private pcscd; the delegate's application (this
// process, through miekg/pkcs11) logs in and signs with PIV 9C under the
// old certificate. Then yubico-piv-tool, through the same pcscd,
// generates a new key in 9C with the default management key and imports
// a certificate for it (each run resets the card). The application's next
// signature (a context-specific login first: 9C wants the PIN every time)
// verifies under the new certificate; C_WaitForSlotEvent reports the
// slot, and the module's certificate object of 9C is then the new one.
func TestCardChangesUnderModule(t *testing.T) {
	need(t, "swtpm", "yubico-piv-tool")
	pcscd := privatePCSCD(t)
	so, pscsd := binaries(t)
	dir := t.TempDir()

	// The card: serial 7300, PIN 123456, 9C an ECC P-256 key.
	sim, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name()), Serial: 7300, Slots: map[pivsim.Slot]pivsim.SlotConfig{
		pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256},
		pivsim.SlotSignature:      {Algorithm: pivsim.ECCP256},
	}})
	if err != nil {
		t.Fatal(err)
	}
	plugCard(t, pcscd, readerChanging, sim)

	site := startSite(t, pscsd, dir, pcscd.Env())
	conf := site.delegate(t, "bob")
	p, slot := loadModule(t, so, conf, dir)
	// The events of the first catalogue, before the change.
	for drained := false; !drained; {
		drained = (<-p.WaitForSlotEvent(pkcs11.CKF_DONT_BLOCK)).SlotID != slot
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(s, pkcs11.CKU_USER, conf.vpin); err != nil {
		t.Fatalf("C_Login: %v", err)
	}
	key := findOne(t, p, s, pkcs11.CKO_PRIVATE_KEY, 2) // PIV 9C
	doc := []byte("signed before and after yubico-piv-tool")
	sign := func(contextLogin bool) []byte {
		t.Helper()
		if err := p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA_SHA256, nil)}, key); err != nil {
			t.Fatalf("C_SignInit: %v", err)
		}
		if contextLogin {
			if err := p.Login(s, pkcs11.CKU_CONTEXT_SPECIFIC, conf.vpin); err != nil {
				t.Fatalf("C_Login(CKU_CONTEXT_SPECIFIC): %v", err)
			}
		}
		sig, err := p.Sign(s, doc)
		if err != nil {
			t.Fatalf("C_Sign: %v\npscsd said:\n%s", err, site.log.String())
		}
		return sig
	}
	old := certificate9C(t, p, s)
	if !verifiesUnder(old, doc, sign(false)) {
		t.Fatal("the signature before the change does not verify under 9C's certificate")
	}

	// An administrator provisions 9C anew with yubico-piv-tool.
	want := pivToolNewKey(t, dir, pcscd.Env(), pcscd.Readers[readerChanging])
	if sig := sign(true); !verifiesUnder(want, doc, sig) {
		t.Errorf("the first signature after the change does not verify under the imported certificate (under the old one: %v)",
			verifiesUnder(old, doc, sig))
	}
	// The application learns of it: slot events (pscsd may have seen each
	// of the tool's runs: after generate, 9C has a key and no certificate),
	// until the certificate object is the new one.
	deadline := time.After(60 * time.Second)
	for seen := old.Raw; !bytes.Equal(seen, want.Raw); {
		select {
		case ev := <-p.WaitForSlotEvent(0):
			if ev.SlotID != slot {
				t.Fatalf("C_WaitForSlotEvent: slot %d, want %d", ev.SlotID, slot)
			}
		case <-deadline:
			t.Fatalf("no slot event with the new certificate of 9C within 60 s\npscsd said:\n%s", site.log.String())
		}
		seen = nil
		if obj, err := find(p, s, pkcs11.CKO_CERTIFICATE, 2); err == nil {
			a, err := p.GetAttributeValue(s, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
			if err != nil {
				t.Fatalf("CKA_VALUE of 9C's certificate: %v", err)
			}
			seen = a[0].Value
		}
	}
	// The public key object of 9C is the new key's.
	pubObj := findOne(t, p, s, pkcs11.CKO_PUBLIC_KEY, 2)
	a, err := p.GetAttributeValue(s, pubObj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		t.Fatalf("CKA_EC_POINT of 9C after the slot event: %v", err)
	}
	raw, err := want.PublicKey.(*ecdsa.PublicKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if point, _ := asn1.Marshal(raw); !bytes.Equal(a[0].Value, point) {
		t.Errorf("CKA_EC_POINT of 9C after the slot event: %x, want the new key's %x", a[0].Value, point)
	}
	if !verifiesUnder(want, doc, sign(true)) {
		t.Error("a signature after the slot event does not verify under the new certificate")
	}
}

// certificate9C reads the certificate object of PIV 9C (CKA_ID 02).
func certificate9C(t *testing.T, p *pkcs11.Ctx, s pkcs11.SessionHandle) *x509.Certificate {
	t.Helper()
	obj := findOne(t, p, s, pkcs11.CKO_CERTIFICATE, 2)
	attrs, err := p.GetAttributeValue(s, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(attrs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// verifiesUnder checks a PKCS #11 ECDSA signature (r||s) of SHA-256(doc)
// under cert's key.
func verifiesUnder(cert *x509.Certificate, doc, sig []byte) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return false
	}
	sum := sha256.Sum256(doc)
	n := len(sig) / 2
	return ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
}

// pivToolNewKey provisions PIV 9C of the card in reader as an
// administrator does, with yubico-piv-tool through pcscd (env) and the
// default management key: a new ECC P-256 key (the old one's size: the
// module answers C_Sign's length query from its catalogue, which may not
// know of the change yet, and miekg/pkcs11 does not call again after
// CKR_BUFFER_TOO_SMALL), then a certificate for it
// from a test CA (yubico-piv-tool's selfsign does not work with OpenSSL
// 3). It returns the certificate.
func pivToolNewKey(t *testing.T, dir, env, reader string) *x509.Certificate {
	t.Helper()
	ypt := func(args ...string) {
		t.Helper()
		run(t, append(os.Environ(), env), "yubico-piv-tool",
			append([]string{"-r", reader, "--key=010203040506070801020304050607080102030405060708"}, args...)...)
	}
	pubFile, certFile := filepath.Join(dir, "9c.pub.pem"), filepath.Join(dir, "9c.cert.pem")
	ypt("-a", "generate", "-s", "9c", "-A", "ECCP256", "-o", pubFile)
	b, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no public key from yubico-piv-tool generate: %q", b)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "9C generated by yubico-piv-tool"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}}, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ypt("-a", "import-certificate", "-s", "9c", "-i", certFile)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// loadModule loads the module so into this process through miekg/pkcs11
// as the delegate of conf (its cache under dir) and initialises it (it is
// finalised when the test ends); it returns the one slot it shows.
func loadModule(t *testing.T, so string, conf delegateConf, dir string) (*pkcs11.Ctx, uint) {
	t.Helper()
	t.Setenv("PSCS_CONFIG", conf.path)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("PSCS_TIMEOUT", "20s")
	p := pkcs11.New(so)
	if p == nil {
		t.Fatal("miekg/pkcs11 could not load the module")
	}
	if err := p.Initialize(); err != nil {
		t.Fatalf("C_Initialize: %v", err)
	}
	t.Cleanup(func() { p.Finalize() })
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) != 1 {
		t.Fatalf("C_GetSlotList: %v %v", slots, err)
	}
	return p, slots[0]
}

// site is pscsd configured as a site, serving the card of serial 7300 in
// a pcscd reader as "mayor" (slot 1), owned by alice.
type site struct {
	dir   string
	owner client.Config
	conn  *client.Client // alice's
	log   *syncBuffer
}

const sitePassphrase = "correct horse battery"

// siteCard chooses the card a site serves, when it is not the PIV card
// of serial 7300 the test plugs itself with PIN 123456 for its default PIN.
type siteCard struct {
	serial string            // as the card's profile reports it
	pins   map[string]string // PIN ID -> PIN, registered by the owner
	// sim, if set, is plugged into reader of pcscd until the test ends.
	sim    vpcd.Card
	pcscd  *pcscdtest.PCSCD
	reader int
	// others are the serials of the remote card's further cards (a
	// parallel remote card), plugged by the test; differentKeys makes it
	// one of cards with different keys (same_keys false).
	others        []string
	differentKeys bool
	// chain are PEM files for the remote card's cards[].chain.
	chain []string
	// metrics, if set, is pscsd's metrics address (HOST:PORT); none
	// otherwise.
	metrics string
}

// startSite initialises and starts pscsd with swtpm as its TPM and the
// pcscd of pcscdEnv, waits until it serves the card, and registers the
// card's PIN (or the PINs of card) as its owner. The test's end stops it
// all.
func startSite(t *testing.T, pscsd, dir, pcscdEnv string, card ...siteCard) *site {
	t.Helper()
	s := &site{dir: dir, log: &syncBuffer{}}
	c := siteCard{serial: "7300", pins: map[string]string{"": "123456"}}
	if len(card) > 0 {
		c = card[0]
	}
	if c.sim != nil {
		plugCard(t, c.pcscd, c.reader, c.sim)
	}
	tpm, err := swtpm.New(filepath.Join(dir, "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Stop() })
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := pc.LocalAddr().String()
	pc.Close()
	conf := filepath.Join(dir, "pscsd.json")
	mayor := map[string]any{"name": "mayor", "slot": 1, "owner": "alice", "serials": append([]string{c.serial}, c.others...)}
	if c.differentKeys {
		mayor["same_keys"] = false
	}
	if c.chain != nil {
		mayor["chain"] = c.chain
	}
	metrics := "off"
	if c.metrics != "" {
		metrics = c.metrics
	}
	b, _ := json.Marshal(map[string]any{"state": "state", "listen": listen, "metrics": metrics, "tpm": "unix:" + tpm.SocketPath(),
		"server_names": []string{"127.0.0.1"},
		"cards":        []map[string]any{mayor}})
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), pcscdEnv)
	run(t, env, pscsd, "init", "-config", conf, "-owner", "alice", "-out", filepath.Join(dir, "alice"))
	if s.owner, err = client.LoadConfig(filepath.Join(dir, "alice", "client.conf")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pscsd, "-config", conf)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("pscsd said:\n%s", s.log.String())
		}
	})
	for _, line := range []string{"card joined", "pscsd serving", fmt.Sprintf("members=%d", 1+len(c.others))} {
		s.log.waitFor(t, line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.conn, err = client.Dial(ctx, s.owner); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	for id, pin := range c.pins {
		if _, err := s.admin(&transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "mayor", PIN: id},
			&transport.AdminSecret{PIN: []byte(pin), Passphrase: []byte(sitePassphrase)}); err != nil {
			t.Fatalf("register-pin %q: %v", id, err)
		}
	}
	return s
}

func (s *site) admin(req *transport.AdminRequest, sec *transport.AdminSecret) (*transport.AdminResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var secret []byte
	if sec != nil {
		secret, _ = transport.Marshal(sec)
	}
	var resp transport.AdminResponse
	err := s.conn.Do(ctx, transport.OpAdmin, req, secret, &resp)
	return &resp, err
}

// delegateConf is a delegate's configuration file, virtual PIN and
// delegation.
type delegateConf struct{ path, vpin, delegation string }

// delegate has alice issue an identity for name and delegate "mayor" to
// it for ops (none: signatures) for a day; it returns the delegate's
// client.conf (next to alice's, sharing its CA file) and vPIN.
func (s *site) delegate(t *testing.T, name string, ops ...string) delegateConf {
	t.Helper()
	return s.delegateAs(t, name, transport.AdminDelegation{Ops: ops})
}

// delegateAs is delegate with the delegation's terms in d (operations,
// keys, warranty, documents, …); its delegate and card are name and "mayor", and it ends
// in a day unless d says when.
func (s *site) delegateAs(t *testing.T, name string, d transport.AdminDelegation) delegateConf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	resp, err := s.admin(&transport.AdminRequest{Action: transport.AdminIssue, Name: name, PublicKey: pub}, nil)
	if err != nil {
		t.Fatalf("issue %s: %v", name, err)
	}
	d.Delegate, d.Card = name, "mayor"
	if d.NotAfter == 0 {
		d.NotAfter = time.Now().Add(24 * time.Hour).UnixMilli()
	}
	granted, err := s.admin(&transport.AdminRequest{Action: transport.AdminDelegate, Delegation: &d},
		&transport.AdminSecret{Passphrase: []byte(sitePassphrase)})
	if err != nil {
		t.Fatalf("delegate mayor to %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	aliceDir := filepath.Join(s.dir, "alice")
	raw, err := os.ReadFile(filepath.Join(aliceDir, "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var f client.File
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	f.Certificate, f.Key = name+".pem", name+".key"
	files := map[string][]byte{
		f.Certificate:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.Certificate}),
		f.Key:                 pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		name + "-client.conf": nil,
	}
	files[name+"-client.conf"], _ = json.Marshal(f)
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(aliceDir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return delegateConf{path: filepath.Join(aliceDir, name+"-client.conf"), vpin: granted.VPIN, delegation: granted.ID}
}

// syncBuffer is a process's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls for text in the output, for up to 60 s.
func (b *syncBuffer) waitFor(t *testing.T, text string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(b.String(), text); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q from pscsd after 60 s:\n%s", text, b.String())
		}
	}
}
