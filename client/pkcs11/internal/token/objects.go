package token

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"strconv"

	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/transport"
)

// ulongSize is the size of CK_ULONG: C's unsigned long, as wide as a Go int
// on the LP64 systems (Linux, the BSDs, macOS) this module is built for.
const ulongSize = strconv.IntSize / 8

// appendULong appends v as a CK_ULONG in the machine's byte order.
func appendULong(b []byte, v uint64) []byte {
	if ulongSize == 4 {
		return binary.NativeEndian.AppendUint32(b, uint32(v))
	}
	return binary.NativeEndian.AppendUint64(b, v)
}

// ULong decodes a CK_ULONG value; ok is false if b has the wrong size.
func ULong(b []byte) (uint64, bool) {
	switch {
	case len(b) != ulongSize:
		return 0, false
	case ulongSize == 4:
		return uint64(binary.NativeEndian.Uint32(b)), true
	}
	return binary.NativeEndian.Uint64(b), true
}

// object is a PKCS #11 object of a remote card, with its attribute values
// encoded as C reads them, and what signing needs to know of a key.
type object struct {
	handle  uint64
	class   uint64
	private bool
	attrs   map[uint64][]byte
	// For keys: the key type, the public key (nil if unknown), whether
	// every signature needs a context-specific login, and the signature size.
	keyType    uint64
	pub        crypto.PublicKey
	alwaysAuth bool
	canSign    bool
	sigLen     int
}

// sensitive are the attributes a private key never reveals.
var sensitive = map[uint64]bool{ckaValue: true, ckaPrivateExponent: true, ckaPrime1: true, ckaPrime2: true,
	ckaExponent1: true, ckaExponent2: true, ckaCoefficient: true}

// encode turns a catalogue attribute value into its C form: CK_ULONG for
// integers, CK_BBOOL for booleans, bytes as they are.
func encode(v any) ([]byte, bool) {
	switch v := v.(type) {
	case uint64:
		return appendULong(nil, v), true
	case bool:
		if v {
			return []byte{1}, true
		}
		return []byte{0}, true
	case []byte:
		return v, true
	case string:
		return []byte(v), true
	}
	return nil, false
}

func ulongs(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = appendULong(b, v)
	}
	return b
}

func boolean(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

// buildObjects makes the objects of a slot from the catalogue, completed
// with the attributes consumers read that the server leaves out: subjects
// and public key infos on keys (from the certificate with the same
// CKA_ID), and the standard defaults of each class.
func buildObjects(in []transport.Object) []*object {
	var objs []*object
	for _, o := range in {
		obj := &object{handle: o.Handle, attrs: map[uint64][]byte{}}
		for k, v := range o.Attributes {
			if b, ok := encode(v); ok {
				obj.attrs[k] = b
			}
		}
		obj.class, _ = ULong(obj.attrs[ckaClass])
		obj.private = bytes.Equal(obj.attrs[ckaPrivate], []byte{1})
		obj.keyType, _ = ULong(obj.attrs[ckaKeyType])
		objs = append(objs, obj)
	}
	// Certificates by CKA_ID, and public keys from certificates or from
	// the public key objects.
	certs := map[string]*x509.Certificate{}
	pubs := map[string]crypto.PublicKey{}
	for _, o := range objs {
		id := string(o.attrs[ckaID])
		switch o.class {
		case ckoCert:
			if c, err := x509.ParseCertificate(o.attrs[ckaValue]); err == nil {
				certs[id] = c
				if _, ok := pubs[id]; !ok {
					pubs[id] = c.PublicKey
				}
			}
		case ckoPublicKey:
			if p := publicKey(o.attrs); p != nil {
				pubs[id] = p
			}
		}
	}
	for _, o := range objs {
		id := o.attrs[ckaID]
		def := func(k uint64, v []byte) {
			if _, ok := o.attrs[k]; !ok {
				o.attrs[k] = v
			}
		}
		def(ckaToken, boolean(true))
		def(ckaPrivate, boolean(false))
		def(ckaModifiable, boolean(false))
		def(ckaCopyable, boolean(false))
		def(ckaDestroyable, boolean(false))
		def(ckaLabel, []byte{})
		switch o.class {
		case ckoCert:
			def(ckaCertificateType, ulongs(0)) // CKC_X_509
			def(ckaTrusted, boolean(false))
			def(ckaCertCategory, ulongs(0))
			def(ckaJavaMIDP, ulongs(0))
			def(ckaURL, []byte{})
			def(ckaStartDate, []byte{})
			def(ckaEndDate, []byte{})
			def(ckaHashOfIssuerPub, []byte{})
			def(ckaID, []byte{})
			if c := certs[string(id)]; c != nil {
				sum := sha1.Sum(c.Raw)
				def(ckaCheckValue, sum[:3])
				def(ckaSubject, c.RawSubject)
				def(ckaIssuer, c.RawIssuer)
				def(ckaPublicKeyInfo, c.RawSubjectPublicKeyInfo)
				var spki struct {
					Algorithm asn1.RawValue
					Key       asn1.BitString
				}
				if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err == nil {
					h := sha1.Sum(spki.Key.Bytes)
					def(ckaHashOfSubjectPub, h[:])
				}
			}
		case ckoPublicKey, ckoPrivateKey:
			def(ckaID, []byte{})
			def(ckaStartDate, []byte{})
			def(ckaEndDate, []byte{})
			def(ckaDerive, boolean(false))
			def(ckaLocal, boolean(false))
			def(ckaKeyGenMechanism, ulongs(Unavailable))
			if c := certs[string(id)]; c != nil {
				def(ckaSubject, c.RawSubject)
			} else {
				def(ckaSubject, []byte{})
			}
			o.pub = pubs[string(id)]
			if o.pub != nil {
				if der, err := x509.MarshalPKIXPublicKey(o.pub); err == nil {
					def(ckaPublicKeyInfo, der)
				}
			}
			def(ckaAllowedMechanisms, ulongs(mechanismsFor(o.keyType)...))
			if o.class == ckoPublicKey {
				def(ckaEncrypt, boolean(false))
				def(ckaVerify, boolean(true))
				def(ckaVerifyRecover, boolean(false))
				def(ckaWrap, boolean(false))
				def(ckaTrusted, boolean(false))
			} else {
				def(ckaSensitive, boolean(true))
				def(ckaDecrypt, boolean(false))
				def(ckaSign, boolean(true))
				def(ckaSignRecover, boolean(false))
				def(ckaUnwrap, boolean(false))
				def(ckaExtractable, boolean(false))
				def(ckaAlwaysSensitive, boolean(true))
				def(ckaNeverExtractable, boolean(true))
				def(ckaWrapWithTrusted, boolean(false))
				def(ckaAlwaysAuth, boolean(false))
				o.alwaysAuth = bytes.Equal(o.attrs[ckaAlwaysAuth], []byte{1})
				o.canSign = bytes.Equal(o.attrs[ckaSign], []byte{1})
			}
			if o.keyType == ckkRSA {
				if p, ok := o.pub.(*rsa.PublicKey); ok {
					def(ckaModulusBits, ulongs(uint64(p.N.BitLen())))
				}
			}
			o.sigLen = signatureSize(o)
		}
	}
	return objs
}

// publicKey reads a public key from the attributes of a public key object.
func publicKey(a map[uint64][]byte) crypto.PublicKey {
	if n, e := a[ckaModulus], a[ckaPublicExponent]; len(n) > 0 && len(e) > 0 {
		exp := new(big.Int).SetBytes(e)
		if !exp.IsInt64() || exp.Int64() > 1<<31 {
			return nil
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
	}
	var raw []byte
	if rest, err := asn1.Unmarshal(a[ckaECPoint], &raw); err != nil || len(rest) != 0 {
		raw = a[ckaECPoint] // some tokens put the bare point
	}
	switch kt, _ := ULong(a[ckaKeyType]); kt {
	case ckkECEdwards:
		if curve25519(a[ckaECParams], p11.ECParamsEd25519, p11.CurveNameEdwards25519) && len(raw) == ed25519.PublicKeySize {
			return ed25519.PublicKey(raw)
		}
		return nil
	case ckkECMontgomery:
		if !curve25519(a[ckaECParams], p11.ECParamsX25519, p11.CurveNameCurve25519) {
			return nil
		}
		if pub, err := ecdh.X25519().NewPublicKey(raw); err == nil {
			return pub
		}
		return nil
	}
	curve := curveOf(a[ckaECParams])
	if curve == nil {
		return nil
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
	if err != nil {
		return nil
	}
	return pub
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// curveOf reads CKA_EC_PARAMS (a named curve's OID).
func curveOf(params []byte) elliptic.Curve {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err != nil || len(rest) != 0 {
		return nil
	}
	switch {
	case oid.Equal(oidP256):
		return elliptic.P256()
	case oid.Equal(oidP384):
		return elliptic.P384()
	case oid.Equal(oidP521):
		return elliptic.P521()
	}
	return nil
}

// curve25519 reports whether CKA_EC_PARAMS names a curve of 25519: the
// DER of its OID (what pscsd serves), or of its name as a PrintableString
// (the other form PKCS #11 3.0 allows).
func curve25519(params, oid []byte, name string) bool {
	if bytes.Equal(params, oid) {
		return true
	}
	var s string
	rest, err := asn1.UnmarshalWithParams(params, &s, "printable")
	return err == nil && len(rest) == 0 && s == name
}

// signatureSize is the size of a PKCS #11 signature by key o: r||s for
// ECDSA, the modulus length for RSA; 0 if unknown.
func signatureSize(o *object) int {
	switch o.keyType {
	case ckkEC:
		if c := curveOf(o.attrs[ckaECParams]); c != nil {
			return 2 * ((c.Params().BitSize + 7) / 8)
		}
	case ckkECEdwards:
		return ed25519.SignatureSize
	case ckkRSA:
		if n := o.attrs[ckaModulus]; len(n) > 0 {
			return (new(big.Int).SetBytes(n).BitLen() + 7) / 8
		}
		if p, ok := o.pub.(*rsa.PublicKey); ok {
			return p.Size()
		}
	}
	return 0
}

// matches reports whether o has every attribute of the template with the
// same value.
func (o *object) matches(template []Attribute) bool {
	for _, a := range template {
		v, ok := o.attrs[a.Type]
		if !ok || (o.class == ckoPrivateKey && sensitive[a.Type]) || !bytes.Equal(v, a.Value) {
			return false
		}
	}
	return true
}
