package piv_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/registry"

	_ "crypto/sha1"
)

func openSim(t *testing.T, slots map[pivsim.Slot]pivsim.SlotConfig) (*pivsim.Card, *piv.Card) {
	t.Helper()
	card, err := pivsim.New(pivsim.Config{Seed: []byte("decrypt"), Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
	c, err := piv.Open(context.Background(), card)
	if err != nil {
		t.Fatal(err)
	}
	return card, c
}

func TestDecryptRSA(t *testing.T) {
	ctx := context.Background()
	card, c := openSim(t, map[pivsim.Slot]pivsim.SlotConfig{
		pivsim.SlotKeyManagement: {Algorithm: pivsim.RSA2048},
		pivsim.SlotSignature:     {Algorithm: pivsim.RSA2048},
	})
	pub := card.PublicKey(pivsim.SlotKeyManagement).(*rsa.PublicKey)
	msg := []byte("the mayor's encrypted mail")
	//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
	v15, err := rsa.EncryptPKCS1v15(rand.Reader, pub, msg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ct   []byte
		opts crypto.DecrypterOpts
	}{
		{"pkcs1v15 nil opts", v15, nil},
		//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
		{"pkcs1v15", v15, &rsa.PKCS1v15DecryptOptions{}},
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		for _, label := range [][]byte{nil, []byte("label")} {
			ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, msg, label)
			if err != nil {
				t.Fatal(err)
			}
			tests = append(tests, struct {
				name string
				ct   []byte
				opts crypto.DecrypterOpts
			}{"oaep " + h.String() + " label " + string(label), ct, &rsa.OAEPOptions{Hash: h, MGFHash: h, Label: label}})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Decrypt(ctx, "9d", tt.ct, tt.opts); !errors.Is(err, apdu.ErrSecurityStatus) {
				t.Fatalf("decrypt without the PIN: %v, want ErrSecurityStatus", err)
			}
			if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
				t.Fatal(err)
			}
			got, err := c.Decrypt(ctx, "9d", tt.ct, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Errorf("got %q, want %q", got, msg)
			}
			if err := c.Logout(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
		t.Fatal(err)
	}
	// Wrong padding: v1.5 ciphertext read as OAEP, OAEP with another
	// label, a ciphertext that is no encryption at all. One error for all.
	oaep, _ := rsa.EncryptOAEP(crypto.SHA256.New(), rand.Reader, pub, msg, []byte("a"))
	junk := bytes.Repeat([]byte{0x42}, pub.Size())
	for name, tc := range map[string]struct {
		ct   []byte
		opts crypto.DecrypterOpts
	}{
		"v1.5 as OAEP":  {v15, &rsa.OAEPOptions{Hash: crypto.SHA256}},
		"OAEP as v1.5":  {oaep, nil},
		"other label":   {oaep, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: []byte("b")}},
		"junk":          {junk, nil},
		"short":         {v15[1:], nil},
		"above modulus": {bytes.Repeat([]byte{0xFF}, pub.Size()), nil},
	} {
		if _, err := c.Decrypt(ctx, "9d", tc.ct, tc.opts); !errors.Is(err, profiles.ErrDecryption) {
			t.Errorf("%s: %v, want ErrDecryption", name, err)
		}
	}
	if _, err := c.Decrypt(ctx, "9c", v15, nil); !errors.Is(err, profiles.ErrKeyUsage) {
		t.Errorf("decrypt with 9C (signature key): %v, want ErrKeyUsage", err)
	}
	if _, err := c.Decrypt(ctx, "9b", v15, nil); !errors.Is(err, profiles.ErrNoKey) {
		t.Errorf("decrypt with 9B: %v, want ErrNoKey", err)
	}
}

// TestDecryptCardLies: an answer that does not encrypt back to the
// ciphertext (a faulty card, another key in the slot) is refused.
func TestDecryptCardLies(t *testing.T) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("tamper"), Slots: map[pivsim.Slot]pivsim.SlotConfig{
		pivsim.SlotKeyManagement: {Algorithm: pivsim.RSA2048}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := piv.Open(ctx, tamper{card})
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, card.PublicKey(pivsim.SlotKeyManagement).(*rsa.PublicKey), []byte("x"))
	c.VerifyPIN(ctx, piv.PIN, []byte("123456"))
	if _, err := c.Decrypt(ctx, "9d", ct, nil); !errors.Is(err, apdu.ErrMalformed) {
		t.Errorf("a corrupted answer: %v, want ErrMalformed", err)
	}
}

func TestDeriveECDH(t *testing.T) {
	ctx := context.Background()
	for _, alg := range []pivsim.Algorithm{pivsim.ECCP256, pivsim.ECCP384} {
		card, c := openSim(t, map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotKeyManagement: {Algorithm: alg}, pivsim.SlotAuthentication: {Algorithm: alg}})
		pub, err := card.PublicKey(pivsim.SlotKeyManagement).(*ecdsa.PublicKey).ECDH()
		if err != nil {
			t.Fatal(err)
		}
		peer, err := pub.Curve().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		want, err := peer.ECDH(pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeriveECDH(ctx, "9d", peer.PublicKey().Bytes()); !errors.Is(err, apdu.ErrSecurityStatus) {
			t.Fatalf("derive without the PIN: %v, want ErrSecurityStatus", err)
		}
		c.VerifyPIN(ctx, piv.PIN, []byte("123456"))
		got, err := c.DeriveECDH(ctx, "9d", peer.PublicKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: the card's secret %x, want %x", alg, got, want)
		}
		other, _ := ecdh.P521().GenerateKey(rand.Reader)
		for name, p := range map[string][]byte{
			"off the curve": append([]byte{4}, make([]byte, len(peer.PublicKey().Bytes())-1)...),
			"other curve":   other.PublicKey().Bytes(),
			"empty":         nil,
		} {
			if _, err := c.DeriveECDH(ctx, "9d", p); !errors.Is(err, profiles.ErrDecryption) {
				t.Errorf("%v: peer %s: %v, want ErrDecryption", alg, name, err)
			}
		}
		if _, err := c.DeriveECDH(ctx, "9a", peer.PublicKey().Bytes()); !errors.Is(err, profiles.ErrKeyUsage) {
			t.Errorf("derive with 9A: %v, want ErrKeyUsage", err)
		}
	}
}

// TestDecryptTraceRedacted: what the card decrypts or agrees never reaches
// an APDU trace (cards.Trace at debug level), including the part of a
// long answer that comes with GET RESPONSE.
func TestDecryptTraceRedacted(t *testing.T) {
	ctx := context.Background()
	for _, alg := range []pivsim.Algorithm{pivsim.RSA2048, pivsim.ECCP384} {
		card, err := pivsim.New(pivsim.Config{Seed: []byte("trace"), Slots: map[pivsim.Slot]pivsim.SlotConfig{
			pivsim.SlotKeyManagement: {Algorithm: alg}}})
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c, err := piv.Open(ctx, cards.Trace(card, log, registry.Redactor()))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
			t.Fatal(err)
		}
		var secret []byte
		switch pub := card.PublicKey(pivsim.SlotKeyManagement).(type) {
		case *rsa.PublicKey:
			// A message as long as PKCS #1 v1.5 allows, so that the
			// card's answer needs GET RESPONSE.
			secret = bytes.Repeat([]byte("S"), pub.Size()-11)
			//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
			ct, _ := rsa.EncryptPKCS1v15(rand.Reader, pub, secret)
			if _, err := c.Decrypt(ctx, "9d", ct, nil); err != nil {
				t.Fatal(err)
			}
		case *ecdsa.PublicKey:
			ek, _ := pub.ECDH()
			peer, _ := ecdh.P384().GenerateKey(rand.Reader)
			secret, _ = peer.ECDH(ek)
			if _, err := c.DeriveECDH(ctx, "9d", peer.PublicKey().Bytes()); err != nil {
				t.Fatal(err)
			}
		}
		text := logs.String()
		if !strings.Contains(text, "cmd=\"00 87 ") && !strings.Contains(text, "cmd=\"10 87 ") {
			t.Fatalf("%v: the trace shows no GENERAL AUTHENTICATE:\n%s", alg, text)
		}
		if !strings.Contains(text, "bytes redacted") {
			t.Errorf("%v: nothing redacted in the trace", alg)
		}
		for _, s := range []string{fmt.Sprintf("% X", secret[:16]), fmt.Sprintf("%X", secret[:16]), fmt.Sprintf("%x", secret[:16]), string(secret[:16])} {
			if strings.Contains(text, s) {
				t.Errorf("%v: the trace holds the secret", alg)
			}
		}
	}
}
