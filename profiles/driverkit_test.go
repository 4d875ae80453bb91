package profiles

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/pscs/pscs/apdu"
)

// template builds a 7F49 template with the given data objects.
func template(objs ...[]byte) []byte {
	var in []byte
	for i := 0; i+1 < len(objs); i += 2 {
		in = apdu.AppendTLV(in, uint32(objs[i][0]), objs[i+1])
	}
	return apdu.AppendTLV(nil, 0x7F49, in)
}

func TestPublicKeyFromTemplate(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	xk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	ep, _ := ek.PublicKey.Bytes()
	rsaT := template([]byte{0x81}, rk.N.Bytes(), []byte{0x82}, []byte{1, 0, 1})
	for _, c := range []struct {
		b    []byte
		t    KeyType
		want crypto.PublicKey
	}{
		{rsaT, KeyRSA, &rk.PublicKey},
		{rsaT[5:], KeyRSA, &rk.PublicKey}, // bare, without 7F49 82 xx xx
		{template([]byte{0x86}, ep), KeyP384, &ek.PublicKey},
		{template([]byte{0x86}, edPub), KeyEd25519, edPub},
		{template([]byte{0x86}, xk.PublicKey().Bytes()), KeyX25519, xk.PublicKey()},
	} {
		got, err := PublicKeyFromTemplate(c.b, c.t)
		if err != nil || !PublicEqual(got, c.want) {
			t.Errorf("%v: got %T, %v", c.t, got, err)
		}
	}
	for name, c := range map[string]struct {
		b []byte
		t KeyType
	}{
		"P-384 point as P-256": {template([]byte{0x86}, ep), KeyP256},
		"even exponent":        {template([]byte{0x81}, rk.N.Bytes(), []byte{0x82}, []byte{1, 0, 0}), KeyRSA},
		"short modulus":        {template([]byte{0x81}, rk.N.Bytes()[:64], []byte{0x82}, []byte{3}), KeyRSA},
		"no exponent":          {template([]byte{0x81}, rk.N.Bytes()), KeyRSA},
		"huge exponent":        {template([]byte{0x81}, rk.N.Bytes(), []byte{0x82}, bytes.Repeat([]byte{0xFF}, 9)), KeyRSA},
		"Ed25519 of 31 bytes":  {template([]byte{0x86}, edPub[:31]), KeyEd25519},
		"no point":             {template([]byte{0x81}, rk.N.Bytes()), KeyX25519},
		"truncated":            {rsaT[:40], KeyRSA},
		"unknown type":         {rsaT, KeyType(99)},
	} {
		if pub, err := PublicKeyFromTemplate(c.b, c.t); err == nil || !errors.Is(err, apdu.ErrMalformed) {
			t.Errorf("%s: got %T, %v; want ErrMalformed", name, pub, err)
		}
	}
}

func TestAlgorithmOf(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	xk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	pk, _ := ecdh.P256().GenerateKey(rand.Reader)
	n := new(big.Int).Lsh(big.NewInt(1), 3071)
	for _, c := range []struct {
		pub  crypto.PublicKey
		want string
	}{
		{&ek.PublicKey, "ECCP256"}, {edPub, "ED25519"}, {xk.PublicKey(), "X25519"}, {pk.PublicKey(), ""},
		{&rsa.PublicKey{N: n, E: 65537}, "RSA3072"}, {"no key", ""},
	} {
		if got := AlgorithmOf(c.pub); got != c.want {
			t.Errorf("AlgorithmOf(%T) = %q, want %q", c.pub, got, c.want)
		}
	}
}

func TestECDSAFromRaw(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		k, _ := ecdsa.GenerateKey(curve, rand.Reader)
		d := sha256.Sum256([]byte("message"))
		r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
		if err != nil {
			t.Fatal(err)
		}
		size := CurveSize(curve)
		raw := make([]byte, 2*size)
		r.FillBytes(raw[:size])
		s.FillBytes(raw[size:])
		der, err := ECDSAFromRaw(raw, size)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(&k.PublicKey, d[:], der) {
			t.Errorf("%s: converted signature does not verify", curve.Params().Name)
		}
		if err := VerifySignature(&k.PublicKey, ECDSADigest(curve, d[:]), der, crypto.SHA256); err != nil {
			t.Errorf("%s: VerifySignature of the card's input: %v", curve.Params().Name, err)
		}
	}
	for name, raw := range map[string][]byte{"empty": nil, "odd": make([]byte, 63), "zero r": append(make([]byte, 32), bytes.Repeat([]byte{1}, 32)...)} {
		if _, err := ECDSAFromRaw(raw, 32); !errors.Is(err, apdu.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestECDSADigest(t *testing.T) {
	long := bytes.Repeat([]byte{7}, 64)
	if got := ECDSADigest(elliptic.P256(), long); !bytes.Equal(got, long[:32]) {
		t.Errorf("cut: %x", got)
	}
	if got := ECDSADigest(elliptic.P384(), []byte{1, 2}); len(got) != 48 || got[46] != 1 || got[47] != 2 {
		t.Errorf("padded: %x", got)
	}
}

func TestVerifySignatureEd25519(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("the whole message")
	sig := ed25519.Sign(priv, msg)
	if err := VerifySignature(pub, msg, sig, crypto.Hash(0)); err != nil {
		t.Errorf("good signature: %v", err)
	}
	if err := VerifySignature(pub, []byte("another"), sig, crypto.Hash(0)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other message: %v", err)
	}
	if err := VerifySignature(pub, msg, sig, crypto.SHA256); err == nil {
		t.Error("Ed25519 with a hash: no error")
	}
}

func TestDigestInfo(t *testing.T) {
	d := sha256.Sum256(nil)
	di, err := DigestInfo(crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if h, got, ok := ParseDigestInfo(di); !ok || h != crypto.SHA256 || !bytes.Equal(got, d[:]) {
		t.Errorf("ParseDigestInfo(DigestInfo) = %v %x %v", h, got, ok)
	}
	if _, err := DigestInfo(crypto.SHA256, d[:7]); err == nil {
		t.Error("short digest accepted")
	}
	if _, err := DigestInfo(crypto.MD5, make([]byte, 16)); err == nil {
		t.Error("MD5 accepted")
	}
}

func TestCheckPIN(t *testing.T) {
	pins := []PINInfo{{ID: "pw1", Label: "PW1", Min: 6, Max: 8}}
	if _, err := CheckPIN(pins, "pw1", []byte("123456")); err != nil {
		t.Error(err)
	}
	if _, err := CheckPIN(pins, "pw9", []byte("123456")); !errors.Is(err, ErrNoPIN) {
		t.Errorf("unknown PIN: %v", err)
	}
	for _, pin := range []string{"", "12345", "123456789"} {
		_, err := CheckPIN(pins, "pw1", []byte(pin))
		if !errors.Is(err, ErrPINFormat) || (pin != "" && strings.Contains(err.Error(), pin)) {
			t.Errorf("PIN of %d bytes: %v", len(pin), err)
		}
	}
}

func TestPINError(t *testing.T) {
	for _, c := range []struct {
		sw             apdu.StatusWord
		retries        int
		wrong, blocked bool
		left           int
	}{
		{apdu.SWRetries(2), -1, true, false, 2},
		{apdu.SWRetries(0), -1, true, true, 0}, // 63C0 itself is of the wrong-PIN class
		{apdu.SWAuthBlocked, -1, false, true, 0},
		{apdu.SWSecurityStatusNotSatisfied, 2, true, false, 2}, // a YubiKey's wrong PW1: count from C4
		{apdu.SWSecurityStatusNotSatisfied, 0, false, true, 0}, // the last try
		{apdu.SWSecurityStatusNotSatisfied, -1, true, false, -1},
	} {
		err := NewPINError("pw1", c.sw, c.retries)
		var pe *PINError
		if !errors.As(err, &pe) || pe.Retries != c.left {
			t.Errorf("%v: %v, want a *PINError with %d tries", c.sw, err, c.left)
			continue
		}
		var sw apdu.StatusWord
		if errors.Is(err, apdu.ErrWrongPIN) != c.wrong || errors.Is(err, apdu.ErrBlocked) != c.blocked || !errors.As(err, &sw) || sw != c.sw {
			t.Errorf("%v (%d): wrong %v blocked %v sw %v", c.sw, c.retries, errors.Is(err, apdu.ErrWrongPIN), errors.Is(err, apdu.ErrBlocked), sw)
		}
	}
	for _, err := range []error{apdu.SWWrongData, errors.New("link"), nil} {
		if got := NewPINError("pw1", err, 3); got != err {
			t.Errorf("NewPINError(%v) = %v, want it unchanged", err, got)
		}
	}
}

func TestKeyring(t *testing.T) {
	var r Keyring
	loads := 0
	load := func(context.Context) ([]Key, error) { loads++; return []Key{{ID: "sig"}, {ID: "dec"}}, nil }
	ctx := context.Background()
	if k, err := r.Key(ctx, "dec", load); err != nil || k.ID != "dec" {
		t.Fatalf("Key(dec) = %v, %v", k, err)
	}
	if _, err := r.Key(ctx, "nope", load); !errors.Is(err, ErrNoKey) {
		t.Errorf("unknown key: %v", err)
	}
	if loads != 1 {
		t.Errorf("%d loads, want 1", loads)
	}
	var c KeyCache = &r
	c.UseKeys([]Key{{ID: "aut"}})
	if _, err := r.Key(ctx, "sig", load); !errors.Is(err, ErrNoKey) || loads != 1 {
		t.Errorf("after UseKeys: %v, %d loads", err, loads)
	}
	if _, err := (&Keyring{}).Key(ctx, "x", func(context.Context) ([]Key, error) { return nil, apdu.SWUnknown }); !errors.Is(err, apdu.SWUnknown) {
		t.Errorf("load error: %v", err)
	}
}

func TestCheckSigned(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	k := Key{ID: "sig", Public: priv.Public()}
	sig := ed25519.Sign(priv, []byte("m"))
	if got, err := CheckSigned(k, []byte("m"), sig, crypto.Hash(0)); err != nil || !bytes.Equal(got, sig) {
		t.Errorf("good: %v", err)
	}
	var bad *BadSignatureError
	if _, err := CheckSigned(k, []byte("n"), sig, crypto.Hash(0)); !errors.As(err, &bad) || !bytes.Equal(bad.Signature, sig) {
		t.Errorf("bad: %v", err)
	}
}

// FuzzPublicKeyFromTemplate: whatever a card answers, the parser returns a
// key of the asked type or an error, never both or neither.
func FuzzPublicKeyFromTemplate(f *testing.F) {
	f.Add(byte(KeyRSA), template([]byte{0x81}, bytes.Repeat([]byte{0xC1}, 256), []byte{0x82}, []byte{1, 0, 1}))
	f.Add(byte(KeyEd25519), template([]byte{0x86}, make([]byte, 32)))
	f.Fuzz(func(t *testing.T, kt byte, b []byte) {
		pub, err := PublicKeyFromTemplate(b, KeyType(kt%8))
		if (pub == nil) == (err == nil) {
			t.Fatalf("key %T, error %v", pub, err)
		}
		if err == nil && AlgorithmOf(pub) == "" {
			t.Fatalf("a key of no known algorithm: %T", pub)
		}
	})
}

// FuzzECDSAFromRaw: the DER form says the same r and s as the raw form.
func FuzzECDSAFromRaw(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0x80}, 64), 32)
	f.Add([]byte{0, 1, 0, 1}, 2)
	f.Fuzz(func(t *testing.T, raw []byte, size int) {
		der, err := ECDSAFromRaw(raw, size)
		if err != nil {
			return
		}
		var sig struct{ R, S *big.Int }
		if _, err := asn1Unmarshal(der, &sig); err != nil {
			t.Fatalf("not DER: %v", err)
		}
		if sig.R.Cmp(new(big.Int).SetBytes(raw[:size])) != 0 || sig.S.Cmp(new(big.Int).SetBytes(raw[size:])) != 0 {
			t.Fatalf("r, s changed")
		}
	})
}

// swCard answers every command with one status word.
type swCard apdu.StatusWord

func (s swCard) Transmit(context.Context, []byte) ([]byte, error) {
	return []byte{apdu.StatusWord(s).SW1(), apdu.StatusWord(s).SW2()}, nil
}

func TestSelect(t *testing.T) {
	for sw, want := range map[apdu.StatusWord]error{apdu.SWFileNotFound: ErrNotPresent, apdu.SWUnknown: apdu.SWUnknown, apdu.SWSuccess: nil} {
		_, err := Select(context.Background(), &apdu.Conn{T: swCard(sw)}, []byte{0xD2, 0x76})
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%v: %v, want %v", sw, err, want)
		}
	}
}
