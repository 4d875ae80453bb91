package pdfsig_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
)

// heavyCert issues a certificate as public CAs write them for qualified
// signatures: a subject of nine attributes, a 20-byte serial (random:
// NSS, under pdfsig, does not verify a chain whose certificates share
// one), CRL and OCSP addresses, four policies, a qcStatements extension,
// an RSA-4096 key, signed by parent's RSA-4096 key (self-signed if parent
// is nil).
func heavyCert(t *testing.T, key *rsa.PrivateKey, name string, ca bool, parent *x509.Certificate) *x509.Certificate {
	t.Helper()
	subject := pkix.Name{CommonName: name, Organization: []string{"Comune di Salerno Ufficio del Sindaco"},
		OrganizationalUnit: []string{"Servizi Demografici e Firma Digitale"}, Locality: []string{"Salerno"},
		Province: []string{"Campania"}, Country: []string{"IT"}, SerialNumber: "TINIT-RSSMRA80A01H703X",
		StreetAddress: []string{"Via Roma 1"}, PostalCode: []string{"84121"}}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159)) // 20 bytes, as CAs write them
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(3 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: ca,
		CRLDistributionPoints: []string{"http://crl.qualified-ca.example.eu/" + strings.Repeat("c", 60) + ".crl",
			"ldap://ldap.qualified-ca.example.eu/cn=" + strings.Repeat("c", 60) + ",o=ca,c=eu?certificateRevocationList"},
		OCSPServer:            []string{"http://ocsp.qualified-ca.example.eu/" + strings.Repeat("o", 40)},
		IssuingCertificateURL: []string{"http://cert.qualified-ca.example.eu/" + strings.Repeat("i", 60) + ".crt"},
		EmailAddresses:        []string{strings.Repeat("m", 40) + "@comune.salerno.example.it"},
		PolicyIdentifiers: []asn1.ObjectIdentifier{{0, 4, 0, 194112, 1, 2}, {1, 3, 6, 1, 4, 1, 29741, 1, 1, 1, 4},
			{0, 4, 0, 2042, 1, 1}, {1, 3, 76, 16, 6}},
		// qcStatements (ETSI EN 319 412-5): QcCompliance, QcSSCD, QcType
		// esign, QcPDS with two URLs, as the DER of its value.
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 3}, Value: qcStatements(t)}},
	}
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// qcStatements is the DER of a qcStatements extension's value with
// QcCompliance, QcSSCD, QcType esign and QcPDS (two statements).
func qcStatements(t *testing.T) []byte {
	t.Helper()
	type statement struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue `asn1:"optional"`
	}
	type pds struct {
		URL  string `asn1:"ia5"`
		Lang string `asn1:"printable"`
	}
	pdsDER, _ := asn1.Marshal([]pds{{"https://www.qualified-ca.example.eu/" + strings.Repeat("p", 40) + "_en.pdf", "en"},
		{"https://www.qualified-ca.example.eu/" + strings.Repeat("p", 40) + "_it.pdf", "it"}})
	typeDER, _ := asn1.Marshal([]asn1.ObjectIdentifier{{0, 4, 0, 1862, 1, 6, 1}})
	der, err := asn1.Marshal([]statement{
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 1}},
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 4}},
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 6}, Value: asn1.RawValue{FullBytes: typeDER}},
		{ID: asn1.ObjectIdentifier{0, 4, 0, 1862, 1, 5}, Value: asn1.RawValue{FullBytes: pdsDER}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestReserveFits measures the largest CMS pscsd makes for a PDF as
// realistically as it can be: the largest key a card here holds (RSA-4096,
// pgpsim), RSASSA-PSS with SHA-512 (its parameters in the SignerInfo),
// certificates as qualified CAs issue them, three intermediate CAs in
// the chain (pscsd's cards[].chain), the delegation notice of a delegate
// whose certificate has as long a subject: the CMS fits in
// DefaultReserve with room to spare (a quarter), and the PDF signed with
// it is valid for pdfsig; a reserve smaller than the CMS is refused with
// ErrReserve, saying what to do.
func TestReserveFits(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 4096) // one key for every certificate: the sizes are the same
	if err != nil {
		t.Fatal(err)
	}
	root := heavyCert(t, key, "Qualified Root CA", true, nil)
	chain := []*x509.Certificate{heavyCert(t, key, "Qualified Policy CA", true, root)}
	chain = append([]*x509.Certificate{heavyCert(t, key, "Qualified Regional CA", true, chain[0])}, chain...)
	chain = append([]*x509.Certificate{heavyCert(t, key, "Qualified Issuing CA", true, chain[0])}, chain...)
	signer := heavyCert(t, key, "Mayor Signer", false, chain[0])
	delegate := heavyCert(t, key, "Delegate of the Mayor", false, chain[0])
	notice, err := cms.NoticeFor(delegate, "d-"+strings.Repeat("0123456789abcdef", 4), strings.Repeat("owner-identity-", 8),
		time.Now(), time.Now().Add(365*24*time.Hour)).Attribute()
	if err != nil {
		t.Fatal(err)
	}
	pdf := pdfsigtest.MakePDF(t, true)
	sign := func(reserve int) ([]byte, int, error) {
		doc, err := pdfsig.Read(bytes.NewReader(pdf))
		if err != nil {
			t.Fatal(err)
		}
		u, err := doc.Prepare(pdfsig.Options{Reserve: reserve})
		if err != nil {
			t.Fatal(err)
		}
		digest, err := u.Digest(sha512.New(), bytes.NewReader(pdf))
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA512, Digest: digest, Certificate: signer, Extra: []cms.Attribute{notice}})
		if err != nil {
			t.Fatal(err)
		}
		alg := cms.Algorithm{Hash: crypto.SHA512, PSS: true}
		msg, opts := alg.ToSign(&key.PublicKey, attrs)
		sig, err := key.Sign(rand.Reader, msg, opts)
		if err != nil {
			t.Fatal(err)
		}
		der, err := cms.Assemble(signer, chain, alg, attrs, sig)
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Embed(der); err != nil {
			return nil, len(der), err
		}
		return append(bytes.Clone(pdf), u.Tail...), len(der), nil
	}
	signed, n, err := sign(0)
	if err != nil {
		t.Fatalf("the largest CMS (%d bytes) in DefaultReserve (%d): %v", n, pdfsig.DefaultReserve, err)
	}
	t.Logf("the largest CMS: %d bytes (certificates %d, %d, %d, %d bytes), DefaultReserve %d bytes (%d hex digits in the file)",
		n, len(signer.Raw), len(chain[0].Raw), len(chain[1].Raw), len(chain[2].Raw), pdfsig.DefaultReserve, 2*pdfsig.DefaultReserve)
	if n > pdfsig.DefaultReserve*3/4 {
		t.Errorf("the largest CMS has %d bytes: less than a quarter of DefaultReserve (%d) is left", n, pdfsig.DefaultReserve)
	}
	pdfsigtest.Check(t, signed, signer.Subject.CommonName)
	// Too small a reserve: ErrReserve, with the sizes and what to do.
	if _, _, err := sign(n - 1); !errors.Is(err, pdfsig.ErrReserve) || !strings.Contains(err.Error(), "larger reserve") {
		t.Fatalf("a CMS of %d bytes in a reserve of %d: %v, want ErrReserve", n, n-1, err)
	} else {
		t.Log(err)
	}
}
