// Package cms builds and reads the CMS signatures pscs makes of documents:
// CAdES-BES (ETSI EN 319 122-1), a SignedData (RFC 5652) with one
// SignerInfo whose signed attributes are content-type, message-digest,
// signing-time and ESS signing-certificate-v2 (RFC 5035: the SHA-256 of
// the signer's certificate with its issuer and serial), and, on a
// delegation with warranty, the delegation notice ([Notice]). The content
// is absent (detached) or present (enveloping); the certificates are the
// signer's and the chain given with it.
//
// # Who does what
//
// The signature covers the signed attributes only, so the parties split
// the work without the document travelling:
//
//	client:  hash the document (streaming)              → digest
//	pscsd:   [SignedAttributes](digest, card's cert)     → DER of the SET
//	card:    sign Hash(DER)                              → signature
//	pscsd:   [Assemble](attributes, signature, certs)    → detached SignedData
//	client:  [Envelop] adds the document for enveloping  → .p7m
//
// # Reading
//
// [Parse] reads a ContentInfo holding a SignedData in DER (a BER
// encoding, such as openssl's streamed output, is refused with a clear
// error), and [Signer.Verify] checks one signer: its certificate among
// those enclosed, content-type, message-digest against the content's
// digest, signing-certificate(-v2) against the certificate, and the
// signature under the certificate's key (RSA PKCS #1 v1.5, RSASSA-PSS,
// ECDSA, Ed25519). That proves only that the enclosed certificate's key
// signed: [Signer.VerifyChain] judges who that is, the certificate's
// chain to trust anchors (at the signing time if it lies within the
// certificate's validity, else now; not revocation). Errors unwrap to the sentinels [ErrMalformed] and the
// others beside it. Unsigned attributes are skipped, never read.
//
// # Encryption
//
// [Encrypt] makes an EnvelopedData (AES-256-CBC; RSAES-OAEP key transport
// for RSA recipients, ECDH key agreement with the SHA-256 KDF and AES key
// wrap for EC ones), [Decrypt] opens one with a recipient's key, and
// [ParseEnveloped] reads one (fuzzed: FuzzParseEnveloped). pscsd's backups
// use them (server/backup); openssl cms -decrypt reads what Encrypt makes.
//
// # Why written here
//
// The Go CMS libraries were weighed and not taken: go.mozilla.org/pkcs7
// (v0.10.0) is archived by its authors and its fork github.com/digitorus/pkcs7 has no
// tagged releases and its current version needs Go 1.27 (the module
// builds with 1.26). More to the point, both sign with a crypto.Signer
// that holds the key while the SignedData is built, and choose the signed
// attributes themselves, without signing-certificate-v2; pscsd must build
// the attributes on the certificate of whichever card of a pool takes the
// request, inside the card's transaction, and hand the card only a hash.
// What this needs of ASN.1 is small (a few hundred lines over
// golang.org/x/crypto/cryptobyte, which writes DER with exact lengths and
// reads without panics), it is fuzzed (FuzzParse), and openssl cms judges
// its output in the tests. OIDs are kept as their DER content bytes, since
// the notice's arc under 2.25 has a 128-bit component that
// encoding/asn1.ObjectIdentifier cannot hold.
package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// OID is an object identifier as the contents octets of its DER encoding.
type OID []byte

// MustOID returns the OID of dotted decimal s; it panics on a malformed s
// (for constants).
func MustOID(s string) OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		panic(err)
	}
	b, _ := o.MarshalBinary()
	return b
}

// String returns the dotted decimal form.
func (o OID) String() string {
	var x x509.OID
	if err := x.UnmarshalBinary(o); err != nil {
		return fmt.Sprintf("malformed OID %x", []byte(o))
	}
	return x.String()
}

// Equal reports whether o and p are the same OID.
func (o OID) Equal(p OID) bool { return string(o) == string(p) }

// Object identifiers (RFC 5652, RFC 5035, RFC 5754, RFC 8017, RFC 5758).
var (
	OIDData                 = MustOID("1.2.840.113549.1.7.1")
	OIDSignedData           = MustOID("1.2.840.113549.1.7.2")
	OIDContentType          = MustOID("1.2.840.113549.1.9.3")
	OIDMessageDigest        = MustOID("1.2.840.113549.1.9.4")
	OIDSigningTime          = MustOID("1.2.840.113549.1.9.5")
	OIDSigningCertificate   = MustOID("1.2.840.113549.1.9.16.2.12")
	OIDSigningCertificateV2 = MustOID("1.2.840.113549.1.9.16.2.47")

	oidCountersignature = MustOID("1.2.840.113549.1.9.6")

	oidSHA1   = MustOID("1.3.14.3.2.26")
	oidSHA256 = MustOID("2.16.840.1.101.3.4.2.1")
	oidSHA384 = MustOID("2.16.840.1.101.3.4.2.2")
	oidSHA512 = MustOID("2.16.840.1.101.3.4.2.3")

	oidRSAEncryption = MustOID("1.2.840.113549.1.1.1")
	oidMGF1          = MustOID("1.2.840.113549.1.1.8")
	oidRSAPSS        = MustOID("1.2.840.113549.1.1.10")
	oidSHA256WithRSA = MustOID("1.2.840.113549.1.1.11")
	oidSHA384WithRSA = MustOID("1.2.840.113549.1.1.12")
	oidSHA512WithRSA = MustOID("1.2.840.113549.1.1.13")
	oidECPublicKey   = MustOID("1.2.840.10045.2.1")
	oidECDSASHA256   = MustOID("1.2.840.10045.4.3.2")
	oidECDSASHA384   = MustOID("1.2.840.10045.4.3.3")
	oidECDSASHA512   = MustOID("1.2.840.10045.4.3.4")
	// id-Ed25519 (RFC 8410), the signatureAlgorithm of Ed25519 in CMS
	// (RFC 8419), parameters absent.
	oidEd25519 = MustOID("1.3.101.112")
)

var hashOIDs = []struct {
	h   crypto.Hash
	oid OID
}{{crypto.SHA256, oidSHA256}, {crypto.SHA384, oidSHA384}, {crypto.SHA512, oidSHA512}, {crypto.SHA1, oidSHA1}}

func hashOID(h crypto.Hash) (OID, bool) {
	for _, x := range hashOIDs {
		if x.h == h {
			return x.oid, true
		}
	}
	return nil, false
}

func hashOf(o OID) (crypto.Hash, bool) {
	for _, x := range hashOIDs {
		if x.oid.Equal(o) {
			return x.h, true
		}
	}
	return 0, false
}

// Attribute is a signed attribute with one value (DER).
type Attribute struct {
	Type  OID
	Value []byte
}

// Params are what a signer's signed attributes say.
type Params struct {
	// Hash is the digest algorithm: SHA-256, SHA-384 or SHA-512.
	Hash crypto.Hash
	// Digest is the content's digest under Hash (message-digest).
	Digest []byte
	// SigningTime, if not zero, is put in a signing-time attribute
	// (PAdES leaves it out: the time is in the signature dictionary).
	SigningTime time.Time
	// Certificate is the signer's.
	Certificate *x509.Certificate
	// Extra are more signed attributes (the delegation notice).
	Extra []Attribute
}

// ErrHash is returned for a digest algorithm other than SHA-256/384/512.
var ErrHash = errors.New("cms: the digest algorithm is not SHA-256, SHA-384 or SHA-512")

func checkHash(h crypto.Hash, digest []byte) error {
	if h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512 {
		return ErrHash
	}
	if len(digest) != h.Size() {
		return fmt.Errorf("cms: a %v digest has %d bytes, not %d", h, h.Size(), len(digest))
	}
	return nil
}

// SignedAttributes returns the DER of the signed attributes (a SET OF
// Attribute, tag 0x31): what the signature covers. Sign Hash(DER).
func SignedAttributes(p Params) ([]byte, error) {
	if err := checkHash(p.Hash, p.Digest); err != nil {
		return nil, err
	}
	if p.Certificate == nil {
		return nil, errors.New("cms: no signer certificate")
	}
	var attrs [][]byte
	add := func(typ OID, value func(*cryptobyte.Builder)) error {
		var b cryptobyte.Builder
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(typ) })
			b.AddASN1(asn1.SET, value)
		})
		der, err := b.Bytes()
		attrs = append(attrs, der)
		return err
	}
	raw := func(v []byte) func(*cryptobyte.Builder) {
		return func(b *cryptobyte.Builder) { b.AddBytes(v) }
	}
	if err := add(OIDContentType, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(OIDData) })
	}); err != nil {
		return nil, err
	}
	if err := add(OIDMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(p.Digest) }); err != nil {
		return nil, err
	}
	if !p.SigningTime.IsZero() {
		t := p.SigningTime.UTC().Truncate(time.Second)
		if err := add(OIDSigningTime, func(b *cryptobyte.Builder) {
			// RFC 5652, 11.3: UTCTime for 1950 to 2049, else GeneralizedTime.
			if t.Year() >= 1950 && t.Year() < 2050 {
				b.AddASN1UTCTime(t)
			} else {
				b.AddASN1GeneralizedTime(t)
			}
		}); err != nil {
			return nil, err
		}
	}
	certHash := sha256.Sum256(p.Certificate.Raw)
	if err := add(OIDSigningCertificateV2, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // SigningCertificateV2
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // certs
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // ESSCertIDv2, hashAlgorithm SHA-256 by default
					b.AddASN1OctetString(certHash[:])
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // IssuerSerial
						b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // GeneralNames
							b.AddASN1(asn1.Tag(4).Constructed().ContextSpecific(), raw(p.Certificate.RawIssuer)) // directoryName
						})
						b.AddASN1BigInt(p.Certificate.SerialNumber)
					})
				})
			})
		})
	}); err != nil {
		return nil, err
	}
	for _, a := range p.Extra {
		if err := add(a.Type, raw(a.Value)); err != nil {
			return nil, err
		}
	}
	// DER orders a SET OF by the encodings of its elements.
	slices.SortFunc(attrs, func(a, b []byte) int { return compareDER(a, b) })
	var b cryptobyte.Builder
	b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddBytes(a)
		}
	})
	return b.Bytes()
}

// compareDER orders encodings as X.690 11.6 asks: as octet strings, the
// shorter one padded with zeros at its end.
func compareDER(a, b []byte) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		var x, y byte
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return int(x) - int(y)
		}
	}
	return 0
}

// Algorithm is how a key signs the signed attributes.
type Algorithm struct {
	Hash crypto.Hash
	PSS  bool // RSA keys: RSASSA-PSS (salt the hash's size, MGF1 with the same hash)
}

// SignerOpts returns the options to sign Hash(attributes) with, for
// crypto.Signer and the card drivers.
func (a Algorithm) SignerOpts() crypto.SignerOpts {
	if a.PSS {
		return &rsa.PSSOptions{Hash: a.Hash, SaltLength: a.Hash.Size()}
	}
	return a.Hash
}

// ToSign returns what a key pub signs for signed attributes attrs (DER)
// and how: their hash under a.Hash with SignerOpts, or, for Ed25519 (pure
// EdDSA, RFC 8419), attrs themselves with no hash.
func (a Algorithm) ToSign(pub crypto.PublicKey, attrs []byte) ([]byte, crypto.SignerOpts) {
	if _, ok := pub.(ed25519.PublicKey); ok {
		return attrs, crypto.Hash(0)
	}
	h := a.Hash.New()
	h.Write(attrs)
	return h.Sum(nil), a.SignerOpts()
}

// Fits checks that the algorithm suits a public key. Ed25519 wants
// SHA-512 for the message-digest (RFC 8419, 3.1).
func (a Algorithm) Fits(pub crypto.PublicKey) error {
	if err := checkHash(a.Hash, make([]byte, a.Hash.Size())); err != nil {
		return err
	}
	switch pub.(type) {
	case ed25519.PublicKey:
		if a.PSS {
			return errors.New("cms: RSASSA-PSS needs an RSA key")
		}
		if a.Hash != crypto.SHA512 {
			return errors.New("cms: Ed25519 signs with SHA-512 as the digest algorithm (RFC 8419)")
		}
		return nil
	case *rsa.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		if a.PSS {
			return errors.New("cms: RSASSA-PSS needs an RSA key")
		}
		return nil
	}
	return fmt.Errorf("cms: keys of type %T do not sign CMS here", pub)
}

// signatureAlgorithm appends the SignerInfo's signatureAlgorithm.
func (a Algorithm) signatureAlgorithm(b *cryptobyte.Builder, pub crypto.PublicKey) error {
	hoid, _ := hashOID(a.Hash)
	var oid OID
	switch pub.(type) {
	case *rsa.PublicKey:
		if a.PSS {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidRSAPSS) })
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // RSASSA-PSS-params (RFC 8017, A.2.3)
					b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { algID(b, hoid, true) })
					b.AddASN1(asn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
						b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidMGF1) })
							algID(b, hoid, true)
						})
					})
					b.AddASN1(asn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(int64(a.Hash.Size())) })
				})
			})
			return nil
		}
		oid = map[crypto.Hash]OID{crypto.SHA256: oidSHA256WithRSA, crypto.SHA384: oidSHA384WithRSA, crypto.SHA512: oidSHA512WithRSA}[a.Hash]
		algID(b, oid, true)
	case *ecdsa.PublicKey:
		oid = map[crypto.Hash]OID{crypto.SHA256: oidECDSASHA256, crypto.SHA384: oidECDSASHA384, crypto.SHA512: oidECDSASHA512}[a.Hash]
		algID(b, oid, false) // RFC 5758, 3.2: parameters absent
	case ed25519.PublicKey:
		algID(b, oidEd25519, false) // RFC 8419, 2.3: parameters absent
	default:
		return fmt.Errorf("cms: keys of type %T do not sign CMS here", pub)
	}
	return nil
}

// algID appends an AlgorithmIdentifier, with NULL parameters if null.
func algID(b *cryptobyte.Builder, oid OID, null bool) {
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oid) })
		if null {
			b.AddASN1NULL()
		}
	})
}

// Assemble returns a detached SignedData (a ContentInfo, DER) of one
// signer: signedAttrs as SignedAttributes returned them, the signature of
// Hash(signedAttrs) made with alg (ECDSA: the ASN.1 Ecdsa-Sig-Value), and
// the certificates: the signer's (cert) first, then chain.
func Assemble(cert *x509.Certificate, chain []*x509.Certificate, alg Algorithm, signedAttrs, signature []byte) ([]byte, error) {
	if err := alg.Fits(cert.PublicKey); err != nil {
		return nil, err
	}
	if len(signedAttrs) == 0 || signedAttrs[0] != 0x31 {
		return nil, errors.New("cms: the signed attributes are not a DER SET")
	}
	hoid, _ := hashOID(alg.Hash)
	var sigErr error
	signerInfo := func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(1) // version 1: issuerAndSerialNumber
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(cert.RawIssuer)
				b.AddASN1BigInt(cert.SerialNumber)
			})
			algID(b, hoid, false)
			// signedAttrs [0] IMPLICIT: the SET with its tag replaced.
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				var s cryptobyte.String = signedAttrs
				var body cryptobyte.String
				if !s.ReadASN1(&body, asn1.SET) || !s.Empty() {
					b.SetError(errors.New("cms: the signed attributes are not a DER SET"))
					return
				}
				b.AddBytes(body)
			})
			sigErr = alg.signatureAlgorithm(b, cert.PublicKey)
			b.AddASN1OctetString(signature)
		})
	}
	return contentInfo(func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // version 1: id-data content, no v2+ signers or attribute certificates
		b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) { algID(b, hoid, false) })
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncapsulatedContentInfo, eContent absent
			b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(OIDData) })
		})
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddBytes(cert.Raw)
			for _, c := range chain {
				b.AddBytes(c.Raw)
			}
		})
		b.AddASN1(asn1.SET, signerInfo)
	}, &sigErr)
}

// contentInfo wraps a SignedData's body in its SEQUENCE and a ContentInfo.
func contentInfo(body func(*cryptobyte.Builder), errp *error) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(OIDSignedData) })
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, body)
		})
	})
	der, err := b.Bytes()
	if err == nil && errp != nil {
		err = *errp
	}
	return der, err
}

// Envelop returns the detached SignedData der with content put in
// (enveloping), after checking that content is what its signers signed
// (message-digest).
func Envelop(der, content []byte) ([]byte, error) {
	sd, err := Parse(der)
	if err != nil {
		return nil, err
	}
	if sd.Content != nil {
		return nil, errors.New("cms: the signature already holds its content")
	}
	for _, s := range sd.Signers {
		h := s.Hash.New()
		h.Write(content)
		if err := s.checkDigest(h.Sum(nil)); err != nil {
			return nil, err
		}
	}
	return contentInfo(func(b *cryptobyte.Builder) {
		b.AddBytes(sd.raw.version)
		b.AddBytes(sd.raw.digestAlgorithms)
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(sd.ContentType) })
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
		})
		b.AddBytes(sd.raw.rest)
	}, nil)
}
