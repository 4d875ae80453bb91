package cms

// EnvelopedData (RFC 5652, section 6): content encrypted with AES-256-CBC
// under a fresh content-encryption key, and that key given to each
// recipient by its certificate's key:
//
//   - RSA: key transport (KeyTransRecipientInfo) with RSAES-OAEP, SHA-256
//     and MGF1-SHA-256 (RFC 8017, RFC 4055), or, when asked for
//     ([KeyTransportPKCS1v15]), RSAES-PKCS1-v1_5;
//   - EC (P-256, P-384, P-521): key agreement (KeyAgreeRecipientInfo,
//     RFC 5753) with an ephemeral-static ECDH, the ANSI X9.63 KDF over
//     SHA-256 (dhSinglePass-stdDH-sha256kdf-scheme) and AES-256 key wrap
//     (RFC 3394).
//
// openssl cms -decrypt reads all three; openssl smime -decrypt (the older
// PKCS #7 code) reads only RSAES-PKCS1-v1_5, which is why it can be asked
// for.

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of EnvelopedData (RFC 5652, RFC 3565, RFC 4055, RFC
// 5753, SEC 1).
var (
	OIDEnvelopedData = MustOID("1.2.840.113549.1.7.3")
	oidAES256CBC     = MustOID("2.16.840.1.101.3.4.1.42")
	oidAES256Wrap    = MustOID("2.16.840.1.101.3.4.1.45")
	oidRSAESOAEP     = MustOID("1.2.840.113549.1.1.7")
	oidECDHSHA256KDF = MustOID("1.3.132.1.11.1") // dhSinglePass-stdDH-sha256kdf-scheme
)

// MaxRecipients bounds the recipients an EnvelopedData may name.
const MaxRecipients = 64

// ErrNotRecipient is returned by Decrypt when no recipient of the
// EnvelopedData opens with the key.
var ErrNotRecipient = errors.New("cms: the key is not one of the EnvelopedData's recipients (or the message was altered)")

// KeyTransport is how the content-encryption key is given to an RSA
// recipient. The zero value is RSAES-OAEP.
type KeyTransport int

const (
	// KeyTransportOAEP is RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC
	// 8017, RFC 4055): the default.
	KeyTransportOAEP KeyTransport = iota
	// KeyTransportPKCS1v15 is RSAES-PKCS1-v1_5 (rsaEncryption), the only
	// RSA key transport openssl smime -decrypt (and older S/MIME clients)
	// read. Its decryption is a padding oracle (Bleichenbacher) wherever
	// an attacker can submit ciphertexts and observe the outcome; a key
	// that decrypts offline, on its owner's request only, offers none.
	KeyTransportPKCS1v15
)

// String is the name the configuration uses: "oaep" or "pkcs1v15".
func (kt KeyTransport) String() string {
	switch kt {
	case KeyTransportOAEP:
		return "oaep"
	case KeyTransportPKCS1v15:
		return "pkcs1v15"
	}
	return fmt.Sprintf("KeyTransport(%d)", int(kt))
}

// ParseKeyTransport reads a KeyTransport's name; "" is OAEP.
func ParseKeyTransport(s string) (KeyTransport, error) {
	switch s {
	case "", "oaep":
		return KeyTransportOAEP, nil
	case "pkcs1v15":
		return KeyTransportPKCS1v15, nil
	}
	return 0, fmt.Errorf("cms: key transport %q: oaep or pkcs1v15", s)
}

// Encrypt returns an EnvelopedData (a ContentInfo, DER) of content (id-data)
// for the recipients' certificates (RSA or EC keys), with RSA-OAEP for RSA
// keys.
func Encrypt(content []byte, recipients []*x509.Certificate) ([]byte, error) {
	return EncryptWith(content, recipients, KeyTransportOAEP)
}

// EncryptWith is Encrypt with RSA recipients given the key by kt (EC
// recipients always by key agreement).
func EncryptWith(content []byte, recipients []*x509.Certificate, kt KeyTransport) ([]byte, error) {
	if kt != KeyTransportOAEP && kt != KeyTransportPKCS1v15 {
		return nil, fmt.Errorf("cms: unknown key transport %d", int(kt))
	}
	if len(recipients) == 0 || len(recipients) > MaxRecipients {
		return nil, fmt.Errorf("cms: %d recipients (1 to %d)", len(recipients), MaxRecipients)
	}
	cek := make([]byte, 32)
	iv := make([]byte, aes.BlockSize)
	rand.Read(cek)
	rand.Read(iv)
	defer clear(cek)
	var infos [][]byte
	version := int64(0)
	for _, c := range recipients {
		var ri []byte
		var err error
		switch pub := c.PublicKey.(type) {
		case *rsa.PublicKey:
			ri, err = keyTrans(c, pub, cek, kt)
		case *ecdsa.PublicKey:
			ri, err = keyAgree(c, pub, cek)
			version = 2
		default:
			err = fmt.Errorf("cms: %s has a %T key: not RSA or EC", c.Subject, c.PublicKey)
		}
		if err != nil {
			return nil, err
		}
		infos = append(infos, ri)
	}
	slices.SortFunc(infos, compareDER) // DER: a SET OF in order
	block, _ := aes.NewCipher(cek)
	padded := pad(content)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(padded, padded)
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(OIDEnvelopedData) })
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(version)
				b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
					for _, ri := range infos {
						b.AddBytes(ri)
					}
				})
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedContentInfo
					b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(OIDData) })
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidAES256CBC) })
						b.AddASN1OctetString(iv)
					})
					b.AddASN1(asn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(padded) })
				})
			})
		})
	})
	return b.Bytes()
}

// pad appends PKCS #7 padding to a copy of p.
func pad(p []byte) []byte {
	n := aes.BlockSize - len(p)%aes.BlockSize
	out := make([]byte, len(p), len(p)+n)
	copy(out, p)
	for range n {
		out = append(out, byte(n))
	}
	return out
}

// issuerAndSerial appends c's IssuerAndSerialNumber.
func issuerAndSerial(b *cryptobyte.Builder, c *x509.Certificate) {
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawIssuer)
		b.AddASN1BigInt(c.SerialNumber)
	})
}

// oaepParams appends the RSAES-OAEP AlgorithmIdentifier with SHA-256 and
// MGF1-SHA-256.
func oaepParams(b *cryptobyte.Builder) {
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidRSAESOAEP) })
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { algID(b, oidSHA256, true) })
			b.AddASN1(asn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oidMGF1) })
					algID(b, oidSHA256, true)
				})
			})
		})
	})
}

// sha256AlgID reads an AlgorithmIdentifier of SHA-256, parameters absent
// or NULL (RFC 5754 allows both).
func sha256AlgID(s *cryptobyte.String) bool {
	var alg, oid cryptobyte.String
	if !s.ReadASN1(&alg, asn1.SEQUENCE) || !alg.ReadASN1(&oid, asn1.OBJECT_IDENTIFIER) || !OID(oid).Equal(oidSHA256) {
		return false
	}
	var null cryptobyte.String
	return alg.Empty() || alg.ReadASN1(&null, asn1.NULL) && len(null) == 0 && alg.Empty()
}

// oaepSHA256 reports whether params (the RSAES-OAEP-params SEQUENCE,
// with its tag) say SHA-256, MGF1 with SHA-256 and the default, empty
// label.
func oaepSHA256(params cryptobyte.String) bool {
	var seq, h, m, mgf, mgfOID cryptobyte.String
	if !params.ReadASN1(&seq, asn1.SEQUENCE) || !params.Empty() ||
		!seq.ReadASN1(&h, asn1.Tag(0).Constructed().ContextSpecific()) || !sha256AlgID(&h) || !h.Empty() ||
		!seq.ReadASN1(&m, asn1.Tag(1).Constructed().ContextSpecific()) || !seq.Empty() ||
		!m.ReadASN1(&mgf, asn1.SEQUENCE) || !m.Empty() ||
		!mgf.ReadASN1(&mgfOID, asn1.OBJECT_IDENTIFIER) || !OID(mgfOID).Equal(oidMGF1) || !sha256AlgID(&mgf) || !mgf.Empty() {
		return false
	}
	return true
}

// keyTrans is a KeyTransRecipientInfo (version 0) giving cek to c by kt.
func keyTrans(c *x509.Certificate, pub *rsa.PublicKey, cek []byte, kt KeyTransport) ([]byte, error) {
	var ek []byte
	var err error
	if kt == KeyTransportPKCS1v15 {
		//lint:ignore SA1019 openssl smime (PKCS #7) reads no other RSA key transport; chosen by configuration, OAEP by default
		ek, err = rsa.EncryptPKCS1v15(rand.Reader, pub, cek)
	} else {
		ek, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, cek, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: encrypting to %s: %w", c.Subject, err)
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		issuerAndSerial(b, c)
		if kt == KeyTransportPKCS1v15 {
			algID(b, oidRSAEncryption, true) // parameters NULL (RFC 3370, 4.2.1)
		} else {
			oaepParams(b)
		}
		b.AddASN1OctetString(ek)
	})
	return b.Bytes()
}

// curveOf returns the crypto/ecdh curve of an ECDSA public key.
func curveOf(pub *ecdsa.PublicKey) (*ecdh.PublicKey, error) {
	k, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	return k, nil
}

// sharedInfo is the DER of ECC-CMS-SharedInfo (RFC 5753, 7.2) for AES-256
// key wrap without user keying material.
func sharedInfo() []byte {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		algID(b, oidAES256Wrap, false)
		b.AddASN1(asn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1OctetString([]byte{0, 0, 1, 0}) // 256 bits
		})
	})
	return b.BytesOrPanic()
}

// kdf is the ANSI X9.63 KDF with SHA-256 for a 32-byte key (one block).
func kdf(z []byte) []byte {
	h := sha256.New()
	h.Write(z)
	h.Write([]byte{0, 0, 0, 1})
	h.Write(sharedInfo())
	return h.Sum(nil)
}

// keyAgree is a KeyAgreeRecipientInfo (version 3, [1] IMPLICIT) giving cek
// to c with an ephemeral key of c's curve.
func keyAgree(c *x509.Certificate, pub *ecdsa.PublicKey, cek []byte) ([]byte, error) {
	them, err := curveOf(pub)
	if err != nil {
		return nil, err
	}
	eph, err := them.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(them)
	if err != nil {
		return nil, fmt.Errorf("cms: key agreement with %s: %w", c.Subject, err)
	}
	kek := kdf(z)
	clear(z)
	wrapped, err := wrapKey(kek, cek)
	clear(kek)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
		b.AddASN1Int64(3)
		b.AddASN1(asn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // originator
			b.AddASN1(asn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // originatorKey
				algID(b, oidECPublicKey, false)
				b.AddASN1BitString(eph.PublicKey().Bytes())
			})
		})
		algID2(b, oidECDHSHA256KDF, func(b *cryptobyte.Builder) { algID(b, oidAES256Wrap, false) })
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // RecipientEncryptedKeys
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				issuerAndSerial(b, c)
				b.AddASN1OctetString(wrapped)
			})
		})
	})
	return b.Bytes()
}

// algID2 appends an AlgorithmIdentifier whose parameters params writes.
func algID2(b *cryptobyte.Builder, oid OID, params func(*cryptobyte.Builder)) {
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(oid) })
		params(b)
	})
}

// wrapIV is RFC 3394's default initial value.
var wrapIV = []byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// wrapKey is the AES key wrap (RFC 3394) of key (a multiple of 8 bytes,
// at least 16) under kek.
func wrapKey(kek, key []byte) ([]byte, error) {
	if len(key)%8 != 0 || len(key) < 16 {
		return nil, errors.New("cms: key wrap needs a key of 8n bytes, n ≥ 2")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(key) / 8
	a := slices.Clone(wrapIV)
	r := slices.Clone(key)
	buf := make([]byte, 16)
	for j := range 6 {
		for i := range n {
			copy(buf, a)
			copy(buf[8:], r[8*i:8*i+8])
			block.Encrypt(buf, buf)
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(buf[:8])^t)
			copy(r[8*i:], buf[8:])
		}
	}
	return append(a, r...), nil
}

// unwrapKey undoes wrapKey, checking the integrity value.
func unwrapKey(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped)%8 != 0 || len(wrapped) < 24 {
		return nil, errors.New("cms: a wrapped key has 8n bytes, n ≥ 3")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(wrapped)/8 - 1
	a := slices.Clone(wrapped[:8])
	r := slices.Clone(wrapped[8:])
	buf := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n - 1; i >= 0; i-- {
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(buf, binary.BigEndian.Uint64(a)^t)
			copy(buf[8:], r[8*i:8*i+8])
			block.Decrypt(buf, buf)
			copy(a, buf[:8])
			copy(r[8*i:], buf[8:])
		}
	}
	if subtle.ConstantTimeCompare(a, wrapIV) != 1 {
		clear(r)
		return nil, ErrNotRecipient
	}
	return r, nil
}

// Decrypt returns the content of an EnvelopedData (a ContentInfo, DER)
// for key, an *rsa.PrivateKey or *ecdsa.PrivateKey of one of its
// recipients. A key that is no recipient's, or a recipient's whose
// encrypted key or content was altered, gives ErrNotRecipient or an error
// about the padding; the content's integrity is the signature's business
// (backups are SignedData inside). With RSAES-PKCS1-v1_5 a wrong key or
// altered key yields a random content key rather than an error (no
// padding oracle), so such a recipient is known wrong only by the
// content's padding: about once in 256 times a wrong key gives garbage
// instead of ErrNotRecipient, which the signature inside then refuses.
func Decrypt(der []byte, key crypto.PrivateKey) ([]byte, error) {
	env, err := ParseEnveloped(der)
	if err != nil {
		return nil, err
	}
	ct := env.Encrypted
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, malformed("encrypted content (not whole AES blocks)")
	}
	for _, r := range env.Recipients {
		cek, err := r.open(key)
		if err != nil {
			continue
		}
		out, ok := decryptContent(cek, env.IV, ct)
		clear(cek)
		if ok {
			return out, nil
		}
	}
	return nil, ErrNotRecipient
}

// decryptContent decrypts ct (whole blocks) with AES-256-CBC and removes
// the PKCS #7 padding; false if the padding is wrong. The last block is
// checked first, so that a wrong key costs one block, not the content.
func decryptContent(cek, iv, ct []byte) ([]byte, bool) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, false
	}
	prev := iv
	if len(ct) > aes.BlockSize {
		prev = ct[len(ct)-2*aes.BlockSize : len(ct)-aes.BlockSize]
	}
	last := make([]byte, aes.BlockSize)
	cipher.NewCBCDecrypter(block, prev).CryptBlocks(last, ct[len(ct)-aes.BlockSize:])
	if n := int(last[aes.BlockSize-1]); n == 0 || n > aes.BlockSize || !bytes.Equal(last[aes.BlockSize-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, false
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	n := int(out[len(out)-1])
	if n == 0 || n > aes.BlockSize || !bytes.Equal(out[len(out)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, false
	}
	return out[:len(out)-n], true
}

// Enveloped is a parsed EnvelopedData.
type Enveloped struct {
	Recipients []*Recipient
	IV         []byte // AES-256-CBC's
	Encrypted  []byte
}

// Recipient is one RecipientInfo: key transport (RSA) or key agreement
// (EC), naming its recipient by issuer and serial number.
type Recipient struct {
	Agree     bool         // key agreement (EC); else key transport (RSA)
	Transport KeyTransport // key transport: how the key is encrypted
	Issuer    []byte       // DER Name
	Serial    []byte       // the serial number's INTEGER contents
	Ephemeral []byte       // key agreement: the originator's public point
	Key       []byte       // the encrypted or wrapped key
}

// ParseEnveloped reads an EnvelopedData (a ContentInfo, DER) that uses
// AES-256-CBC and the recipient kinds EncryptWith makes: RSA key transport
// with RSAES-OAEP (SHA-256) or RSAES-PKCS1-v1_5, EC key agreement.
func ParseEnveloped(der []byte) (*Enveloped, error) {
	in := cryptobyte.String(der)
	var ci, explicit, ed cryptobyte.String
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
	if !ctype.Equal(OIDEnvelopedData) {
		return nil, fmt.Errorf("cms: content type %v, not EnvelopedData", ctype)
	}
	if !ci.ReadASN1(&explicit, asn1.Tag(0).Constructed().ContextSpecific()) || !ci.Empty() ||
		!explicit.ReadASN1(&ed, asn1.SEQUENCE) || !explicit.Empty() {
		return nil, malformed("ContentInfo")
	}
	var v int64
	var infos, eci cryptobyte.String
	if !ed.ReadASN1Integer(&v) || (v != 0 && v != 2) {
		return nil, malformed("EnvelopedData version (0 or 2, no originator info)")
	}
	if !ed.ReadASN1(&infos, asn1.SET) || !ed.ReadASN1(&eci, asn1.SEQUENCE) || !ed.Empty() {
		return nil, malformed("EnvelopedData (unprotected attributes are not read)")
	}
	env := &Enveloped{}
	for !infos.Empty() {
		if len(env.Recipients) == MaxRecipients {
			return nil, fmt.Errorf("cms: more than %d recipients", MaxRecipients)
		}
		r, err := parseRecipient(&infos)
		if err != nil {
			return nil, err
		}
		env.Recipients = append(env.Recipients, r)
	}
	if len(env.Recipients) == 0 {
		return nil, errors.New("cms: no recipient")
	}
	var ct, alg, algOID, iv cryptobyte.String
	if !eci.ReadASN1(&ct, asn1.OBJECT_IDENTIFIER) || !eci.ReadASN1(&alg, asn1.SEQUENCE) ||
		!alg.ReadASN1(&algOID, asn1.OBJECT_IDENTIFIER) {
		return nil, malformed("EncryptedContentInfo")
	}
	if !OID(algOID).Equal(oidAES256CBC) {
		return nil, fmt.Errorf("cms: content encryption %v, not AES-256-CBC", OID(algOID))
	}
	if !alg.ReadASN1(&iv, asn1.OCTET_STRING) || !alg.Empty() || len(iv) != aes.BlockSize {
		return nil, malformed("AES-256-CBC parameters")
	}
	var enc cryptobyte.String
	if !eci.ReadASN1(&enc, asn1.Tag(0).ContextSpecific()) || !eci.Empty() {
		return nil, malformed("encrypted content (absent, or constructed: the reader takes DER only)")
	}
	env.IV, env.Encrypted = slices.Clone([]byte(iv)), slices.Clone([]byte(enc))
	return env, nil
}

// readIssuerSerial reads an IssuerAndSerialNumber.
func readIssuerSerial(s *cryptobyte.String, r *Recipient) bool {
	var ias, issuer, serial cryptobyte.String
	if !s.ReadASN1(&ias, asn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, asn1.SEQUENCE) ||
		!ias.ReadASN1(&serial, asn1.INTEGER) || !ias.Empty() {
		return false
	}
	r.Issuer, r.Serial = slices.Clone([]byte(issuer)), slices.Clone([]byte(serial))
	return true
}

func parseRecipient(s *cryptobyte.String) (*Recipient, error) {
	var tag asn1.Tag
	var body cryptobyte.String
	if !s.ReadAnyASN1(&body, &tag) {
		return nil, malformed("RecipientInfo")
	}
	r := &Recipient{}
	var v int64
	switch tag {
	case asn1.SEQUENCE: // KeyTransRecipientInfo
		var alg, algOID, ek cryptobyte.String
		if !body.ReadASN1Integer(&v) || v != 0 || !readIssuerSerial(&body, r) ||
			!body.ReadASN1(&alg, asn1.SEQUENCE) || !alg.ReadASN1(&algOID, asn1.OBJECT_IDENTIFIER) ||
			!body.ReadASN1(&ek, asn1.OCTET_STRING) || !body.Empty() {
			return nil, malformed("KeyTransRecipientInfo (version 0, issuer and serial number)")
		}
		switch {
		case OID(algOID).Equal(oidRSAEncryption):
			var null cryptobyte.String
			if !alg.Empty() && (!alg.ReadASN1(&null, asn1.NULL) || len(null) != 0 || !alg.Empty()) {
				return nil, malformed("rsaEncryption parameters (NULL or absent)")
			}
			r.Transport = KeyTransportPKCS1v15
		case OID(algOID).Equal(oidRSAESOAEP):
			if !oaepSHA256(alg) {
				return nil, errors.New("cms: RSAES-OAEP with other parameters than SHA-256 and MGF1-SHA-256")
			}
		default:
			return nil, fmt.Errorf("cms: key transport %v, not RSA", OID(algOID))
		}
		r.Key = slices.Clone([]byte(ek))
	case asn1.Tag(1).Constructed().ContextSpecific(): // KeyAgreeRecipientInfo
		r.Agree = true
		var orig, origKey, keyAlg, eph, alg, algOID, wrap, wrapOID, keys, rek, ek cryptobyte.String
		if !body.ReadASN1Integer(&v) || v != 3 ||
			!body.ReadASN1(&orig, asn1.Tag(0).Constructed().ContextSpecific()) ||
			!orig.ReadASN1(&origKey, asn1.Tag(1).Constructed().ContextSpecific()) || !orig.Empty() ||
			!origKey.ReadASN1(&keyAlg, asn1.SEQUENCE) || !origKey.ReadASN1BitStringAsBytes((*[]byte)(&eph)) || !origKey.Empty() ||
			!body.SkipOptionalASN1(asn1.Tag(1).Constructed().ContextSpecific()) ||
			!body.ReadASN1(&alg, asn1.SEQUENCE) || !alg.ReadASN1(&algOID, asn1.OBJECT_IDENTIFIER) ||
			!alg.ReadASN1(&wrap, asn1.SEQUENCE) || !alg.Empty() || !wrap.ReadASN1(&wrapOID, asn1.OBJECT_IDENTIFIER) ||
			!body.ReadASN1(&keys, asn1.SEQUENCE) || !body.Empty() ||
			!keys.ReadASN1(&rek, asn1.SEQUENCE) || !keys.Empty() ||
			!readIssuerSerial(&rek, r) || !rek.ReadASN1(&ek, asn1.OCTET_STRING) || !rek.Empty() {
			return nil, malformed("KeyAgreeRecipientInfo (version 3, an originator key, one recipient by issuer and serial number)")
		}
		if !OID(algOID).Equal(oidECDHSHA256KDF) || !OID(wrapOID).Equal(oidAES256Wrap) {
			return nil, fmt.Errorf("cms: key agreement %v with %v, not dhSinglePass-stdDH-sha256kdf-scheme with AES-256 key wrap", OID(algOID), OID(wrapOID))
		}
		r.Ephemeral, r.Key = slices.Clone([]byte(eph)), slices.Clone([]byte(ek))
	default:
		return nil, errors.New("cms: a recipient that is neither key transport nor key agreement")
	}
	return r, nil
}

// open returns the content-encryption key for key, if r is its recipient.
func (r *Recipient) open(key crypto.PrivateKey) ([]byte, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if r.Agree {
			return nil, ErrNotRecipient
		}
		if r.Transport == KeyTransportPKCS1v15 {
			// A random key stands in for a bad padding, in constant time
			// (RFC 3218, 2.3.2): a wrong key or altered ciphertext then
			// fails at the content's padding or, past it, at the
			// signature, never earlier and differently.
			cek := make([]byte, 32)
			rand.Read(cek)
			//lint:ignore SA1019 envelopes made for openssl smime; no oracle: a bad padding yields a random key
			if err := rsa.DecryptPKCS1v15SessionKey(nil, k, r.Key, cek); err != nil {
				return nil, ErrNotRecipient // the key's size, not the padding
			}
			return cek, nil
		}
		cek, err := rsa.DecryptOAEP(sha256.New(), nil, k, r.Key, nil)
		if err != nil || len(cek) != 32 {
			return nil, ErrNotRecipient
		}
		return cek, nil
	case *ecdsa.PrivateKey:
		if !r.Agree {
			return nil, ErrNotRecipient
		}
		priv, err := k.ECDH()
		if err != nil {
			return nil, ErrNotRecipient
		}
		eph, err := priv.Curve().NewPublicKey(r.Ephemeral)
		if err != nil {
			return nil, ErrNotRecipient
		}
		z, err := priv.ECDH(eph)
		if err != nil {
			return nil, ErrNotRecipient
		}
		kek := kdf(z)
		clear(z)
		defer clear(kek)
		cek, err := unwrapKey(kek, r.Key)
		if err != nil || len(cek) != 32 {
			return nil, ErrNotRecipient
		}
		return cek, nil
	}
	return nil, fmt.Errorf("cms: a %T key decrypts nothing here", key)
}
