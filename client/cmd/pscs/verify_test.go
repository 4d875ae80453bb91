package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
	"github.com/pscs/pscs/internal/testpki"
)

// runVerify runs pscs verify in process with args; it returns standard
// output, the exit code and the error.
func runVerify(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	p := program()
	var out, errOut bytes.Buffer
	p.Stdout, p.Stderr = &out, &errOut
	err := p.Run(context.Background(), append([]string{"verify"}, args...))
	t.Logf("$ pscs verify %s\n%s%s(err %v)", strings.Join(args, " "), out.String(), errOut.String(), err)
	return out.String(), p.Exit(err), err
}

// cadesBy signs doc (detached) with key under cert, the SignedData
// carrying chain, at signingTime, with the notice attribute if not nil.
func cadesBy(t *testing.T, key crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate, doc []byte, signingTime time.Time, notice *cms.Attribute) []byte {
	t.Helper()
	sum := sha256.Sum256(doc)
	p := cms.Params{Hash: crypto.SHA256, Digest: sum[:], SigningTime: signingTime, Certificate: cert}
	if notice != nil {
		p.Extra = append(p.Extra, *notice)
	}
	attrs, err := cms.SignedAttributes(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(attrs)
	sig, err := key.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der, err := cms.Assemble(cert, chain, cms.Algorithm{Hash: crypto.SHA256}, attrs, sig)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// impostor returns a key and a certificate with cert's subject, issuer
// name and serial, issued by a CA of the same name as cert's issuer but
// another key: what anyone can make.
func impostor(t *testing.T, cert, issuer *x509.Certificate) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: issuer.Subject, NotBefore: issuer.NotBefore, NotAfter: issuer.NotAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	tmpl := &x509.Certificate{SerialNumber: cert.SerialNumber, Subject: cert.Subject, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.RawIssuer, cert.RawIssuer) {
		t.Fatal("the impostor's issuer name differs")
	}
	return key, c
}

// TestVerifyTrust: pscs verify -CAfile checks the signer's chain to the
// anchors through the certificates the signature carries, at the signing
// time when it lies within the certificate's validity and now otherwise;
// an unknown or forged signer is UNTRUSTED (exit 1); without -CAfile the
// output says the signer is NOT verified against a trust anchor; the
// delegation notice is shown only once the signature (and, with
// -CAfile, the chain) verifies, and withheld otherwise; PDF signatures
// get the same chain check.
func TestVerifyTrust(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemOf := func(cs ...*x509.Certificate) []byte {
		var b []byte
		for _, c := range cs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		return b
	}
	root := testpki.NewCA("town root CA")
	inter := root.Intermediate("town issuing CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := inter.Issue("Mayor of the town", testpki.Options{Key: key}).Leaf
	// A certificate of the same key that expired ten minutes ago, valid
	// for the forty minutes before.
	expired := inter.Issue("Mayor of the town", testpki.Options{Key: key, NotBefore: time.Now().Add(-50 * time.Minute),
		NotAfter: time.Now().Add(-10 * time.Minute)}).Leaf
	delegate := testpki.NewCA("delegates").Issue("alice", testpki.Options{}).Leaf
	na, err := cms.NoticeFor(delegate, "d-alice", "mayor", time.Now().Add(-time.Hour), time.Time{}).Attribute()
	if err != nil {
		t.Fatal(err)
	}
	doc := write("doc.txt", []byte("Ordinance 3: the market moves to the square.\n"))
	docBytes, _ := os.ReadFile(doc)
	other := write("other.txt", []byte("Ordinance 3: the market moves out of town.\n"))
	anchors := write("root.pem", pemOf(root.Cert))
	otherAnchors := write("other.pem", pemOf(testpki.NewCA("town root CA").Cert))
	bundle := write("bundle.pem", append(pemOf(testpki.NewCA("unrelated CA").Cert), pemOf(root.Cert)...))
	notPEM := write("not.pem", []byte("not a certificate\n"))

	good := write("good.p7m", cadesBy(t, key, leaf, []*x509.Certificate{inter.Cert}, docBytes, time.Now(), &na))
	noChain := write("nochain.p7m", cadesBy(t, key, leaf, nil, docBytes, time.Now(), &na))
	impKey, impCert := impostor(t, leaf, inter.Cert)
	forged := write("forged.p7m", cadesBy(t, impKey, impCert, []*x509.Certificate{inter.Cert}, docBytes, time.Now(), &na))
	inTime := write("intime.p7m", cadesBy(t, key, expired, []*x509.Certificate{inter.Cert}, docBytes, time.Now().Add(-30*time.Minute), nil))
	late := write("late.p7m", cadesBy(t, key, expired, []*x509.Certificate{inter.Cert}, docBytes, time.Now().Add(-5*time.Minute), nil))
	future := write("future.p7m", cadesBy(t, key, leaf, []*x509.Certificate{inter.Cert}, docBytes, time.Now().Add(time.Hour), nil))

	const noticeText = "made by a delegate, not by the owner"
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantErr error
		want    []string
		notWant []string
	}{
		{"no anchors", []string{"-in", good, "-content", doc}, 0, nil,
			[]string{"result:       valid", "trust:        NOT verified against a trust anchor", "NOT verified against a trust anchor (give -CAfile", noticeText}, nil},
		{"anchored", []string{"-CAfile", anchors, "-in", good, "-content", doc}, 0, nil,
			[]string{"trust:        trusted: chain of 3 to the anchor CN=town root CA (checked at the signing time", noticeText, "not checked:  revocation"},
			[]string{"NOT verified"}},
		{"a bundle of anchors", []string{"-CAfile", bundle, "-in", good, "-content", doc}, 0, nil,
			[]string{"trusted: chain of 3", noticeText}, nil},
		{"another root of the same name", []string{"-CAfile", otherAnchors, "-in", good, "-content", doc}, 1, cms.ErrUntrusted,
			[]string{"trust:        UNTRUSTED: ", "certificate signed by unknown authority", "notice:       withheld: the signer is untrusted"},
			[]string{noticeText}},
		{"the intermediate not carried", []string{"-CAfile", anchors, "-in", noChain, "-content", doc}, 1, cms.ErrUntrusted,
			[]string{"UNTRUSTED", "notice:       withheld"}, []string{noticeText}},
		{"another document", []string{"-CAfile", anchors, "-in", good, "-content", other}, 1, cms.ErrBadSignature,
			[]string{"result:       INVALID: the content is not what was signed", "trust:        not checked: the signature is invalid",
				"notice:       withheld: the signature is invalid"}, []string{noticeText}},
		{"another document, no anchors", []string{"-in", good, "-content", other}, 1, cms.ErrBadSignature,
			[]string{"INVALID", "notice:       withheld"}, []string{noticeText}},
		{"an impostor's certificate, no anchors", []string{"-in", forged, "-content", doc}, 0, nil,
			[]string{"result:       valid", "signer:       CN=Mayor of the town", "NOT verified against a trust anchor"}, nil},
		{"an impostor's certificate", []string{"-CAfile", anchors, "-in", forged, "-content", doc}, 1, cms.ErrUntrusted,
			[]string{"UNTRUSTED", "notice:       withheld"}, []string{noticeText}},
		{"expired, signed within its validity", []string{"-CAfile", anchors, "-in", inTime, "-content", doc}, 0, nil,
			[]string{"trusted: chain of 3", "(checked at the signing time"}, nil},
		{"expired, signed after it", []string{"-CAfile", anchors, "-in", late, "-content", doc}, 1, cms.ErrUntrusted,
			[]string{"UNTRUSTED", "expired", "(checked at now"}, nil},
		{"signing time in the future", []string{"-CAfile", anchors, "-in", future, "-content", doc}, 0, nil,
			[]string{"trusted", "(checked at now", "(IN THE FUTURE: as the signer says"}, nil},
		{"anchors not PEM", []string{"-CAfile", notPEM, "-in", good, "-content", doc}, 1, nil,
			nil, []string{"result:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code, err := runVerify(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d (%v), want %d", code, err, tc.code)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want one that unwraps to %v", err, tc.wantErr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the output lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("the output has %q", w)
				}
			}
		})
	}

	t.Run("PDF", func(t *testing.T) {
		pdf := pdfsigtest.MakePDF(t, false)
		sign := func(key crypto.Signer, cert *x509.Certificate) string {
			d, err := pdfsig.Read(bytes.NewReader(pdf))
			if err != nil {
				t.Fatal(err)
			}
			u, err := d.Prepare(pdfsig.Options{})
			if err != nil {
				t.Fatal(err)
			}
			digest, err := u.Digest(sha256.New(), bytes.NewReader(pdf))
			if err != nil {
				t.Fatal(err)
			}
			attrs, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA256, Digest: digest, Certificate: cert, Extra: []cms.Attribute{na}})
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(attrs)
			sig, err := key.Sign(rand.Reader, h[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			der, err := cms.Assemble(cert, []*x509.Certificate{inter.Cert}, cms.Algorithm{Hash: crypto.SHA256}, attrs, sig)
			if err != nil {
				t.Fatal(err)
			}
			if err := u.Embed(der); err != nil {
				t.Fatal(err)
			}
			return write(cert.SerialNumber.String()+fmt.Sprint(len(cert.Raw))+".pdf", append(bytes.Clone(pdf), u.Tail...))
		}
		genuine, fake := sign(key, leaf), sign(impKey, impCert)
		out, code, err := runVerify(t, "-CAfile", anchors, "-in", genuine)
		if code != 0 || !strings.Contains(out, "trusted: chain of 3") || !strings.Contains(out, "(checked at now") || !strings.Contains(out, noticeText) {
			t.Errorf("a genuine PDF signature with -CAfile: exit %d (%v)", code, err)
		}
		out, code, _ = runVerify(t, "-in", genuine)
		if code != 0 || !strings.Contains(out, "NOT verified against a trust anchor") {
			t.Errorf("a genuine PDF signature without -CAfile: exit %d", code)
		}
		out, code, err = runVerify(t, "-CAfile", anchors, "-in", fake)
		if code != 1 || !errors.Is(err, cms.ErrUntrusted) || !strings.Contains(out, "UNTRUSTED") || strings.Contains(out, noticeText) {
			t.Errorf("an impostor's PDF signature with -CAfile: exit %d (%v)", code, err)
		}
	})
}
