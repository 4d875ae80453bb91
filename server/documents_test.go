package server_test

import (
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// TestDocumentPolicy: a delegation for certain documents takes them signed
// with every mechanism, CKM_RSA_PKCS with the DigestInfo that PKCS #11
// applications send included, and refuses any other document.
func TestDocumentPolicy(t *testing.T) {
	r := newRig(t, 1)
	doc := sha256.Sum256([]byte("the allowed document"))
	other := sha256.Sum256([]byte("another document"))
	r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5, Documents: [][]byte{doc[:]}})
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	prefix, _ := profiles.DigestInfoPrefix(crypto.SHA256)
	di := func(d [32]byte) []byte { return append(append([]byte{}, prefix...), d[:]...) }
	sha512Prefix, _ := profiles.DigestInfoPrefix(crypto.SHA512)
	other512 := sha512.Sum512([]byte("the allowed document"))
	for _, tc := range []struct {
		name string
		req  transport.SignRequest
		want transport.Code
	}{
		{"ECDSA, the document", transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: doc[:]}, 0},
		{"ECDSA, another", transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: other[:]}, transport.CodeDocumentRefused},
		{"RSA PKCS, DigestInfo of the document", transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1, Data: di(doc)}, 0},
		{"RSA PKCS, DigestInfo of another", transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1, Data: di(other)}, transport.CodeDocumentRefused},
		{"RSA PKCS, SHA-512 DigestInfo", transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1, Data: append(append([]byte{}, sha512Prefix...), other512[:]...)}, transport.CodeDocumentRefused},
		{"RSA PKCS, raw bytes", transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1, Data: doc[:]}, transport.CodeDocumentRefused},
	} {
		_, err := c.SignWithPIN(ctx(t), &tc.req, []byte("2718")) // 9C wants the vPIN every time
		if got := transport.CodeOf(err); got != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
}

// TestPINAlwaysKey: a key the card wants its PIN for before every
// signature (PIV 9C) is offered with CKA_ALWAYS_AUTHENTICATE, and signs
// only with the delegate's virtual PIN beside each request; a wrong one
// counts towards the lockout and never reaches the card.
func TestPINAlwaysKey(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	resp, err := c.Login(ctx(t), 7, []byte("2718"))
	if err != nil {
		t.Fatal(err)
	}
	always := map[uint64]bool{}
	for _, o := range resp.Catalogue.Slots[0].Objects {
		if v, ok := o.Attributes[0x202].(bool); ok {
			always[o.Handle] = v
		}
	}
	if !always[4] || always[1] {
		t.Errorf("CKA_ALWAYS_AUTHENTICATE by private key handle %v, want true for 9C (4) only", always)
	}
	sum := sha256.Sum256([]byte("a decree"))
	prefix, _ := profiles.DigestInfoPrefix(crypto.SHA256)
	req := &transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1, Data: append(append([]byte{}, prefix...), sum[:]...)}
	if _, err := c.Sign(ctx(t), req); transport.CodeOf(err) != transport.CodeNotLoggedIn {
		t.Errorf("9C without the vPIN: %v", err)
	}
	if _, err := c.SignWithPIN(ctx(t), req, []byte("0000")); transport.CodeOf(err) != transport.CodeWrongPIN {
		t.Errorf("9C with a wrong vPIN: %v", err)
	}
	if got := r.sims[0].PINRetries(); got != 3 {
		t.Errorf("card PIN tries %d after a wrong vPIN, want 3", got)
	}
	if _, err := c.SignWithPIN(ctx(t), req, []byte("2718")); err != nil {
		t.Errorf("9C with the vPIN: %v", err)
	}
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: sum[:]}); err != nil {
		t.Errorf("9A after the session login alone: %v", err)
	}
}
