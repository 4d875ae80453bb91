package openpgp_test

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/openpgp"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/profiletest"
	"github.com/pscs/pscs/profiles/simkit"
)

// configs are the card layouts the conformance suite runs on.
var configs = map[string]pgpsim.Config{
	"RSA2048":   {},
	"RSA3072":   {Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.RSA3072, pgpsim.KeyDecrypt: simkit.RSA3072, pgpsim.KeyAuth: simkit.RSA3072}},
	"P256":      {Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.ECCP256, pgpsim.KeyDecrypt: simkit.ECCP256, pgpsim.KeyAuth: simkit.ECCP256}},
	"P384":      {Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.ECCP384, pgpsim.KeyDecrypt: simkit.ECCP384, pgpsim.KeyAuth: simkit.ECCP384}},
	"Ed25519":   {Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.Ed25519, pgpsim.KeyDecrypt: simkit.X25519, pgpsim.KeyAuth: simkit.Ed25519}},
	"PW1Single": {PW1Single: true, Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.ECCP256, pgpsim.KeyAuth: simkit.RSA2048}},
}

func newSim(t testing.TB, cfg pgpsim.Config) *pgpsim.Card {
	t.Helper()
	if cfg.Seed == nil {
		cfg.Seed = []byte(t.Name())
	}
	card, err := pgpsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return card
}

func env(cfg pgpsim.Config, newT func(t *testing.T, cfg pgpsim.Config) profiles.Transmitter) profiletest.Env {
	return profiletest.Env{
		Profile:  openpgp.Profile{},
		New:      func(t *testing.T) profiles.Transmitter { return newT(t, cfg) },
		PIN:      []byte("123456"),
		PINs:     map[string][]byte{openpgp.PINAdmin: []byte("12345678")},
		WrongPIN: []byte("00000000"),
	}
}

func TestConformance(t *testing.T) {
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			profiletest.Run(t, env(cfg, func(t *testing.T, cfg pgpsim.Config) profiles.Transmitter { return newSim(t, cfg) }))
		})
	}
}

func open(t *testing.T, cfg pgpsim.Config) (context.Context, *pgpsim.Card, *openpgp.Card) {
	t.Helper()
	sim := newSim(t, cfg)
	c, err := openpgp.Open(t.Context(), sim)
	if err != nil {
		t.Fatal(err)
	}
	return t.Context(), sim, c
}

func TestDecryptRSA(t *testing.T) {
	ctx, sim, c := open(t, pgpsim.Config{})
	pub := sim.PublicKey(pgpsim.KeyDecrypt).(*rsa.PublicKey)
	//lint:ignore SA1019 PKCS #1 v1.5 is what the card decrypts
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte("session key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, "dec", ct, nil); !errors.Is(err, apdu.ErrSecurityStatus) {
		t.Errorf("without PIN: %v", err)
	}
	if err := c.VerifyPIN(ctx, openpgp.PIN, []byte("123456")); err != nil {
		t.Fatal(err)
	}
	pt, err := c.Decrypt(ctx, "dec", ct, nil)
	if err != nil || string(pt) != "session key" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	ct[10] ^= 1
	if _, err := c.Decrypt(ctx, "dec", ct, nil); !errors.Is(err, profiles.ErrDecryption) {
		t.Errorf("corrupted ciphertext: %v, want ErrDecryption", err)
	}
	for name, f := range map[string]func() error{
		"OAEP":        func() error { _, err := c.Decrypt(ctx, "dec", ct, &rsa.OAEPOptions{Hash: crypto.SHA256}); return err },
		"sig key":     func() error { _, err := c.Decrypt(ctx, "sig", ct, nil); return err },
		"RSA as ECDH": func() error { _, err := c.DeriveECDH(ctx, "dec", make([]byte, 65)); return err },
	} {
		if err := f(); !errors.Is(err, profiles.ErrKeyUsage) {
			t.Errorf("%s: %v, want ErrKeyUsage", name, err)
		}
	}
}

func TestDeriveECDH(t *testing.T) {
	for name, alg := range map[string]simkit.Alg{"P256": simkit.ECCP256, "P384": simkit.ECCP384, "X25519": simkit.X25519} {
		t.Run(name, func(t *testing.T) {
			ctx, sim, c := open(t, pgpsim.Config{Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeyDecrypt: alg}})
			var curve ecdh.Curve
			var cardPub *ecdh.PublicKey
			switch p := sim.PublicKey(pgpsim.KeyDecrypt).(type) {
			case *ecdsa.PublicKey:
				cardPub, _ = p.ECDH()
				curve = cardPub.Curve()
			case *ecdh.PublicKey:
				cardPub, curve = p, p.Curve()
			}
			mine, _ := curve.GenerateKey(rand.Reader)
			want, _ := mine.ECDH(cardPub)
			if err := c.VerifyPIN(ctx, openpgp.PIN, []byte("123456")); err != nil {
				t.Fatal(err)
			}
			got, err := c.DeriveECDH(ctx, "dec", mine.PublicKey().Bytes())
			if err != nil || string(got) != string(want) {
				t.Fatalf("DeriveECDH = %x, %v; want %x", got, err, want)
			}
			if _, err := c.DeriveECDH(ctx, "dec", []byte{4, 1, 2}); err == nil {
				t.Error("a peer off the curve was accepted")
			}
		})
	}
}

func TestSignatureCounterAndPINAlways(t *testing.T) {
	ctx, sim, c := open(t, pgpsim.Config{PW1Single: true, Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.ECCP256}})
	keys, err := c.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0].PINPolicy != profiles.PINAlways {
		t.Fatalf("Keys = %+v, %v; want sig with PIN always", keys, err)
	}
	d := sha256.Sum256([]byte("count"))
	for range 2 {
		if err := c.VerifyPIN(ctx, openpgp.PINSign, []byte("123456")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx, "sig", d[:], crypto.SHA256); err != nil {
			t.Fatal(err)
		}
	}
	info, err := c.Info(ctx)
	if err != nil || info.Label != "OpenPGP card, 2 signatures" || info.Version != "3.4" || info.Serial != fmt.Sprintf("%08X", sim.Serial()) {
		t.Errorf("Info = %+v, %v", info, err)
	}
}

func TestKDFRefused(t *testing.T) {
	sim := newSim(t, pgpsim.Config{})
	ctx := t.Context()
	// PW3, then a KDF-DO with iterated salted S2K (81 01 03), as GnuPG writes it.
	for _, cmd := range [][]byte{
		append([]byte{0x00, 0xA4, 0x04, 0x00, 0x06}, openpgp.AID...),
		{0x00, 0x20, 0x00, 0x83, 0x08, '1', '2', '3', '4', '5', '6', '7', '8'},
		{0x00, 0xDA, 0x00, 0xF9, 0x03, 0x81, 0x01, 0x00},
	} {
		if rsp, err := sim.Transmit(ctx, cmd); err != nil || len(rsp) < 2 {
			t.Fatal(rsp, err)
		}
	}
	if _, err := openpgp.Open(ctx, sim); err != nil {
		t.Fatalf("KDF none: %v", err)
	}
	kdf := []byte{0x81, 0x01, 0x03, 0x82, 0x01, 0x08, 0x83, 0x04, 0, 0, 0x04, 0, 0x84, 0x08, 1, 2, 3, 4, 5, 6, 7, 8}
	sim.Transmit(ctx, []byte{0x00, 0x20, 0x00, 0x83, 0x08, '1', '2', '3', '4', '5', '6', '7', '8'})
	rsp, _ := sim.Transmit(ctx, append([]byte{0x00, 0xDA, 0x00, 0xF9, byte(len(kdf))}, kdf...))
	if string(rsp) != "\x90\x00" {
		t.Skipf("the simulator refused the KDF-DO: %X", rsp)
	}
	if _, err := openpgp.Open(ctx, sim); !errors.Is(err, openpgp.ErrKDF) {
		t.Errorf("Open of a KDF card: %v, want ErrKDF", err)
	}
}
