package pgpsim_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit"
)

// TestOpenSCOpenPGP: openpgp-tool shows the card; pkcs11-tool signs with
// the signature key (PSO:CDS) and the authentication key (INTERNAL
// AUTHENTICATE), RSA and ECDSA, and OpenSSL verifies every signature with
// the card's public key.
func TestOpenSCOpenPGP(t *testing.T) {
	for i, layout := range []map[pgpsim.Key]simkit.Alg{
		{pgpsim.KeySign: simkit.RSA2048, pgpsim.KeyDecrypt: simkit.RSA2048, pgpsim.KeyAuth: simkit.ECCP256},
		{pgpsim.KeySign: simkit.ECCP384, pgpsim.KeyDecrypt: simkit.ECCP384, pgpsim.KeyAuth: simkit.RSA2048},
	} {
		t.Run(layout[pgpsim.KeySign].String(), func(t *testing.T) {
			j := plug(t, i, pgpsim.Config{Keys: layout}, "openpgp-tool", "pkcs11-tool", "openssl")
			out := j.run("", "openpgp-tool", "--reader", itoa(i), "-C", "-K")
			if serial := hex8(j.card.Serial()); !strings.Contains(strings.ToLower(out), serial) {
				t.Errorf("openpgp-tool does not show the serial %s", serial)
			}
			for k := pgpsim.KeySign; k <= pgpsim.KeyAuth; k++ {
				fp := j.card.KeyFingerprint(k)
				if !strings.Contains(strings.ToLower(strings.ReplaceAll(out, ":", "")), fmt.Sprintf("%x", fp[:])) {
					t.Errorf("openpgp-tool does not show the %v key's fingerprint %x", k, fp)
				}
			}
			list := j.run("", "pkcs11-tool", "--module", openscModule, "-L")
			j.slotUser, j.slotSig = slotOf(t, list, env.Readers[i], "OpenPGP card (User PIN)"), slotOf(t, list, env.Readers[i], "OpenPGP card (User PIN (sig))")
			j.run("", "pkcs11-tool", "--module", openscModule, "--slot", j.slotSig, "-O")
			os.WriteFile(j.path("data"), []byte("judged by OpenSC"), 0o644)
			for _, k := range []pgpsim.Key{pgpsim.KeySign, pgpsim.KeyAuth} {
				j.signAndVerify(k, layout[k])
			}
			if n := j.card.SignatureCount(); n != 1 {
				t.Errorf("signature counter %d after one PSO:CDS and one INTERNAL AUTHENTICATE", n)
			}
		})
	}
}

// slotOf finds in pkcs11-tool -L output the slot of the token label in
// reader.
func slotOf(t *testing.T, list, reader, label string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^Slot \d+ \((0x[0-9a-f]+)\): (.*)\n\s+token label\s+: (.*)$`)
	for _, m := range re.FindAllStringSubmatch(list, -1) {
		if strings.HasPrefix(m[2], reader) && strings.TrimSpace(m[3]) == label {
			return m[1]
		}
	}
	t.Fatalf("no token %q in reader %q", label, reader)
	return ""
}

func itoa(i int) string { return string(rune('0' + i)) }

func hex8(v uint32) string {
	const digits = "0123456789abcdef"
	var b [8]byte
	for i := range b {
		b[7-i] = digits[v>>(4*i)&0xF]
	}
	return string(b[:])
}

// signAndVerify signs j.path("data") with key k through pkcs11-tool and
// verifies the signature with openssl and the card's public key.
func (j *judge) signAndVerify(k pgpsim.Key, alg simkit.Alg) {
	j.t.Helper()
	der, err := x509.MarshalPKIXPublicKey(j.card.PublicKey(k))
	if err != nil {
		j.t.Fatal(err)
	}
	pub := j.path("pub" + itoa(int(k)) + ".pem")
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	id := "0" + itoa(int(k)+1) // OpenSC: 01 signature, 02 decryption, 03 authentication
	sig := j.path("sig" + id)
	slot := j.slotUser // the authentication key is under PW1 82
	if k == pgpsim.KeySign {
		slot = j.slotSig // the signature key under PW1 81
	}
	args := []string{"--module", openscModule, "--slot", slot, "--login", "--pin", "123456", "--sign", "--id", id,
		"--input-file", j.path("data"), "--output-file", sig}
	if alg.RSABits() > 0 {
		args = append(args, "--mechanism", "SHA256-RSA-PKCS")
	} else {
		args = append(args, "--mechanism", "ECDSA-SHA256", "--signature-format", "openssl")
	}
	j.run("", "pkcs11-tool", args...)
	j.run("", "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, j.path("data"))
}
