package profiletest_test

// The suite's self-test: a small card application with two PINs that
// answers as several OpenPGP implementations do (a wrong VERIFY with 69 82,
// an empty VERIFY of an unverified PIN with 6A 80, the tries left only in a
// data object), simulated on simkit and driven by a small driver that
// keeps to the profiles.Card contract without faking a status word.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/profiletest"
	"github.com/pscs/pscs/profiles/simkit"
)

var selfAID = []byte{0xF0, 0x70, 0x73, 0x63, 0x73, 0x74}

// The card: VERIFY P2 81 (PIN "sign", before every signature with key 1)
// and 82 (PIN "auth", once, key 2); GET DATA 00 4F the serial, 00 C4 the
// tries left of both PINs, 00 01 and 00 02 the keys' points; PSO:CDS
// (2A 9E 9A) signs with key 1, INTERNAL AUTHENTICATE (88) with key 2.
type selfApplet struct {
	pins     [2]*simkit.PIN
	verified [2]bool
	keys     [2]*ecdsa.PrivateKey
}

func (a *selfApplet) Reset() { a.verified = [2]bool{} }

func (a *selfApplet) Handle(cmd apdu.Command) simkit.Reply {
	switch cmd.INS {
	case 0xA4:
		if !bytes.Equal(cmd.Data, selfAID) {
			return simkit.Status(apdu.SWFileNotFound)
		}
		return simkit.OK(nil)
	case 0x20:
		i := int(cmd.P2) - 0x81
		if i < 0 || i > 1 {
			return simkit.Status(apdu.SWRefNotFound)
		}
		switch {
		case cmd.P1 == 0xFF:
			a.verified[i] = false
			return simkit.OK(nil)
		case len(cmd.Data) == 0 && a.verified[i]:
			return simkit.OK(nil)
		case len(cmd.Data) == 0:
			return simkit.Status(apdu.SWWrongData) // 6A 80, not 63 Cx
		}
		st := a.pins[i].Check(cmd.Data)
		a.verified[i] = st == apdu.SWSuccess
		return simkit.Status(st)
	case 0xCA:
		switch int(cmd.P1)<<8 | int(cmd.P2) {
		case 0x004F:
			return simkit.OK([]byte{0x12, 0x34, 0x56, 0x78})
		case 0x00C4:
			return simkit.OK([]byte{byte(a.pins[0].Left), byte(a.pins[1].Left)})
		case 0x0001, 0x0002:
			pub, _ := a.keys[cmd.P2-1].PublicKey.ECDH()
			return simkit.OK(pub.Bytes())
		}
		return simkit.Status(apdu.SWRefNotFound)
	case 0x2A, 0x88:
		i := 0
		if cmd.INS == 0x88 {
			i = 1
		}
		if !a.verified[i] || a.pins[i].Blocked() {
			return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
		}
		if i == 0 {
			a.verified[0] = false // PIN before every signature
		}
		sig, err := ecdsa.SignASN1(rand.Reader, a.keys[i], cmd.Data)
		if err != nil {
			return simkit.Status(apdu.SWWrongData)
		}
		return simkit.OK(sig)
	}
	return simkit.Status(apdu.SWINSNotSupported)
}

func newSelfCard(t *testing.T) *simkit.Card {
	a := &selfApplet{}
	for i := range a.pins {
		a.pins[i] = simkit.NewPIN([]byte(fmt.Sprintf("12345%d", i+1)), 3)
		a.pins[i].WrongSW = apdu.SWSecurityStatusNotSatisfied // 69 82
		k, err := simkit.GenerateKey(simkit.ECCP256, []byte(t.Name()), fmt.Sprint("key", i))
		if err != nil {
			t.Fatal(err)
		}
		a.keys[i] = k.(*ecdsa.PrivateKey)
	}
	return simkit.New(a, simkit.Options{ATR: []byte{0x3B, 0x80, 0x80, 0x01, 0x01}})
}

// The driver.

type selfProfile struct{}

func (selfProfile) Name() string { return "selftest" }

func (selfProfile) Open(ctx context.Context, t profiles.Transmitter) (profiles.Card, error) {
	c := &selfCard{conn: apdu.Conn{T: t}}
	if _, err := c.conn.Do(ctx, apdu.Command{INS: 0xA4, P1: 0x04, Data: selfAID}); err != nil {
		if errors.Is(err, apdu.ErrNotFound) {
			return nil, fmt.Errorf("selftest: %w", profiles.ErrNotPresent)
		}
		return nil, err
	}
	return c, nil
}

type selfCard struct{ conn apdu.Conn }

var selfPINs = []profiles.PINInfo{
	{ID: "sign", Label: "signature PIN", Min: 6, Max: 8},
	{ID: "auth", Label: "authentication PIN", Min: 6, Max: 8},
}

func (c *selfCard) PINs() []profiles.PINInfo { return append([]profiles.PINInfo(nil), selfPINs...) }

func pinRef(id string) (byte, int, error) {
	for i, p := range selfPINs {
		if p.ID == id {
			return byte(0x81 + i), i, nil
		}
	}
	return 0, 0, fmt.Errorf("selftest: PIN %q: %w", id, profiles.ErrNoPIN)
}

func (c *selfCard) Info(ctx context.Context) (profiles.Info, error) {
	b, err := c.conn.Do(ctx, apdu.Command{INS: 0xCA, P2: 0x4F, Ne: 256})
	if err != nil {
		return profiles.Info{}, err
	}
	return profiles.Info{Profile: "selftest", Serial: hex.EncodeToString(b), Label: "profiletest self-test card"}, nil
}

func (c *selfCard) Keys(ctx context.Context) ([]profiles.Key, error) {
	var ks []profiles.Key
	for i, k := range []profiles.Key{
		{ID: "sign", Label: "signature", PINPolicy: profiles.PINAlways, PIN: "sign"},
		{ID: "auth", Label: "authentication", PINPolicy: profiles.PINOnce, PIN: "auth"},
	} {
		b, err := c.conn.Do(ctx, apdu.Command{INS: 0xCA, P2: byte(i + 1), Ne: 256})
		if err != nil {
			return nil, err
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
		if err != nil {
			return nil, fmt.Errorf("selftest: key %s: %w", k.ID, err)
		}
		k.Public, k.Algorithm = pub, "ECCP256"
		ks = append(ks, k)
	}
	return ks, nil
}

// wrongPIN is how the driver says "wrong PIN" for a card that answers a
// wrong VERIFY with 69 82: it matches apdu.ErrWrongPIN and unwraps to the
// card's real status word.
type wrongPIN struct{ sw apdu.StatusWord }

func (e *wrongPIN) Error() string        { return "selftest: wrong PIN (" + e.sw.String() + ")" }
func (e *wrongPIN) Unwrap() error        { return e.sw }
func (e *wrongPIN) Is(target error) bool { return target == apdu.ErrWrongPIN }

func (c *selfCard) VerifyPIN(ctx context.Context, id string, pin []byte) error {
	ref, i, err := pinRef(id)
	if err != nil {
		return err
	}
	if len(pin) < selfPINs[i].Min || len(pin) > selfPINs[i].Max {
		return errors.New("selftest: PIN must be 6 to 8 bytes")
	}
	_, err = c.conn.Do(ctx, apdu.Command{INS: 0x20, P2: ref, Data: pin})
	var sw apdu.StatusWord
	if errors.As(err, &sw) && sw == apdu.SWSecurityStatusNotSatisfied {
		return &wrongPIN{sw}
	}
	return err
}

func (c *selfCard) PINStatus(ctx context.Context, id string) (profiles.PINStatus, error) {
	ref, i, err := pinRef(id)
	if err != nil {
		return profiles.PINStatus{}, err
	}
	tries, err := c.conn.Do(ctx, apdu.Command{INS: 0xCA, P2: 0xC4, Ne: 256})
	if err != nil {
		return profiles.PINStatus{}, err
	}
	if len(tries) != 2 {
		return profiles.PINStatus{}, errors.New("selftest: malformed PIN status")
	}
	st := profiles.PINStatus{Retries: int(tries[i]), Blocked: tries[i] == 0}
	_, err = c.conn.Do(ctx, apdu.Command{INS: 0x20, P2: ref})
	switch {
	case err == nil:
		st.Verified = true
	case errors.Is(err, apdu.ErrWrongData): // 6A 80: not verified
	default:
		return profiles.PINStatus{}, err
	}
	return st, nil
}

func (c *selfCard) Sign(ctx context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ins := map[string]apdu.Command{
		"sign": {INS: 0x2A, P1: 0x9E, P2: 0x9A},
		"auth": {INS: 0x88},
	}
	cmd, ok := ins[id]
	if !ok {
		return nil, fmt.Errorf("selftest: key %q: %w", id, profiles.ErrNoKey)
	}
	cmd.Data, cmd.Ne = digest, 256
	return c.conn.Do(ctx, cmd)
}

func (c *selfCard) Logout(ctx context.Context) error {
	for _, ref := range []byte{0x81, 0x82} {
		if _, err := c.conn.Do(ctx, apdu.Command{INS: 0x20, P1: 0xFF, P2: ref}); err != nil {
			return err
		}
	}
	return nil
}

// TestSelf: a card with two PINs that answers a wrong VERIFY with 69 82
// and an empty one with 6A 80 passes the suite, its retries read through
// PINStatus.
func TestSelf(t *testing.T) {
	profiletest.Run(t, profiletest.Env{
		Profile: selfProfile{},
		New:     func(t *testing.T) profiles.Transmitter { return newSelfCard(t) },
		PINs:    map[string][]byte{"sign": []byte("123451"), "auth": []byte("123452")},
		PIN:     []byte("999999"),
	})
}

// TestSelfCardAnswers: the simulated card really answers as the self-test
// claims, so that the suite is judged against 69 82 and 6A 80.
func TestSelfCardAnswers(t *testing.T) {
	card := newSelfCard(t)
	ctx := t.Context()
	do := func(cmd apdu.Command) apdu.StatusWord {
		b, _ := cmd.MarshalBinary()
		rsp, err := card.Transmit(ctx, b)
		if err != nil || len(rsp) < 2 {
			t.Fatalf("%v: %x, %v", cmd, rsp, err)
		}
		return apdu.StatusWord(uint16(rsp[len(rsp)-2])<<8 | uint16(rsp[len(rsp)-1]))
	}
	do(apdu.Command{INS: 0xA4, P1: 4, Data: selfAID})
	if sw := do(apdu.Command{INS: 0x20, P2: 0x81, Data: []byte("000000")}); sw != 0x6982 {
		t.Errorf("wrong VERIFY: %v, want 69 82", sw)
	}
	if sw := do(apdu.Command{INS: 0x20, P2: 0x81}); sw != 0x6A80 {
		t.Errorf("empty VERIFY: %v, want 6A 80", sw)
	}
}
