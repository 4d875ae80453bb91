package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/testpki"
)

// writeKey writes key and cert as PEM files in dir.
func writeKey(t *testing.T, dir, name string, key crypto.Signer, cert *x509.Certificate) (keyFile, certFile string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
	return keyFile, certFile
}

// TestEnvelopedOpenSSL: an EnvelopedData for an RSA, a P-256 and a P-384
// recipient at once opens in openssl cms -decrypt with each key and in
// Decrypt with each; another key opens nothing; and what openssl cms
// -encrypt makes (AES-256-CBC, RSA-OAEP-SHA256, and ECDH with the SHA-256
// KDF) opens in Decrypt.
func TestEnvelopedOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed (bash .ci/deps)")
	}
	dir := t.TempDir()
	ca := testpki.NewCA("recipients")
	ks := keys(t)
	content := []byte("Content-Type: text/plain\r\n\r\nthe backup\x00\xff binary " + string(bytes.Repeat([]byte("x"), 100)))
	var certs []*x509.Certificate
	files := map[string][2]string{}
	for _, name := range []string{"rsa", "p256", "p384"} {
		c := ca.Issue(name, testpki.Options{Key: ks[name]}).Leaf
		certs = append(certs, c)
		k, cf := writeKey(t, dir, name, ks[name], c)
		files[name] = [2]string{k, cf}
	}
	der, err := cms.Encrypt(content, certs)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "env.der")
	os.WriteFile(in, der, 0o600)
	for name, f := range files {
		out, err := exec.Command("openssl", "cms", "-decrypt", "-inform", "DER", "-in", in, "-inkey", f[0], "-recip", f[1]).Output()
		if err != nil || !bytes.Equal(out, content) {
			t.Errorf("%s: openssl cms -decrypt: %v: %q", name, err, out)
		}
		got, err := cms.Decrypt(der, ks[name])
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: Decrypt: %v", name, err)
		}
		// openssl's own encryption to this recipient, read here.
		args := []string{"cms", "-encrypt", "-aes256", "-binary", "-outform", "DER", "-recip", f[1]}
		if name != "rsa" {
			args = append(args, "-keyopt", "ecdh_kdf_md:sha256")
		} else {
			args = append(args, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256")
		}
		cmd := exec.Command("openssl", args...)
		cmd.Stdin = bytes.NewReader(content)
		theirs, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: openssl cms -encrypt: %v", name, err)
		}
		if got, err := cms.Decrypt(theirs, ks[name]); err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: Decrypt of openssl's EnvelopedData: %v", name, err)
		}
		if *writeSeeds {
			seedEnv(t, "openssl-"+name, theirs)
		}
	}
	other := keys(t)
	for name, k := range other {
		if _, err := cms.Decrypt(der, k); !errors.Is(err, cms.ErrNotRecipient) {
			t.Errorf("another %s key: %v", name, err)
		}
	}
	// One changed byte of the encrypted content is refused (the last
	// block holds the padding) or decrypts to other bytes, never to the
	// content.
	for _, i := range []int{len(der) - 1, len(der) - 40} {
		bad := bytes.Clone(der)
		bad[i] ^= 1
		for name := range files {
			if got, err := cms.Decrypt(bad, ks[name]); err == nil && bytes.Equal(got, content) {
				t.Errorf("%s: byte %d changed, same content", name, i)
			}
		}
	}
	if *writeSeeds {
		seedEnv(t, "ours", der)
	}
}

func seedEnv(t testing.TB, name string, der []byte) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseEnveloped")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", der)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseEnveloped: ParseEnveloped and Decrypt never panic.
func FuzzParseEnveloped(f *testing.F) {
	ks := keys(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		env, err := cms.ParseEnveloped(der)
		if err != nil {
			return
		}
		if len(env.Recipients) == 0 {
			t.Fatal("accepted without recipients")
		}
		for _, k := range ks {
			cms.Decrypt(der, k)
		}
	})
}

// TestEnvelopedPKCS1v15SMIME: an EnvelopedData with RSAES-PKCS1-v1_5 key
// transport opens in openssl smime -decrypt (OpenSSL's PKCS #7 code) and
// in Decrypt; one with RSA-OAEP (the default) opens in openssl cms
// -decrypt but not in openssl smime -decrypt, which is why the choice
// exists; what openssl smime -encrypt makes opens in Decrypt; another RSA
// key never yields the content.
func TestEnvelopedPKCS1v15SMIME(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed (bash .ci/deps)")
	}
	dir := t.TempDir()
	ca := testpki.NewCA("recipients")
	rk := keys(t)["rsa"]
	c := ca.Issue("rsa owner", testpki.Options{Key: rk}).Leaf
	keyFile, certFile := writeKey(t, dir, "rsa", rk, c)
	content := []byte("Content-Type: text/plain\r\n\r\nthe backup\x00\xff binary\r\n")
	smimeDecrypt := func(der []byte) ([]byte, error) {
		in := filepath.Join(dir, "env.der")
		os.WriteFile(in, der, 0o600)
		return exec.Command("openssl", "smime", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-inkey", keyFile, "-recip", certFile).Output()
	}
	v15, err := cms.EncryptWith(content, []*x509.Certificate{c}, cms.KeyTransportPKCS1v15)
	if err != nil {
		t.Fatal(err)
	}
	env, err := cms.ParseEnveloped(v15)
	if err != nil || len(env.Recipients) != 1 || env.Recipients[0].Transport != cms.KeyTransportPKCS1v15 {
		t.Fatalf("ParseEnveloped of PKCS #1 v1.5: %v", err)
	}
	if out, err := smimeDecrypt(v15); err != nil || !bytes.Equal(out, content) {
		t.Errorf("openssl smime -decrypt of PKCS #1 v1.5: %v: %q", err, out)
	}
	if got, err := cms.Decrypt(v15, rk); err != nil || !bytes.Equal(got, content) {
		t.Errorf("Decrypt of PKCS #1 v1.5: %v", err)
	}
	oaep, err := cms.EncryptWith(content, []*x509.Certificate{c}, cms.KeyTransportOAEP)
	if err != nil {
		t.Fatal(err)
	}
	if env, err := cms.ParseEnveloped(oaep); err != nil || env.Recipients[0].Transport != cms.KeyTransportOAEP {
		t.Fatalf("ParseEnveloped of OAEP: %v", err)
	}
	if out, err := smimeDecrypt(oaep); err == nil && bytes.Equal(out, content) {
		t.Log("openssl smime -decrypt now reads RSA-OAEP too")
	}
	in := filepath.Join(dir, "oaep.der")
	os.WriteFile(in, oaep, 0o600)
	if out, err := exec.Command("openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-inkey", keyFile, "-recip", certFile).Output(); err != nil || !bytes.Equal(out, content) {
		t.Errorf("openssl cms -decrypt of OAEP: %v: %q", err, out)
	}
	// openssl smime -encrypt (PKCS #1 v1.5, its only RSA key transport).
	cmd := exec.Command("openssl", "smime", "-encrypt", "-aes256", "-binary", "-outform", "DER", certFile)
	cmd.Stdin = bytes.NewReader(content)
	theirs, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl smime -encrypt: %v", err)
	}
	if got, err := cms.Decrypt(theirs, rk); err != nil || !bytes.Equal(got, content) {
		t.Errorf("Decrypt of openssl smime's EnvelopedData: %v", err)
	}
	// Another RSA key: ErrNotRecipient, or (once in about 256, no padding
	// oracle) other bytes; never the content.
	other := keys(t)["rsa"]
	for range 4 {
		if got, err := cms.Decrypt(v15, other); err == nil && bytes.Equal(got, content) || err != nil && !errors.Is(err, cms.ErrNotRecipient) {
			t.Errorf("another RSA key: %v", err)
		}
	}
	// A changed encrypted key never yields the content either.
	bad := bytes.Clone(v15)
	i := bytes.Index(bad, env.Recipients[0].Key)
	bad[i+10] ^= 1
	if got, err := cms.Decrypt(bad, rk); err == nil && bytes.Equal(got, content) {
		t.Error("a changed encrypted key gave the content")
	}
	if *writeSeeds {
		seedEnv(t, "pkcs1v15", v15)
		seedEnv(t, "openssl-smime", theirs)
	}
	for _, name := range []string{"oaep", "pkcs1v15", ""} {
		kt, err := cms.ParseKeyTransport(name)
		if err != nil || name != "" && kt.String() != name {
			t.Errorf("ParseKeyTransport(%q) = %v, %v", name, kt, err)
		}
	}
	if _, err := cms.ParseKeyTransport("rsa"); err == nil {
		t.Error("ParseKeyTransport(rsa) accepted")
	}
}

// envelopedOf rebuilds an EnvelopedData of version v from recipient infos
// and an EncryptedContentInfo (each with its tag).
func envelopedOf(v int64, ris [][]byte, eci []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3})
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(v)
				b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
					for _, ri := range ris {
						b.AddBytes(ri)
					}
				})
				b.AddBytes(eci)
			})
		})
	})
	return b.BytesOrPanic()
}

// envelopedParts takes an EnvelopedData apart: its recipient infos and its
// EncryptedContentInfo, each with its tag.
func envelopedParts(t *testing.T, der []byte) (ris [][]byte, eci []byte) {
	t.Helper()
	in := cryptobyte.String(der)
	var ci, ex, ed, set, e cryptobyte.String
	var v int64
	if !in.ReadASN1(&ci, asn1.SEQUENCE) || !ci.SkipASN1(asn1.OBJECT_IDENTIFIER) ||
		!ci.ReadASN1(&ex, asn1.Tag(0).Constructed().ContextSpecific()) || !ex.ReadASN1(&ed, asn1.SEQUENCE) ||
		!ed.ReadASN1Integer(&v) || !ed.ReadASN1(&set, asn1.SET) || !ed.ReadASN1Element(&e, asn1.SEQUENCE) {
		t.Fatal("not an EnvelopedData")
	}
	for !set.Empty() {
		var ri cryptobyte.String
		var tag asn1.Tag
		if !set.ReadAnyASN1Element(&ri, &tag) {
			t.Fatal("a recipient info")
		}
		ris = append(ris, ri)
	}
	return ris, e
}

// TestParseEnvelopedHostile: ParseEnveloped refuses what pscs never makes
// and what an attacker might send: too many or no recipients, other
// parameters for OAEP, PKCS #1 v1.5 or the KDF, another cipher, another
// version, unknown recipient kinds, BER (constructed) content, trailing or
// missing bytes. With -seeds they become seeds of FuzzParseEnveloped.
func TestParseEnvelopedHostile(t *testing.T) {
	ca := testpki.NewCA("recipients")
	ks := keys(t)
	rsaCert := ca.Issue("rsa", testpki.Options{Key: ks["rsa"]}).Leaf
	ecCert := ca.Issue("p256", testpki.Options{Key: ks["p256"]}).Leaf
	content := []byte("content")
	oaep, _ := cms.EncryptWith(content, []*x509.Certificate{rsaCert}, cms.KeyTransportOAEP)
	v15, _ := cms.EncryptWith(content, []*x509.Certificate{rsaCert}, cms.KeyTransportPKCS1v15)
	kari, _ := cms.Encrypt(content, []*x509.Certificate{ecCert})
	ris, eci := envelopedParts(t, oaep)
	kariRIs, kariECI := envelopedParts(t, kari)
	replace := func(der []byte, old, new string) []byte {
		t.Helper()
		o, n := []byte(old), []byte(new)
		if !bytes.Contains(der, o) || len(o) != len(n) {
			t.Fatalf("no %x to replace", o)
		}
		return bytes.Replace(der, o, n, 1)
	}
	const (
		sha256OID = "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01"
		rsaEnc    = "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00"
		kdfOID    = "\x06\x06\x2b\x81\x04\x01\x0b\x01"
		aes256CBC = "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x2a"
	)
	var constructed cryptobyte.Builder // the content in [0] constructed, as BER streaming writes it
	{
		s := cryptobyte.String(eci)
		var body, ctype, alg, enc cryptobyte.String
		s.ReadASN1(&body, asn1.SEQUENCE)
		body.ReadASN1Element(&ctype, asn1.OBJECT_IDENTIFIER)
		body.ReadASN1Element(&alg, asn1.SEQUENCE)
		body.ReadASN1(&enc, asn1.Tag(0).ContextSpecific())
		constructed.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(ctype)
			b.AddBytes(alg)
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(enc) })
		})
	}
	many := make([][]byte, cms.MaxRecipients+1)
	for i := range many {
		many[i] = ris[0]
	}
	kek := []byte{0xa2, 0x03, 0x02, 0x01, 0x04} // [2] KEKRecipientInfo
	hostile := map[string][]byte{
		"too-many-recipients": envelopedOf(0, many, eci),
		"no-recipient":        envelopedOf(0, nil, eci),
		"oaep-sha384":         replace(oaep, sha256OID, "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x02"),
		"pkcs1v15-params":     replace(v15, rsaEnc, "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x04\x00"),
		"rsa-pss-transport":   replace(v15, rsaEnc, "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a\x05\x00"),
		"kdf-sha384":          replace(kari, kdfOID, "\x06\x06\x2b\x81\x04\x01\x0b\x02"),
		"aes128-cbc":          replace(oaep, aes256CBC, "\x06\x09\x60\x86\x48\x01\x65\x03\x04\x01\x02"),
		"version-3":           envelopedOf(3, ris, eci),
		"kek-recipient":       envelopedOf(0, [][]byte{kek}, eci),
		"constructed-content": envelopedOf(0, ris, constructed.BytesOrPanic()),
		"trailing":            append(bytes.Clone(oaep), 0),
		"truncated":           oaep[:len(oaep)-1],
	}
	for name, der := range hostile {
		if _, err := cms.ParseEnveloped(der); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if *writeSeeds {
			seedEnv(t, name, der)
		}
	}
	// The controls: rebuilt, the genuine parts parse.
	if _, err := cms.ParseEnveloped(envelopedOf(0, ris, eci)); err != nil {
		t.Errorf("rebuilt genuine: %v", err)
	}
	if got, err := cms.Decrypt(envelopedOf(2, [][]byte{kariRIs[0], ris[0]}, kariECI), ks["p256"]); err != nil || !bytes.Equal(got, content) {
		t.Errorf("rebuilt key agreement: %v", err)
	}
}
