package cms_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/testpki"
)

// The attacker's workshop: SignedData built piece by piece, each piece
// as the attacker wants it, signed with whichever key the attacker has.

var (
	oidSHA256    = cms.MustOID("2.16.840.1.101.3.4.2.1")
	oidSHA1      = cms.MustOID("1.3.14.3.2.26")
	oidMD5       = cms.MustOID("1.2.840.113549.2.5")
	oidECDSA256  = cms.MustOID("1.2.840.10045.4.3.2")
	oidTSTInfo   = cms.MustOID("1.2.840.113549.1.9.16.1.4")
	oidCountersg = cms.MustOID("1.2.840.113549.1.9.6")
)

func build(f func(b *cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	f(&b)
	return b.BytesOrPanic()
}

func addOID(b *cryptobyte.Builder, o cms.OID) {
	b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(o) })
}

// attr is an Attribute of one value (DER).
func attr(typ cms.OID, value []byte) []byte {
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addOID(b, typ)
			b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(value) })
		})
	})
}

// attrSet is the DER SET OF the attributes, sorted.
func attrSet(attrs [][]byte) []byte {
	attrs = slices.Clone(attrs)
	slices.SortFunc(attrs, bytes.Compare)
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
			for _, a := range attrs {
				b.AddBytes(a)
			}
		})
	})
}

// splitAttrs returns the attributes of a SET (DER) by type.
func splitAttrs(t *testing.T, set []byte) map[string][]byte {
	t.Helper()
	in := cryptobyte.String(set)
	var body cryptobyte.String
	if !in.ReadASN1(&body, asn1.SET) {
		t.Fatal("not a SET")
	}
	out := map[string][]byte{}
	for !body.Empty() {
		var a, inner cryptobyte.String
		var typ cryptobyte.String
		if !body.ReadASN1Element(&a, asn1.SEQUENCE) {
			t.Fatal("not an Attribute")
		}
		x := a
		if !x.ReadASN1(&inner, asn1.SEQUENCE) || !inner.ReadASN1(&typ, asn1.OBJECT_IDENTIFIER) {
			t.Fatal("not an Attribute")
		}
		out[string(typ)] = a
	}
	return out
}

// forgedSigner is a SignerInfo as the attacker writes it.
type forgedSigner struct {
	cert      *x509.Certificate // names the signer (issuer and serial)
	digestAlg cms.OID           // default SHA-256
	attrs     []byte            // the signed attributes' SET (DER)
	signature []byte
	unsigned  [][]byte // unsigned attributes, if any
}

func (s forgedSigner) der() []byte {
	alg := s.digestAlg
	if alg == nil {
		alg = oidSHA256
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(1)
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(s.cert.RawIssuer)
				b.AddASN1BigInt(s.cert.SerialNumber)
			})
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { addOID(b, alg) })
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				in := cryptobyte.String(s.attrs)
				var body cryptobyte.String
				if !in.ReadASN1(&body, asn1.SET) {
					b.SetError(errors.New("the signed attributes are not a SET"))
				}
				b.AddBytes(body)
			})
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { addOID(b, oidECDSA256) })
			b.AddASN1OctetString(s.signature)
			if s.unsigned != nil {
				b.AddASN1(asn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					for _, a := range s.unsigned {
						b.AddBytes(a)
					}
				})
			}
		})
	})
}

// forgedSD is a SignedData as the attacker writes it.
type forgedSD struct {
	eContentType cms.OID // default id-data
	content      []byte  // nil: detached
	certs        []*x509.Certificate
	signers      []forgedSigner
}

func (f forgedSD) der() []byte {
	ct := f.eContentType
	if ct == nil {
		ct = cms.OIDData
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addOID(b, cms.OIDSignedData)
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(1)
					b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
						b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { addOID(b, oidSHA256) })
					})
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
						addOID(b, ct)
						if f.content != nil {
							b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(f.content) })
						}
					})
					b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
						for _, c := range f.certs {
							b.AddBytes(c.Raw)
						}
					})
					b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
						for _, s := range f.signers {
							b.AddBytes(s.der())
						}
					})
				})
			})
		})
	})
}

func signAttrs(t *testing.T, key *ecdsa.PrivateKey, attrs []byte) []byte {
	t.Helper()
	h := sha256.Sum256(attrs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// sameNameCert returns a key and a certificate with cert's subject,
// issuer name and serial number, issued by a key of the attacker's.
func sameNameCert(t *testing.T, cert *x509.Certificate, issuer *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
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
	return key, c
}

// TestAttacks: hostile SignedData, each made the way an attacker would
// (validly signed wherever the attacker holds a key), is refused by
// Parse, Verify or VerifyChain with the error (sentinel) that says what
// is wrong; a delegation notice outside the signed attributes is not
// read as one. openssl cms -verify, trusting the genuine root alone,
// judges each too: it must refuse exactly those we refuse. With -seeds
// each input is written as a seed of FuzzParse.
func TestAttacks(t *testing.T) {
	root := testpki.NewCA("attack root CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := root.Issue("Mayor", testpki.Options{Key: key}).Leaf
	impKey, impCert := sameNameCert(t, cert, root.Cert)
	doc, other := []byte("Resolution 9: the bridge is rebuilt.\n"), []byte("Resolution 9: the bridge is sold.\n")
	docSum, otherSum := sha256.Sum256(doc), sha256.Sum256(other)
	when := time.Now().Add(-time.Minute)

	genuineAttrs := func(digest []byte, c *x509.Certificate, extra ...cms.Attribute) []byte {
		a, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA256, Digest: digest, SigningTime: when, Certificate: c, Extra: extra})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// edit returns set (DER) with the attributes of the types in drop
	// left out and add put in, sorted again.
	edit := func(set []byte, drop []cms.OID, add ...[]byte) []byte {
		var out [][]byte
		for typ, a := range splitAttrs(t, set) {
			if !slices.ContainsFunc(drop, func(o cms.OID) bool { return string(o) == typ }) {
				out = append(out, a)
			}
		}
		return attrSet(append(out, add...))
	}
	oidDER := func(o cms.OID) []byte { return build(func(b *cryptobyte.Builder) { addOID(b, o) }) }
	octets := func(v []byte) []byte { return build(func(b *cryptobyte.Builder) { b.AddASN1OctetString(v) }) }
	delegate := testpki.NewCA("delegates").Issue("mallory", testpki.Options{}).Leaf
	notice, err := cms.NoticeFor(delegate, "d-mallory", "mayor", when.Add(-time.Hour), time.Time{}).Attribute()
	if err != nil {
		t.Fatal(err)
	}
	noticeAttr := attr(notice.Type, notice.Value)
	// ESS signing-certificate-v2 naming cert by issuer and serial but
	// with the hash of another certificate.
	essOf := func(hashOf, named *x509.Certificate) []byte {
		sum := sha256.Sum256(hashOf.Raw)
		return build(func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1OctetString(sum[:])
						b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1(asn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(named.RawIssuer) })
							})
							b.AddASN1BigInt(named.SerialNumber)
						})
					})
				})
			})
		})
	}

	good := genuineAttrs(docSum[:], cert)
	genuine := forgedSigner{cert: cert, attrs: good, signature: signAttrs(t, key, good)}
	genuineSD := forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{genuine}}.der()

	type result struct{ verify, chain error }
	ok := result{}
	for _, tc := range []struct {
		name    string
		der     []byte
		content []byte // for a detached signature: the document the verifier holds
		parse   error  // Parse's error, or nil
		signers []result
		check   func(t *testing.T, sd *cms.SignedData)
		// opensslLax: openssl cms -verify (3.x) accepts what we refuse;
		// it checks neither the content-type attribute against the
		// eContentType (RFC 5652, 11.1 asks it) nor the ESS
		// signing-certificate-v2 hash (RFC 5035, 5.4).
		opensslLax bool
	}{
		{name: "genuine", der: genuineSD, content: doc, signers: []result{ok}},
		{name: "message-digest of another document", content: doc,
			der: func() []byte {
				a := genuineAttrs(otherSum[:], cert)
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}(), signers: []result{{verify: cms.ErrDigest}}},
		{name: "enveloped content changed", content: nil,
			der:     forgedSD{content: other, certs: []*x509.Certificate{cert}, signers: []forgedSigner{genuine}}.der(),
			signers: []result{{verify: cms.ErrDigest}}},
		{name: "signed attributes altered after signing", content: doc,
			der: func() []byte {
				s := genuine
				s.attrs = bytes.Clone(good)
				i := bytes.LastIndex(s.attrs, []byte(when.UTC().Format("060102150405Z")))
				s.attrs[i+1]++ // the signing time a year later
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}(), signers: []result{{verify: cms.ErrBadSignature}}},
		{name: "notice added to the signed attributes after signing", content: doc,
			der: func() []byte {
				s := genuine
				s.attrs = edit(good, nil, noticeAttr)
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}(), signers: []result{{verify: cms.ErrBadSignature}}},
		{name: "content-type missing", content: doc, parse: cms.ErrMissingAttribute,
			der: func() []byte {
				a := edit(good, []cms.OID{cms.OIDContentType})
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}()},
		{name: "message-digest missing", content: doc, parse: cms.ErrMissingAttribute,
			der: func() []byte {
				a := edit(good, []cms.OID{cms.OIDMessageDigest})
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}()},
		{name: "content-type not the eContentType", content: doc,
			der: func() []byte {
				a := edit(good, []cms.OID{cms.OIDContentType}, attr(cms.OIDContentType, oidDER(oidTSTInfo)))
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}(), signers: []result{{verify: cms.ErrContentType}}, opensslLax: true},
		{name: "message-digest twice", content: doc, parse: cms.ErrMalformed,
			der: func() []byte {
				a := attrSet(append(slices.Collect(func(yield func([]byte) bool) {
					for _, v := range splitAttrs(t, good) {
						yield(v)
					}
				}), attr(cms.OIDMessageDigest, octets(otherSum[:]))))
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}()},
		{name: "certificate substituted: same issuer and serial, another key", content: doc,
			der:     forgedSD{certs: []*x509.Certificate{impCert}, signers: []forgedSigner{genuine}}.der(),
			signers: []result{{verify: cms.ErrSigningCertificate}}},
		{name: "certificate substituted ahead of the genuine one", content: doc,
			der:     forgedSD{certs: []*x509.Certificate{impCert, cert}, signers: []forgedSigner{genuine}}.der(),
			signers: []result{{verify: cms.ErrSigningCertificate}}},
		{name: "certificate substituted, signing-certificate left out", content: doc,
			der: func() []byte {
				a := edit(good, []cms.OID{cms.OIDSigningCertificateV2})
				return forgedSD{certs: []*x509.Certificate{impCert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}(), signers: []result{{verify: cms.ErrBadSignature}}},
		{name: "impostor signs with its own key under the same names", content: doc,
			der: func() []byte {
				a := genuineAttrs(docSum[:], impCert, notice)
				return forgedSD{certs: []*x509.Certificate{impCert}, signers: []forgedSigner{{cert: impCert, attrs: a, signature: signAttrs(t, impKey, a)}}}.der()
			}(), signers: []result{{chain: cms.ErrUntrusted}}},
		{name: "signing-certificate-v2 hash of another certificate", content: doc,
			der: func() []byte {
				a := edit(good, []cms.OID{cms.OIDSigningCertificateV2}, attr(cms.OIDSigningCertificateV2, essOf(root.Cert, cert)))
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}(), signers: []result{{verify: cms.ErrSigningCertificate}}, opensslLax: true},
		{name: "delegation notice in the unsigned attributes", content: doc,
			der: func() []byte {
				s := genuine
				s.unsigned = [][]byte{noticeAttr}
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}(), signers: []result{ok},
			check: func(t *testing.T, sd *cms.SignedData) {
				s := sd.Signers[0]
				if s.Notice != nil || slices.ContainsFunc(s.Attributes, func(a cms.Attribute) bool { return a.Type.Equal(cms.OIDNotice) }) {
					t.Errorf("a notice outside the signed attributes read as one: %v", s.Notice)
				}
			}},
		{name: "two signers: the genuine one and an impostor with a notice", content: doc,
			der: func() []byte {
				a := genuineAttrs(docSum[:], impCert, notice)
				imp := forgedSigner{cert: impCert, attrs: a, signature: signAttrs(t, impKey, a)}
				return forgedSD{certs: []*x509.Certificate{cert, impCert}, signers: []forgedSigner{genuine, imp}}.der()
			}(),
			// The impostor's issuer and serial are the genuine
			// certificate's: the reader takes the first enclosed
			// certificate they name, whose hash its
			// signing-certificate-v2 does not hold.
			signers: []result{ok, {verify: cms.ErrSigningCertificate}}},
		{name: "two signers: the second a copy with other attributes", content: doc,
			der: func() []byte {
				s := genuine
				s.attrs = edit(good, nil, noticeAttr)
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{genuine, s}}.der()
			}(), signers: []result{ok, {verify: cms.ErrBadSignature}}},
		{name: "signer certificate not enclosed", content: doc,
			der:     forgedSD{signers: []forgedSigner{genuine}}.der(),
			signers: []result{{verify: cms.ErrNoCertificate}}},
		{name: "unknown digest algorithm", content: doc, parse: cms.ErrUnsupported,
			der: func() []byte {
				s := genuine
				s.digestAlg = cms.MustOID("1.2.3.4.5")
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}()},
		{name: "digest algorithm swapped to SHA-512", content: doc,
			der: func() []byte {
				s := genuine
				s.digestAlg = cms.MustOID("2.16.840.1.101.3.4.2.3")
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}(), signers: []result{{verify: cms.ErrDigest}}},
		{name: "MD5 digest algorithm", content: doc, parse: cms.ErrUnsupported,
			der: func() []byte {
				s := genuine
				s.digestAlg = oidMD5
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}()},
		{name: "SHA-1 digest algorithm", content: doc, parse: cms.ErrUnsupported,
			der: func() []byte {
				s := genuine
				s.digestAlg = oidSHA1
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{s}}.der()
			}()},
		{name: "countersignature as a signed attribute", content: doc, parse: cms.ErrMalformed,
			der: func() []byte {
				a := edit(good, nil, attr(oidCountersg, genuine.der()))
				return forgedSD{certs: []*x509.Certificate{cert}, signers: []forgedSigner{{cert: cert, attrs: a, signature: signAttrs(t, key, a)}}}.der()
			}()},
		{name: "truncated", content: doc, parse: cms.ErrMalformed, der: genuineSD[:len(genuineSD)-7]},
		{name: "truncated to the header", content: doc, parse: cms.ErrMalformed, der: genuineSD[:4]},
		{name: "trailing garbage", content: doc, parse: cms.ErrMalformed, der: append(bytes.Clone(genuineSD), 0x00, 0x00)},
		{name: "trailing element", content: doc, parse: cms.ErrMalformed, der: append(bytes.Clone(genuineSD), genuineSD...)},
		{name: "outer length too long", content: doc, parse: cms.ErrMalformed,
			der: func() []byte { b := bytes.Clone(genuineSD); b[3]++; return b }()},
		{name: "BER indefinite length", content: doc, parse: cms.ErrMalformed,
			der: append(append([]byte{0x30, 0x80}, genuineSD[4:]...), 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if *writeSeeds {
				seed(t, "attack-"+strings.NewReplacer(" ", "-", ":", "", ",", "").Replace(tc.name), tc.der)
			}
			sd, err := cms.Parse(tc.der)
			if tc.parse != nil {
				if !errors.Is(err, tc.parse) {
					t.Fatalf("Parse: %v, want %v", err, tc.parse)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(sd.Signers) != len(tc.signers) {
				t.Fatalf("%d signers, want %d", len(sd.Signers), len(tc.signers))
			}
			allGood := true
			for i, s := range sd.Signers {
				content := tc.content
				if !sd.Detached() {
					content = sd.Content
				}
				err := s.Verify(s.ContentDigest(content))
				want := tc.signers[i]
				if !errors.Is(err, want.verify) || (want.verify == nil) != (err == nil) {
					t.Errorf("signer %d: Verify: %v, want %v", i+1, err, want.verify)
				}
				if err != nil {
					allGood = false
					continue
				}
				_, _, err = s.VerifyChain(root.Pool, time.Now())
				if !errors.Is(err, want.chain) || (want.chain == nil) != (err == nil) {
					t.Errorf("signer %d: VerifyChain: %v, want %v", i+1, err, want.chain)
				}
				if err != nil {
					allGood = false
				}
			}
			if tc.check != nil {
				tc.check(t, sd)
			}
			content := tc.content
			if !sd.Detached() {
				content = nil
			}
			if out, accepted := cmstest.VerifyChain(t, tc.der, content, root.Cert); accepted != (allGood || tc.opensslLax) {
				t.Errorf("openssl cms -verify accepts: %v, we: %v\n%s", accepted, allGood, out)
			}
		})
	}
}
