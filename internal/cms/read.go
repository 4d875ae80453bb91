package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Limits of what Parse reads.
const (
	MaxCertificates = 32
	MaxSigners      = 8
	MaxAttributes   = 32
)

// SignedData is a parsed SignedData.
type SignedData struct {
	ContentType  OID
	Content      []byte // the encapsulated content; nil when detached
	Certificates []*x509.Certificate
	Signers      []*Signer

	raw struct{ version, digestAlgorithms, rest []byte }
}

// Detached reports whether the content is outside the SignedData.
func (sd *SignedData) Detached() bool { return sd.Content == nil }

// Signer is one SignerInfo. Its fields say what it claims; Verify checks.
type Signer struct {
	Hash        crypto.Hash       // digestAlgorithm
	Certificate *x509.Certificate // the enclosed certificate it names; nil if none
	// Attributes are the signed attributes in their order.
	Attributes []Attribute
	// Of the attributes: the content type, digest, time (zero if absent),
	// and the delegation notice (nil if absent).
	ContentType   OID
	MessageDigest []byte
	SigningTime   time.Time
	Notice        *Notice
	// SignatureAlgorithm names the signature's algorithm (its OID).
	SignatureAlgorithm OID

	sd          *SignedData
	sigParams   []byte // the signatureAlgorithm's parameters, DER (may be empty)
	signature   []byte
	signedAttrs []byte // the DER SET the signature covers
	essHash     crypto.Hash
	essCertHash []byte // signing-certificate(-v2)'s hash of the signer's certificate
}

// Errors of reading and verifying. Every error of [Parse],
// [Signer.Verify] and [Signer.VerifyChain] wraps one of these (or
// [ErrHash]), so that callers can tell a forged or changed signature
// ([ErrDigest], [ErrBadSignature], [ErrContentType],
// [ErrSigningCertificate]) from an unknown signer ([ErrUntrusted]) and
// from input that is not a SignedData this reader takes ([ErrMalformed],
// [ErrUnsupported], [ErrMissingAttribute], [ErrNoCertificate]).
var (
	ErrMalformed          = errors.New("cms: malformed")
	ErrUnsupported        = errors.New("cms: not supported")
	ErrMissingAttribute   = errors.New("cms: a signed attribute CAdES needs is missing")
	ErrNoCertificate      = errors.New("cms: the signer's certificate is not enclosed")
	ErrDigest             = errors.New("cms: the content is not what was signed (message-digest differs)")
	ErrContentType        = errors.New("cms: the content-type attribute differs from the content's type")
	ErrSigningCertificate = errors.New("cms: signing-certificate names another certificate than the enclosed one")
	ErrBadSignature       = errors.New("cms: the signature does not verify under the signer's certificate")
	ErrUntrusted          = errors.New("cms: the signer's certificate does not chain to a trust anchor")
)

var errTrailing = fmt.Errorf("%w: trailing bytes", ErrMalformed)

func malformed(what string) error {
	return fmt.Errorf("%w %s (the reader takes DER only)", ErrMalformed, what)
}

// Parse reads a ContentInfo holding a SignedData, in DER.
func Parse(der []byte) (*SignedData, error) {
	in := cryptobyte.String(der)
	var ci, sdSeq, explicit cryptobyte.String
	var ctype OID
	if !in.ReadASN1(&ci, asn1.SEQUENCE) {
		return nil, malformed("ContentInfo")
	}
	if !in.Empty() {
		return nil, errTrailing
	}
	if !ci.ReadASN1((*cryptobyte.String)(&ctype), asn1.OBJECT_IDENTIFIER) {
		return nil, malformed("ContentInfo")
	}
	if !ctype.Equal(OIDSignedData) {
		return nil, fmt.Errorf("%w: content type %v, not SignedData", ErrUnsupported, ctype)
	}
	if !ci.ReadASN1(&explicit, asn1.Tag(0).Constructed().ContextSpecific()) || !ci.Empty() ||
		!explicit.ReadASN1(&sdSeq, asn1.SEQUENCE) || !explicit.Empty() {
		return nil, malformed("ContentInfo")
	}
	sd := &SignedData{}
	var version, digestAlgs, eci cryptobyte.String
	var v int64
	if !sdSeq.ReadASN1Element(&version, asn1.INTEGER) {
		return nil, malformed("SignedData version")
	}
	if vs := version; !vs.ReadASN1Integer(&v) {
		return nil, malformed("SignedData version")
	}
	if v < 1 || v > 5 {
		return nil, fmt.Errorf("%w: SignedData version %d", ErrUnsupported, v)
	}
	if !sdSeq.ReadASN1Element(&digestAlgs, asn1.SET) || !sdSeq.ReadASN1(&eci, asn1.SEQUENCE) {
		return nil, malformed("SignedData")
	}
	sd.raw.version, sd.raw.digestAlgorithms, sd.raw.rest = version, digestAlgs, sdSeq
	if !eci.ReadASN1((*cryptobyte.String)(&sd.ContentType), asn1.OBJECT_IDENTIFIER) {
		return nil, malformed("EncapsulatedContentInfo")
	}
	var ec cryptobyte.String
	var hasContent bool
	if !eci.ReadOptionalASN1(&ec, &hasContent, asn1.Tag(0).Constructed().ContextSpecific()) || !eci.Empty() {
		return nil, malformed("EncapsulatedContentInfo")
	}
	if hasContent {
		var content cryptobyte.String
		if !ec.ReadASN1(&content, asn1.OCTET_STRING) || !ec.Empty() {
			return nil, malformed("eContent")
		}
		sd.Content = append([]byte{}, content...)
	}
	var certs, crls, signerInfos cryptobyte.String
	var hasCerts, hasCRLs bool
	if !sdSeq.ReadOptionalASN1(&certs, &hasCerts, asn1.Tag(0).Constructed().ContextSpecific()) ||
		!sdSeq.ReadOptionalASN1(&crls, &hasCRLs, asn1.Tag(1).Constructed().ContextSpecific()) ||
		!sdSeq.ReadASN1(&signerInfos, asn1.SET) || !sdSeq.Empty() {
		return nil, malformed("SignedData")
	}
	var err error
	sd.Certificates, err = readEach(certs, "certificate", MaxCertificates, func(c cryptobyte.String) (*x509.Certificate, error) {
		c509, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return c509, nil
	})
	if err != nil {
		return nil, err
	}
	if sd.Signers, err = readEach(signerInfos, "signer", MaxSigners, sd.parseSigner); err != nil {
		return nil, err
	}
	if len(sd.Signers) == 0 {
		return nil, fmt.Errorf("%w: no signer", ErrMalformed)
	}
	return sd, nil
}

// readEach reads the SEQUENCEs of a SET OF (the certificates, the
// signers), at most max, each with parse.
func readEach[T any](set cryptobyte.String, what string, max int, parse func(cryptobyte.String) (T, error)) ([]T, error) {
	var out []T
	for !set.Empty() {
		var elem cryptobyte.String
		if !set.ReadASN1Element(&elem, asn1.SEQUENCE) {
			return nil, malformed(what + " (not a SEQUENCE: only X.509 certificates and SignerInfos are read)")
		}
		if len(out) == max {
			return nil, fmt.Errorf("%w: more than %d %ss", ErrUnsupported, max, what)
		}
		v, err := parse(elem)
		if err != nil {
			return nil, fmt.Errorf("cms: %s %d: %w", what, len(out)+1, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseSigner reads a SignerInfo (its DER, with the SEQUENCE's tag).
func (sd *SignedData) parseSigner(elem cryptobyte.String) (*Signer, error) {
	var si cryptobyte.String
	if !elem.ReadASN1(&si, asn1.SEQUENCE) {
		return nil, malformed("SignerInfo")
	}
	s := &Signer{sd: sd}
	var v int64
	if !si.ReadASN1Integer(&v) {
		return nil, malformed("SignerInfo version")
	}
	switch {
	case v == 1 && si.PeekASN1Tag(asn1.SEQUENCE):
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		if !si.ReadASN1(&ias, asn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, asn1.SEQUENCE) ||
			!ias.ReadASN1Integer(serial) || !ias.Empty() {
			return nil, malformed("issuerAndSerialNumber")
		}
		for _, c := range sd.Certificates {
			if bytes.Equal(c.RawIssuer, issuer) && c.SerialNumber.Cmp(serial) == 0 {
				s.Certificate = c
				break
			}
		}
	case v == 3 && si.PeekASN1Tag(asn1.Tag(0).ContextSpecific()):
		var ski cryptobyte.String
		if !si.ReadASN1(&ski, asn1.Tag(0).ContextSpecific()) {
			return nil, malformed("subjectKeyIdentifier")
		}
		for _, c := range sd.Certificates {
			if len(c.SubjectKeyId) > 0 && bytes.Equal(c.SubjectKeyId, ski) {
				s.Certificate = c
				break
			}
		}
	default:
		return nil, fmt.Errorf("%w: SignerInfo version %d with a signer identifier of another kind", ErrUnsupported, v)
	}
	var digestAlg OID
	if _, err := readAlgorithm(&si, &digestAlg); err != nil {
		return nil, err
	}
	h, ok := hashOf(digestAlg)
	if !ok || h == crypto.SHA1 {
		return nil, fmt.Errorf("%w: digest algorithm %v", ErrUnsupported, digestAlg)
	}
	s.Hash = h
	tag0 := asn1.Tag(0).Constructed().ContextSpecific()
	if !si.PeekASN1Tag(tag0) {
		return nil, fmt.Errorf("%w: no signed attributes at all", ErrMissingAttribute)
	}
	var attrsElem cryptobyte.String
	if !si.ReadASN1Element(&attrsElem, tag0) {
		return nil, malformed("signed attributes")
	}
	// The signature covers the attributes with the SET tag (RFC 5652, 5.4).
	s.signedAttrs = append([]byte{0x31}, attrsElem[1:]...)
	if err := s.parseAttributes(); err != nil {
		return nil, err
	}
	params, err := readAlgorithm(&si, &s.SignatureAlgorithm)
	if err != nil {
		return nil, err
	}
	s.sigParams = params
	if !si.ReadASN1Bytes(&s.signature, asn1.OCTET_STRING) {
		return nil, malformed("signature")
	}
	var unsigned cryptobyte.String
	if !si.ReadOptionalASN1(&unsigned, nil, asn1.Tag(1).Constructed().ContextSpecific()) || !si.Empty() {
		return nil, malformed("SignerInfo")
	}
	return s, nil
}

// readAlgorithm reads an AlgorithmIdentifier: its OID into oid, its
// parameters (DER, maybe empty) returned.
func readAlgorithm(s *cryptobyte.String, oid *OID) ([]byte, error) {
	var alg cryptobyte.String
	if !s.ReadASN1(&alg, asn1.SEQUENCE) || !alg.ReadASN1((*cryptobyte.String)(oid), asn1.OBJECT_IDENTIFIER) {
		return nil, malformed("AlgorithmIdentifier")
	}
	return alg, nil
}

func (s *Signer) parseAttributes() error {
	var set cryptobyte.String
	in := cryptobyte.String(s.signedAttrs)
	if !in.ReadASN1(&set, asn1.SET) {
		return malformed("signed attributes")
	}
	seen := map[string]bool{}
	for !set.Empty() {
		var attr, values cryptobyte.String
		var typ OID
		if !set.ReadASN1(&attr, asn1.SEQUENCE) || !attr.ReadASN1((*cryptobyte.String)(&typ), asn1.OBJECT_IDENTIFIER) ||
			!attr.ReadASN1(&values, asn1.SET) || !attr.Empty() {
			return malformed("attribute")
		}
		if len(s.Attributes) == MaxAttributes {
			return fmt.Errorf("%w: more than %d signed attributes", ErrUnsupported, MaxAttributes)
		}
		if seen[string(typ)] {
			return fmt.Errorf("%w: attribute %v twice", ErrMalformed, typ)
		}
		seen[string(typ)] = true
		if typ.Equal(oidCountersignature) {
			return fmt.Errorf("%w: a countersignature among the signed attributes (RFC 5652, 11.4: it is an unsigned attribute)", ErrMalformed)
		}
		var value cryptobyte.String
		if !values.ReadAnyASN1Element(&value, new(asn1.Tag)) {
			return fmt.Errorf("%w: attribute %v without a value", ErrMalformed, typ)
		}
		single := values.Empty()
		s.Attributes = append(s.Attributes, Attribute{Type: typ, Value: value})
		known := true
		var ok bool
		switch {
		case typ.Equal(OIDContentType):
			ok = value.ReadASN1((*cryptobyte.String)(&s.ContentType), asn1.OBJECT_IDENTIFIER)
		case typ.Equal(OIDMessageDigest):
			ok = value.ReadASN1Bytes(&s.MessageDigest, asn1.OCTET_STRING)
		case typ.Equal(OIDSigningTime):
			if value.PeekASN1Tag(asn1.UTCTime) {
				ok = value.ReadASN1UTCTime(&s.SigningTime)
			} else {
				ok = value.ReadASN1GeneralizedTime(&s.SigningTime)
			}
		case typ.Equal(OIDSigningCertificateV2):
			ok = s.parseESS(&value, true)
		case typ.Equal(OIDSigningCertificate):
			ok = s.parseESS(&value, false)
		case typ.Equal(OIDNotice):
			n, err := ParseNotice(value)
			if err != nil {
				return err
			}
			s.Notice, ok, value = n, true, nil
		default:
			known, ok = false, true
		}
		if known && (!ok || !value.Empty() || !single) {
			return fmt.Errorf("%w attribute %v", ErrMalformed, typ)
		}
	}
	if s.ContentType == nil || s.MessageDigest == nil {
		return fmt.Errorf("%w: content-type or message-digest", ErrMissingAttribute)
	}
	return nil
}

// parseESS reads SigningCertificate(V2) (RFC 2634, RFC 5035): the hash of
// the first certificate named, which is the signer's.
func (s *Signer) parseESS(v *cryptobyte.String, v2 bool) bool {
	var sc, certs, id cryptobyte.String
	if !v.ReadASN1(&sc, asn1.SEQUENCE) || !sc.ReadASN1(&certs, asn1.SEQUENCE) || !certs.ReadASN1(&id, asn1.SEQUENCE) {
		return false
	}
	s.essHash = crypto.SHA1
	if v2 {
		s.essHash = crypto.SHA256
		if id.PeekASN1Tag(asn1.SEQUENCE) {
			var alg OID
			if _, err := readAlgorithm(&id, &alg); err != nil {
				return false
			}
			h, ok := hashOf(alg)
			if !ok {
				return false
			}
			s.essHash = h
		}
	}
	return id.ReadASN1Bytes(&s.essCertHash, asn1.OCTET_STRING)
}

// checkDigest compares the content's digest (under s.Hash) with the
// message-digest attribute.
func (s *Signer) checkDigest(digest []byte) error {
	if !bytes.Equal(digest, s.MessageDigest) {
		return ErrDigest
	}
	return nil
}

// Verify checks the signer: contentDigest is the digest of the content
// under s.Hash (of sd.Content, or of the detached document).
func (s *Signer) Verify(contentDigest []byte) error {
	if s.Certificate == nil {
		return ErrNoCertificate
	}
	if !s.ContentType.Equal(s.sd.ContentType) {
		return ErrContentType
	}
	if err := s.checkDigest(contentDigest); err != nil {
		return err
	}
	if s.essCertHash != nil {
		var sum []byte
		if s.essHash == crypto.SHA1 {
			x := sha1.Sum(s.Certificate.Raw)
			sum = x[:]
		} else {
			h := s.essHash.New()
			h.Write(s.Certificate.Raw)
			sum = h.Sum(nil)
		}
		if !bytes.Equal(sum, s.essCertHash) {
			return ErrSigningCertificate
		}
	}
	return s.verifySignature()
}

// VerifyChain checks who the signer is: that its certificate chains to
// one of roots (trust anchors), with the SignedData's other certificates
// as intermediates, for any extended key usage, and that its key usage,
// if the certificate restricts it, allows signatures (digitalSignature or
// nonRepudiation). [Signer.Verify] only proves that the enclosed
// certificate's key signed; anyone can make a certificate with any name,
// so without VerifyChain a signer's name proves nothing.
//
// The chain is checked at the signing time when the signed attributes
// hold one that is no later than now and within the signer certificate's
// validity, and at now otherwise (PAdES signatures hold no signing-time);
// at reports which. The signing time is the signer's own claim, not a
// time-stamp: a signature dated inside the validity of a certificate that
// has since expired passes, as it would have when it was made.
// Revocation is not checked. Errors wrap [ErrUntrusted] (or
// [ErrNoCertificate]).
func (s *Signer) VerifyChain(roots *x509.CertPool, now time.Time) (at time.Time, chains [][]*x509.Certificate, err error) {
	c := s.Certificate
	if c == nil {
		return now, nil, ErrNoCertificate
	}
	at = now
	if t := s.SigningTime; !t.IsZero() && !t.After(now) && !t.Before(c.NotBefore) && !t.After(c.NotAfter) {
		at = t
	}
	if c.KeyUsage != 0 && c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return at, nil, fmt.Errorf("%w: its key usage allows neither digitalSignature nor nonRepudiation", ErrUntrusted)
	}
	inter := x509.NewCertPool()
	for _, o := range s.sd.Certificates {
		if o != c {
			inter.AddCert(o)
		}
	}
	chains, err = c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return at, nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return at, chains, nil
}

// ContentDigest returns the digest of content under the signer's hash.
func (s *Signer) ContentDigest(content []byte) []byte {
	h := s.Hash.New()
	h.Write(content)
	return h.Sum(nil)
}

func (s *Signer) verifySignature() error {
	alg := s.SignatureAlgorithm
	hashed := func(h crypto.Hash) []byte {
		w := h.New()
		w.Write(s.signedAttrs)
		return w.Sum(nil)
	}
	implied := func(m map[crypto.Hash]OID) (crypto.Hash, bool) {
		for h, o := range m {
			if o.Equal(alg) {
				return h, true
			}
		}
		return 0, false
	}
	switch pub := s.Certificate.PublicKey.(type) {
	case *rsa.PublicKey:
		h := s.Hash
		if alg.Equal(oidRSAPSS) {
			opts, err := pssParams(s.sigParams)
			if err != nil {
				return err
			}
			if rsa.VerifyPSS(pub, opts.Hash, hashed(opts.Hash), s.signature, opts) != nil {
				return ErrBadSignature
			}
			return nil
		}
		if !alg.Equal(oidRSAEncryption) {
			var ok bool
			if h, ok = implied(map[crypto.Hash]OID{crypto.SHA256: oidSHA256WithRSA, crypto.SHA384: oidSHA384WithRSA, crypto.SHA512: oidSHA512WithRSA}); !ok {
				return fmt.Errorf("%w: signature algorithm %v with an RSA key", ErrUnsupported, alg)
			}
		}
		if rsa.VerifyPKCS1v15(pub, h, hashed(h), s.signature) != nil {
			return ErrBadSignature
		}
		return nil
	case ed25519.PublicKey:
		// RFC 8419: pure Ed25519 over the signed attributes' DER.
		if !alg.Equal(oidEd25519) || len(s.sigParams) != 0 {
			return fmt.Errorf("%w: signature algorithm %v with an Ed25519 key", ErrUnsupported, alg)
		}
		if !ed25519.Verify(pub, s.signedAttrs, s.signature) {
			return ErrBadSignature
		}
		return nil
	case *ecdsa.PublicKey:
		h := s.Hash
		if !alg.Equal(oidECPublicKey) {
			var ok bool
			if h, ok = implied(map[crypto.Hash]OID{crypto.SHA256: oidECDSASHA256, crypto.SHA384: oidECDSASHA384, crypto.SHA512: oidECDSASHA512}); !ok {
				return fmt.Errorf("%w: signature algorithm %v with an EC key", ErrUnsupported, alg)
			}
		}
		if !ecdsa.VerifyASN1(pub, hashed(h), s.signature) {
			return ErrBadSignature
		}
		return nil
	}
	return fmt.Errorf("%w: certificate keys of type %T", ErrUnsupported, s.Certificate.PublicKey)
}

// pssParams reads RSASSA-PSS-params (RFC 8017, A.2.3); MGF1 must use the
// signature's hash.
func pssParams(der []byte) (*rsa.PSSOptions, error) {
	in := cryptobyte.String(der)
	var p cryptobyte.String
	if !in.ReadASN1(&p, asn1.SEQUENCE) || !in.Empty() {
		return nil, malformed("RSASSA-PSS parameters")
	}
	opts := &rsa.PSSOptions{Hash: crypto.SHA1, SaltLength: 20}
	mgfHash := crypto.SHA1
	var x cryptobyte.String
	var has bool
	if !p.ReadOptionalASN1(&x, &has, asn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, malformed("RSASSA-PSS hashAlgorithm")
	}
	if has {
		var o OID
		if _, err := readAlgorithm(&x, &o); err != nil {
			return nil, err
		}
		h, ok := hashOf(o)
		if !ok {
			return nil, fmt.Errorf("%w: RSASSA-PSS hash %v", ErrUnsupported, o)
		}
		opts.Hash = h
	}
	if !p.ReadOptionalASN1(&x, &has, asn1.Tag(1).Constructed().ContextSpecific()) {
		return nil, malformed("RSASSA-PSS maskGenAlgorithm")
	}
	if has {
		var o, ho OID
		params, err := readAlgorithm(&x, &o)
		if err != nil {
			return nil, err
		}
		pin := cryptobyte.String(params)
		if !o.Equal(oidMGF1) {
			return nil, fmt.Errorf("%w: RSASSA-PSS mask generation %v", ErrUnsupported, o)
		}
		if _, err := readAlgorithm(&pin, &ho); err != nil {
			return nil, err
		}
		h, ok := hashOf(ho)
		if !ok {
			return nil, fmt.Errorf("%w: MGF1 hash %v", ErrUnsupported, ho)
		}
		mgfHash = h
	}
	if mgfHash != opts.Hash {
		return nil, fmt.Errorf("%w: RSASSA-PSS with MGF1 over another hash", ErrUnsupported)
	}
	var salt int64 = 20
	if !p.ReadOptionalASN1Integer(&salt, asn1.Tag(2).Constructed().ContextSpecific(), int64(20)) {
		return nil, malformed("RSASSA-PSS saltLength")
	}
	if salt < 0 || salt > 1024 {
		return nil, fmt.Errorf("%w: RSASSA-PSS salt length %d", ErrUnsupported, salt)
	}
	opts.SaltLength = int(salt)
	var trailer int64 = 1
	if !p.ReadOptionalASN1Integer(&trailer, asn1.Tag(3).Constructed().ContextSpecific(), int64(1)) || trailer != 1 || !p.Empty() {
		return nil, malformed("RSASSA-PSS trailerField")
	}
	return opts, nil
}
