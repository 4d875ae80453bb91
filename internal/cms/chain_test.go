package cms_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/testpki"
)

// TestVerifyChain: the signer's certificate chains to the anchors
// through the certificates the SignedData carries, for any extended key
// usage, at the signing time when it lies within the certificate's
// validity and is not in the future, now otherwise; a key usage without
// digitalSignature or nonRepudiation, an anchor of the same name but
// another key, and a missing intermediate are ErrUntrusted.
func TestVerifyChain(t *testing.T) {
	root := testpki.NewCA("chain root CA")
	inter := root.Intermediate("chain issuing CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	issue := func(usage x509.KeyUsage, eku []x509.ExtKeyUsage, from, until time.Time) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "signer"},
			NotBefore: from, NotAfter: until, KeyUsage: usage, ExtKeyUsage: eku}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.Cert, key.Public(), inter.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	signed := func(cert *x509.Certificate, chain []*x509.Certificate, at time.Time) *cms.Signer {
		sum := sha256.Sum256([]byte("doc"))
		attrs, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA256, Digest: sum[:], SigningTime: at, Certificate: cert})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(attrs)
		sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
		if err != nil {
			t.Fatal(err)
		}
		der, err := cms.Assemble(cert, chain, cms.Algorithm{Hash: crypto.SHA256}, attrs, sig)
		if err != nil {
			t.Fatal(err)
		}
		sd, err := cms.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		s := sd.Signers[0]
		if err := s.Verify(s.ContentDigest([]byte("doc"))); err != nil {
			t.Fatal(err)
		}
		return s
	}
	chain := []*x509.Certificate{inter.Cert}
	current := issue(x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, now.Add(-time.Hour), now.Add(time.Hour))
	expired := issue(x509.KeyUsageDigitalSignature, nil, now.Add(-50*time.Minute), now.Add(-10*time.Minute))
	signingTime := now.Add(-30 * time.Minute).UTC().Truncate(time.Second)
	for _, tc := range []struct {
		name   string
		s      *cms.Signer
		roots  *x509.CertPool
		err    error
		atSign bool // checked at the signing time, else now
	}{
		{"current, any EKU", signed(current, chain, signingTime), root.Pool, nil, true},
		{"nonRepudiation alone", signed(issue(x509.KeyUsageContentCommitment, nil, now.Add(-time.Hour), now.Add(time.Hour)), chain, signingTime), root.Pool, nil, true},
		{"no key usage", signed(issue(0, nil, now.Add(-time.Hour), now.Add(time.Hour)), chain, signingTime), root.Pool, nil, true},
		{"keyEncipherment alone", signed(issue(x509.KeyUsageKeyEncipherment, nil, now.Add(-time.Hour), now.Add(time.Hour)), chain, signingTime), root.Pool, cms.ErrUntrusted, true},
		{"expired, signed within", signed(expired, chain, signingTime), root.Pool, nil, true},
		{"expired, signed after", signed(expired, chain, now.Add(-5*time.Minute)), root.Pool, cms.ErrUntrusted, false},
		{"expired, no signing time", signed(expired, chain, time.Time{}), root.Pool, cms.ErrUntrusted, false},
		{"signing time in the future", signed(current, chain, now.Add(10*time.Minute)), root.Pool, nil, false},
		{"signing time before the certificate", signed(current, chain, now.Add(-2*time.Hour)), root.Pool, nil, false},
		{"intermediate not carried", signed(current, nil, signingTime), root.Pool, cms.ErrUntrusted, true},
		{"another root of the same name", signed(current, chain, signingTime), testpki.NewCA("chain root CA").Pool, cms.ErrUntrusted, true},
		{"the intermediate as the anchor", signed(current, nil, signingTime), inter.Pool, nil, true},
	} {
		at, chains, err := tc.s.VerifyChain(tc.roots, now)
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if want := now; tc.atSign && !at.Equal(tc.s.SigningTime) || !tc.atSign && !at.Equal(want) {
			t.Errorf("%s: checked at %v, want at the signing time: %v", tc.name, at, tc.atSign)
		}
		if err == nil && (len(chains) == 0 || !chains[0][0].Equal(tc.s.Certificate)) {
			t.Errorf("%s: chains %v", tc.name, chains)
		}
	}
}
