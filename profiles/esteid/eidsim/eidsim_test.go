package eidsim_test

// In-process tests of every command the simulator answers, of its key and
// certificate making, and of its security rules.

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
)

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func newCard(t testing.TB, cfg eidsim.Config) *eidsim.Card {
	t.Helper()
	if cfg.Seed == nil {
		cfg.Seed = []byte(t.Name())
	}
	c, err := eidsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tx sends a command and returns the data and the status word as hex.
func tx(t testing.TB, c *eidsim.Card, cmd []byte) ([]byte, string) {
	t.Helper()
	rsp, err := c.Transmit(context.Background(), cmd)
	if err != nil || len(rsp) < 2 {
		t.Fatalf("%X: response %X, error %v", cmd, rsp, err)
	}
	return rsp[:len(rsp)-2], fmt.Sprintf("%X", rsp[len(rsp)-2:])
}

// want sends cmd (hex) and fails unless the status word is sw.
func want(t testing.TB, c *eidsim.Card, cmd, sw string) []byte {
	t.Helper()
	data, got := tx(t, c, hx(cmd))
	if got != sw {
		t.Fatalf("%s: status %s, want %s", cmd, got, sw)
	}
	return data
}

// short builds a case 3 or 4 short command.
func short(cla, ins, p1, p2 byte, data []byte, le ...byte) []byte {
	out := append([]byte{cla, ins, p1, p2, byte(len(data))}, data...)
	return append(out, le...)
}

func pinData(pin string) string {
	return hex.EncodeToString(append([]byte(pin), bytes.Repeat([]byte{0xFF}, 12-len(pin))...))
}

const (
	selMF     = "00 A4 00 0C"
	selADF1   = "00 A4 01 0C 02 AD F1"
	selADF2   = "00 A4 01 0C 02 AD F2"
	mainAID   = "A0 00 00 00 77 01 08 00 07 00 00 FE 00 00 01 00"
	mseAuth   = "00 22 41 A4 09 80 04 FF 20 08 00 84 01 81" // OpenSC's form
	mseSign   = "00 22 41 B6 09 80 04 FF 15 08 00 84 01 9F"
	pinInfo   = "00 CB 3F FF 0A 4D 08 70 06 BF 81 %02X 02 A0 80 00"
	verifyFmt = "00 20 00 %02X 0C %s"
)

func verifyCmd(ref eidsim.PIN, pin string) string {
	return fmt.Sprintf(verifyFmt, byte(ref), pinData(pin))
}

// readEF reads the current EF the way OpenSC does: chunks of 233 bytes
// until 6B 00.
func readEF(t *testing.T, c *eidsim.Card) []byte {
	t.Helper()
	var out []byte
	for {
		data, sw := tx(t, c, []byte{0x00, 0xB0, byte(len(out) >> 8), byte(len(out)), 0xE9})
		if sw == "6B00" {
			return out
		}
		if sw != "9000" || len(data) == 0 {
			t.Fatalf("READ BINARY at %d: %s", len(out), sw)
		}
		out = append(out, data...)
	}
}

func TestSelectForms(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	cert := c.Certificate(eidsim.KeyAuthentication).Raw
	// Every form reaches the authentication certificate.
	for name, cmds := range map[string][]string{
		"child by child": {selMF, selADF1, "00 A4 02 0C 02 34 01"},
		"by AID":         {"00 A4 04 0C 0D E8 28 BD 08 0F F2 50 4F 54 20 41 57 50", "00 A4 02 0C 02 34 01"},
		"path from MF":   {"00 A4 08 0C 04 AD F1 34 01"},
		"relative path":  {"00 A4 00 0C 02 3F 00", "00 A4 09 0C 04 AD F1 34 01"},
		"by identifier":  {selMF, "00 A4 00 0C 02 AD F1", "00 A4 00 0C 02 34 01"},
	} {
		t.Run(name, func(t *testing.T) {
			c.Reset()
			want(t, c, "00 A4 02 0C 02 34 1F", "6A82") // not in the MF
			for _, cmd := range cmds {
				want(t, c, cmd, "9000")
			}
			if got := readEF(t, c); !bytes.Equal(got, cert) {
				t.Errorf("read %d bytes, not the certificate", len(got))
			}
		})
	}
	// The FCP gives the size OpenSC reads; the FCI names an application.
	c.Reset()
	fcp := want(t, c, "00 A4 09 04 04 AD F2 34 1F", "9000")
	tmpl, ok, err := apdu.FindTLV(fcp, 0x62)
	if err != nil || !ok {
		t.Fatalf("FCP %X: %v", fcp, err)
	}
	size, _, _ := apdu.FindTLV(tmpl, 0x80)
	if n := int(size[0])<<8 | int(size[1]); n != len(c.Certificate(eidsim.KeySignature).Raw) {
		t.Errorf("FCP size %d, certificate %d bytes", n, len(c.Certificate(eidsim.KeySignature).Raw))
	}
	fci := want(t, c, "00 A4 04 00 10 51 53 43 44 20 41 70 70 6C 69 63 61 74 69 6F 6E 00", "9000")
	if !bytes.Contains(fci, []byte("QSCD Application")) || fci[0] != 0x6F {
		t.Errorf("FCI of ADF2: %X", fci)
	}
	if data := want(t, c, "00 A4 04 0C 10 "+mainAID, "9000"); len(data) != 0 {
		t.Errorf("SELECT with P2 0C answered data %X", data)
	}
	for cmd, sw := range map[string]string{
		"00 A4 02 0C":                "6700", // OpenSC sends this for EF.DIR; it has no data
		"00 A4 01 0C 02 D0 03":       "6A82", // an EF is no DF
		"00 A4 02 0C 02 AD F1":       "6A82", // a DF is no EF
		"00 A4 00 05":                "6A86",
		"00 A4 03 0C":                "6A86",
		"00 A4 08 0C 03 AD F1 34":    "6700",
		"00 A4 08 0C 04 D0 03 34 01": "6A82", // through an EF
		"00 A4 04 0C 03 A0 00 00":    "6A82",
		"00 A4 00 0C 03 3F 00 00":    "6700",
	} {
		c.Reset()
		want(t, c, cmd, sw)
	}
}

func TestReadBinary(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	p := c.Person()
	want(t, c, "00 B0 00 00 00", "6986") // no current EF
	want(t, c, "00 A4 02 0C 02 D0 03", "9000")
	if got := want(t, c, "00 B0 00 00 0B", "9000"); !bytes.Equal(got, append([]byte{0x04, 0x09}, p.DocumentNumber...)) {
		t.Errorf("document number file: %X", got)
	}
	want(t, c, "00 B0 00 0B 01", "6B00")
	want(t, c, "00 B0 81 00 01", "6A81") // short EF identifiers
	if got := want(t, c, "00 B0 00 02 00", "9000"); string(got) != p.DocumentNumber {
		t.Errorf("read from offset 2: %q", got)
	}
	// The personal data file: fifteen EFs of text.
	want(t, c, "00 A4 01 0C 02 50 00", "9000")
	fields := map[int]string{1: p.Surname, 2: p.GivenName, 4: "EST", 6: p.PersonalCode, 7: p.DocumentNumber}
	for i := 1; i <= 15; i++ {
		want(t, c, fmt.Sprintf("00 A4 02 0C 02 50 %02X", i), "9000")
		got := string(want(t, c, "00 B0 00 00 00", "9000"))
		if w, ok := fields[i]; ok && got != w {
			t.Errorf("personal data %d = %q, want %q", i, got, w)
		}
		if got == "" {
			t.Errorf("personal data %d is empty", i)
		}
	}
	want(t, c, "00 A4 02 0C 02 50 10", "6A82")
	// A short Le gets that many bytes; an extended one the whole file.
	want(t, c, "00 A4 08 0C 04 AD F2 34 1F", "9000")
	if got := want(t, c, "00 B0 00 00 10", "9000"); len(got) != 16 {
		t.Errorf("READ BINARY Le 10: %d bytes", len(got))
	}
	if got := want(t, c, "00 B0 00 00 00", "9000"); len(got) != 256 {
		t.Errorf("READ BINARY Le 00: %d bytes", len(got))
	}
	if got := want(t, c, "00 B0 00 00 00 00 00", "9000"); !bytes.Equal(got, c.Certificate(eidsim.KeySignature).Raw) {
		t.Errorf("extended READ BINARY: %d bytes, not the certificate", len(got))
	}
	want(t, c, "00 B0 00 00 01 00 10", "6700") // data in a READ BINARY
}

func TestVerifyCountsEachPINApart(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	tries := func(pin1, pin2, puk int) {
		t.Helper()
		for p, n := range map[eidsim.PIN]int{eidsim.PIN1: pin1, eidsim.PIN2: pin2, eidsim.PUK: puk} {
			if got := c.Retries(p); got != n {
				t.Errorf("tries of %02X = %d, want %d", byte(p), got, n)
			}
		}
	}
	want(t, c, "00 20 00 01", "63C3")
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
	want(t, c, "00 20 00 01", "9000")
	if !c.Verified(eidsim.PIN1) {
		t.Error("PIN1 not verified")
	}
	want(t, c, verifyCmd(eidsim.PIN1, "4321"), "63C2")
	if c.Verified(eidsim.PIN1) {
		t.Error("PIN1 still verified after a wrong VERIFY")
	}
	tries(2, 3, 3)
	// PIN2 is local to ADF2.
	want(t, c, verifyCmd(eidsim.PIN2, "12345"), "6A88")
	want(t, c, selADF2, "9000")
	want(t, c, verifyCmd(eidsim.PIN2, "54321"), "63C2")
	tries(2, 2, 3)
	want(t, c, verifyCmd(eidsim.PUK, "87654321"), "63C2")
	tries(2, 2, 2)
	// Lengths other than 12 cost nothing.
	want(t, c, "00 20 00 01 04 31 32 33 34", "6700")
	want(t, c, "00 20 00 01 0D "+pinData("1234")+"FF", "6700")
	want(t, c, "00 20 01 01 0C "+pinData("1234"), "6A86")
	want(t, c, "00 20 00 03 0C "+pinData("1234"), "6A88")
	tries(2, 2, 2)
	// A right value restores its counter only.
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
	tries(3, 2, 2)
	// The last try answers 63 C0, then the PIN is blocked.
	want(t, c, verifyCmd(eidsim.PIN2, "00000"), "63C1")
	want(t, c, verifyCmd(eidsim.PIN2, "00000"), "63C0")
	want(t, c, verifyCmd(eidsim.PIN2, "12345"), "6983")
	want(t, c, "00 20 00 85", "6983")
	tries(3, 0, 2)
	if !c.Verified(eidsim.PIN1) {
		t.Error("PIN2's block logged PIN1 out")
	}
}

func TestPINInfo(t *testing.T) {
	c := newCard(t, eidsim.Config{Retries: 5})
	info := func(ref byte) (left, max int) {
		t.Helper()
		data := want(t, c, fmt.Sprintf(pinInfo, ref), "9000")
		if len(data) != 32 {
			t.Fatalf("PIN info %02X: %d bytes, OpenSC needs 32: %X", ref, len(data), data)
		}
		if _, err := apdu.ParseTLVs(data); err != nil {
			t.Fatalf("PIN info %X: %v", data, err)
		}
		return int(data[13]), int(data[10])
	}
	want(t, c, verifyCmd(eidsim.PIN1, "0000"), "63C4")
	if left, max := info(0x01); left != 4 || max != 5 {
		t.Errorf("PIN1 info: %d of %d tries, want 4 of 5", left, max)
	}
	if left, _ := info(0x02); left != 5 {
		t.Errorf("PUK info: %d tries, want 5", left)
	}
	want(t, c, fmt.Sprintf(pinInfo, 0x05), "6A88") // PIN2 from the MF
	want(t, c, selADF2, "9000")
	want(t, c, verifyCmd(eidsim.PIN2, "00000"), "63C4")
	want(t, c, verifyCmd(eidsim.PIN2, "00000"), "63C3")
	if left, max := info(0x05); left != 3 || max != 5 {
		t.Errorf("PIN2 info: %d of %d tries, want 3 of 5", left, max)
	}
	if left, _ := info(0x01); left != 4 {
		t.Errorf("PIN1 info from ADF2: %d tries, want 4", left)
	}
	for cmd, sw := range map[string]string{
		fmt.Sprintf(pinInfo, 0x03):                     "6A88",
		"00 CB 3F FF 02 4D 00":                         "6A80",
		"00 CB 3F FF 04 4D 02 70 00":                   "6A80",
		"00 CB 3F FF 0A 4D 08 70 06 5F 81 01 02 A0 80": "6A80",
		"00 CB 3F FE 0A 4D 08 70 06 BF 81 01 02 A0 80": "6A86",
		"00 CB 3F FF 03 4D 08 70":                      "6A80", // truncated TLV
	} {
		want(t, c, cmd, sw)
	}
}

// verifySig checks a raw r‖s signature of hash by key k.
func verifySig(t *testing.T, c *eidsim.Card, k eidsim.Key, hash, sig []byte) {
	t.Helper()
	if len(sig) != 96 {
		t.Fatalf("signature of %d bytes, want 96 (r‖s)", len(sig))
	}
	pub := c.Certificate(k).PublicKey.(*ecdsa.PublicKey)
	if !pub.Equal(c.PublicKey(k)) {
		t.Fatal("certificate and key differ")
	}
	r, s := new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:])
	if !ecdsa.Verify(pub, hash, r, s) {
		t.Fatalf("signature by key %02X does not verify", byte(k))
	}
}

func TestInternalAuthenticate(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	h := sha512.Sum384([]byte("challenge"))
	ia := fmt.Sprintf("00 88 00 00 30 %X 00", h[:])
	want(t, c, ia, "6985") // no environment
	want(t, c, mseAuth, "6A88")
	want(t, c, selADF1, "9000")
	want(t, c, "00 22 41 A4 06 80 01 54 84 01 81", "6A80") // the signature algorithm
	want(t, c, "00 22 41 A4 06 80 01 04 84 01 9F", "6A88") // the signature key
	want(t, c, "00 22 41 A4 03 84 01 81", "6A80")          // no algorithm
	want(t, c, "00 22 41 A4 06 80 01 04 83 01 81", "6A80")
	want(t, c, "00 22 41 A4 05 80 01 04 84 00", "6A80")
	want(t, c, "00 22 41 A4 04 80 05 04 84", "6A80")
	want(t, c, "00 22 42 A4 06 80 01 04 84 01 81", "6A86")
	want(t, c, "00 22 41 AA 06 80 01 04 84 01 81", "6A86")
	want(t, c, ia, "6985")                                                      // the failed MSE cleared the environment
	for _, mse := range []string{mseAuth, "00 22 41 A4 06 80 01 04 84 01 81"} { // OpenSC's and web-eid's
		want(t, c, mse, "9000")
		want(t, c, ia, "6982")
		want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
		for range 2 { // PIN1 stays verified
			verifySig(t, c, eidsim.KeyAuthentication, h[:], want(t, c, ia, "9000"))
		}
		want(t, c, "00 88 00 01 30 "+hex.EncodeToString(h[:]), "6A86")
		want(t, c, "00 88 00 00 31 00"+hex.EncodeToString(h[:]), "6700")
		want(t, c, "00 88 00 00", "6700")
		c.Reset()
		want(t, c, selADF1, "9000")
	}
	// A shorter hash is the same integer as its zero-padded form.
	want(t, c, mseAuth, "9000")
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
	h256 := sha256.Sum256([]byte("short"))
	verifySig(t, c, eidsim.KeyAuthentication, h256[:], want(t, c, fmt.Sprintf("00 88 00 00 20 %X 00", h256[:]), "9000"))
	// The environment belongs to ADF1: selecting elsewhere drops it.
	want(t, c, selMF, "9000")
	want(t, c, ia, "6985")
	// PSO:CDS is not for the authentication environment.
	want(t, c, selADF1, "9000")
	want(t, c, mseAuth, "9000")
	want(t, c, "00 2A 9E 9A 30 "+hex.EncodeToString(h[:]), "6985")
}

func TestKeyAgreement(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	peer, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point := peer.PublicKey().Bytes()
	dec := fmt.Sprintf("00 2A 80 86 62 00 %X 00", point) // as OpenSC sends it
	want(t, c, selADF1, "9000")
	want(t, c, dec, "6985")
	want(t, c, "00 22 41 B8 06 80 01 0B 84 01 9F", "6A88")
	want(t, c, "00 22 41 B8 09 80 04 FF 30 04 00 84 01 81", "9000")
	want(t, c, dec, "6982")
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
	cardPub, err := c.PublicKey(eidsim.KeyAuthentication).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	wantSecret, _ := peer.ECDH(cardPub)
	for _, cmd := range []string{dec, fmt.Sprintf("00 2A 80 86 61 %X 00", point)} {
		if got := want(t, c, cmd, "9000"); !bytes.Equal(got, wantSecret) {
			t.Errorf("secret %X, want %X", got, wantSecret)
		}
	}
	bad := bytes.Clone(point)
	bad[40] ^= 1 // off the curve
	want(t, c, fmt.Sprintf("00 2A 80 86 61 %X 00", bad), "6A80")
	want(t, c, fmt.Sprintf("00 2A 80 86 60 %X 00", point[:96]), "6700")
	want(t, c, fmt.Sprintf("00 2A 80 84 61 %X 00", point), "6A86")
	// The signature environment does not agree keys, nor this one sign.
	want(t, c, "00 22 41 B8 06 80 01 0B 84 01 81", "9000")
	want(t, c, "00 88 00 00 30 "+strings.Repeat("11", 48), "6985")
	want(t, c, selADF2, "6A82") // a sibling, not a child
	want(t, c, selMF, "9000")
	want(t, c, selADF2, "9000")
	want(t, c, mseSign, "9000")
	want(t, c, dec, "6985")
}

func TestSignatureNeedsPIN2EveryTime(t *testing.T) {
	c := newCard(t, eidsim.Config{PIN2: "24680"})
	h := sha512.Sum384([]byte("a contract"))
	cds := fmt.Sprintf("00 2A 9E 9A 30 %X 00", h[:])
	want(t, c, selADF2, "9000")
	want(t, c, cds, "6985")
	want(t, c, "00 22 41 B6 06 80 01 04 84 01 9F", "6A80")
	want(t, c, "00 22 41 B6 06 80 01 54 84 01 81", "6A88")
	want(t, c, mseSign, "9000")
	want(t, c, cds, "6982")
	want(t, c, "00 20 00 01 0C "+pinData("1234"), "9000") // PIN1 is not PIN2
	want(t, c, cds, "6982")
	for range 3 {
		want(t, c, verifyCmd(eidsim.PIN2, "24680"), "9000")
		verifySig(t, c, eidsim.KeySignature, h[:], want(t, c, cds, "9000"))
		if c.Verified(eidsim.PIN2) {
			t.Fatal("PIN2 still verified after a signature")
		}
		want(t, c, cds, "6982")
	}
	want(t, c, "00 2A 9E 9B 30 "+hex.EncodeToString(h[:]), "6A86")
	// A wrong length spends nothing; web-eid's algorithm form works too.
	want(t, c, "00 22 41 B6 06 80 01 54 84 01 9F", "9000")
	want(t, c, verifyCmd(eidsim.PIN2, "24680"), "9000")
	want(t, c, "00 2A 9E 9A 31 00"+hex.EncodeToString(h[:]), "6700")
	verifySig(t, c, eidsim.KeySignature, h[:], want(t, c, cds, "9000"))
	// Selecting the main application logs out, as OpenSC's logout expects;
	// so does a reset.
	want(t, c, verifyCmd(eidsim.PIN2, "24680"), "9000")
	want(t, c, "00 A4 04 0C 10 "+mainAID, "9000")
	want(t, c, selADF2, "9000")
	want(t, c, mseSign, "9000")
	want(t, c, cds, "6982")
	want(t, c, verifyCmd(eidsim.PIN2, "24680"), "9000")
	c.Reset()
	want(t, c, selADF2, "9000")
	want(t, c, mseSign, "9000")
	want(t, c, cds, "6982")
	// Re-selecting MF and ADF2 between VERIFY and PSO (OpenSC does) keeps
	// PIN2.
	want(t, c, verifyCmd(eidsim.PIN2, "24680"), "9000")
	want(t, c, selMF, "9000")
	want(t, c, selADF2, "9000")
	want(t, c, mseSign, "9000")
	verifySig(t, c, eidsim.KeySignature, h[:], want(t, c, cds, "9000"))
}

func TestChangeAndUnblock(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	change := func(ref eidsim.PIN, old, next string) string {
		return fmt.Sprintf("00 24 00 %02X 18 %s%s", byte(ref), pinData(old), pinData(next))
	}
	want(t, c, change(eidsim.PIN1, "0000", "4321"), "63C2")
	want(t, c, change(eidsim.PIN1, "1234", "43a1"), "6A80")
	want(t, c, change(eidsim.PIN1, "1234", "123"), "6A80")
	want(t, c, "00 24 00 01 0C "+pinData("1234"), "6700")
	want(t, c, "00 24 01 01 18 "+pinData("1234")+pinData("4321"), "6A86")
	want(t, c, change(eidsim.PIN2, "12345", "54321"), "6A88") // not in ADF2
	want(t, c, change(eidsim.PIN1, "1234", "4321"), "9000")
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "63C2")
	want(t, c, verifyCmd(eidsim.PIN1, "4321"), "9000")
	want(t, c, change(eidsim.PUK, "12345678", "11223344"), "9000")

	// Block PIN2, then unblock it as OpenSC does: VERIFY PUK, then 2C 02.
	c.Reset() // the CHANGE REFERENCE DATA verified the PUK
	want(t, c, selADF2, "9000")
	for range 3 {
		tx(t, c, hx(verifyCmd(eidsim.PIN2, "00000")))
	}
	newPIN2 := "00 2C 02 85 0C " + pinData("55555")
	want(t, c, newPIN2, "6982")
	want(t, c, verifyCmd(eidsim.PUK, "12345678"), "63C2")
	want(t, c, verifyCmd(eidsim.PUK, "11223344"), "9000")
	want(t, c, "00 2C 02 85 0C "+pinData("5a555"), "6A80")
	want(t, c, "00 2C 02 02 0C "+pinData("55555"), "6A88") // the PUK has no PUK
	want(t, c, "00 2C 05 85 0C "+pinData("55555"), "6A86")
	want(t, c, newPIN2, "9000")
	if got := c.Retries(eidsim.PIN2); got != 3 {
		t.Errorf("PIN2 tries after unblock: %d", got)
	}
	want(t, c, verifyCmd(eidsim.PIN2, "12345"), "63C2")
	want(t, c, verifyCmd(eidsim.PIN2, "55555"), "9000")
	// P1 00: PUK and new PIN in one command; P1 03: unblock only.
	want(t, c, fmt.Sprintf("00 2C 00 01 18 %s%s", pinData("00000000"), pinData("9999")), "63C2")
	want(t, c, fmt.Sprintf("00 2C 00 01 18 %s%s", pinData("11223344"), pinData("9999")), "9000")
	want(t, c, fmt.Sprintf("00 2C 00 01 0C %s", pinData("11223344")), "6700")
	want(t, c, verifyCmd(eidsim.PIN1, "9999"), "9000")
	want(t, c, verifyCmd(eidsim.PIN1, "0000"), "63C2")
	want(t, c, "00 2C 03 01", "9000") // the PUK is still verified
	if got := c.Retries(eidsim.PIN1); got != 3 {
		t.Errorf("PIN1 tries after unblock: %d", got)
	}
	want(t, c, "00 2C 03 01 0C "+pinData("1111"), "6700")
	c.Reset()
	want(t, c, "00 2C 03 01", "6982")
}

func TestFraming(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	want(t, c, "00 10 00 00", "6D00")
	want(t, c, "80 A4 00 0C", "6E00")
	want(t, c, "00 A4", "6700")
	want(t, c, "00 C0 00 00 00", "6985") // nothing pending
	// A signature fetched in pieces with GET RESPONSE.
	want(t, c, selADF1, "9000")
	want(t, c, mseAuth, "9000")
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
	h := sha512.Sum384([]byte("piecewise"))
	first := want(t, c, fmt.Sprintf("00 88 00 00 30 %X 20", h[:]), "6140")
	rest := want(t, c, "00 C0 00 00 40", "9000")
	verifySig(t, c, eidsim.KeyAuthentication, h[:], append(first, rest...))
	// A chained VERIFY.
	p := hx(pinData("1234"))
	want(t, c, hex.EncodeToString(short(0x10, 0x20, 0x00, 0x01, p[:5])), "9000")
	want(t, c, hex.EncodeToString(short(0x00, 0x20, 0x00, 0x01, p[5:])), "9000")
}

func TestCertificates(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	p := c.Person()
	if len(p.PersonalCode) != 11 || len(p.DocumentNumber) != 9 {
		t.Fatalf("person %+v", p)
	}
	// The personal code's check digit, computed the other way round.
	sum := 0
	for i, w := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 1} {
		sum += int(p.PersonalCode[i]-'0') * w
	}
	if d := sum % 11; d < 10 && int(p.PersonalCode[10]-'0') != d {
		t.Errorf("personal code %s: check digit should be %d", p.PersonalCode, d)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.CACertificate())
	oidSN, oidGN, oidSerial := asn1.ObjectIdentifier{2, 5, 4, 4}, asn1.ObjectIdentifier{2, 5, 4, 42}, asn1.ObjectIdentifier{2, 5, 4, 5}
	for k, usage := range map[eidsim.Key]x509.KeyUsage{
		eidsim.KeyAuthentication: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		eidsim.KeySignature:      x509.KeyUsageContentCommitment,
	} {
		cert := c.Certificate(k)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: cert.NotBefore.Add(time.Hour),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("certificate %02X does not chain to the test CA: %v", byte(k), err)
		}
		if cert.KeyUsage != usage {
			t.Errorf("certificate %02X key usage %v, want %v", byte(k), cert.KeyUsage, usage)
		}
		if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve.Params().BitSize != 384 {
			t.Errorf("certificate %02X: key %T, want ECC P-384", byte(k), cert.PublicKey)
		}
		subj := cert.Subject
		if subj.CommonName != p.Surname+","+p.GivenName+","+p.PersonalCode || len(subj.Country) != 1 || subj.Country[0] != "EE" {
			t.Errorf("certificate %02X subject %s", byte(k), subj)
		}
		attrs := map[string]any{}
		for _, a := range subj.Names {
			attrs[a.Type.String()] = a.Value
		}
		if attrs[oidSN.String()] != p.Surname || attrs[oidGN.String()] != p.GivenName || attrs[oidSerial.String()] != "PNOEE-"+p.PersonalCode {
			t.Errorf("certificate %02X subject attributes %v", byte(k), attrs)
		}
		if len(cert.Policies) == 0 {
			t.Errorf("certificate %02X has no policies", byte(k))
		}
	}
	if c.PublicKey(eidsim.KeyAuthentication).Equal(c.PublicKey(eidsim.KeySignature)) {
		t.Error("both keys are the same")
	}
	if c.PublicKey(0x42) != nil || c.Certificate(0x42) != nil || c.Retries(0x42) != -1 {
		t.Error("an unknown reference has a key, certificate or counter")
	}
}

func TestSeededCardsAreReproducible(t *testing.T) {
	a := newCard(t, eidsim.Config{Seed: []byte("same")})
	b := newCard(t, eidsim.Config{Seed: []byte("same")})
	other := newCard(t, eidsim.Config{Seed: []byte("other")})
	for _, k := range []eidsim.Key{eidsim.KeyAuthentication, eidsim.KeySignature} {
		if !bytes.Equal(a.Certificate(k).Raw, b.Certificate(k).Raw) {
			t.Errorf("certificate %02X differs between two cards of one seed", byte(k))
		}
		if bytes.Equal(a.Certificate(k).Raw, other.Certificate(k).Raw) || a.PublicKey(k).Equal(other.PublicKey(k)) {
			t.Errorf("key %02X is the same for two seeds", byte(k))
		}
	}
	if !bytes.Equal(a.CACertificate().Raw, b.CACertificate().Raw) || a.Person() != b.Person() {
		t.Error("CA or person differs between two cards of one seed")
	}
	r1, err := eidsim.New(eidsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := eidsim.New(eidsim.Config{})
	if r1.PublicKey(eidsim.KeySignature).Equal(r2.PublicKey(eidsim.KeySignature)) {
		t.Error("two unseeded cards have the same key")
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []eidsim.Config{
		{PIN1: "123"}, {PIN1: "1234567890123"}, {PIN2: "1234"}, {PUK: "1234567"}, {PIN1: "12a4"}, {Retries: 16},
	} {
		if _, err := eidsim.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	person := eidsim.Person{Surname: "TEST", GivenName: "PERSON", PersonalCode: "38001085718", DocumentNumber: "AB1234567"}
	atr := hx("3B DC 96 00 80 B1 FE 45 1F 83 00 12 23 3F 54 65 49 44 32 0F 90 00 C3") // EstEID 2018 v2 (2025)
	c := newCard(t, eidsim.Config{PIN1: "999999999999", Person: person, ATR: atr})
	if !bytes.Equal(c.ATR(), atr) || c.Person() != person || !strings.HasPrefix(c.Certificate(eidsim.KeySignature).Subject.CommonName, "TEST,PERSON,") {
		t.Error("configuration not applied")
	}
	want(t, c, verifyCmd(eidsim.PIN1, "999999999999"), "9000")
	if d := newCard(t, eidsim.Config{}); !bytes.Equal(d.ATR(), eidsim.DefaultATR) {
		t.Error("default ATR")
	}
}

func TestLatencyStopsWithContext(t *testing.T) {
	c := newCard(t, eidsim.Config{Latency: eidsim.Latency{Verify: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Transmit(ctx, hx(verifyCmd(eidsim.PIN1, "1234"))); !errors.Is(err, context.Canceled) {
		t.Fatalf("Transmit with a cancelled context: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := c.Transmit(ctx, hx(verifyCmd(eidsim.PIN1, "1234"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("VERIFY taking an hour: %v", err)
	}
}

// TestWebEIDFlows runs the exchanges of web-eid's libelectronic-id, the
// other client written for these cards: applications selected by AID,
// certificates selected by path with P1 09 and read in chunks of B5 after
// their DER length, one-byte algorithm references, VERIFY after MSE:SET.
func TestWebEIDFlows(t *testing.T) {
	c := newCard(t, eidsim.Config{})
	selMain := "00 A4 04 0C 10 " + mainAID
	for k, path := range map[eidsim.Key]string{eidsim.KeyAuthentication: "AD F1 34 01", eidsim.KeySignature: "AD F2 34 1F"} {
		want(t, c, selMain, "9000")
		want(t, c, "00 A4 09 0C 04 "+path, "9000")
		head := want(t, c, "00 B0 00 00 04", "9000")
		if head[0] != 0x30 || head[1] != 0x82 {
			t.Fatalf("certificate starts %X", head)
		}
		n := 4 + (int(head[2])<<8 | int(head[3]))
		var cert []byte
		for len(cert) < n {
			cert = append(cert, want(t, c, fmt.Sprintf("00 B0 %02X %02X %02X", len(cert)>>8, len(cert)&0xFF, min(0xB5, n-len(cert))), "9000")...)
		}
		if !bytes.Equal(cert, c.Certificate(k).Raw) {
			t.Errorf("certificate %02X read in chunks differs", byte(k))
		}
	}
	retries := func(selApp, ref string) (left, max byte) {
		want(t, c, selMain, "9000")
		if selApp != "" {
			want(t, c, selApp, "9000")
		}
		d := want(t, c, "00 CB 3F FF 0A 4D 08 70 06 BF 81 "+ref+" 02 A0 80 00", "9000")
		return d[13], d[10]
	}
	selADF1AID := "00 A4 04 0C 0D E8 28 BD 08 0F F2 50 4F 54 20 41 57 50"
	selADF2AID := "00 A4 04 0C 10 51 53 43 44 20 41 70 70 6C 69 63 61 74 69 6F 6E"
	if left, max := retries("", "01"); left != 3 || max != 3 {
		t.Errorf("authentication PIN retries %d of %d", left, max)
	}
	h := sha512.Sum384([]byte("web-eid"))
	want(t, c, selADF1AID, "9000")
	want(t, c, "00 22 41 A4 06 80 01 04 84 01 81", "9000")
	want(t, c, verifyCmd(eidsim.PIN1, "1234"), "9000")
	verifySig(t, c, eidsim.KeyAuthentication, h[:], want(t, c, fmt.Sprintf("00 88 00 00 30 %X 00", h[:]), "9000"))
	want(t, c, selADF2AID, "9000")
	want(t, c, "00 22 41 B6 06 80 01 54 84 01 9F", "9000")
	want(t, c, verifyCmd(eidsim.PIN2, "11111"), "63C2")
	if left, _ := retries(selADF2AID, "05"); left != 2 {
		t.Errorf("signing PIN retries %d after a wrong PIN, want 2", left)
	}
	want(t, c, selADF2AID, "9000")
	want(t, c, "00 22 41 B6 06 80 01 54 84 01 9F", "9000")
	want(t, c, verifyCmd(eidsim.PIN2, "12345"), "9000")
	verifySig(t, c, eidsim.KeySignature, h[:], want(t, c, fmt.Sprintf("00 2A 9E 9A 30 %X 00", h[:]), "9000"))
}
