package server_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"strings"
	"testing"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/memcard"
	"github.com/pscs/pscs/internal/p11"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// edRig is a remote card (slot 3) of one in-memory card shaped as an
// OpenPGP card with Curve25519 keys (memcard.OpenPGPLike: "sig" Ed25519
// with the PIN before every signature, "dec" X25519 for key agreement
// only, "aut" Ed25519), delegated to alice for signing and decrypting
// under d; alice is logged in.
func edRig(t *testing.T, d policy.Delegation, keys ...memcard.Key) (*memcard.Card, *client.Client, *transport.Catalogue, *memAudit) {
	t.Helper()
	aud := &memAudit{}
	d.ID, d.Ops, d.MaxWrongVPIN = "d-alice", []string{"sign", "decrypt"}, 5
	r := testrig.Start(t, testrig.Options{Slot: 3, Audit: aud,
		Delegates: []testrig.Delegate{{Name: "alice", VPIN: "2718", Delegation: d}}})
	card := memcard.OpenPGPLike("eddsa")
	if keys != nil {
		card = memcard.New(memcard.Config{Keys: keys})
	}
	if err := r.Pool.Add(testrig.ProfileMember(t, "mem", cards.Direct(card), card.Profile(), nil)); err != nil {
		t.Fatal(err)
	}
	c := r.Dial(t, r.Certs["alice"])
	login, err := c.Login(ctx(t), 3, []byte("2718"))
	if err != nil {
		t.Fatal(err)
	}
	return card, c, login.Catalogue, aud
}

// objectOf finds the object of class with label "<label> (<id>)".
func objectOf(t *testing.T, cat *transport.Catalogue, class uint64, id string) transport.Object {
	t.Helper()
	for _, o := range cat.Slots[0].Objects {
		if l, _ := o.Attributes[p11.CKALabel].(string); strings.HasSuffix(l, "("+id+")") && o.Attributes[p11.CKAClass] == class {
			return o
		}
	}
	t.Fatalf("no object of class %d for key %s", class, id)
	return transport.Object{}
}

func mechanism(cat *transport.Catalogue, mech uint64) (transport.Mechanism, bool) {
	for _, m := range cat.Slots[0].Mechanisms {
		if m.Type == mech {
			return m, true
		}
	}
	return transport.Mechanism{}, false
}

// TestEd25519Catalogue: Ed25519 keys are CKK_EC_EDWARDS with the curve's
// OID and the 32-byte key in a DER OCTET STRING, and sign with CKM_EDDSA;
// the X25519 key is CKK_EC_MONTGOMERY, derives and does not sign.
func TestEd25519Catalogue(t *testing.T) {
	card, _, cat, _ := edRig(t, policy.Delegation{})
	for _, tc := range []struct {
		id             string
		keyType        uint64
		params         []byte
		sign, derive   bool
		alwaysAuthFlag bool
	}{
		{"sig", p11.CKKECEdwards, []byte{0x06, 0x03, 0x2B, 0x65, 0x70}, true, false, true},
		{"aut", p11.CKKECEdwards, []byte{0x06, 0x03, 0x2B, 0x65, 0x70}, true, false, false},
		{"dec", p11.CKKECMontgomery, []byte{0x06, 0x03, 0x2B, 0x65, 0x6E}, false, true, false},
	} {
		priv := objectOf(t, cat, p11.CKOPrivateKey, tc.id)
		pub := objectOf(t, cat, p11.CKOPublicKey, tc.id)
		for name, o := range map[string]transport.Object{"private": priv, "public": pub} {
			if got := o.Attributes[p11.CKAKeyType]; got != uint64(tc.keyType) {
				t.Errorf("%s %s key: CKA_KEY_TYPE %v, want %#x", tc.id, name, got, tc.keyType)
			}
			if got, _ := o.Attributes[p11.CKAECParams].([]byte); !bytes.Equal(got, tc.params) {
				t.Errorf("%s %s key: CKA_EC_PARAMS %x, want %x", tc.id, name, got, tc.params)
			}
		}
		var raw []byte
		switch p := card.Public(tc.id).(type) {
		case ed25519.PublicKey:
			raw = p
		case *ecdh.PublicKey:
			raw = p.Bytes()
		}
		want := append([]byte{0x04, 0x20}, raw...)
		if got, _ := pub.Attributes[p11.CKAECPoint].([]byte); !bytes.Equal(got, want) {
			t.Errorf("%s: CKA_EC_POINT %x, want %x", tc.id, got, want)
		}
		if got := priv.Attributes[p11.CKASign]; got != tc.sign {
			t.Errorf("%s: CKA_SIGN %v, want %v", tc.id, got, tc.sign)
		}
		if got := pub.Attributes[p11.CKAVerify]; got != tc.sign {
			t.Errorf("%s: CKA_VERIFY %v, want %v", tc.id, got, tc.sign)
		}
		if got := priv.Attributes[p11.CKADerive]; got != tc.derive {
			t.Errorf("%s: CKA_DERIVE %v, want %v", tc.id, got, tc.derive)
		}
		if got := priv.Attributes[p11.CKAAlwaysAuth]; got != tc.alwaysAuthFlag {
			t.Errorf("%s: CKA_ALWAYS_AUTHENTICATE %v, want %v", tc.id, got, tc.alwaysAuthFlag)
		}
	}
	for _, want := range []transport.Mechanism{
		{Type: p11.CKMEDDSA, MinKey: 255, MaxKey: 255, Flags: p11.CKFHW | p11.CKFSign},
		{Type: p11.CKMECDH1Derive, MinKey: 255, MaxKey: 255, Flags: p11.CKFHW | p11.CKFDerive},
	} {
		if got, ok := mechanism(cat, want.Type); !ok || got != want {
			t.Errorf("mechanism %#x: %+v, want %+v", want.Type, got, want)
		}
	}
	if _, ok := mechanism(cat, p11.CKMECDSA); ok {
		t.Error("CKM_ECDSA offered for a card without ECDSA keys")
	}
}

// TestEd25519Sign: CKM_EDDSA signs the whole message (empty, short, and
// as long as the limit), verified with crypto/ed25519; the audit record
// keeps the signature as for any other; a PIN-always key wants the vPIN
// with every signature.
func TestEd25519Sign(t *testing.T) {
	card, c, cat, aud := edRig(t, policy.Delegation{})
	aut := objectOf(t, cat, p11.CKOPrivateKey, "aut").Handle
	sig := objectOf(t, cat, p11.CKOPrivateKey, "sig").Handle
	long := bytes.Repeat([]byte{'x'}, transport.MaxEdDSAMessage)
	for _, msg := range [][]byte{[]byte("pay 10 EUR to Bob"), {}, long} {
		resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 3, Key: aut, Mechanism: p11.CKMEDDSA, Data: msg})
		if err != nil {
			t.Fatalf("a message of %d bytes: %v", len(msg), err)
		}
		if len(resp.Signature) != ed25519.SignatureSize || !ed25519.Verify(card.Public("aut").(ed25519.PublicKey), msg, resp.Signature) {
			t.Errorf("a message of %d bytes: signature %x does not verify", len(msg), resp.Signature)
		}
	}
	msg := []byte("the mayor's decree")
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 3, Key: sig, Mechanism: p11.CKMEDDSA, Data: msg}); !isCode(err, transport.CodeNotLoggedIn) {
		t.Errorf("PIN-always key without the vPIN: %v, want code %d", err, transport.CodeNotLoggedIn)
	}
	resp, err := c.SignWithPIN(ctx(t), &transport.SignRequest{Slot: 3, Key: sig, Mechanism: p11.CKMEDDSA, Data: msg}, []byte("2718"))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(card.Public("sig").(ed25519.PublicKey), msg, resp.Signature) {
		t.Error("the PIN-always key's signature does not verify")
	}
	aud.mu.Lock()
	defer aud.mu.Unlock()
	last := aud.records[len(aud.records)-1]
	if last.Op != "sign" || last.Code != 0 || !bytes.Equal(last.Result, resp.Signature) || !bytes.Contains(last.Evidence, msg) {
		t.Errorf("audit record %s code %d result %x: want the signature as result and the message in the evidence", last.Op, last.Code, last.Result)
	}
}

// TestEd25519Refusals: what the server refuses before the card is asked,
// with its code: a message over the limit (11), Ed25519ph or a context
// (202), another mechanism on an Ed25519 key or CKM_EDDSA on another key
// (202), the decryption-only key (202); and a card whose signature does
// not verify (200).
func TestEd25519Refusals(t *testing.T) {
	card, c, cat, _ := edRig(t, policy.Delegation{})
	aut := objectOf(t, cat, p11.CKOPrivateKey, "aut").Handle
	dec := objectOf(t, cat, p11.CKOPrivateKey, "dec").Handle
	params, _ := asn1.Marshal(true) // whatever CK_EDDSA_PARAMS a client would send
	for _, tc := range []struct {
		name string
		req  transport.SignRequest
		code transport.Code
	}{
		{"over the limit", transport.SignRequest{Key: aut, Mechanism: p11.CKMEDDSA, Data: make([]byte, transport.MaxEdDSAMessage+1)}, transport.CodeTooLarge},
		{"Ed25519ph or context", transport.SignRequest{Key: aut, Mechanism: p11.CKMEDDSA, Params: params, Data: []byte("m")}, transport.CodeMechanism},
		{"ECDSA on Ed25519", transport.SignRequest{Key: aut, Mechanism: p11.CKMECDSA, Data: make([]byte, 32)}, transport.CodeMechanism},
		{"SHA-256 ECDSA on Ed25519", transport.SignRequest{Key: aut, Mechanism: p11.CKMECDSASHA256, Data: []byte("m")}, transport.CodeMechanism},
		{"RSA on Ed25519", transport.SignRequest{Key: aut, Mechanism: p11.CKMRSAPKCS, Data: []byte("m")}, transport.CodeMechanism},
		{"decryption-only key", transport.SignRequest{Key: dec, Mechanism: p11.CKMEDDSA, Data: []byte("m")}, transport.CodeMechanism},
	} {
		tc.req.Slot = 3
		if _, err := c.Sign(ctx(t), &tc.req); !isCode(err, tc.code) {
			t.Errorf("%s: %v, want code %d", tc.name, err, tc.code)
		}
	}
	if n := card.Signatures(); n != 0 {
		t.Errorf("the card made %d signatures, want none", n)
	}

	faulty, fc, fcat, _ := edRig(t, policy.Delegation{}, memcard.Key{ID: "aut", Label: "broken", Private: memcard.Ed25519("f"), Faulty: true})
	h := objectOf(t, fcat, p11.CKOPrivateKey, "aut").Handle
	if _, err := fc.Sign(ctx(t), &transport.SignRequest{Slot: 3, Key: h, Mechanism: p11.CKMEDDSA, Data: []byte("m")}); !isCode(err, transport.CodeCardError) {
		t.Errorf("a signature that does not verify: %v, want code %d", err, transport.CodeCardError)
	}
	if faulty.Signatures() == 0 {
		t.Error("the faulty card was not asked")
	}
}

// TestEd25519DocumentPolicy: an EdDSA signature's document is its
// message, and the policy compares the message's SHA-256 with the
// allowed digests.
func TestEd25519DocumentPolicy(t *testing.T) {
	allowed := []byte("contract v2")
	sum := sha256.Sum256(allowed)
	_, c, cat, _ := edRig(t, policy.Delegation{Documents: [][]byte{sum[:]}})
	aut := objectOf(t, cat, p11.CKOPrivateKey, "aut").Handle
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 3, Key: aut, Mechanism: p11.CKMEDDSA, Data: allowed}); err != nil {
		t.Errorf("the allowed document: %v", err)
	}
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 3, Key: aut, Mechanism: p11.CKMEDDSA, Data: []byte("contract v3")}); !isCode(err, transport.CodeDocumentRefused) {
		t.Errorf("another document: %v, want code %d", err, transport.CodeDocumentRefused)
	}
}

// TestX25519Derive: the X25519 key agrees the same secret as crypto/ecdh;
// a peer of the wrong size and a small-order peer (whose secret is all
// zeros) are refused with CodeDecryption; the audit record keeps the
// peer's SHA-256, never the secret.
func TestX25519Derive(t *testing.T) {
	card, c, cat, aud := edRig(t, policy.Delegation{})
	dec := objectOf(t, cat, p11.CKOPrivateKey, "dec").Handle
	aut := objectOf(t, cat, p11.CKOPrivateKey, "aut").Handle
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	want, _ := peer.ECDH(card.Public("dec").(*ecdh.PublicKey))
	resp, err := c.Derive(ctx(t), &transport.DeriveRequest{Slot: 3, Key: dec, Mechanism: p11.CKMECDH1Derive, Data: peer.PublicKey().Bytes()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Secret, want) {
		t.Errorf("shared secret %x, want %x", resp.Secret, want)
	}
	p256, _ := ecdh.P256().GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  uint64
		peer []byte
		code transport.Code
	}{
		{"31 bytes", dec, peer.PublicKey().Bytes()[:31], transport.CodeDecryption},
		{"a P-256 point", dec, p256.PublicKey().Bytes(), transport.CodeDecryption},
		{"u = 0 (small order)", dec, make([]byte, 32), transport.CodeDecryption},
		{"u = 1 (small order)", dec, append([]byte{1}, make([]byte, 31)...), transport.CodeDecryption},
		{"an Ed25519 key", aut, peer.PublicKey().Bytes(), transport.CodeMechanism},
	} {
		if _, err := c.Derive(ctx(t), &transport.DeriveRequest{Slot: 3, Key: tc.key, Mechanism: p11.CKMECDH1Derive, Data: tc.peer}, nil); !isCode(err, tc.code) {
			t.Errorf("%s: %v, want code %d", tc.name, err, tc.code)
		}
	}
	aud.mu.Lock()
	defer aud.mu.Unlock()
	var found bool
	for _, rec := range aud.records {
		if rec.Op == "derive" && rec.Code == 0 {
			h := sha256.Sum256(peer.PublicKey().Bytes())
			found = bytes.Equal(rec.Result, h[:])
		}
		if bytes.Contains(rec.Result, want) || bytes.Contains(rec.Evidence, want) {
			t.Error("the shared secret is in an audit record")
		}
	}
	if !found {
		t.Error("no audit record of the key agreement with the peer's SHA-256")
	}
}
