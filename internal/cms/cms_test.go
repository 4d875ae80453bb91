package cms_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/testpki"
)

var writeSeeds = flag.Bool("seeds", false, "write the fuzz seeds of FuzzParse to testdata")

// signer is a software key with its certificate.
type signer struct {
	key  crypto.Signer
	cert *x509.Certificate
	ca   *testpki.CA
}

func newSigner(t testing.TB, key crypto.Signer) signer {
	ca := testpki.NewCA("cms test CA")
	c := ca.Issue("signer "+fmt.Sprintf("%T", key), testpki.Options{Key: key})
	return signer{key: key, cert: c.Leaf, ca: ca}
}

// sign makes a detached CAdES signature of content as pscsd does.
func (s signer) sign(t testing.TB, content []byte, alg cms.Algorithm, extra ...cms.Attribute) []byte {
	t.Helper()
	h := alg.Hash.New()
	h.Write(content)
	attrs, err := cms.SignedAttributes(cms.Params{Hash: alg.Hash, Digest: h.Sum(nil), SigningTime: time.Now(),
		Certificate: s.cert, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	h = alg.Hash.New()
	h.Write(attrs)
	sig, err := s.key.Sign(rand.Reader, h.Sum(nil), alg.SignerOpts())
	if err != nil {
		t.Fatal(err)
	}
	der, err := cms.Assemble(s.cert, []*x509.Certificate{s.ca.Cert}, alg, attrs, sig)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func keys(t testing.TB) map[string]crypto.Signer {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	return map[string]crypto.Signer{"rsa": rk, "p256": p256, "p384": p384}
}

// TestOpenSSLAccepts: detached and enveloping signatures of RSA (PKCS #1
// v1.5 and PSS) and ECDSA keys, with and without the notice, verify in
// openssl cms against the signer's certificate and in Parse/Verify; the
// notice reads back as written; a changed document fails both.
func TestOpenSSLAccepts(t *testing.T) {
	content := []byte("Ordinanza n. 12: the square is closed on Sunday.\n\x00binary\r\n")
	delegate := testpki.NewCA("delegate").Issue("alice", testpki.Options{}).Leaf
	from := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	notice := cms.NoticeFor(delegate, "d-alice", "mayor", from, from.Add(30*24*time.Hour))
	noticeAttr, err := notice.Attribute()
	if err != nil {
		t.Fatal(err)
	}
	ks := keys(t)
	for _, tc := range []struct {
		key string
		alg cms.Algorithm
	}{
		{"rsa", cms.Algorithm{Hash: crypto.SHA256}},
		{"rsa", cms.Algorithm{Hash: crypto.SHA512}},
		{"rsa", cms.Algorithm{Hash: crypto.SHA256, PSS: true}},
		{"p256", cms.Algorithm{Hash: crypto.SHA256}},
		{"p384", cms.Algorithm{Hash: crypto.SHA384}},
	} {
		s := newSigner(t, ks[tc.key])
		for _, withNotice := range []bool{false, true} {
			name := fmt.Sprintf("%s %v pss=%v notice=%v", tc.key, tc.alg.Hash, tc.alg.PSS, withNotice)
			var extra []cms.Attribute
			if withNotice {
				extra = append(extra, noticeAttr)
			}
			detached := s.sign(t, content, tc.alg, extra...)
			enveloping, err := cms.Envelop(detached, content)
			if err != nil {
				t.Fatalf("%s: envelop: %v", name, err)
			}
			if out, ok := cmstest.Verify(t, detached, content, s.cert); !ok {
				t.Errorf("%s: openssl refuses the detached signature:\n%s", name, out)
			}
			if out, ok := cmstest.Verify(t, enveloping, nil, s.cert); !ok {
				t.Errorf("%s: openssl refuses the enveloping signature:\n%s", name, out)
			}
			if out, ok := cmstest.Verify(t, detached, append([]byte("x"), content...), s.cert); ok {
				t.Errorf("%s: openssl accepts another document:\n%s", name, out)
			}
			printed := cmstest.Print(t, detached)
			if got := strings.Contains(printed, cms.Arc+".1"); got != withNotice {
				t.Errorf("%s: openssl shows the notice attribute %v, want %v", name, got, withNotice)
			}
			for _, der := range [][]byte{detached, enveloping} {
				sd, err := cms.Parse(der)
				if err != nil {
					t.Fatalf("%s: parse: %v", name, err)
				}
				sn := sd.Signers[0]
				doc := content
				if !sd.Detached() {
					doc = sd.Content
				}
				if err := sn.Verify(sn.ContentDigest(doc)); err != nil {
					t.Errorf("%s: verify: %v", name, err)
				}
				if err := sn.Verify(sn.ContentDigest(doc[1:])); err == nil {
					t.Errorf("%s: verifies with another document", name)
				}
				if sn.Certificate == nil || !sn.Certificate.Equal(s.cert) || time.Since(sn.SigningTime) > time.Minute {
					t.Errorf("%s: signer %v at %v", name, sn.Certificate, sn.SigningTime)
				}
				if withNotice != (sn.Notice != nil) {
					t.Fatalf("%s: notice %v", name, sn.Notice)
				}
				if withNotice && (sn.Notice.Delegation != "d-alice" || sn.Notice.Owner != "mayor" || !sn.Notice.NotBefore.Equal(from) ||
					sn.Notice.Subject() != "CN=alice" || sn.Notice.DelegateCertHash != notice.DelegateCertHash) {
					t.Errorf("%s: notice reads back as %+v", name, sn.Notice)
				}
			}
			if *writeSeeds && tc.alg.Hash == crypto.SHA256 {
				for i, der := range [][]byte{detached, enveloping} {
					seed(t, fmt.Sprintf("%s-pss%v-notice%v-%d", tc.key, tc.alg.PSS, withNotice, i), der)
				}
			}
		}
	}
}

// TestReadsOpenSSL: a signature openssl cms -sign makes (not ours) parses
// and verifies here.
func TestReadsOpenSSL(t *testing.T) {
	der, err := os.ReadFile("testdata/openssl-signed.p7m")
	if err != nil {
		t.Fatal(err)
	}
	sd, err := cms.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	s := sd.Signers[0]
	if err := s.Verify(s.ContentDigest(sd.Content)); err != nil {
		t.Error(err)
	}
	if string(sd.Content) != "signed by openssl\n" || s.Notice != nil {
		t.Errorf("content %q, notice %v", sd.Content, s.Notice)
	}
}

// TestRefusals: what is not a SignedData pscs can read is refused with
// an error that says why.
func TestRefusals(t *testing.T) {
	s := newSigner(t, keys(t)["p256"])
	good := s.sign(t, []byte("doc"), cms.Algorithm{Hash: crypto.SHA256})
	for name, tc := range map[string]struct {
		der  []byte
		want string
	}{
		"empty":                 {nil, "malformed ContentInfo"},
		"trailing":              {append(append([]byte{}, good...), 0), "trailing"},
		"BER indefinite length": {append([]byte{0x30, 0x80}, good[2:]...), "DER only"},
		"not signed data":       {[]byte{0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}, "not SignedData"},
	} {
		_, err := cms.Parse(tc.der)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
	if _, err := cms.Envelop(good, []byte("another doc")); err == nil || !strings.Contains(err.Error(), "message-digest") {
		t.Errorf("envelop another document: %v", err)
	}
	if _, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA1, Digest: make([]byte, 20), Certificate: s.cert}); err == nil {
		t.Error("SHA-1 signed attributes made")
	}
}

func seed(t testing.TB, name string, der []byte) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", der)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzParse: Parse never panics, and what it accepts verifies, envelops
// or refuses without panicking; every error unwraps to one of the
// package's sentinels; no chain verifies without anchors; an accepted
// encoding is read back the same after Envelop. Seeds: our signatures
// (TestOpenSSLAccepts) and the hostile ones of TestAttacks (-seeds).
func FuzzParse(f *testing.F) {
	if der, err := os.ReadFile("testdata/openssl-signed.p7m"); err == nil {
		f.Add(der)
	}
	sentinels := []error{cms.ErrMalformed, cms.ErrUnsupported, cms.ErrMissingAttribute, cms.ErrNoCertificate, cms.ErrDigest,
		cms.ErrContentType, cms.ErrSigningCertificate, cms.ErrBadSignature, cms.ErrUntrusted, cms.ErrHash}
	sentinel := func(t *testing.T, what string, err error) {
		if err != nil && !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
			t.Fatalf("%s: %v unwraps to no sentinel of package cms", what, err)
		}
	}
	roots := x509.NewCertPool()
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := cms.Parse(der)
		sentinel(t, "Parse", err)
		if err != nil {
			return
		}
		for _, s := range sd.Signers {
			sentinel(t, "Verify", s.Verify(s.ContentDigest(sd.Content)))
			_, _, err := s.VerifyChain(roots, time.Now())
			if err == nil {
				t.Fatal("VerifyChain without anchors succeeded")
			}
			sentinel(t, "VerifyChain", err)
			if s.Notice != nil {
				_ = s.Notice.String()
			}
		}
		if sd.Detached() {
			s := sd.Signers[0]
			if env, err := cms.Envelop(der, nil); err == nil {
				if _, err := cms.Parse(env); err != nil {
					t.Fatalf("Envelop made what Parse refuses: %v (digest %x)", err, s.MessageDigest)
				}
			}
		}
	})
}
