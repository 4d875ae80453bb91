package token

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/internal/memcard"
	"github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// CKA_IDs of memcard.OpenPGPLike's keys in the catalogue.
const (
	edSig = 1 // Ed25519, the vPIN with every signature
	edDec = 2 // X25519, key agreement only
	edAut = 3 // Ed25519
)

// edModule is a module logged in to a remote card (slot 1) of an
// in-memory card with memcard.OpenPGPLike's Curve25519 keys; it returns
// the card and a session.
func edModule(t *testing.T) (*memcard.Card, *Module, uint64) {
	t.Helper()
	r := rig.Start(t, rig.Options{Slot: 1, Delegates: []rig.Delegate{{Name: "alice", VPIN: testVPIN,
		Delegation: policy.Delegation{ID: "d1", Ops: []string{"sign", "decrypt"}, MaxWrongVPIN: 3}}}})
	card := memcard.OpenPGPLike("module")
	if err := r.Pool.Add(rig.ProfileMember(t, "mem", cards.Direct(card), card.Profile(), nil)); err != nil {
		t.Fatal(err)
	}
	m := moduleFor(t, r, 20*time.Second)
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatal(err)
	}
	return card, m, h
}

// attr reads attribute typ of object oh.
func attr(t *testing.T, m *Module, h, oh, typ uint64) []byte {
	t.Helper()
	q := []AttrQuery{{Type: typ, Buf: make([]byte, 256), HasBuf: true}}
	if err := m.GetAttributeValue(h, oh, q); err != nil {
		t.Fatalf("attribute %#x of object %d: %v", typ, oh, err)
	}
	return q[0].Buf[:q[0].Len]
}

// TestEdDSAObjectsAndMechanisms: the module shows Ed25519 keys as
// CKK_EC_EDWARDS that sign with CKM_EDDSA and the X25519 key as
// CKK_EC_MONTGOMERY that derives and does not sign; their public key
// infos are those of X.509.
func TestEdDSAObjectsAndMechanisms(t *testing.T) {
	card, m, h := edModule(t)
	aut := findKey(t, m, h, ckoPrivateKey, edAut)
	dec := findKey(t, m, h, ckoPrivateKey, edDec)
	if got := attr(t, m, h, aut, ckaKeyType); !bytes.Equal(got, ulongs(ckkECEdwards)) {
		t.Errorf("aut: CKA_KEY_TYPE %x, want CKK_EC_EDWARDS", got)
	}
	if got := attr(t, m, h, dec, ckaKeyType); !bytes.Equal(got, ulongs(ckkECMontgomery)) {
		t.Errorf("dec: CKA_KEY_TYPE %x, want CKK_EC_MONTGOMERY", got)
	}
	if got := attr(t, m, h, aut, ckaAllowedMechanisms); !bytes.Equal(got, ulongs(ckmEDDSA)) {
		t.Errorf("aut: CKA_ALLOWED_MECHANISMS %x, want CKM_EDDSA", got)
	}
	if got := attr(t, m, h, dec, ckaSign); !bytes.Equal(got, []byte{0}) {
		t.Errorf("dec: CKA_SIGN %x, want false", got)
	}
	if got := attr(t, m, h, dec, ckaDerive); !bytes.Equal(got, []byte{1}) {
		t.Errorf("dec: CKA_DERIVE %x, want true", got)
	}
	pub := findKey(t, m, h, ckoPublicKey, edAut)
	if got, want := attr(t, m, h, pub, ckaECPoint), append([]byte{4, 32}, card.Public("aut").(ed25519.PublicKey)...); !bytes.Equal(got, want) {
		t.Errorf("aut: CKA_EC_POINT %x, want %x", got, want)
	}
	if len(attr(t, m, h, pub, ckaPublicKeyInfo)) == 0 {
		t.Error("aut: no CKA_PUBLIC_KEY_INFO")
	}
	info, err := m.MechanismInfo(1, ckmEDDSA)
	if err != nil || info.MinKey != 255 || info.MaxKey != 255 || info.Flags&ckfSign == 0 {
		t.Errorf("CKM_EDDSA: %+v, %v; want 255 bits, CKF_SIGN", info, err)
	}
	if err := m.SignInit(h, Mechanism{Type: ckmEDDSA}, dec); !errors.Is(err, ErrKeyFunctionNotPermitted) {
		t.Errorf("C_SignInit with the X25519 key: %v, want CKR_KEY_FUNCTION_NOT_PERMITTED", err)
	}
	if err := m.SignInit(h, Mechanism{Type: ckmECDSA}, aut); !errors.Is(err, ErrKeyTypeInconsistent) {
		t.Errorf("C_SignInit CKM_ECDSA with an Ed25519 key: %v, want CKR_KEY_TYPE_INCONSISTENT", err)
	}
}

// TestEdDSASign: one-part and multi-part signatures of the whole message,
// verified with crypto/ed25519; the PIN-always key with a
// context-specific login; parameters asking for Ed25519ph or a context
// refused; a message over the limit CKR_DATA_LEN_RANGE.
func TestEdDSASign(t *testing.T) {
	card, m, h := edModule(t)
	aut := findKey(t, m, h, ckoPrivateKey, edAut)
	autPub := card.Public("aut").(ed25519.PublicKey)
	msg := []byte("I, the mayor, approve the budget")
	for _, p := range []*EdDSAParams{nil, {}} {
		sig, err := sign(m, h, Mechanism{Type: ckmEDDSA, EdDSA: p}, aut, msg)
		if err != nil {
			t.Fatalf("params %+v: %v", p, err)
		}
		if !ed25519.Verify(autPub, msg, sig) {
			t.Errorf("params %+v: signature %x does not verify", p, sig)
		}
	}
	if sig, err := sign(m, h, Mechanism{Type: ckmEDDSA}, aut, nil); err != nil || !ed25519.Verify(autPub, nil, sig) {
		t.Errorf("the empty message: %x, %v", sig, err)
	}

	// In parts: the module keeps the message and sends it whole.
	if err := m.SignInit(h, Mechanism{Type: ckmEDDSA}, aut); err != nil {
		t.Fatal(err)
	}
	for _, part := range bytes.SplitAfter(msg, []byte(" ")) {
		if err := m.SignUpdate(h, part); err != nil {
			t.Fatal(err)
		}
	}
	sig := make([]byte, 64)
	if n, err := m.SignFinal(h, sig, true); err != nil || n != 64 || !ed25519.Verify(autPub, msg, sig) {
		t.Errorf("in parts: %d bytes, %v, verifies %v", n, err, ed25519.Verify(autPub, msg, sig))
	}

	// The limit, in one part and in parts.
	long := make([]byte, transport.MaxEdDSAMessage)
	if sig, err := sign(m, h, Mechanism{Type: ckmEDDSA}, aut, long); err != nil || !ed25519.Verify(autPub, long, sig) {
		t.Errorf("a message at the limit: %v", err)
	}
	if _, err := sign(m, h, Mechanism{Type: ckmEDDSA}, aut, append(long, 0)); !errors.Is(err, ErrDataLenRange) {
		t.Errorf("a message over the limit: %v, want CKR_DATA_LEN_RANGE", err)
	}
	if err := m.SignInit(h, Mechanism{Type: ckmEDDSA}, aut); err != nil {
		t.Fatal(err)
	}
	if err := m.SignUpdate(h, long); err != nil {
		t.Fatal(err)
	}
	if err := m.SignUpdate(h, []byte{0}); !errors.Is(err, ErrDataLenRange) {
		t.Errorf("parts over the limit: %v, want CKR_DATA_LEN_RANGE", err)
	}

	for _, p := range []Mechanism{
		{Type: ckmEDDSA, EdDSA: &EdDSAParams{Prehash: true}},
		{Type: ckmEDDSA, EdDSA: &EdDSAParams{ContextLen: 3}},
		{Type: ckmEDDSA, Param: []byte{1, 2, 3}},
	} {
		if err := m.SignInit(h, p, aut); !errors.Is(err, ErrMechanismParamInvalid) {
			t.Errorf("parameters %+v: %v, want CKR_MECHANISM_PARAM_INVALID", p, err)
		}
	}

	// The signature key wants the vPIN with every signature.
	sigKey := findKey(t, m, h, ckoPrivateKey, edSig)
	for i := range 2 {
		s, err := sign(m, h, Mechanism{Type: ckmEDDSA}, sigKey, msg)
		if err != nil || !ed25519.Verify(card.Public("sig").(ed25519.PublicKey), msg, s) {
			t.Errorf("PIN-always key, signature %d: %v", i, err)
		}
	}
}

// TestX25519DeriveKey: C_DeriveKey with the X25519 key gives the secret
// crypto/ecdh computes, from a bare or DER-wrapped peer; a peer of
// another size is CKR_MECHANISM_PARAM_INVALID; a small-order peer is
// refused by the server.
func TestX25519DeriveKey(t *testing.T) {
	card, m, h := edModule(t)
	dec := findKey(t, m, h, ckoPrivateKey, edDec)
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	want, _ := peer.ECDH(card.Public("dec").(*ecdh.PublicKey))
	raw := peer.PublicKey().Bytes()
	for name, pub := range map[string][]byte{"bare": raw, "DER": append([]byte{4, 32}, raw...)} {
		oh, err := m.DeriveKey(h, ckmECDH1Derive, &ECDHParams{KDF: ckdNull, Public: pub}, dec, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := attr(t, m, h, oh, ckaValue); !bytes.Equal(got, want) {
			t.Errorf("%s: CKA_VALUE %x, want %x", name, got, want)
		}
	}
	if _, err := m.DeriveKey(h, ckmECDH1Derive, &ECDHParams{KDF: ckdNull, Public: raw[:31]}, dec, nil); !errors.Is(err, ErrMechanismParamInvalid) {
		t.Errorf("31 bytes: %v, want CKR_MECHANISM_PARAM_INVALID", err)
	}
	if _, err := m.DeriveKey(h, ckmECDH1Derive, &ECDHParams{KDF: ckdNull, Public: make([]byte, 32)}, dec, nil); err == nil {
		t.Error("a small-order peer was accepted")
	}
	aut := findKey(t, m, h, ckoPrivateKey, edAut)
	if _, err := m.DeriveKey(h, ckmECDH1Derive, &ECDHParams{KDF: ckdNull, Public: raw}, aut, nil); !errors.Is(err, ErrKeyFunctionNotPermitted) {
		t.Errorf("an Ed25519 key: %v, want CKR_KEY_FUNCTION_NOT_PERMITTED", err)
	}
}

// TestCurve25519Params: both forms of CKA_EC_PARAMS PKCS #11 3.0 allows
// name the curves (the OID pscsd serves, the PrintableString others do);
// the other curve's name, or no name, does not.
func TestCurve25519Params(t *testing.T) {
	point := append([]byte{4, 32}, make([]byte, 31)...)
	point = append(point, 9)
	for _, tc := range []struct {
		keyType uint64
		params  []byte
		ok      bool
	}{
		{ckkECEdwards, []byte{6, 3, 0x2B, 0x65, 0x70}, true},
		{ckkECEdwards, append([]byte{0x13, 12}, "edwards25519"...), true},
		{ckkECMontgomery, []byte{6, 3, 0x2B, 0x65, 0x6E}, true},
		{ckkECMontgomery, append([]byte{0x13, 10}, "curve25519"...), true},
		{ckkECEdwards, []byte{6, 3, 0x2B, 0x65, 0x6E}, false},
		{ckkECMontgomery, append([]byte{0x13, 12}, "edwards25519"...), false},
		{ckkECEdwards, nil, false},
	} {
		pub := publicKey(map[uint64][]byte{ckaKeyType: ulongs(tc.keyType), ckaECParams: tc.params, ckaECPoint: point})
		if (pub != nil) != tc.ok {
			t.Errorf("type %#x, CKA_EC_PARAMS %x: key %v, want one: %v", tc.keyType, tc.params, pub, tc.ok)
		}
	}
}
