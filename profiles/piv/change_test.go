package piv_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/pscs/pscs/internal/swapcard"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// TestSignatureUnderANewKey: the key of a slot changes after the driver
// read the card's keys (another program generated a new one). Sign fails
// with a *profiles.BadSignatureError that carries the card's signature,
// and the signature verifies under the new public key with
// profiles.VerifySignature, as pscsd checks it after reading the keys
// again: ECDSA, RSA PKCS #1 v1.5 and PSS.
func TestSignatureUnderANewKey(t *testing.T) {
	before, err := pivsim.New(pivsim.Config{Seed: []byte("before")})
	if err != nil {
		t.Fatal(err)
	}
	after, err := pivsim.New(pivsim.Config{Seed: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	card := swapcard.New(before)
	ctx := context.Background()
	c, err := piv.Open(ctx, card)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Keys(ctx); err != nil {
		t.Fatal(err)
	}
	card.Swap(after)
	digest := sha256.Sum256([]byte("a new key"))
	for _, tc := range []struct {
		slot string
		ref  pivsim.Slot
		opts crypto.SignerOpts
	}{
		{"9a", pivsim.SlotAuthentication, crypto.SHA256},
		{"9c", pivsim.SlotSignature, crypto.SHA256},
		{"9c", pivsim.SlotSignature, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}},
	} {
		if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
			t.Fatal(err)
		}
		_, err := c.Sign(ctx, tc.slot, digest[:], tc.opts)
		var bad *profiles.BadSignatureError
		if !errors.As(err, &bad) || !errors.Is(err, piv.ErrBadSignature) || bad.Key != tc.slot {
			t.Fatalf("%s %T: Sign under a changed key: %v, want a *profiles.BadSignatureError", tc.slot, tc.opts, err)
		}
		if err := profiles.VerifySignature(after.PublicKey(tc.ref), digest[:], bad.Signature, tc.opts); err != nil {
			t.Errorf("%s %T: the card's signature does not verify under the new key: %v", tc.slot, tc.opts, err)
		}
		if err := profiles.VerifySignature(before.PublicKey(tc.ref), digest[:], bad.Signature, tc.opts); err == nil {
			t.Errorf("%s %T: the card's signature verifies under the old key", tc.slot, tc.opts)
		}
	}
}

// TestInfoLabel: a card that answers the YubiKey version command is
// labelled "PIV card", its version as the firmware version it gives; so is
// one that does not.
func TestInfoLabel(t *testing.T) {
	ctx := context.Background()
	sim, err := pivsim.New(pivsim.Config{Seed: []byte("label"), Version: [3]byte{5, 7, 1}, Serial: 1234567})
	if err != nil {
		t.Fatal(err)
	}
	c, err := piv.Open(ctx, sim)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Label != "PIV card" || info.Version != "5.7.1" || info.Serial != "1234567" {
		t.Errorf("Info = %+v, want label PIV card, version 5.7.1, serial 1234567", info)
	}
}
