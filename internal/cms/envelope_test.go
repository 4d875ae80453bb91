package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
