package esteid_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/esteid"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/profiletest"
	"github.com/pscs/pscs/profiles/registry"
)

// conformance is the suite's environment on a card that new makes.
func conformance(new func(t *testing.T) profiles.Transmitter) profiletest.Env {
	return profiletest.Env{
		Profile: esteid.Profile{},
		New:     new,
		PINs:    map[string][]byte{esteid.PIN1: []byte("1234"), esteid.PIN2: []byte("12345")},
	}
}

func newSim(t testing.TB, seed string) *eidsim.Card {
	t.Helper()
	card, err := eidsim.New(eidsim.Config{Seed: []byte(seed)})
	if err != nil {
		t.Fatal(err)
	}
	return card
}

// TestConformance runs the profile suite against the simulator in process.
func TestConformance(t *testing.T) {
	profiletest.Run(t, conformance(func(t *testing.T) profiles.Transmitter { return newSim(t, t.Name()) }))
}

func open(t *testing.T, tx profiles.Transmitter) *esteid.Card {
	t.Helper()
	c, err := esteid.Open(context.Background(), tx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCardAsTheSimulatorSays: serial, keys, certificates and PINs are the
// card's, as eidsim describes it independently of the driver.
func TestCardAsTheSimulatorSays(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t, "facts")
	c := open(t, sim)
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Serial != sim.Person().DocumentNumber || info.Profile != "esteid" {
		t.Errorf("Info = %+v, want serial %s", info, sim.Person().DocumentNumber)
	}
	ks, err := c.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id     string
		key    eidsim.Key
		pin    string
		policy profiles.PINPolicy
		dec    bool
	}{{"81", eidsim.KeyAuthentication, esteid.PIN1, profiles.PINOnce, true}, {"9f", eidsim.KeySignature, esteid.PIN2, profiles.PINAlways, false}}
	if len(ks) != len(want) {
		t.Fatalf("%d keys, want %d", len(ks), len(want))
	}
	for i, w := range want {
		k := ks[i]
		if k.ID != w.id || k.PIN != w.pin || k.PINPolicy != w.policy || k.Decrypt != w.dec || k.Algorithm != "ECCP384" {
			t.Errorf("key %d = %s %s %v decrypt %v %s, want %+v", i, k.ID, k.PIN, k.PINPolicy, k.Decrypt, k.Algorithm, w)
		}
		if !k.Certificate.Equal(sim.Certificate(w.key)) || !sim.PublicKey(w.key).Equal(k.Public) {
			t.Errorf("key %s: certificate or public key not the card's", k.ID)
		}
	}
	if ids := []string{c.PINs()[0].ID, c.PINs()[1].ID}; len(c.PINs()) != 2 || ids[0] != "pin1" || ids[1] != "pin2" {
		t.Errorf("PINs = %+v, want pin1, pin2 (no PUK)", c.PINs())
	}
	if e, ok := registry.Lookup("esteid"); !ok || e.Profile == nil {
		t.Error("esteid has no driver in the registry")
	}
}

// TestPINsCountApart: a wrong PIN2 costs a try of PIN2 only, and the
// driver reads the counts the card keeps.
func TestPINsCountApart(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t, "apart")
	c := open(t, sim)
	err := c.VerifyPIN(ctx, esteid.PIN2, []byte("99999"))
	var sw apdu.StatusWord
	if !errors.Is(err, apdu.ErrWrongPIN) || !errors.As(err, &sw) || sw != 0x63C2 {
		t.Fatalf("wrong PIN2: %v", err)
	}
	if sim.Retries(eidsim.PIN2) != 2 || sim.Retries(eidsim.PIN1) != 3 {
		t.Errorf("card counters PIN1 %d PIN2 %d, want 3 and 2", sim.Retries(eidsim.PIN1), sim.Retries(eidsim.PIN2))
	}
	for id, n := range map[string]int{esteid.PIN1: 3, esteid.PIN2: 2} {
		if st, err := c.PINStatus(ctx, id); err != nil || st.Retries != n || st.Verified {
			t.Errorf("PINStatus(%s) = %+v, %v, want %d tries", id, st, err, n)
		}
	}
	if sim.Retries(eidsim.PIN2) != 2 {
		t.Error("PINStatus spent a try")
	}
	for _, pin := range []string{"12a4", "123", "1234567890123"} {
		if err := c.VerifyPIN(ctx, esteid.PIN1, []byte(pin)); !errors.Is(err, profiles.ErrPINFormat) {
			t.Errorf("PIN1 %q: %v, want ErrPINFormat", pin, err)
		}
	}
}

// TestDeriveECDH: key 81 agrees the same secret as the peer computes with
// the key's public key; the signature key and a point off the curve are
// refused before the card.
func TestDeriveECDH(t *testing.T) {
	ctx := context.Background()
	sim := newSim(t, "ecdh")
	c := open(t, sim)
	peer, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeriveECDH(ctx, "81", peer.PublicKey().Bytes()); !errors.Is(err, apdu.ErrSecurityStatus) {
		t.Errorf("derive without PIN1: %v, want security status", err)
	}
	if err := c.VerifyPIN(ctx, esteid.PIN1, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	got, err := c.DeriveECDH(ctx, "81", peer.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	cardPub, _ := sim.PublicKey(eidsim.KeyAuthentication).ECDH()
	want, _ := peer.ECDH(cardPub)
	if !bytes.Equal(got, want) {
		t.Error("shared secret differs from the peer's")
	}
	if _, err := c.DeriveECDH(ctx, "9f", peer.PublicKey().Bytes()); !errors.Is(err, profiles.ErrKeyUsage) {
		t.Errorf("derive with 9f: %v, want ErrKeyUsage", err)
	}
	bad := bytes.Clone(peer.PublicKey().Bytes())
	bad[len(bad)-1] ^= 1
	if _, err := c.DeriveECDH(ctx, "81", bad); err == nil {
		t.Error("a point off the curve was accepted")
	}
	if _, err := c.Decrypt(ctx, "81", make([]byte, 48), nil); !errors.Is(err, profiles.ErrKeyUsage) {
		t.Errorf("Decrypt: %v, want ErrKeyUsage", err)
	}
}

// tamper flips a bit of the raw signature the card answers.
type tamper struct{ card *eidsim.Card }

func (t tamper) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	rsp, err := t.card.Transmit(ctx, cmd)
	if err == nil && len(cmd) > 1 && (cmd[1] == 0x88 || cmd[1] == 0x2A) && len(rsp) > 4 {
		rsp[10] ^= 0x01
	}
	return rsp, err
}

func TestBadCardSignatureRefused(t *testing.T) {
	ctx := context.Background()
	c := open(t, tamper{newSim(t, "tamper")})
	d := sha512.Sum384([]byte("x"))
	for _, k := range []struct{ id, pin, value string }{{"81", esteid.PIN1, "1234"}, {"9f", esteid.PIN2, "12345"}} {
		if err := c.VerifyPIN(ctx, k.pin, []byte(k.value)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx, k.id, d[:], crypto.SHA384); !errors.Is(err, profiles.ErrBadSignature) {
			t.Errorf("key %s: a corrupted signature gave %v", k.id, err)
		}
	}
}

// TestNotAnEstEID: a PIV card is not taken for an EstEID.
func TestNotAnEstEID(t *testing.T) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("piv")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := esteid.Open(context.Background(), card); !errors.Is(err, profiles.ErrNotPresent) {
		t.Errorf("Open on a PIV card: %v, want ErrNotPresent", err)
	}
}
