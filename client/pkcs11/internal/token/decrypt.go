package token

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"errors"

	"github.com/pscs/pscs/transport"
)

// Decryption and key agreement
//
// C_DecryptInit/C_Decrypt (CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP) and C_DeriveKey
// (CKM_ECDH1_DERIVE with CKD_NULL) go to the server, one request each, with
// a private key whose CKA_DECRYPT (RSA) or CKA_DERIVE (EC, X25519) the
// catalogue sets. With an X25519 key (CKK_EC_MONTGOMERY) the public data is
// the peer's 32-byte u-coordinate (bare, or in a DER OCTET STRING as
// CKA_EC_POINT holds it; another size is CKR_MECHANISM_PARAM_INVALID) and
// the secret is 32 bytes. A derived key is a session object of class CKO_SECRET_KEY and type
// CKK_GENERIC_SECRET whose CKA_VALUE is the shared secret, readable
// (CKA_SENSITIVE false, CKA_EXTRACTABLE true), as pkcs11-tool --derive
// expects; it lives until its session closes. A key that wants the vPIN
// with every operation (CKA_ALWAYS_AUTHENTICATE) gets the login's.

// Decrypter is what the module needs of a backend to decrypt and derive;
// *client.Client has it. A backend without it answers
// CKR_FUNCTION_NOT_SUPPORTED.
type Decrypter interface {
	Decrypt(ctx context.Context, req *transport.DecryptRequest, vpin []byte) (*transport.DecryptResponse, error)
	Derive(ctx context.Context, req *transport.DeriveRequest, vpin []byte) (*transport.DeriveResponse, error)
}

// OAEPParams is CK_RSA_PKCS_OAEP_PARAMS: the hash, the MGF, the source
// (CKZ_DATA_SPECIFIED or 0) and the label.
type OAEPParams struct {
	Hash, MGF, Source uint64
	Label             []byte
}

// ECDHParams is CK_ECDH1_DERIVE_PARAMS: the KDF, shared data and the
// peer's public point.
type ECDHParams struct {
	KDF            uint64
	Shared, Public []byte
}

// decryptOp is a decryption started by C_DecryptInit.
type decryptOp struct {
	key    *object
	slot   uint64
	mech   uint64
	params []byte // transport.OAEPParams in CBOR, for OAEP
}

// x25519Size is the size of an X25519 public key and shared secret.
const x25519Size = 32

// derivedBase is the first handle of derived session objects, far above
// the catalogue's.
const derivedBase = 1 << 40

// DecryptInit starts a decryption with private key kh.
func (m *Module) DecryptInit(h, mech uint64, oaep *OAEPParams, kh uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.decrypt != nil {
		return ErrOperationActive
	}
	o, err := m.usableKey(ss, kh, ckaDecrypt)
	if err != nil {
		return err
	}
	op := &decryptOp{key: o, slot: ss.slot.id, mech: mech}
	switch mech {
	case ckmRSAPKCS:
	case ckmRSAPKCSOAEP:
		if oaep == nil || (oaep.Source != 0 && oaep.Source != ckzDataSpecified) {
			return ErrMechanismParamInvalid
		}
		h, ok1 := digestMechs[oaep.Hash]
		g, ok2 := mgfHash[oaep.MGF]
		if !ok1 || !ok2 || h != g {
			return ErrMechanismParamInvalid
		}
		op.params, err = transport.Marshal(&transport.OAEPParams{Hash: oaep.Hash, MGF: oaep.MGF, Label: oaep.Label})
		if err != nil {
			return ErrGeneral
		}
	default:
		return ErrMechanismInvalid
	}
	if o.keyType != ckkRSA {
		return ErrKeyTypeInconsistent
	}
	ss.decrypt = op
	return nil
}

// usableKey finds private key kh for an operation its attribute attr
// (CKA_DECRYPT, CKA_DERIVE) must allow.
func (m *Module) usableKey(ss *session, kh, attr uint64) (*object, error) {
	m.mu.Lock()
	in := ss.slot.loggedIn
	m.mu.Unlock()
	o, err := m.visible(ss, kh)
	if err != nil {
		if !in {
			return nil, ErrUserNotLoggedIn
		}
		return nil, ErrKeyHandleInvalid
	}
	if o.class != ckoPrivateKey {
		return nil, ErrKeyTypeInconsistent
	}
	if !bytes.Equal(o.attrs[attr], []byte{1}) {
		return nil, ErrKeyFunctionNotPermitted
	}
	if !in {
		return nil, ErrUserNotLoggedIn
	}
	return o, nil
}

// Decrypt decrypts data in one part into out, with the two-call
// convention (hasOut false asks for the length: the modulus size, an upper
// bound). One request to the server.
func (m *Module) Decrypt(h uint64, data, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	op := ss.decrypt
	if op == nil {
		return 0, ErrOperationNotInitialized
	}
	if n := op.key.sigLen; n > 0 && (!hasOut || len(out) < n) {
		if !hasOut {
			return n, nil
		}
		// A buffer that may be too small: decrypt, then see.
	}
	ss.decrypt = nil
	if n := op.key.sigLen; n > 0 && len(data) != n {
		return 0, ErrEncryptedDataLenRange
	}
	req := &transport.DecryptRequest{Slot: op.slot, Key: op.key.handle, Mechanism: op.mech, Params: op.params, Data: data}
	var pt []byte
	err = m.remote(ss, op.key, func(ctx context.Context, d Decrypter, vpin []byte) error {
		resp, err := d.Decrypt(ctx, req, vpin)
		if err == nil {
			pt = resp.Plaintext
		}
		return err
	})
	defer clear(pt)
	if err != nil {
		m.log.Info("pscs: decryption refused", "slot", op.slot, "err", err)
		return 0, err
	}
	if len(out) < len(pt) {
		ss.decrypt = op // the application asks again with a larger buffer
		return len(pt), ErrBufferTooSmall
	}
	return copy(out, pt), nil
}

// remote runs fn, a request about key, with the backend, the vPIN for a
// key that wants it every time, and one login again if the server forgot
// the login (see relogin); its error is the PKCS #11 one.
func (m *Module) remote(ss *session, key *object, fn func(ctx context.Context, d Decrypter, vpin []byte) error) error {
	sl := ss.slot
	m.mu.Lock()
	logins := sl.logins
	var vpin []byte
	if key.alwaysAuth && sl.pin != nil {
		vpin = sl.pin.bytes()
	}
	m.mu.Unlock()
	defer clear(vpin)
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	b, err := m.conn(ctx)
	if err != nil {
		return remoteError(err, true)
	}
	d, ok := b.(Decrypter)
	if !ok {
		return ErrFunctionNotSupported
	}
	err = fn(ctx, d, vpin)
	if errors.Is(err, &transport.Error{Code: transport.CodeNotLoggedIn}) {
		if rerr := m.relogin(ctx, b, sl, logins); rerr != nil {
			return rerr
		}
		err = fn(ctx, d, vpin)
	}
	return remoteError(err, true)
}

// DeriveKey derives a secret key with base key kh by ECDH (CKM_ECDH1_DERIVE,
// CKD_NULL, no shared data): a session object whose CKA_VALUE is the shared
// secret's x coordinate, cut to CKA_VALUE_LEN if the template asks for
// fewer bytes. It returns the new object's handle.
func (m *Module) DeriveKey(h, mech uint64, p *ECDHParams, kh uint64, template []Attribute) (uint64, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	if mech != ckmECDH1Derive {
		return 0, ErrMechanismInvalid
	}
	if p == nil || p.KDF != ckdNull || len(p.Shared) != 0 || len(p.Public) == 0 {
		return 0, ErrMechanismParamInvalid
	}
	o, err := m.usableKey(ss, kh, ckaDerive)
	if err != nil {
		return 0, err
	}
	var size int
	point := p.Public
	switch pub := o.pub.(type) {
	case *ecdsa.PublicKey:
		if o.keyType != ckkEC {
			return 0, ErrKeyTypeInconsistent
		}
		size = (pub.Curve.Params().BitSize + 7) / 8
		// Some applications pass the point DER-wrapped in an OCTET STRING
		// (as CKA_EC_POINT holds it); the card wants the bare point.
		if len(point) == 2+1+2*size && point[0] == 0x04 && int(point[1]) == 1+2*size {
			point = point[2:]
		} else if len(point) == 3+1+2*size && point[0] == 0x04 && point[1] == 0x81 && int(point[2]) == 1+2*size {
			point = point[3:]
		}
	case *ecdh.PublicKey:
		// X25519 (CKK_EC_MONTGOMERY): the peer's 32-byte u-coordinate,
		// bare or in a DER OCTET STRING; the secret is 32 bytes.
		if o.keyType != ckkECMontgomery {
			return 0, ErrKeyTypeInconsistent
		}
		size = x25519Size
		if len(point) == 2+x25519Size && point[0] == 0x04 && point[1] == x25519Size {
			point = point[2:]
		}
		if len(point) != x25519Size {
			return 0, ErrMechanismParamInvalid
		}
	default:
		return 0, ErrKeyTypeInconsistent
	}
	// The template: only a generic secret, or no class and type at all.
	valueLen := size
	for _, a := range template {
		switch a.Type {
		case ckaClass:
			if v, ok := ULong(a.Value); !ok || v != ckoSecretKey {
				return 0, ErrTemplateInconsistent
			}
		case ckaKeyType:
			if v, ok := ULong(a.Value); !ok || v != ckkGenericSecret {
				return 0, ErrTemplateInconsistent
			}
		case ckaValueLen:
			v, ok := ULong(a.Value)
			if !ok || v == 0 || v > uint64(size) {
				return 0, ErrTemplateInconsistent
			}
			valueLen = int(v)
		case ckaToken:
			if bytes.Equal(a.Value, []byte{1}) {
				return 0, ErrTemplateInconsistent // session objects only
			}
		}
	}
	req := &transport.DeriveRequest{Slot: ss.slot.id, Key: o.handle, Mechanism: ckmECDH1Derive, Data: point}
	var secret []byte
	err = m.remote(ss, o, func(ctx context.Context, d Decrypter, vpin []byte) error {
		resp, err := d.Derive(ctx, req, vpin)
		if err == nil {
			secret = resp.Secret
		}
		return err
	})
	if err != nil {
		m.log.Info("pscs: key agreement refused", "slot", ss.slot.id, "err", err)
		return 0, err
	}
	if len(secret) != size {
		clear(secret)
		return 0, ErrDeviceError
	}
	// PKCS #11 3.0, 2.3.7: a shorter key is the secret's last bytes.
	value := bytes.Clone(secret[size-valueLen:])
	clear(secret)
	obj := &object{class: ckoSecretKey, keyType: ckkGenericSecret, attrs: map[uint64][]byte{
		ckaClass: ulongs(ckoSecretKey), ckaKeyType: ulongs(ckkGenericSecret), ckaToken: boolean(false),
		ckaPrivate: boolean(true), ckaLabel: []byte{}, ckaID: []byte{}, ckaValue: value,
		ckaValueLen: ulongs(uint64(valueLen)), ckaSensitive: boolean(false), ckaExtractable: boolean(true),
		ckaAlwaysSensitive: boolean(false), ckaNeverExtractable: boolean(false), ckaLocal: boolean(false),
		ckaDerive: boolean(false), ckaEncrypt: boolean(false), ckaDecrypt: boolean(false), ckaSign: boolean(false),
		ckaVerify: boolean(false), ckaWrap: boolean(false), ckaUnwrap: boolean(false), ckaModifiable: boolean(false),
		ckaCopyable: boolean(false), ckaDestroyable: boolean(true), ckaKeyGenMechanism: ulongs(ckmECDH1Derive),
		ckaStartDate: []byte{}, ckaEndDate: []byte{},
	}}
	m.mu.Lock()
	m.nextDerived++
	obj.handle = derivedBase + m.nextDerived
	m.mu.Unlock()
	ss.derived = append(ss.derived, obj)
	return obj.handle, nil
}

// derivedObject finds a derived key of session ss. The caller holds ss.mu.
func (ss *session) derivedObject(oh uint64) *object {
	for _, o := range ss.derived {
		if o.handle == oh {
			return o
		}
	}
	return nil
}

// DestroyObject destroys a derived key of session h (the only objects
// that can be destroyed) and wipes its value.
func (m *Module) DestroyObject(h, oh uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	for i, o := range ss.derived {
		if o.handle == oh {
			clear(o.attrs[ckaValue])
			ss.derived = append(ss.derived[:i], ss.derived[i+1:]...)
			return nil
		}
	}
	if _, err := m.visible(ss, oh); err == nil {
		return ErrActionProhibited
	}
	return ErrObjectHandleInvalid
}

// Mechanisms whose parameters the cgo layer reads.
const (
	CKMRSAPKCSOAEP = ckmRSAPKCSOAEP
	CKMECDH1Derive = ckmECDH1Derive
)
