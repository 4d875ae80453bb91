package piv_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// tamper flips a bit in the response data of every GENERAL AUTHENTICATE,
// as a faulty card or a corrupted link would.
type tamper struct{ card *pivsim.Card }

func (t tamper) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	rsp, err := t.card.Transmit(ctx, cmd)
	if err == nil && len(cmd) > 1 && cmd[1] == 0x87 && len(rsp) > 4 {
		rsp[len(rsp)-3] ^= 0x01
	}
	return rsp, err
}

func TestBadCardSignatureRefused(t *testing.T) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("tamper")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := piv.Open(ctx, tamper{card})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	for _, slot := range []string{"9a", "9c", "9e"} {
		if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx, slot, digest[:], crypto.SHA256); !errors.Is(err, piv.ErrBadSignature) {
			t.Errorf("slot %s: a corrupted signature gave %v, want ErrBadSignature", slot, err)
		}
	}
}

func TestPSSSaltLengths(t *testing.T) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("pss")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := piv.Open(ctx, card)
	if err != nil {
		t.Fatal(err)
	}
	pub := card.PublicKey(pivsim.SlotSignature).(*rsa.PublicKey)
	digest := sha256.Sum256([]byte("pss"))
	for _, salt := range []int{rsa.PSSSaltLengthAuto, rsa.PSSSaltLengthEqualsHash, 0, 20} {
		c.VerifyPIN(ctx, piv.PIN, []byte("123456"))
		opts := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: salt}
		sig, err := c.Sign(ctx, "9c", digest[:], opts)
		if err != nil {
			t.Fatalf("salt %d: %v", salt, err)
		}
		verify := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: salt}
		if salt == rsa.PSSSaltLengthAuto {
			verify.SaltLength = rsa.PSSSaltLengthAuto
		}
		if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, verify); err != nil {
			t.Errorf("salt %d: crypto/rsa does not verify: %v", salt, err)
		}
	}
	// PKCS #1 v1.5 with a raw DigestInfo (hash 0), as PKCS #11 CKM_RSA_PKCS.
	c.VerifyPIN(ctx, piv.PIN, []byte("123456"))
	prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	sig, err := c.Sign(ctx, "9c", append(prefix, digest[:]...), crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("raw DigestInfo signature: %v", err)
	}
}
