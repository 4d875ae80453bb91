package pivsim

// Card management: the management key (9B) and what it unlocks, and the
// YubiKey GET METADATA command.

import (
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/simkit"
)

// DefaultManagementKey is the management key of a new YubiKey (TDES before
// firmware 5.7, AES-192 from 5.7 on).
var DefaultManagementKey = []byte{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}

// mgmKey is the card management key.
type mgmKey struct {
	alg       Algorithm
	key       []byte
	touch     TouchPolicy
	isDefault bool
}

// mgmKeyLen returns the key length of a management-key algorithm, 0 for
// other algorithms.
func mgmKeyLen(alg Algorithm) int {
	switch alg {
	case TDES, AES192:
		return 24
	case AES128:
		return 16
	case AES256:
		return 32
	}
	return 0
}

func versionAtLeast(v [3]byte, major, minor, patch byte) bool {
	return bytes.Compare(v[:], []byte{major, minor, patch}) >= 0
}

func newMgmKey(alg Algorithm, key []byte, version [3]byte) (mgmKey, error) {
	if alg == 0 {
		alg = TDES
		if versionAtLeast(version, 5, 7, 0) {
			alg = AES192
		}
	}
	if key == nil {
		key = DefaultManagementKey
	}
	if mgmKeyLen(alg) == 0 {
		return mgmKey{}, fmt.Errorf("pivsim: %v is not a management-key algorithm", alg)
	}
	if len(key) != mgmKeyLen(alg) {
		return mgmKey{}, fmt.Errorf("pivsim: a %v management key has %d bytes, not %d", alg, mgmKeyLen(alg), len(key))
	}
	return mgmKey{alg: alg, key: bytes.Clone(key), touch: TouchPolicyNever,
		isDefault: bytes.Equal(key, DefaultManagementKey)}, nil
}

func (m mgmKey) block() cipher.Block {
	var b cipher.Block
	var err error
	if m.alg == TDES {
		b, err = des.NewTripleDESCipher(m.key)
	} else {
		b, err = aes.NewCipher(m.key)
	}
	if err != nil {
		panic("pivsim: management key of a checked length refused: " + err.Error())
	}
	return b
}

// mgmExchange is the card's half of a management-key authentication
// between its two commands.
type mgmExchange struct {
	mutual bool
	secret []byte // mutual: the plaintext witness; single: the challenge
}

// authenticateManagement handles GENERAL AUTHENTICATE with key reference 9B
// (SP 800-73-4 Part 2, 3.2.4; Yubico's "Authenticate: management key"):
//
//	mutual: 7C {80 00}           -> 7C {80 E(W)}
//	        7C {80 W, 81 C}      -> 7C {82 E(C)}, or 69 82 when W is wrong
//	single: 7C {81 00}           -> 7C {81 C}
//	        7C {82 E(C)}         -> 90 00, or 69 82
//
// with blocks of the algorithm's size (8 bytes TDES, 16 AES). A failed
// attempt also ends an earlier authentication.
func (c *applet) authenticateManagement(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	pending := c.mgmPending
	c.mgmPending = nil
	if Algorithm(cmd.P1) != c.mgm.alg {
		return nil, apdu.SWIncorrectP1P2
	}
	tmpl, ok, err := apdu.FindTLV(cmd.Data, 0x7C)
	if err != nil || !ok {
		return nil, apdu.SWWrongData
	}
	tlvs, err := apdu.ParseTLVs(tmpl)
	if err != nil {
		return nil, apdu.SWWrongData
	}
	fields := map[uint32][]byte{}
	for _, t := range tlvs {
		if _, dup := fields[t.Tag]; dup || (t.Tag != 0x80 && t.Tag != 0x81 && t.Tag != 0x82) {
			return nil, apdu.SWWrongData
		}
		fields[t.Tag] = t.Value
	}
	blk := c.mgm.block()
	bs := blk.BlockSize()
	encrypt := func(in []byte) []byte {
		out := make([]byte, bs)
		blk.Encrypt(out, in)
		return out
	}
	random := func() []byte {
		b := make([]byte, bs)
		rand.Read(b)
		return b
	}
	w, hasW := fields[0x80]
	ch, hasC := fields[0x81]
	rsp, hasR := fields[0x82]
	switch {
	case len(fields) == 1 && hasW && len(w) == 0: // mutual, step 1
		witness := random()
		c.mgmPending = &mgmExchange{mutual: true, secret: witness}
		return apdu.AppendTLV(nil, 0x7C, apdu.AppendTLV(nil, 0x80, encrypt(witness))), apdu.SWSuccess
	case len(fields) == 1 && hasC && len(ch) == 0: // single, step 1
		challenge := random()
		c.mgmPending = &mgmExchange{secret: challenge}
		return apdu.AppendTLV(nil, 0x7C, apdu.AppendTLV(nil, 0x81, challenge)), apdu.SWSuccess
	case len(fields) == 2 && hasW && hasC && len(w) == bs && len(ch) == bs: // mutual, step 2
		if pending == nil || !pending.mutual {
			return nil, apdu.SWConditionsNotSatisfied
		}
		if subtle.ConstantTimeCompare(w, pending.secret) != 1 {
			c.mgmAuth = false
			return nil, apdu.SWSecurityStatusNotSatisfied
		}
		c.mgmAuth = true
		return apdu.AppendTLV(nil, 0x7C, apdu.AppendTLV(nil, 0x82, encrypt(ch))), apdu.SWSuccess
	case len(fields) == 1 && hasR && len(rsp) == bs: // single, step 2
		if pending == nil || pending.mutual {
			return nil, apdu.SWConditionsNotSatisfied
		}
		if subtle.ConstantTimeCompare(rsp, encrypt(pending.secret)) != 1 {
			c.mgmAuth = false
			return nil, apdu.SWSecurityStatusNotSatisfied
		}
		c.mgmAuth = true
		return nil, apdu.SWSuccess
	}
	return nil, apdu.SWWrongData
}

// keyPolicies reads the YubiKey policy tags AA (PIN) and AB (touch) of a
// GENERATE or IMPORT command; zero values mean the slot's defaults.
func keyPolicies(slot Slot, tlvs []apdu.TLV) (PINPolicy, TouchPolicy, bool) {
	pin, touch := defaultPolicy(slot), TouchPolicyNever
	for _, t := range tlvs {
		switch t.Tag {
		case 0xAA:
			if len(t.Value) != 1 || t.Value[0] > 3 {
				return 0, 0, false
			}
			if t.Value[0] != 0 {
				pin = PINPolicy(t.Value[0])
			}
		case 0xAB:
			if len(t.Value) != 1 || t.Value[0] > 3 {
				return 0, 0, false
			}
			if t.Value[0] != 0 {
				touch = TouchPolicy(t.Value[0])
			}
		}
	}
	return pin, touch, true
}

func asymmetric(alg Algorithm) bool {
	switch alg {
	case RSA1024, RSA2048, ECCP256, ECCP384:
		return true
	}
	return false
}

// publicKeyTLVs encodes a public key as PIV does inside 7F 49 (and as
// metadata tag 04 carries it): 81 modulus, 82 exponent; or 86 point.
func publicKeyTLVs(pub crypto.PublicKey) []byte {
	var out []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		point, _ := k.Bytes()
		out = apdu.AppendTLV(out, 0x86, point)
	case *rsa.PublicKey:
		out = apdu.AppendTLV(out, 0x81, k.N.Bytes())
		out = apdu.AppendTLV(out, 0x82, big.NewInt(int64(k.E)).Bytes())
	}
	return out
}

// generate handles GENERATE ASYMMETRIC KEY PAIR (INS 47):
// 00 47 00 <slot> AC {80 alg [AA pin policy] [AB touch policy]}.
func (c *applet) generate(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x00 {
		return nil, apdu.SWIncorrectP1P2
	}
	slot := Slot(cmd.P2)
	if !keySlot(slot) {
		return nil, apdu.SWRefNotFound
	}
	if !c.mgmAuth {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	tmpl, ok, err := apdu.FindTLV(cmd.Data, 0xAC)
	if err != nil || !ok {
		return nil, apdu.SWWrongData
	}
	tlvs, err := apdu.ParseTLVs(tmpl)
	if err != nil {
		return nil, apdu.SWWrongData
	}
	var alg Algorithm
	for _, t := range tlvs {
		if t.Tag == 0x80 && len(t.Value) == 1 {
			alg = Algorithm(t.Value[0])
		}
	}
	if !asymmetric(alg) {
		return nil, apdu.SWWrongData
	}
	pin, touch, ok := keyPolicies(slot, tlvs)
	if !ok {
		return nil, apdu.SWWrongData
	}
	c.generations++
	key, err := generateKey(alg, c.seed, fmt.Sprintf("slot %02x generation %d", byte(slot), c.generations))
	if err != nil {
		return nil, apdu.SWUnknown
	}
	c.slots[slot] = &slotState{cfg: SlotConfig{Algorithm: alg, PINPolicy: pin}, touch: touch, origin: originGenerated, key: key}
	return apdu.AppendTLV(nil, 0x7F49, publicKeyTLVs(key.Public())), apdu.SWSuccess
}

// importKey handles the YubiKey IMPORT ASYMMETRIC KEY (INS FE, P1 = algorithm,
// P2 = slot): RSA as 01 p, 02 q, 03 dP, 04 dQ, 05 qInv (e = 65537), each
// zero-padded to half the modulus; ECC as 06 private scalar; then optional
// AA and AB policies.
func (c *applet) importKey(cmd apdu.Command) apdu.StatusWord {
	alg, slot := Algorithm(cmd.P1), Slot(cmd.P2)
	if !asymmetric(alg) {
		return apdu.SWIncorrectP1P2
	}
	if !keySlot(slot) {
		return apdu.SWRefNotFound
	}
	if !c.mgmAuth {
		return apdu.SWSecurityStatusNotSatisfied
	}
	tlvs, err := apdu.ParseTLVs(cmd.Data)
	if err != nil {
		return apdu.SWWrongData
	}
	fields := map[uint32][]byte{}
	for _, t := range tlvs {
		fields[t.Tag] = t.Value
	}
	pin, touch, ok := keyPolicies(slot, tlvs)
	if !ok {
		return apdu.SWWrongData
	}
	var key crypto.Signer
	switch alg {
	case ECCP256, ECCP384:
		curve := elliptic.P256()
		if alg == ECCP384 {
			curve = elliptic.P384()
		}
		d := fields[0x06]
		if size := (curve.Params().BitSize + 7) / 8; len(d) != size {
			return apdu.SWWrongData
		}
		k, err := ecdsa.ParseRawPrivateKey(curve, d)
		if err != nil {
			return apdu.SWWrongData
		}
		key = k
	default:
		bits := 2048
		if alg == RSA1024 {
			bits = 1024
		}
		k, err := rsaFromCRT(bits, fields)
		if err != nil {
			return apdu.SWWrongData
		}
		key = k
	}
	c.slots[slot] = &slotState{cfg: SlotConfig{Algorithm: alg, PINPolicy: pin}, touch: touch, origin: originImported, key: key}
	return apdu.SWSuccess
}

// rsaFromCRT rebuilds an RSA key with e = 65537 from the CRT values a YubiKey
// import carries, and checks them against each other.
func rsaFromCRT(bits int, f map[uint32][]byte) (*rsa.PrivateKey, error) {
	half := bits / 16
	var v [5]*big.Int
	for i := range v {
		b, ok := f[uint32(i+1)]
		if !ok || len(b) == 0 || len(b) > half {
			return nil, errors.New("missing or oversized CRT component")
		}
		v[i] = new(big.Int).SetBytes(b)
	}
	k, err := simkit.RSAFromPrimes(v[0], v[1])
	if err != nil {
		return nil, err
	}
	if k.N.BitLen() != bits {
		return nil, errors.New("wrong modulus size")
	}
	pc := k.Precomputed
	if pc.Dp.Cmp(v[2]) != 0 || pc.Dq.Cmp(v[3]) != 0 || pc.Qinv.Cmp(v[4]) != 0 {
		return nil, errors.New("inconsistent CRT components")
	}
	return k, nil
}

// maxObject is the largest data object PUT DATA stores, about what a
// YubiKey 5 takes.
const maxObject = 3052

// writableObject reports whether PUT DATA may write the object: the PIV
// objects 5FC101 to 5FC123 and the YubiKey objects 5FFF00 to 5FFF15.
func writableObject(id uint32) bool {
	return (id >= 0x5FC101 && id <= 0x5FC123) || (id >= 0x5FFF00 && id <= 0x5FFF15)
}

// pinProtectedObject reports whether GET DATA needs the PIN first
// (SP 800-73-4 Part 1, Table 3: fingerprints, facial image, printed
// information, iris).
func pinProtectedObject(id uint32) bool {
	switch id {
	case 0x5FC103, 0x5FC108, 0x5FC109, 0x5FC121:
		return true
	}
	return false
}

// putData handles PUT DATA (INS DB, P1 P2 = 3F FF): 5C <tag> 53 <object>.
// An empty 53 deletes the object, as yubico-piv-tool's delete-certificate
// expects.
func (c *applet) putData(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return apdu.SWIncorrectP1P2
	}
	if !c.mgmAuth {
		return apdu.SWSecurityStatusNotSatisfied
	}
	tlvs, err := apdu.ParseTLVs(cmd.Data)
	if err != nil || len(tlvs) != 2 || tlvs[0].Tag != 0x5C || tlvs[1].Tag != 0x53 {
		return apdu.SWWrongData
	}
	tag := tlvs[0].Value
	if len(tag) == 0 || len(tag) > 3 {
		return apdu.SWWrongData
	}
	var id uint32
	for _, b := range tag {
		id = id<<8 | uint32(b)
	}
	if !writableObject(id) {
		return apdu.SWWrongData
	}
	value := tlvs[1].Value
	if len(value) > maxObject {
		return apdu.SWNotEnoughMemory
	}
	if len(value) == 0 {
		delete(c.objects, id)
		return apdu.SWSuccess
	}
	c.objects[id] = apdu.AppendTLV(nil, 0x53, value)
	return apdu.SWSuccess
}

// certificateLocked parses the certificate object of slot s: 53 {70 cert,
// 71 info (01: gzip), FE}.
func (c *applet) certificateLocked(s Slot) *x509.Certificate {
	id := certObject(s)
	obj, ok := c.objects[id]
	if id == 0 || !ok {
		return nil
	}
	inner, ok, err := apdu.FindTLV(obj, 0x53)
	if err != nil || !ok {
		return nil
	}
	der, ok, err := apdu.FindTLV(inner, 0x70)
	if err != nil || !ok {
		return nil
	}
	if info, ok, _ := apdu.FindTLV(inner, 0x71); ok && len(info) == 1 && info[0]&1 == 1 {
		zr, err := gzip.NewReader(bytes.NewReader(der))
		if err != nil {
			return nil
		}
		if der, err = io.ReadAll(io.LimitReader(zr, 1<<16)); err != nil {
			return nil
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	return cert
}

// setManagementKey handles the YubiKey SET MANAGEMENT KEY (INS FF, P1 FF,
// P2 = FF no touch, FE touch, FD cached): <alg> 9B <len> <key>.
func (c *applet) setManagementKey(cmd apdu.Command) apdu.StatusWord {
	var touch TouchPolicy
	switch {
	case cmd.P1 != 0xFF:
		return apdu.SWIncorrectP1P2
	case cmd.P2 == 0xFF:
		touch = TouchPolicyNever
	case cmd.P2 == 0xFE:
		touch = TouchPolicyAlways
	case cmd.P2 == 0xFD:
		touch = TouchPolicyCached
	default:
		return apdu.SWIncorrectP1P2
	}
	if !c.mgmAuth {
		return apdu.SWSecurityStatusNotSatisfied
	}
	d := cmd.Data
	if len(d) < 3 || d[1] != byte(SlotManagement) || int(d[2]) != len(d)-3 {
		return apdu.SWWrongData
	}
	alg := Algorithm(d[0])
	if alg != TDES && !versionAtLeast(c.version, 5, 4, 2) {
		return apdu.SWWrongData // AES management keys came with 5.4.2
	}
	m, err := newMgmKey(alg, d[3:], c.version)
	if err != nil {
		return apdu.SWWrongData
	}
	m.touch = touch
	c.mgm = m
	return apdu.SWSuccess
}

// setPINRetries handles the YubiKey SET PIN RETRIES (INS FA, P1 = PIN tries,
// P2 = PUK tries): it needs the management key and the PIN, and sets PIN and
// PUK back to their defaults.
func (c *applet) setPINRetries(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 == 0 || cmd.P2 == 0 || cmd.P1 > 15 || cmd.P2 > 15 {
		return apdu.SWIncorrectP1P2 // the retry status word counts to 15
	}
	if !c.mgmAuth || !c.verified {
		return apdu.SWSecurityStatusNotSatisfied
	}
	c.pin.SetTries(int(cmd.P1))
	c.puk.SetTries(int(cmd.P2))
	c.setDefaultPINs()
	c.verified, c.pinFresh = false, false
	return apdu.SWSuccess
}

// setDefaultPINs sets PIN and PUK to the YubiKey defaults.
func (c *applet) setDefaultPINs() {
	pin, _ := padPIN([]byte(defaultPIN))
	puk, _ := padPIN([]byte(defaultPUK))
	c.pin.Set(pin)
	c.puk.Set(puk)
	c.pinDefault, c.pukDefault = true, true
}

// factoryReset handles the YubiKey RESET (INS FB), allowed only when PIN and
// PUK are both blocked: keys (but the attestation key), certificates and
// data objects are gone, PIN, PUK and management key are the defaults.
func (c *applet) factoryReset(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return apdu.SWIncorrectP1P2
	}
	if !c.pin.Blocked() || !c.puk.Blocked() {
		return apdu.SWConditionsNotSatisfied
	}
	for s := range c.slots {
		if s != SlotAttestation {
			delete(c.slots, s)
		}
	}
	for id := range c.objects {
		if id != 0x7E {
			delete(c.objects, id)
		}
	}
	c.pin.SetTries(3)
	c.puk.SetTries(3)
	c.setDefaultPINs()
	c.mgm, _ = newMgmKey(0, nil, c.version)
	c.Reset()
	return apdu.SWSuccess
}

// metadata answers the YubiKey GET METADATA command (INS F7, P2 = key
// reference), as a YubiKey 5.3 or later does (Yubico, "Get metadata"):
//
//	80, 81 (PIN, PUK):   01 algorithm FF, 05 default, 06 {tries, tries left}
//	9B (management key): 01 algorithm, 02 {00, touch}, 05 default
//	key slots:           01 algorithm, 02 {PIN policy, touch}, 03 origin,
//	                     04 public key (81/82 or 86, as in 7F 49)
//
// An empty slot answers 6A 88.
func (c *applet) metadata(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x00 {
		return nil, apdu.SWIncorrectP1P2
	}
	var out []byte
	flag := func(b bool) []byte {
		if b {
			return []byte{1}
		}
		return []byte{0}
	}
	switch Slot(cmd.P2) {
	case 0x80:
		out = apdu.AppendTLV(out, 0x01, []byte{0xFF})
		out = apdu.AppendTLV(out, 0x05, flag(c.pinDefault))
		out = apdu.AppendTLV(out, 0x06, []byte{byte(c.pin.Max), byte(c.pin.Left)})
		return out, apdu.SWSuccess
	case 0x81:
		out = apdu.AppendTLV(out, 0x01, []byte{0xFF})
		out = apdu.AppendTLV(out, 0x05, flag(c.pukDefault))
		out = apdu.AppendTLV(out, 0x06, []byte{byte(c.puk.Max), byte(c.puk.Left)})
		return out, apdu.SWSuccess
	case SlotManagement:
		out = apdu.AppendTLV(out, 0x01, []byte{byte(c.mgm.alg)})
		out = apdu.AppendTLV(out, 0x02, []byte{0x00, byte(c.mgm.touch)})
		out = apdu.AppendTLV(out, 0x05, flag(c.mgm.isDefault))
		return out, apdu.SWSuccess
	}
	st := c.slots[Slot(cmd.P2)]
	key := c.keyLocked(Slot(cmd.P2))
	if st == nil || key == nil {
		return nil, apdu.SWRefNotFound
	}
	out = apdu.AppendTLV(out, 0x01, []byte{byte(st.cfg.Algorithm)})
	out = apdu.AppendTLV(out, 0x02, []byte{byte(st.cfg.PINPolicy), byte(st.touch)})
	out = apdu.AppendTLV(out, 0x03, []byte{st.origin})
	out = apdu.AppendTLV(out, 0x04, publicKeyTLVs(key.Public()))
	return out, apdu.SWSuccess
}
