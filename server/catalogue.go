package server

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"math/big"

	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// PKCS #11 constants used in the catalogue: those of internal/p11, the
// one declaration the PKCS #11 module shares.
const (
	ckaClass           = p11.CKAClass
	ckaToken           = p11.CKAToken
	ckaPrivate         = p11.CKAPrivate
	ckaLabel           = p11.CKALabel
	ckaValue           = p11.CKAValue
	ckaCertificateType = p11.CKACertificateType
	ckaIssuer          = p11.CKAIssuer
	ckaSerialNumber    = p11.CKASerialNumber
	ckaKeyType         = p11.CKAKeyType
	ckaSubject         = p11.CKASubject
	ckaID              = p11.CKAID
	ckaSensitive       = p11.CKASensitive
	ckaDecrypt         = p11.CKADecrypt
	ckaDerive          = p11.CKADerive
	ckaSign            = p11.CKASign
	ckaVerify          = p11.CKAVerify
	ckaModulus         = p11.CKAModulus
	ckaModulusBits     = p11.CKAModulusBits
	ckaPublicExponent  = p11.CKAPublicExponent
	ckaExtractable     = p11.CKAExtractable
	ckaNeverExtract    = p11.CKANeverExtractable
	ckaAlwaysSensitive = p11.CKAAlwaysSensitive
	ckaECParams        = p11.CKAECParams
	ckaECPoint         = p11.CKAECPoint
	ckaAlwaysAuth      = p11.CKAAlwaysAuth

	ckoCertificate  = p11.CKOCert
	ckoPublicKey    = p11.CKOPublicKey
	ckoPrivateKey   = p11.CKOPrivateKey
	ckkRSA          = p11.CKKRSA
	ckkEC           = p11.CKKEC
	ckkECEdwards    = p11.CKKECEdwards
	ckkECMontgomery = p11.CKKECMontgomery
	ckcX509         = p11.CKCX509

	ckmRSAPKCS          = p11.CKMRSAPKCS
	ckmRSAPKCSPSS       = p11.CKMRSAPKCSPSS
	ckmSHA256RSAPKCS    = p11.CKMSHA256RSAPKCS
	ckmSHA384RSAPKCS    = p11.CKMSHA384RSAPKCS
	ckmSHA512RSAPKCS    = p11.CKMSHA512RSAPKCS
	ckmSHA256RSAPKCSPSS = p11.CKMSHA256RSAPKCSPSS
	ckmSHA384RSAPKCSPSS = p11.CKMSHA384RSAPKCSPSS
	ckmSHA512RSAPKCSPSS = p11.CKMSHA512RSAPKCSPSS
	ckmECDSA            = p11.CKMECDSA
	ckmECDSASHA256      = p11.CKMECDSASHA256
	ckmECDSASHA384      = p11.CKMECDSASHA384
	ckmECDSASHA512      = p11.CKMECDSASHA512
	ckmRSAPKCSOAEP      = p11.CKMRSAPKCSOAEP
	ckmECDH1Derive      = p11.CKMECDH1Derive
	ckmEDDSA            = p11.CKMEDDSA

	ckfHW                 = p11.CKFHW
	ckfSign               = p11.CKFSign
	ckfDecrypt            = p11.CKFDecrypt
	ckfDerive             = p11.CKFDerive
	ckfTokenInitialized   = p11.CKFTokenInitialized
	ckfLoginRequired      = p11.CKFLoginRequired
	ckfUserPINInitialized = p11.CKFUserPINInitialized
	ckfProtectedAuthPath  = p11.CKFProtectedAuthPath
)

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

// Object handles of a slot: key i has its private key at 3i+1, public key
// at 3i+2 and certificate at 3i+3.
func privHandle(i int) uint64 { return uint64(3*i + 1) }

// keyIndex finds the key whose private key handle is h.
func keyIndex(h uint64) (int, bool) {
	if h == 0 || (h-1)%3 != 0 {
		return 0, false
	}
	return int((h - 1) / 3), true
}

// ckaIDOf is the CKA_ID of key number i: i+1 in one byte, or, from 255
// on (a remote card of different keys that has seen many cards), in the
// fewest big-endian bytes, at least two, so that no two keys share one.
func ckaIDOf(i int) []byte {
	if i+1 <= 0xff {
		return []byte{byte(i + 1)}
	}
	b := binary.BigEndian.AppendUint64(nil, uint64(i+1))
	for len(b) > 2 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// objects describes a card's keys as PKCS #11 objects; nums are the keys'
// numbers in their remote card (rsc.Pool.Numbers), which their handles and
// CKA_ID follow.
func objects(keys []profiles.Key, nums []int) []transport.Object {
	var out []transport.Object
	for j, k := range keys {
		i := nums[j]
		id := ckaIDOf(i)
		label := k.Label + " (" + k.ID + ")"
		common := func(class uint64) map[uint64]any {
			return map[uint64]any{ckaClass: class, ckaToken: true, ckaID: id, ckaLabel: label}
		}
		priv := common(ckoPrivateKey)
		priv[ckaPrivate] = true
		priv[ckaSensitive] = true
		priv[ckaAlwaysSensitive] = true
		priv[ckaExtractable] = false
		priv[ckaNeverExtract] = true
		// A decryption-only key (profiles.Key.NoSign) and an X25519 key
		// do not sign.
		_, isX25519 := k.Public.(*ecdh.PublicKey)
		signs := !k.NoSign && !isX25519
		priv[ckaSign] = signs
		// The card wants its PIN before every signature with this key:
		// the delegate gives the virtual PIN with every one.
		priv[ckaAlwaysAuth] = k.PINPolicy == profiles.PINAlways
		pub := common(ckoPublicKey)
		pub[ckaPrivate] = false
		pub[ckaVerify] = signs
		// A key the profile offers for decryption (profiles.Decrypter):
		// RSA keys decrypt, EC and X25519 keys agree keys (ECDH).
		_, isRSA := k.Public.(*rsa.PublicKey)
		priv[ckaDecrypt] = k.Decrypt && isRSA
		priv[ckaDerive] = k.Decrypt && !isRSA
		switch p := k.Public.(type) {
		case *ecdsa.PublicKey:
			params, point := ecAttributes(p)
			for _, m := range []map[uint64]any{priv, pub} {
				m[ckaKeyType] = uint64(ckkEC)
				m[ckaECParams] = params
			}
			pub[ckaECPoint] = point
		case *rsa.PublicKey:
			for _, m := range []map[uint64]any{priv, pub} {
				m[ckaKeyType] = uint64(ckkRSA)
				m[ckaModulus] = p.N.Bytes()
				m[ckaPublicExponent] = big.NewInt(int64(p.E)).Bytes()
				m[ckaModulusBits] = uint64(p.N.BitLen())
			}
		case ed25519.PublicKey:
			// PKCS #11 3.0: CKK_EC_EDWARDS, CKA_EC_PARAMS the curve (the
			// OID of RFC 8410, see p11.ECParamsEd25519), CKA_EC_POINT
			// the 32-byte public key in a DER OCTET STRING.
			point, _ := asn1.Marshal([]byte(p))
			for _, m := range []map[uint64]any{priv, pub} {
				m[ckaKeyType] = uint64(ckkECEdwards)
				m[ckaECParams] = p11.ECParamsEd25519
			}
			pub[ckaECPoint] = point
		case *ecdh.PublicKey:
			if p.Curve() != ecdh.X25519() {
				continue
			}
			point, _ := asn1.Marshal(p.Bytes())
			for _, m := range []map[uint64]any{priv, pub} {
				m[ckaKeyType] = uint64(ckkECMontgomery)
				m[ckaECParams] = p11.ECParamsX25519
			}
			pub[ckaECPoint] = point
		default:
			continue
		}
		out = append(out, transport.Object{Handle: privHandle(i), Attributes: priv},
			transport.Object{Handle: privHandle(i) + 1, Attributes: pub})
		if c := k.Certificate; c != nil {
			cert := common(ckoCertificate)
			cert[ckaPrivate] = false
			cert[ckaCertificateType] = uint64(ckcX509)
			cert[ckaValue] = c.Raw
			cert[ckaSubject] = c.RawSubject
			cert[ckaIssuer] = c.RawIssuer
			serial, _ := asn1.Marshal(c.SerialNumber)
			cert[ckaSerialNumber] = serial
			out = append(out, transport.Object{Handle: privHandle(i) + 2, Attributes: cert})
		}
	}
	return out
}

// shownObjects describes the keys a remote card shows (rsc.Pool.Shown) as
// PKCS #11 objects, and their mechanisms. A key of one card of a remote
// card whose cards hold different keys has objects of its own (its number
// gives their handles and CKA_ID), labelled with the card's ID before
// the key's label: "<card>: <label> (<key ID>)".
func shownObjects(shown []rsc.NumberedKey) ([]transport.Object, []transport.Mechanism) {
	keys := make([]profiles.Key, len(shown))
	nums := make([]int, len(shown))
	card := map[int]string{}
	for i, k := range shown {
		keys[i], nums[i] = k.Key, k.Number
		if k.Card != "" {
			card[k.Number] = k.Card
		}
	}
	objs := objects(keys, nums)
	for _, o := range objs {
		i, _ := keyIndex(o.Handle - (o.Handle-1)%3)
		if c, ok := card[i]; ok {
			o.Attributes[ckaLabel] = c + ": " + o.Attributes[ckaLabel].(string)
		}
	}
	return objs, mechanisms(keys)
}

// ecAttributes returns CKA_EC_PARAMS (the curve's OID, DER) and
// CKA_EC_POINT (the uncompressed point as a DER OCTET STRING).
func ecAttributes(p *ecdsa.PublicKey) ([]byte, []byte) {
	var oid asn1.ObjectIdentifier
	switch p.Curve {
	case elliptic.P256():
		oid = oidP256
	case elliptic.P384():
		oid = oidP384
	case elliptic.P521():
		oid = oidP521
	}
	params, _ := asn1.Marshal(oid)
	raw, _ := p.Bytes()
	point, _ := asn1.Marshal(raw)
	return params, point
}

// mechanisms lists what the keys of a card can do.
func mechanisms(keys []profiles.Key) []transport.Mechanism {
	var ec, rs, derive, decrypt, eddsa bool
	var ecMin, ecMax, rsMin, rsMax, dhMin, dhMax uint32
	// agrees notes a key of bits that agrees keys (ECDH, X25519).
	agrees := func(bits uint32) {
		if !derive || bits < dhMin {
			dhMin = bits
		}
		dhMax = max(dhMax, bits)
		derive = true
	}
	for _, k := range keys {
		switch p := k.Public.(type) {
		case *ecdsa.PublicKey:
			bits := uint32(p.Curve.Params().BitSize)
			if k.Decrypt {
				agrees(bits)
			}
			if k.NoSign {
				continue
			}
			if !ec || bits < ecMin {
				ecMin = bits
			}
			ecMax = max(ecMax, bits)
			ec = true
		case ed25519.PublicKey:
			eddsa = eddsa || !k.NoSign
		case *ecdh.PublicKey:
			if k.Decrypt && p.Curve() == ecdh.X25519() {
				agrees(p11.Ed25519Bits)
			}
		case *rsa.PublicKey:
			decrypt = decrypt || k.Decrypt
			bits := uint32(p.N.BitLen())
			if !rs || bits < rsMin {
				rsMin = bits
			}
			rsMax = max(rsMax, bits)
			rs = true
		}
	}
	var out []transport.Mechanism
	if ec {
		for _, m := range []uint64{ckmECDSA, ckmECDSASHA256, ckmECDSASHA384, ckmECDSASHA512} {
			out = append(out, transport.Mechanism{Type: m, MinKey: ecMin, MaxKey: ecMax, Flags: ckfHW | ckfSign})
		}
	}
	if derive {
		out = append(out, transport.Mechanism{Type: ckmECDH1Derive, MinKey: dhMin, MaxKey: dhMax, Flags: ckfHW | ckfDerive})
	}
	if eddsa {
		out = append(out, transport.Mechanism{Type: ckmEDDSA, MinKey: p11.Ed25519Bits, MaxKey: p11.Ed25519Bits, Flags: ckfHW | ckfSign})
	}
	if rs {
		for _, m := range []uint64{ckmRSAPKCS, ckmSHA256RSAPKCS, ckmSHA384RSAPKCS, ckmSHA512RSAPKCS,
			ckmRSAPKCSPSS, ckmSHA256RSAPKCSPSS, ckmSHA384RSAPKCSPSS, ckmSHA512RSAPKCSPSS} {
			flags := uint64(ckfHW | ckfSign)
			if m == ckmRSAPKCS && decrypt {
				flags |= ckfDecrypt
			}
			out = append(out, transport.Mechanism{Type: m, MinKey: rsMin, MaxKey: rsMax, Flags: flags})
		}
		if decrypt {
			out = append(out, transport.Mechanism{Type: ckmRSAPKCSOAEP, MinKey: rsMin, MaxKey: rsMax, Flags: ckfHW | ckfDecrypt})
		}
	}
	return out
}

// signInput turns a PKCS #11 signing request into what a profile signs: a
// digest and its options. hashed reports whether the server hashed the
// data (a CKM_*_SHA* mechanism), so policy compares document digests.
func signInput(mech uint64, params, data []byte) (digest []byte, opts crypto.SignerOpts, err error) {
	hash := func(h crypto.Hash) []byte {
		w := h.New()
		w.Write(data)
		return w.Sum(nil)
	}
	switch mech {
	case ckmEDDSA:
		// EdDSA signs the whole message: it travels, and the card reads
		// it whole. Pure Ed25519 only: CK_EDDSA_PARAMS asking for
		// Ed25519ph or a context is not served.
		if len(params) != 0 {
			return nil, nil, transport.Errorf(transport.CodeMechanism, "CKM_EDDSA: only pure Ed25519 is served (no prehash, no context)")
		}
		if len(data) > transport.MaxEdDSAMessage {
			return nil, nil, transport.Errorf(transport.CodeTooLarge, "CKM_EDDSA: a message over %d bytes", transport.MaxEdDSAMessage)
		}
		return data, crypto.Hash(0), nil
	case ckmECDSA:
		return data, crypto.Hash(0), nil
	case ckmECDSASHA256:
		return hash(crypto.SHA256), crypto.SHA256, nil
	case ckmECDSASHA384:
		return hash(crypto.SHA384), crypto.SHA384, nil
	case ckmECDSASHA512:
		return hash(crypto.SHA512), crypto.SHA512, nil
	case ckmRSAPKCS:
		// A DigestInfo, as PKCS #11 applications send: the policy sees
		// the digest inside, and the driver encodes the same DigestInfo
		// again. Anything else is signed as it is, and no document
		// policy can allow it.
		if h, d, ok := profiles.ParseDigestInfo(data); ok {
			return d, h, nil
		}
		return data, crypto.Hash(0), nil
	case ckmSHA256RSAPKCS:
		return hash(crypto.SHA256), crypto.SHA256, nil
	case ckmSHA384RSAPKCS:
		return hash(crypto.SHA384), crypto.SHA384, nil
	case ckmSHA512RSAPKCS:
		return hash(crypto.SHA512), crypto.SHA512, nil
	case ckmSHA256RSAPKCSPSS:
		return hash(crypto.SHA256), &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}, nil
	case ckmSHA384RSAPKCSPSS:
		return hash(crypto.SHA384), &rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: rsa.PSSSaltLengthEqualsHash}, nil
	case ckmSHA512RSAPKCSPSS:
		return hash(crypto.SHA512), &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: rsa.PSSSaltLengthEqualsHash}, nil
	case ckmRSAPKCSPSS:
		h, ok := map[int]crypto.Hash{32: crypto.SHA256, 48: crypto.SHA384, 64: crypto.SHA512}[len(data)]
		if !ok {
			return nil, nil, transport.Errorf(transport.CodeMechanism, "CKM_RSA_PKCS_PSS needs a SHA-2 digest")
		}
		return data, &rsa.PSSOptions{Hash: h, SaltLength: rsa.PSSSaltLengthEqualsHash}, nil
	}
	return nil, nil, transport.Errorf(transport.CodeMechanism, "mechanism %#x not supported", mech)
}

// mechanismFits checks that mech is one for key k's type, and that k
// signs.
func mechanismFits(mech uint64, k profiles.Key) error {
	if k.NoSign {
		return transport.Errorf(transport.CodeMechanism, "key %s does not sign", k.ID)
	}
	ec := mech == ckmECDSA || mech == ckmECDSASHA256 || mech == ckmECDSASHA384 || mech == ckmECDSASHA512
	eddsa := mech == ckmEDDSA
	switch k.Public.(type) {
	case *ecdsa.PublicKey:
		if ec {
			return nil
		}
	case *rsa.PublicKey:
		if !ec && !eddsa {
			return nil
		}
	case ed25519.PublicKey:
		if eddsa {
			return nil
		}
	}
	return transport.Errorf(transport.CodeMechanism, "mechanism %#x does not fit the key", mech)
}

// p11Signature converts a profile's signature to the form PKCS #11
// returns: raw r||s for ECDSA, unchanged for RSA and Ed25519 (64 bytes).
func p11Signature(pub crypto.PublicKey, sig []byte) ([]byte, error) {
	if _, ok := pub.(ed25519.PublicKey); ok {
		if len(sig) != ed25519.SignatureSize {
			return nil, transport.Errorf(transport.CodeCardError, "malformed Ed25519 signature from the card")
		}
		return sig, nil
	}
	p, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return sig, nil
	}
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &v)
	if err != nil {
		return nil, err
	}
	size := (p.Curve.Params().BitSize + 7) / 8
	if len(rest) != 0 || v.R.Sign() <= 0 || v.S.Sign() <= 0 || v.R.BitLen() > 8*size || v.S.BitLen() > 8*size {
		return nil, transport.Errorf(transport.CodeCardError, "malformed ECDSA signature from the card")
	}
	out := make([]byte, 2*size)
	v.R.FillBytes(out[:size])
	v.S.FillBytes(out[size:])
	return out, nil
}

// catalogueTag is a digest of a catalogue's contents.
func catalogueTag(c *transport.Catalogue) []byte {
	c.Tag = nil
	b, _ := transport.Marshal(c)
	sum := sha256.Sum256(b)
	return sum[:8]
}
