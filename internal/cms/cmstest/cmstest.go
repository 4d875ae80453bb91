// Package cmstest judges CMS signatures in tests with OpenSSL, a CMS
// implementation nobody here wrote.
package cmstest

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Verify runs openssl cms -verify on the DER SignedData p7m, with the
// detached content if not nil, trusting the certificate trust alone
// (-partial_chain: the card's certificate, or its CA's): the signature
// must verify under the certificate the SignedData encloses, and its
// message-digest match the content. It returns openssl's error output
// and whether it accepted.
func Verify(t testing.TB, p7m, content []byte, trust *x509.Certificate) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", write("sig.p7m", p7m),
		"-CAfile", write("trust.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: trust.Raw})),
		"-partial_chain", "-purpose", "any", "-out", filepath.Join(dir, "out")}
	if content != nil {
		args = append(args, "-content", write("content", content))
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err == nil
}

// VerifyChain is Verify trusting root alone, without -partial_chain: the
// path from the signer's certificate to root must be in the SignedData's
// certificates.
func VerifyChain(t testing.TB, p7m, content []byte, root *x509.Certificate) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", write("sig.p7m", p7m),
		"-CAfile", write("root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})),
		"-purpose", "any", "-out", filepath.Join(dir, "out")}
	if content != nil {
		args = append(args, "-content", write("content", content))
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err == nil
}

// VerifyGnuTLS runs GnuTLS's certtool --p7-verify on the DER SignedData
// p7m, with the detached content if not nil, against the certificate
// cert: a second implementation nobody here wrote, for Ed25519, which
// openssl cms (3.0 to at least 3.6) does not verify in a SignedData with
// signed attributes ("invalid digest": openssl/openssl issues 11915 and
// 32248). It returns certtool's output and whether it accepted.
func VerifyGnuTLS(t testing.TB, p7m, content []byte, cert *x509.Certificate) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"--p7-verify", "--inder", "--infile", write("sig.p7m", p7m),
		"--load-certificate", write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))}
	if content != nil {
		args = append(args, "--load-data", write("content", content))
	}
	out, err := exec.Command("certtool", args...).CombinedOutput()
	return string(out), err == nil
}

// Print returns openssl cms -cmsout -print of the DER SignedData p7m:
// its structure as OpenSSL reads it.
func Print(t testing.TB, p7m []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sig.p7m")
	if err := os.WriteFile(p, p7m, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", p).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -cmsout -print: %v\n%s", err, out)
	}
	return string(out)
}
