package main

// A card that another program changes while pscsd serves it: pscsd
// configured as a site runs it (the card in a private pcscd's reader,
// swtpm as its TPM), run with -trace, a delegate signing over QUIC.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/swapcard"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// readerChanging is the reader of TestCardChangesUnderPSCSD's card
// (TestConfiguredServer uses readers 0 and 1, the durable site 2 and 3);
// its yubico-piv-tool variant uses reader 5.
const readerChanging = 4

// A cardChanger is another program changing the card in a pcscd reader
// while pscsd serves it, leaving the card reset as PIV tools leave it when
// they disconnect.
type cardChanger interface {
	// plug inserts the card, serial 7300 with PIN 123456 and keys in 9A,
	// 9C, 9D and 9E, into reader and returns what it can tell of it.
	plug(t *testing.T, reader int) cardView
	// newKey puts a new key in slot 9C, with a certificate, and returns
	// the certificate.
	newKey(t *testing.T) *x509.Certificate
	// deleteKey deletes the key of slot 9C; ok is false when the program
	// cannot.
	deleteKey(t *testing.T) (ok bool)
}

// cardView is what a test may ask of the card without going through
// pcscd: its PIN tries, and a command sent as the owner at the card.
type cardView interface {
	PINRetries() int
	Transmit(ctx context.Context, cmd []byte) ([]byte, error)
}

// simChanger changes a simulated card through the simulator's Go API
// (swapcard: the same seed and serial, another key in 9C) and resets it
// through a PC/SC connection of its own. A variant that provisions the
// simulator with yubico-piv-tool (-a generate -s 9c, -a
// import-certificate), once it takes them, is another cardChanger.
type simChanger struct {
	card   *swapcard.Card
	reader string
}

func simVersion(t *testing.T, slot9C pivsim.Algorithm) *pivsim.Card {
	t.Helper()
	slots := map[pivsim.Slot]pivsim.SlotConfig{
		pivsim.SlotAuthentication:     {Algorithm: pivsim.ECCP256},
		pivsim.SlotKeyManagement:      {Algorithm: pivsim.ECCP256},
		pivsim.SlotCardAuthentication: {Algorithm: pivsim.ECCP384},
	}
	if slot9C != 0 {
		slots[pivsim.SlotSignature] = pivsim.SlotConfig{Algorithm: slot9C}
	}
	sim, err := pivsim.New(pivsim.Config{Seed: []byte("changes under pscsd"), Serial: 7300, Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

func (c *simChanger) plug(t *testing.T, reader int) cardView {
	c.card = swapcard.New(simVersion(t, pivsim.ECCP256))
	c.reader = daemon.Readers[reader]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); vpcd.Plug(ctx, daemon.CardAddr(reader), c.card) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *simChanger) PINRetries() int { return c.card.Sim().PINRetries() }

func (c *simChanger) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	return c.card.Transmit(ctx, cmd)
}

func (c *simChanger) newKey(t *testing.T) *x509.Certificate {
	t.Helper()
	sim := simVersion(t, pivsim.ECCP384)
	c.swap(t, sim)
	return sim.Certificate(pivsim.SlotSignature)
}

func (c *simChanger) deleteKey(t *testing.T) bool {
	t.Helper()
	c.swap(t, simVersion(t, 0))
	return true
}

// swap puts sim in the card's place and resets the card through a PC/SC
// connection of its own.
func (c *simChanger) swap(t *testing.T, sim *pivsim.Card) {
	t.Helper()
	c.card.Swap(sim)
	resetCard(t, c.reader)
}

// resetCard resets the card in reader through a PC/SC connection of the
// test's own, as another program does.
func resetCard(t *testing.T, reader string) {
	t.Helper()
	pc, err := pcsc.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	card, err := pc.Connect(t.Context(), reader)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Close()
	if err := card.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// pivToolChanger changes the card as an administrator does, with
// yubico-piv-tool through pcscd: generate a new key in 9C with the default
// management key, then import-certificate a certificate for it from a test
// CA; each run of the tool ends with the card reset (yubico-piv-tool
// disconnects with SCARD_RESET_CARD). It cannot delete a key: that is
// yubico-piv-tool's delete-key, for firmware 5.7, and the simulator is a
// 5.4 (deleting the certificate leaves the key, which GET METADATA shows).
type pivToolChanger struct {
	sim    *pivsim.Card
	reader string
	dir    string
}

func (c *pivToolChanger) plug(t *testing.T, reader int) cardView {
	if _, err := exec.LookPath("yubico-piv-tool"); err != nil {
		t.Skip("yubico-piv-tool not installed: apt-get install yubico-piv-tool")
	}
	c.sim, c.reader, c.dir = simVersion(t, pivsim.ECCP256), daemon.Readers[reader], t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); vpcd.Plug(ctx, daemon.CardAddr(reader), c.sim) }()
	t.Cleanup(func() { cancel(); <-done })
	return c.sim
}

func (c *pivToolChanger) ypt(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("yubico-piv-tool", append([]string{"-r", c.reader, "--key=010203040506070801020304050607080102030405060708"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("yubico-piv-tool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (c *pivToolChanger) newKey(t *testing.T) *x509.Certificate {
	t.Helper()
	pubFile, certFile := filepath.Join(c.dir, "9c.pub.pem"), filepath.Join(c.dir, "9c.cert.pem")
	c.ypt(t, "-a", "generate", "-s", "9c", "-A", "ECCP384", "-o", pubFile)
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
	c.ypt(t, "-a", "import-certificate", "-s", "9c", "-i", certFile)
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func (c *pivToolChanger) deleteKey(*testing.T) bool { return false }

// TestCardChangesUnderPSCSD: another program generates a new key in slot
// 9C of a card pscsd serves, and resets the card. The delegate's next
// signature uses the new key and verifies under the certificate it comes
// with; the delegate gets a slot event, and its new catalogue shows the new
// certificate. The program then deletes the key: a signature with it is
// refused with code 117, and the audit log keeps the refusal. On the way:
// register-pin with a wrong PIN says how many tries the card has left, and
// pscsd -trace logs the APDUs of the configured cards with the PIN
// redacted.
func TestCardChangesUnderPSCSD(t *testing.T) {
	t.Run("simulator", func(t *testing.T) { testCardChange(t, &simChanger{}, readerChanging) })
	t.Run("yubico-piv-tool", func(t *testing.T) { testCardChange(t, &pivToolChanger{}, readerChanging+1) })
}

func testCardChange(t *testing.T, changer cardChanger, reader int) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	card := changer.plug(t, reader)
	s := &site{t: t, bin: buildPSCSD(t), dir: t.TempDir()}
	tpm, err := swtpm.New(filepath.Join(s.dir, "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Stop() })
	s.conf = filepath.Join(s.dir, "pscsd.json")
	cfg := map[string]any{"state": "state", "listen": freeUDP(t), "metrics": "off", "tpm": "unix:" + tpm.SocketPath(),
		"server_names": []string{"127.0.0.1"},
		"cards":        []map[string]any{{"name": "mayor", "slot": 1, "owner": "alice", "serials": []string{"7300"}}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(s.conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = append(os.Environ(), daemon.Env())
	initCmd := exec.Command(s.bin, "init", "-config", s.conf, "-owner", "alice", "-out", filepath.Join(s.dir, "alice"))
	initCmd.Env = s.env
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("pscsd init: %v\n%s", err, out)
	}
	if s.owner, err = client.LoadConfig(filepath.Join(s.dir, "alice", "client.conf")); err != nil {
		t.Fatal(err)
	}
	s.log = &logBuffer{}
	s.cmd = exec.Command(s.bin, "-trace", "-config", s.conf)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Signal(os.Interrupt)
		s.cmd.Wait()
		if t.Failed() {
			t.Logf("pscsd said:\n%s", s.log.String())
		}
	})
	s.waitFor(regexp.MustCompile(`card joined`), 1)
	s.waitFor(regexp.MustCompile(`pscsd serving`), 1)

	owner := s.dial(s.owner)
	defer owner.Close()
	// A wrong PIN: the owner learns how many tries are left.
	_, err = s.admin(owner, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "mayor"},
		&transport.AdminSecret{PIN: []byte("654321"), Passphrase: []byte(sitePassphrase)})
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.CodePINCheck || !strings.Contains(te.Message, "2 tries left") {
		t.Errorf("register-pin with a wrong PIN: %v; want code %d saying 2 tries left", err, transport.CodePINCheck)
	}
	if n := card.PINRetries(); n != 2 {
		t.Fatalf("the card has %d PIN tries left after one wrong PIN, want 2", n)
	}
	// The owner enters the right PIN at the card (its counter is full
	// again), then registers it.
	verify := append([]byte{0x00, 0x20, 0x00, 0x80, 0x08}, []byte("123456\xff\xff")...)
	if rsp, err := card.Transmit(t.Context(), verify); err != nil || !bytes.Equal(rsp, []byte{0x90, 0x00}) {
		t.Fatalf("VERIFY at the card: %X %v", rsp, err)
	}
	if _, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "mayor"},
		&transport.AdminSecret{PIN: []byte("123456"), Passphrase: []byte(sitePassphrase)}); err != nil {
		t.Fatalf("register-pin: %v", err)
	}
	bobCfg := s.issue(owner, "bob")
	delegation, vpin := s.delegate(owner, "bob", "mayor", 0, 0)

	bob := s.dial(bobCfg)
	defer bob.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hello, err := bob.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Login(ctx, 1, []byte(vpin)); err != nil {
		t.Fatal(err)
	}
	doc := []byte("signed before and after the card changed")
	digest := sha256.Sum256(doc)
	// 9C is the remote card's second key: its private key is handle 4,
	// its certificate 6. Its PIN policy is "always": the vPIN goes with
	// every signature.
	sign9C := func() (*transport.SignResponse, error) {
		return bob.SignWithPIN(ctx, &transport.SignRequest{Slot: 1, Key: 4, Mechanism: 0x1044, Data: doc}, []byte(vpin)) // CKM_ECDSA_SHA256
	}
	resp, err := sign9C()
	if err != nil {
		t.Fatalf("sign with 9C: %v", err)
	}
	old := verifyP11ECDSA(t, resp, digest[:])
	if cert := catalogueCert(hello.Catalogue, 6); !bytes.Equal(cert, old.Raw) {
		t.Fatal("the catalogue's certificate of 9C is not the one the signature came with")
	}

	// The other program generates a new key in 9C.
	want := changer.newKey(t)
	resp, err = sign9C()
	if err != nil {
		t.Fatalf("the first signature after the change: %v", err)
	}
	got := verifyP11ECDSA(t, resp, digest[:])
	if !got.Equal(want) || got.Equal(old) {
		t.Errorf("the signature after the change came with %q %x, want the new certificate", got.Subject.CommonName, sha256.Sum256(got.Raw))
	}
	// The delegate learns of it: slot events (pscsd may have seen more
	// than one change, a program's several runs), until the catalogue an
	// event announces shows the new certificate.
	for {
		tag := waitSlotEvent(t, bob, 1)
		hello2, err := bob.Hello(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(hello2.Catalogue.Tag, tag) {
			continue // a later change, whose event follows
		}
		if bytes.Equal(catalogueCert(hello2.Catalogue, 6), want.Raw) {
			break
		}
	}
	s.waitFor(regexp.MustCompile(`card's keys changed: read again.* reader=`), 1)

	// -trace: the configured card's APDUs are in the log, the PINs are not.
	log := s.log.String()
	if !regexp.MustCompile(`msg=apdu .*cmd="00 20 00 80 \[\d+ bytes redacted\]"`).MatchString(log) {
		t.Error("pscsd -trace logged no redacted VERIFY of the configured card")
	}
	if !regexp.MustCompile(`msg=apdu .*reader=.*cmd="00 87 `).MatchString(log) {
		t.Error("pscsd -trace logged no signature of the configured card")
	}
	for _, pin := range []string{"31 32 33 34 35 36", "36 35 34 33 32 31"} { // 123456, 654321
		if strings.Contains(log, pin) {
			t.Errorf("pscsd's log holds a PIN (%s)", pin)
		}
	}

	// The other program deletes 9C: a signature with it is refused, and
	// audited.
	if !changer.deleteKey(t) {
		t.Log("this program cannot delete a key: the refusal of a deleted key is the simulator variant's")
		return
	}
	_, err = sign9C()
	if !errors.As(err, &te) || te.Code != transport.CodeKeyGone {
		t.Fatalf("a signature with the deleted key: %v, want code %d", err, transport.CodeKeyGone)
	}
	waitSlotEvent(t, bob, 1)
	if signs := s.auditedSigns(owner); !regexp.MustCompile(`(?m)^bob sign ` + delegation + ` 117$`).MatchString(signs) {
		t.Errorf("the audit log does not keep the refusal with code 117:\n%s", signs)
	}
}

// verifyP11ECDSA checks a PKCS #11 ECDSA signature (r||s) of digest under
// the certificate it came with, and returns the certificate.
func verifyP11ECDSA(t *testing.T, resp *transport.SignResponse, digest []byte) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatalf("the signature's certificate: %v", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	n := len(resp.Signature) / 2
	if !ok || !ecdsa.Verify(pub, digest, new(big.Int).SetBytes(resp.Signature[:n]), new(big.Int).SetBytes(resp.Signature[n:])) {
		t.Error("the signature does not verify under the certificate it came with")
	}
	return cert
}

// catalogueCert is CKA_VALUE of object h of slot 1.
func catalogueCert(cat *transport.Catalogue, h uint64) []byte {
	for _, s := range cat.Slots {
		for _, o := range s.Objects {
			if s.ID == 1 && o.Handle == h {
				v, _ := o.Attributes[0x11].([]byte)
				return v
			}
		}
	}
	return nil
}

// waitSlotEvent waits for a slot event of slot on c and returns its tag.
func waitSlotEvent(t *testing.T, c *client.Client, slot uint64) []byte {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Kind == transport.EventSlot && ev.Slot == slot {
				return ev.Tag
			}
		case <-deadline:
			t.Fatalf("no slot event for slot %d within 30 s", slot)
		}
	}
}

// auditedSigns has owner export its audit records and lists the sign
// records among them: "identity sign delegation decision" per line.
func (s *site) auditedSigns(owner *client.Client) string {
	t := s.t
	t.Helper()
	var out strings.Builder
	var from, until uint64
	for {
		resp, err := s.admin(owner, &transport.AdminRequest{Action: transport.AdminExport, From: from, Until: until}, nil)
		if err != nil {
			t.Fatalf("export: %v", err)
		}
		for _, raw := range resp.Records {
			var r audit.Record
			if err := transport.Unmarshal(raw, &r); err != nil {
				t.Fatalf("export: %v", err)
			}
			if r.Op == "sign" {
				fmt.Fprintf(&out, "%s sign %s %d\n", r.Identity, r.Delegation, r.Decision)
			}
		}
		if resp.Next == 0 {
			return out.String()
		}
		from, until = resp.Next, resp.Until
	}
}
