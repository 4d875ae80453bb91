package pivsim_test

// yubico-piv-tool provisions the simulator through a real pcscd, as an
// administrator provisions a YubiKey: management-key authentication, key
// generation and import, certificates, CHUID, a new management key. Every
// step is followed by a signature that a tool checks against the public key
// it got from the card or the certificate it wrote.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

const defaultMgmHex = "010203040506070801020304050607080102030405060708"

// ypt runs yubico-piv-tool on the judge's reader.
func (j *judge) ypt(wantFail bool, args ...string) string {
	j.t.Helper()
	return j.run(wantFail, "yubico-piv-tool", append([]string{"-r", env.Readers[j.reader]}, args...)...)
}

// observer is a second PC/SC client that holds its connection to the card
// while the tools work on it, as pscsd does. It sees the card's changes and
// the resets the tools leave behind (yubico-piv-tool disconnects with
// SCARD_RESET_CARD).
type observer struct {
	t      *testing.T
	card   *pcsc.Card
	resets int // transmits refused with cards.ErrCardReset
}

func (j *judge) observe() *observer {
	j.t.Helper()
	pc, err := pcsc.Open()
	if err != nil {
		j.t.Fatal(err)
	}
	j.t.Cleanup(func() { pc.Close() })
	card, err := pc.Connect(context.Background(), env.Readers[j.reader])
	if err != nil {
		j.t.Fatal(err)
	}
	j.t.Cleanup(func() { card.Close() })
	return &observer{t: j.t, card: card}
}

// apdus sends SELECT PIV and then cmds (hex), reconnecting once when the
// card was reset since the last exchange, and returns the status word and
// data of the last response.
func (o *observer) apdus(cmds ...string) (sw string, data []byte) {
	o.t.Helper()
	ctx := context.Background()
	var rsp []byte
	for attempt := 0; ; attempt++ {
		var err error
		for _, c := range append([]string{selectPIV}, cmds...) {
			b, _ := hex.DecodeString(c)
			if rsp, err = o.card.Transmit(ctx, b); err != nil {
				break
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, cards.ErrCardReset) || attempt > 0 {
			o.t.Fatalf("transmit: %v", err)
		}
		o.resets++
		if err := o.card.Reconnect(ctx); err != nil {
			o.t.Fatal(err)
		}
	}
	data = bytes.Clone(rsp[:len(rsp)-2])
	for rsp[len(rsp)-2] == 0x61 { // response chaining: GET RESPONSE
		var err error
		if rsp, err = o.card.Transmit(ctx, []byte{0x00, 0xC0, 0x00, 0x00, rsp[len(rsp)-1]}); err != nil {
			o.t.Fatalf("GET RESPONSE: %v", err)
		}
		data = append(data, rsp[:len(rsp)-2]...)
	}
	return strings.ToUpper(hex.EncodeToString(rsp[len(rsp)-2:])), data
}

const selectPIV = "00A4040005A000000308"

// metadata reads GET METADATA for ref through pcscd and returns its tags.
func (o *observer) metadata(ref byte) map[uint32][]byte {
	o.t.Helper()
	sw, raw := o.apdus("00F700" + hex.EncodeToString([]byte{ref}) + "00")
	if sw != "9000" {
		o.t.Fatalf("GET METADATA %02X: SW %s", ref, sw)
	}
	tlvs, err := apdu.ParseTLVs(raw)
	if err != nil {
		o.t.Fatalf("GET METADATA %02X: %v", ref, err)
	}
	m := map[uint32][]byte{}
	for _, t := range tlvs {
		m[t.Tag] = t.Value
	}
	return m
}

// readPEM returns the first PEM block of a file or of tool output.
func readPEM(t *testing.T, s string) *pem.Block {
	t.Helper()
	if b, err := os.ReadFile(s); err == nil {
		s = string(b)
	}
	i := strings.Index(s, "-----BEGIN")
	if i < 0 {
		t.Fatalf("no PEM in %q", s)
	}
	block, _ := pem.Decode([]byte(s[i:]))
	if block == nil {
		t.Fatal("bad PEM")
	}
	return block
}

func publicKeyFile(t *testing.T, file string) crypto.PublicKey {
	t.Helper()
	pub, err := x509.ParsePKIXPublicKey(readPEM(t, file).Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && e.Equal(b)
}

// certifyAndTest issues a certificate for the public key in pubFile (from
// a test CA: yubico-piv-tool 2.2.0's own selfsign-certificate fails before
// it talks to the card when built with OpenSSL 3, Yubico/yubico-piv-tool
// issue 388), writes it to slot with import-certificate, and lets
// yubico-piv-tool sign with the slot and verify the signature against it.
func (j *judge) certifyAndTest(key, slot, pubFile, cn string) string {
	j.t.Helper()
	cert := j.path("cert-" + slot + "-" + strings.ReplaceAll(cn, " ", "-") + ".pem")
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(cn))),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}, testCA.cert, publicKeyFile(j.t, pubFile), testCA.key)
	if err != nil {
		j.t.Fatal(err)
	}
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	j.ypt(false, "--key="+key, "-a", "import-certificate", "-s", slot, "-i", cert)
	j.testSignature(slot, cert)
	return cert
}

// testCA issues the certificates of keys the card generates.
var testCA = func() (ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}) {
	ca.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pivsim test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.key.Public(), ca.key)
	ca.cert, _ = x509.ParseCertificate(der)
	return ca
}()

// testSignature signs with slot and verifies against cert (yubico-piv-tool
// test-signature).
func (j *judge) testSignature(slot, cert string) {
	j.t.Helper()
	out := j.ypt(false, "-a", "verify-pin", "-P", "123456", "-a", "test-signature", "-s", slot, "-i", cert)
	if !strings.Contains(strings.ToLower(out), "successful") {
		j.t.Errorf("test-signature %s: no success reported", slot)
	}
}

func TestYubicoPIVToolProvisions(t *testing.T) {
	j := plug(t, 4)
	card := j.card
	o := j.observe()

	// Without the management key: refused, and nothing changed.
	before := card.PublicKey(pivsim.SlotAuthentication)
	j.ypt(true, "--key=000000000000000000000000000000000000000000000000", "-a", "generate", "-s", "9a", "-A", "ECCP256")
	if !samePublic(before, card.PublicKey(pivsim.SlotAuthentication)) {
		t.Fatal("a generate with a wrong management key changed 9A")
	}
	for name, cmd := range map[string]string{
		"GENERATE":   "0047009A05AC03800111",
		"PUT DATA":   "00DB3FFF095C035FC1025303300100",
		"SET MGMKEY": "00FFFFFF1B039B18" + strings.Repeat("11", 24),
		"IMPORT":     "00FE119A22" + "0620" + strings.Repeat("01", 32),
	} {
		if sw, _ := o.apdus(cmd); sw != "6982" {
			t.Errorf("%s without management key: SW %s, want 6982", name, sw)
		}
	}
	if md := o.metadata(0x9B); !bytes.Equal(md[0x01], []byte{0x03}) || !bytes.Equal(md[0x05], []byte{0x01}) {
		t.Errorf("metadata 9B of a new card: %X", md)
	}

	// generate, for each algorithm, then a certificate and signatures.
	for _, c := range []struct{ slot, alg string }{{"9a", "ECCP256"}, {"9c", "RSA2048"}, {"9d", "ECCP384"}} {
		pubFile := j.path("pub-" + c.slot + ".pem")
		j.ypt(false, "--key="+defaultMgmHex, "-a", "generate", "-s", c.slot, "-A", c.alg, "-o", pubFile)
		ref, _ := strconv.ParseUint(c.slot, 16, 8)
		got := card.PublicKey(pivsim.Slot(ref))
		if !samePublic(publicKeyFile(t, pubFile), got) {
			t.Fatalf("generate %s: the public key printed is not the card's", c.slot)
		}
		md := o.metadata(byte(ref))
		if !bytes.Equal(md[0x03], []byte{0x01}) {
			t.Errorf("metadata %s after generate: origin %X, want 01 (generated)", c.slot, md[0x03])
		}
		j.certifyAndTest(defaultMgmHex, c.slot, pubFile, "generated "+c.slot)
		if !samePublic(card.Certificate(pivsim.Slot(ref)).PublicKey, got) {
			t.Errorf("certificate %s on the card is not the one imported", c.slot)
		}
	}
	// OpenSC reads the new 9C certificate and signs with the new key; openssl
	// verifies against the key generate printed.
	data := j.path("data.txt")
	os.WriteFile(data, []byte("provisioned by yubico-piv-tool\n"), 0o644)
	sig := j.path("sig-9c")
	j.p11("--login", "--pin", "123456", "--sign", "--id", "02", "-m", "SHA256-RSA-PKCS", "--input-file", data, "--output-file", sig)
	if out := j.run(false, "openssl", "dgst", "-sha256", "-verify", j.path("pub-9c.pem"), "-signature", sig, data); !strings.Contains(out, "Verified OK") {
		t.Error("openssl does not verify OpenSC's signature with the generated 9C key")
	}

	// import-key: an EC key into 9E, an RSA key into retired slot 82.
	for _, c := range []struct{ slot, gen string }{
		{"9e", "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"},
		{"82", "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"},
	} {
		keyFile := j.path("import-" + c.slot + ".pem")
		j.run(false, "openssl", append(strings.Fields(c.gen), "-out", keyFile)...)
		j.ypt(false, "--key="+defaultMgmHex, "-a", "import-key", "-s", c.slot, "-i", keyFile, "--pin-policy", "once")
		cert := j.path("import-" + c.slot + ".crt")
		j.run(false, "openssl", "req", "-x509", "-new", "-key", keyFile, "-subj", "/CN=imported "+c.slot, "-days", "2", "-out", cert)
		j.ypt(false, "--key="+defaultMgmHex, "-a", "import-certificate", "-s", c.slot, "-i", cert)
		ref, _ := strconv.ParseUint(c.slot, 16, 8)
		md := o.metadata(byte(ref))
		if !bytes.Equal(md[0x03], []byte{0x02}) || md[0x02][0] != byte(pivsim.PINPolicyOnce) {
			t.Errorf("metadata %s after import-key: origin %X policy %X, want origin 02, PIN policy once", c.slot, md[0x03], md[0x02])
		}
		j.testSignature(c.slot, cert)
	}

	// set-chuid: a new GUID, and the card still signs.
	chuid := func() string {
		out := j.ypt(false, "-a", "status")
		m := regexp.MustCompile(`CHUID:\s*(\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatal("status shows no CHUID")
		}
		return m[1]
	}
	old := chuid()
	j.ypt(false, "--key="+defaultMgmHex, "-a", "set-chuid")
	if now := chuid(); now == old {
		t.Error("set-chuid left the CHUID as it was")
	}
	j.testSignature("9a", j.path("cert-9a-generated-9a.pem"))

	// set-mgm-key: the old key stops working, the new one provisions.
	newKey := "1122334455667788990011223344556677889900aabbccdd"
	j.ypt(false, "--key="+defaultMgmHex, "-a", "set-mgm-key", "-n", newKey)
	if md := o.metadata(0x9B); !bytes.Equal(md[0x05], []byte{0x00}) {
		t.Errorf("metadata 9B after set-mgm-key: default flag %X, want 00", md[0x05])
	}
	j.ypt(true, "--key="+defaultMgmHex, "-a", "generate", "-s", "9e", "-A", "ECCP256")
	pubFile := j.path("pub-9e-new.pem")
	j.ypt(false, "--key="+newKey, "-a", "generate", "-s", "9e", "-A", "ECCP256", "-o", pubFile)
	if !samePublic(publicKeyFile(t, pubFile), card.PublicKey(pivsim.SlotCardAuthentication)) {
		t.Fatal("generate with the new management key: the public key printed is not the card's")
	}
	j.certifyAndTest(newKey, "9e", pubFile, "after new mgm key")

	// The observer, connected all along, was told of the resets
	// yubico-piv-tool leaves behind and then saw the new keys.
	if o.resets == 0 {
		t.Error("the second PC/SC client never saw a card reset")
	}
	if md := o.metadata(0x9E); !bytes.Equal(md[0x03], []byte{0x01}) {
		t.Errorf("metadata 9E after the last generate: origin %X, want 01", md[0x03])
	}

	// status shows what was written.
	out := j.ypt(false, "-a", "status")
	for _, want := range []string{"generated 9a", "generated 9c", "generated 9d", "after new mgm key", "imported 82"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show the certificate %q", want)
		}
	}
}

// TestYubicoPIVToolRetriesDeleteReset: pin-retries (FA), delete-certificate
// (an empty PUT DATA) and reset (FB), each followed by a signature.
func TestYubicoPIVToolRetriesDeleteReset(t *testing.T) {
	j := plug(t, 5)
	o := j.observe()
	mgm := "--key=" + defaultMgmHex

	j.ypt(false, mgm, "-a", "verify-pin", "-P", "123456", "-a", "pin-retries", "--pin-retries", "5", "--puk-retries", "4")
	if md := o.metadata(0x80); !bytes.Equal(md[0x06], []byte{5, 5}) {
		t.Errorf("PIN metadata after pin-retries 5: %X", md[0x06])
	}
	if md := o.metadata(0x81); !bytes.Equal(md[0x06], []byte{4, 4}) {
		t.Errorf("PUK metadata after puk-retries 4: %X", md[0x06])
	}
	cert := j.path("cert-9a.pem")
	j.ypt(false, "-a", "read-certificate", "-s", "9a", "-o", cert)
	j.testSignature("9a", cert)

	j.ypt(false, mgm, "-a", "delete-certificate", "-s", "9a")
	if j.card.Certificate(pivsim.SlotAuthentication) != nil {
		t.Error("delete-certificate left the certificate on the card")
	}
	if sw, _ := o.apdus("00CB3FFF055C035FC10500"); sw != "6A82" {
		t.Errorf("GET DATA of the deleted certificate: %s, want 6A82", sw)
	}
	j.testSignature("9a", cert) // the key stays

	// reset needs PIN and PUK blocked.
	j.ypt(true, "-a", "reset")
	for range 5 {
		j.ypt(true, "-a", "verify-pin", "-P", "000000")
	}
	for range 4 {
		j.ypt(true, "-a", "unblock-pin", "-P", "00000000", "-N", "999999")
	}
	j.ypt(false, "-a", "reset")
	if j.card.PublicKey(pivsim.SlotAuthentication) != nil || j.card.PINRetries() != 3 {
		t.Fatal("reset left the 9A key or the PIN counter")
	}
	pubFile := j.path("pub-9a.pem")
	j.ypt(false, mgm, "-a", "generate", "-s", "9a", "-A", "ECCP256", "-o", pubFile)
	j.certifyAndTest(defaultMgmHex, "9a", pubFile, "after reset")
}
