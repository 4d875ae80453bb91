package token

import (
	"crypto"
	_ "crypto/sha1" // registers crypto.SHA1
	_ "crypto/sha256"
	_ "crypto/sha512"
	"hash"
	"slices"

	"github.com/pscs/pscs/transport"
)

// Mechanism is a CK_MECHANISM: its type and parameter bytes. CKM_EDDSA's
// CK_EDDSA_PARAMS, which hold a pointer, come read into EdDSA instead.
type Mechanism struct {
	Type  uint64
	Param []byte
	EdDSA *EdDSAParams
}

// EdDSAParams is what the module reads of CK_EDDSA_PARAMS: the prehash
// flag (Ed25519ph) and the length of the context (Ed25519ctx). pscs signs
// pure Ed25519 only: either is CKR_MECHANISM_PARAM_INVALID.
type EdDSAParams struct {
	Prehash    bool
	ContextLen uint64
}

// CKMEDDSA is the mechanism whose parameters the cgo layer reads.
const CKMEDDSA = ckmEDDSA

// MechanismInfo mirrors CK_MECHANISM_INFO.
type MechanismInfo struct {
	MinKey, MaxKey, Flags uint64
}

// What the module signs with and how it reaches the server: the server
// signs raw inputs (CKM_ECDSA: a digest; CKM_RSA_PKCS: a DigestInfo;
// CKM_RSA_PKCS_PSS: a SHA-2 digest, salt as long as the hash, MGF1 with the
// same hash). Every hashing mechanism is computed here, so that multi-part
// signing works and only the digest travels (the paper: hashing on the
// client, signatures on the card).
type signMech struct {
	keyType uint64
	hash    crypto.Hash // 0: the input is already hashed
	pss     bool
	remote  uint64 // the mechanism sent to the server
}

var signMechs = map[uint64]signMech{
	ckmECDSA:            {ckkEC, 0, false, ckmECDSA},
	ckmECDSASHA1:        {ckkEC, crypto.SHA1, false, ckmECDSA},
	ckmECDSASHA224:      {ckkEC, crypto.SHA224, false, ckmECDSA},
	ckmECDSASHA256:      {ckkEC, crypto.SHA256, false, ckmECDSA},
	ckmECDSASHA384:      {ckkEC, crypto.SHA384, false, ckmECDSA},
	ckmECDSASHA512:      {ckkEC, crypto.SHA512, false, ckmECDSA},
	ckmRSAPKCS:          {ckkRSA, 0, false, ckmRSAPKCS},
	ckmSHA1RSAPKCS:      {ckkRSA, crypto.SHA1, false, ckmRSAPKCS},
	ckmSHA224RSAPKCS:    {ckkRSA, crypto.SHA224, false, ckmRSAPKCS},
	ckmSHA256RSAPKCS:    {ckkRSA, crypto.SHA256, false, ckmRSAPKCS},
	ckmSHA384RSAPKCS:    {ckkRSA, crypto.SHA384, false, ckmRSAPKCS},
	ckmSHA512RSAPKCS:    {ckkRSA, crypto.SHA512, false, ckmRSAPKCS},
	ckmRSAPKCSPSS:       {ckkRSA, 0, true, ckmRSAPKCSPSS},
	ckmSHA256RSAPKCSPSS: {ckkRSA, crypto.SHA256, true, ckmRSAPKCSPSS},
	ckmSHA384RSAPKCSPSS: {ckkRSA, crypto.SHA384, true, ckmRSAPKCSPSS},
	ckmSHA512RSAPKCSPSS: {ckkRSA, crypto.SHA512, true, ckmRSAPKCSPSS},
	// EdDSA signs the whole message: it travels to the server (at most
	// transport.MaxEdDSAMessage bytes, also over C_SignUpdate).
	ckmEDDSA: {ckkECEdwards, 0, false, ckmEDDSA},
}

// digestMechs are the digests computed locally (C_Digest*).
var digestMechs = map[uint64]crypto.Hash{
	ckmSHA1: crypto.SHA1, ckmSHA224: crypto.SHA224, ckmSHA256: crypto.SHA256,
	ckmSHA384: crypto.SHA384, ckmSHA512: crypto.SHA512,
}

// mgfHash maps CKG_MGF1_SHA* to hashes.
var mgfHash = map[uint64]crypto.Hash{
	ckgMGF1SHA1: crypto.SHA1, ckgMGF1SHA224: crypto.SHA224, ckgMGF1SHA256: crypto.SHA256,
	ckgMGF1SHA384: crypto.SHA384, ckgMGF1SHA512: crypto.SHA512,
}

// DigestInfo prefixes (RFC 8017, 9.2, note 1).
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// mechanismsFor lists the signing mechanisms for a key type, in order.
func mechanismsFor(keyType uint64) []uint64 {
	var out []uint64
	for m, sm := range signMechs {
		if sm.keyType == keyType {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// slotMechanisms is the mechanism list of a slot: what the server offers
// for its keys, the hashing variants this module adds for those key types,
// and the local digests.
func slotMechanisms(s *transport.Slot) map[uint64]MechanismInfo {
	out := map[uint64]MechanismInfo{}
	for _, m := range s.Mechanisms {
		info := MechanismInfo{MinKey: uint64(m.MinKey), MaxKey: uint64(m.MaxKey), Flags: m.Flags}
		switch m.Type {
		case ckmRSAPKCSOAEP:
			out[m.Type] = info
			continue
		case ckmECDH1Derive:
			info.Flags |= ckfECFp | ckfECNamedCurve | ckfECUncompress
			out[m.Type] = info
			continue
		}
		sm, ok := signMechs[m.Type]
		if !ok {
			continue
		}
		if sm.keyType == ckkEC {
			info.Flags |= ckfECFp | ckfECNamedCurve | ckfECUncompress
		}
		out[m.Type] = info
		info.Flags &^= ckfDecrypt // the hashing variants only sign
		// The server signs the raw mechanism; hashing ones are local.
		for t, other := range signMechs {
			if other.keyType != sm.keyType || other.pss != sm.pss {
				continue
			}
			if _, ok := out[t]; !ok && (!other.pss || other.hash >= crypto.SHA256 || other.hash == 0) {
				out[t] = info
			}
		}
	}
	for m := range digestMechs {
		out[m] = MechanismInfo{Flags: ckfDigest}
	}
	return out
}

// pssParams reads a CK_RSA_PKCS_PSS_PARAMS: hashAlg, mgf, sLen.
func pssParams(p []byte) (h, mgf crypto.Hash, sLen uint64, ok bool) {
	if len(p) != 3*ulongSize {
		return 0, 0, 0, false
	}
	alg, _ := ULong(p[:ulongSize])
	g, _ := ULong(p[ulongSize : 2*ulongSize])
	sLen, _ = ULong(p[2*ulongSize:])
	h, ok1 := digestMechs[alg]
	mgf, ok2 := mgfHash[g]
	return h, mgf, sLen, ok1 && ok2
}

// signOp is a signature in progress in a session.
type signOp struct {
	mech   signMech
	key    *object
	slot   uint64
	h      hash.Hash // the running hash of a hashing mechanism
	buf    []byte    // the data of a raw mechanism given in parts
	parts  bool      // C_SignUpdate was called
	authed bool      // a context-specific login was made for it
	pin    []byte    // its PIN, sent with the signature; zeroed after
	// result is a signature made for a buffer too small: the next call
	// with a buffer large enough takes it, without a second request.
	result []byte
	// pssHash is the hash of the PSS parameters (a raw CKM_RSA_PKCS_PSS
	// input must be a digest of it).
	pssHash crypto.Hash
}

// maxRawInput bounds what a raw mechanism accumulates over C_SignUpdate:
// the server's bound on an EdDSA message, and more than any digest or
// DigestInfo.
const maxRawInput = transport.MaxEdDSAMessage

// newSignOp checks mechanism m against key and starts a signature.
func newSignOp(m Mechanism, key *object) (*signOp, error) {
	sm, ok := signMechs[m.Type]
	if !ok {
		return nil, ErrMechanismInvalid
	}
	if sm.keyType != key.keyType {
		return nil, ErrKeyTypeInconsistent
	}
	if sm.pss {
		h, mgf, sLen, ok := pssParams(m.Param)
		// The server's PSS: a SHA-2 hash, MGF1 with the same hash, a salt
		// as long as the hash.
		if !ok || h != mgf || sLen != uint64(h.Size()) || h < crypto.SHA256 || (sm.hash != 0 && h != sm.hash) {
			return nil, ErrMechanismParamInvalid
		}
		op := &signOp{mech: sm, key: key, pssHash: h}
		if sm.hash != 0 {
			op.h = sm.hash.New()
		}
		return op, nil
	} else if len(m.Param) != 0 {
		return nil, ErrMechanismParamInvalid
	}
	if m.EdDSA != nil && (sm.keyType != ckkECEdwards || m.EdDSA.Prehash || m.EdDSA.ContextLen != 0) {
		return nil, ErrMechanismParamInvalid // Ed25519ph, Ed25519ctx
	}
	op := &signOp{mech: sm, key: key}
	if sm.hash != 0 {
		op.h = sm.hash.New()
	}
	return op, nil
}

// update feeds data to a signature in parts.
func (op *signOp) update(data []byte) error {
	op.parts = true
	if op.h != nil {
		op.h.Write(data)
		return nil
	}
	if len(op.buf)+len(data) > maxRawInput {
		return ErrDataLenRange
	}
	op.buf = append(op.buf, data...)
	return nil
}

// input is what the server signs for the data given so far.
func (op *signOp) input() ([]byte, error) {
	var digest []byte
	if op.h != nil {
		digest = op.h.Sum(nil)
	} else {
		digest = op.buf
	}
	switch {
	case op.mech.pss:
		if len(digest) != op.pssHash.Size() {
			return nil, ErrDataLenRange
		}
		return digest, nil
	case op.mech.keyType == ckkECEdwards:
		return digest, nil // the message, which may be empty
	case op.mech.keyType == ckkRSA:
		if op.h != nil {
			digest = append(append([]byte{}, digestInfoPrefix[op.mech.hash]...), digest...)
		}
		if op.key.sigLen > 0 && len(digest)+11 > op.key.sigLen {
			return nil, ErrDataLenRange
		}
		return digest, nil
	}
	if len(digest) == 0 {
		return nil, ErrDataLenRange
	}
	return digest, nil
}
