// Package profiletest is the conformance suite every profile passes: the
// same assertions run against a profile's simulator in process, through a
// real pcscd, and against real cards.
//
// # Use
//
//	func TestConformance(t *testing.T) {
//		profiletest.Run(t, profiletest.Env{
//			Profile: piv.Profile{},
//			New:     func(t *testing.T) profiles.Transmitter { /* a fresh card */ },
//			PIN:     []byte("123456"),
//		})
//	}
//
// [Env.New] must return a card in its factory state each time it is called:
// some tests spend PIN tries until the PIN blocks.
package profiletest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// Env describes the implementation under test.
type Env struct {
	Profile profiles.Profile
	// New returns a transmitter to a card in its factory state.
	New func(t *testing.T) profiles.Transmitter
	// PIN is the card's correct PIN.
	PIN []byte
	// WrongPIN is a PIN of valid format that is not the card's PIN.
	WrongPIN []byte
	// Timeout bounds each operation; default 30 s.
	Timeout time.Duration
}

func (e Env) ctx(t *testing.T) context.Context {
	t.Helper()
	d := e.Timeout
	if d == 0 {
		d = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// counter counts the APDUs that reach the card.
type counter struct {
	t profiles.Transmitter
	n int
}

func (c *counter) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	c.n++
	return c.t.Transmit(ctx, cmd)
}

func (e Env) open(t *testing.T) (context.Context, profiles.Card) {
	ctx, card, _ := e.openCounted(t)
	return ctx, card
}

func (e Env) openCounted(t *testing.T) (context.Context, profiles.Card, *counter) {
	t.Helper()
	ctx := e.ctx(t)
	tx := &counter{t: e.New(t)}
	card, err := e.Profile.Open(ctx, tx)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return ctx, card, tx
}

// Run runs the suite.
func Run(t *testing.T, e Env) {
	if e.WrongPIN == nil {
		e.WrongPIN = []byte("000000")
	}
	if bytes.Equal(e.PIN, e.WrongPIN) {
		t.Fatal("profiletest: PIN and WrongPIN are the same")
	}
	t.Run("Info", func(t *testing.T) { testInfo(t, e) })
	t.Run("Keys", func(t *testing.T) { testKeys(t, e) })
	t.Run("SignAndVerify", func(t *testing.T) { testSign(t, e) })
	t.Run("PINRequired", func(t *testing.T) { testPINRequired(t, e) })
	t.Run("WrongPIN", func(t *testing.T) { testWrongPIN(t, e) })
	t.Run("Block", func(t *testing.T) { testBlock(t, e) })
	t.Run("Logout", func(t *testing.T) { testLogout(t, e) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, e) })
	t.Run("KeyCache", func(t *testing.T) { testKeyCache(t, e) })
}

// testKeyCache: a card given its keys (profiles.KeyCache) signs without
// reading its inventory again: VERIFY and the signature are all it sends.
func testKeyCache(t *testing.T, e Env) {
	ctx, card, tx := e.openCounted(t)
	_, ok := card.(profiles.KeyCache)
	if !ok {
		t.Skipf("%s cards do not implement profiles.KeyCache", e.Profile.Name())
	}
	ks := keys(t, ctx, card)
	// A second opening of the same card, as a server opens it per request.
	card2, err := e.Profile.Open(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	kc, _ := card2.(profiles.KeyCache)
	kc.UseKeys(ks)
	d := hashes[0].sum([]byte("cached"))
	for _, k := range ks {
		sent := tx.n
		sig := signOnce(t, ctx, e, card2, k, d, crypto.SHA256)
		verify(t, k, d, sig, crypto.SHA256)
		want := 2 // VERIFY, sign
		if k.PINPolicy == profiles.PINNever {
			want = 1
		}
		if got := tx.n - sent; got > want+2 { // +2: response or command chaining
			t.Errorf("key %s: %d APDUs for a signature with cached keys, want about %d", k.ID, got, want)
		}
	}
}

func testInfo(t *testing.T, e Env) {
	ctx, card := e.open(t)
	info, err := card.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.Profile != e.Profile.Name() {
		t.Errorf("Info().Profile = %q, want %q", info.Profile, e.Profile.Name())
	}
	if info.Serial == "" {
		t.Errorf("Info().Serial is empty")
	}
}

func keys(t *testing.T, ctx context.Context, card profiles.Card) []profiles.Key {
	t.Helper()
	ks, err := card.Keys(ctx)
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	if len(ks) == 0 {
		t.Fatal("Keys: none")
	}
	return ks
}

func testKeys(t *testing.T, e Env) {
	ctx, card := e.open(t)
	seen := map[string]bool{}
	for _, k := range keys(t, ctx, card) {
		if k.ID == "" || seen[k.ID] {
			t.Errorf("key ID %q empty or repeated", k.ID)
		}
		seen[k.ID] = true
		if k.Public == nil || k.Algorithm == "" {
			t.Errorf("key %s: public key %T, algorithm %q", k.ID, k.Public, k.Algorithm)
		}
		if k.PINPolicy < profiles.PINNever || k.PINPolicy > profiles.PINAlways {
			t.Errorf("key %s: PIN policy %v", k.ID, k.PINPolicy)
		}
		if k.Certificate != nil {
			if !publicEqual(k.Certificate.PublicKey, k.Public) {
				t.Errorf("key %s: certificate's public key differs from the key's", k.ID)
			}
		}
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

type hashCase struct {
	name string
	opts crypto.SignerOpts
	sum  func([]byte) []byte
}

var hashes = []hashCase{
	{"SHA256", crypto.SHA256, func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }},
	{"SHA384", crypto.SHA384, func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }},
	{"SHA512", crypto.SHA512, func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }},
}

// verify checks sig against the key's certificate when there is one, and the
// key otherwise.
func verify(t *testing.T, k profiles.Key, digest, sig []byte, opts crypto.SignerOpts) {
	t.Helper()
	pub := k.Public
	if k.Certificate != nil {
		pub = k.Certificate.PublicKey
	}
	var err error
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(p, digest, sig) {
			err = errors.New("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(p, pss.Hash, digest, sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(p, opts.HashFunc(), digest, sig)
		}
	default:
		t.Fatalf("key %s: public key type %T", k.ID, pub)
	}
	if err != nil {
		t.Errorf("key %s: %v", k.ID, err)
	}
	if k.Certificate != nil && k.Certificate.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm {
		t.Errorf("key %s: certificate of unknown algorithm", k.ID)
	}
}

// signOnce verifies the PIN if the key needs it and signs.
func signOnce(t *testing.T, ctx context.Context, e Env, card profiles.Card, k profiles.Key, digest []byte, opts crypto.SignerOpts) []byte {
	t.Helper()
	if k.PINPolicy != profiles.PINNever {
		if err := card.VerifyPIN(ctx, e.PIN); err != nil {
			t.Fatalf("VerifyPIN: %v", err)
		}
	}
	sig, err := card.Sign(ctx, k.ID, digest, opts)
	if err != nil {
		t.Fatalf("Sign(%s, %T): %v", k.ID, opts, err)
	}
	return sig
}

func testSign(t *testing.T, e Env) {
	ctx, card := e.open(t)
	msg := []byte("pscs conformance: the document to sign")
	for _, k := range keys(t, ctx, card) {
		for _, h := range hashes {
			t.Run(k.ID+"/"+h.name, func(t *testing.T) {
				d := h.sum(msg)
				sig := signOnce(t, ctx, e, card, k, d, h.opts)
				verify(t, k, d, sig, h.opts)
			})
		}
		if _, ok := k.Public.(*rsa.PublicKey); ok {
			t.Run(k.ID+"/PSS", func(t *testing.T) {
				d := hashes[0].sum(msg)
				opts := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
				sig := signOnce(t, ctx, e, card, k, d, opts)
				verify(t, k, d, sig, opts)
			})
		}
	}
}

func testPINRequired(t *testing.T, e Env) {
	ctx, card := e.open(t)
	d := hashes[0].sum([]byte("no PIN"))
	for _, k := range keys(t, ctx, card) {
		_, err := card.Sign(ctx, k.ID, d, crypto.SHA256)
		switch k.PINPolicy {
		case profiles.PINNever:
			if err != nil {
				t.Errorf("key %s (PIN never): Sign without PIN: %v", k.ID, err)
			}
		default:
			if !errors.Is(err, apdu.ErrSecurityStatus) {
				t.Errorf("key %s (PIN %v): Sign without PIN: got %v, want security status not satisfied", k.ID, k.PINPolicy, err)
			}
		}
	}
	// A PIN-always key needs the PIN before every signature.
	for _, k := range keys(t, ctx, card) {
		if k.PINPolicy != profiles.PINAlways {
			continue
		}
		signOnce(t, ctx, e, card, k, d, crypto.SHA256)
		if _, err := card.Sign(ctx, k.ID, d, crypto.SHA256); !errors.Is(err, apdu.ErrSecurityStatus) {
			t.Errorf("key %s (PIN always): second Sign after one VerifyPIN: got %v, want security status not satisfied", k.ID, err)
		}
	}
}

func pinStatus(t *testing.T, ctx context.Context, card profiles.Card) profiles.PINStatus {
	t.Helper()
	st, err := card.PINStatus(ctx)
	if err != nil {
		t.Fatalf("PINStatus: %v", err)
	}
	return st
}

func testWrongPIN(t *testing.T, e Env) {
	ctx, card := e.open(t)
	before := pinStatus(t, ctx, card)
	if before.Verified || before.Blocked || before.Retries < 2 {
		t.Fatalf("fresh card PINStatus = %+v, want unverified with at least 2 tries", before)
	}
	err := card.VerifyPIN(ctx, e.WrongPIN)
	if !errors.Is(err, apdu.ErrWrongPIN) {
		t.Fatalf("VerifyPIN(wrong) = %v, want an error matching apdu.ErrWrongPIN", err)
	}
	var sw apdu.StatusWord
	if !errors.As(err, &sw) {
		t.Fatalf("VerifyPIN(wrong) error %v does not unwrap to a status word", err)
	}
	if n, ok := sw.Retries(); !ok || n != before.Retries-1 {
		t.Errorf("status word %v retries = %d, %v; want %d", sw, n, ok, before.Retries-1)
	}
	if got := pinStatus(t, ctx, card); got.Retries != before.Retries-1 || got.Verified {
		t.Errorf("PINStatus after a wrong PIN = %+v, want %d tries, unverified", got, before.Retries-1)
	}
	if bytes.Contains([]byte(err.Error()), e.WrongPIN) {
		t.Errorf("error %q shows the PIN", err)
	}
	// The right PIN restores the counter.
	if err := card.VerifyPIN(ctx, e.PIN); err != nil {
		t.Fatalf("VerifyPIN(right): %v", err)
	}
	got := pinStatus(t, ctx, card)
	if !got.Verified {
		t.Errorf("PINStatus after the right PIN = %+v, want verified", got)
	}
	if got.Retries >= 0 && got.Retries != before.Retries {
		t.Errorf("PINStatus after the right PIN: %d tries, want %d", got.Retries, before.Retries)
	}
}

func testBlock(t *testing.T, e Env) {
	ctx, card := e.open(t)
	n := pinStatus(t, ctx, card).Retries
	for i := n; i > 0; i-- {
		err := card.VerifyPIN(ctx, e.WrongPIN)
		if i > 1 && !errors.Is(err, apdu.ErrWrongPIN) {
			t.Fatalf("wrong PIN with %d tries left: %v, want wrong PIN", i, err)
		}
		if i == 1 && !errors.Is(err, apdu.ErrBlocked) {
			t.Fatalf("last wrong PIN: %v, want blocked", err)
		}
	}
	if st := pinStatus(t, ctx, card); !st.Blocked || st.Retries != 0 {
		t.Errorf("PINStatus after %d wrong PINs = %+v, want blocked", n, st)
	}
	if err := card.VerifyPIN(ctx, e.PIN); !errors.Is(err, apdu.ErrBlocked) {
		t.Errorf("right PIN on a blocked card: %v, want blocked", err)
	}
	for _, k := range keys(t, ctx, card) {
		if k.PINPolicy == profiles.PINNever {
			continue
		}
		if _, err := card.Sign(ctx, k.ID, hashes[0].sum([]byte("x")), crypto.SHA256); err == nil {
			t.Errorf("key %s signed on a card with a blocked PIN", k.ID)
		}
	}
}

func testLogout(t *testing.T, e Env) {
	ctx, card := e.open(t)
	if err := card.VerifyPIN(ctx, e.PIN); err != nil {
		t.Fatalf("VerifyPIN: %v", err)
	}
	if err := card.Logout(ctx); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if st := pinStatus(t, ctx, card); st.Verified {
		t.Errorf("PINStatus after Logout = %+v, want unverified", st)
	}
	for _, k := range keys(t, ctx, card) {
		if k.PINPolicy == profiles.PINNever {
			continue
		}
		if _, err := card.Sign(ctx, k.ID, hashes[0].sum([]byte("x")), crypto.SHA256); !errors.Is(err, apdu.ErrSecurityStatus) {
			t.Errorf("key %s: Sign after Logout: %v, want security status not satisfied", k.ID, err)
		}
	}
}

func testBadInput(t *testing.T, e Env) {
	ctx, card, tx := e.openCounted(t)
	if _, err := card.Sign(ctx, "no such key", make([]byte, 32), crypto.SHA256); !errors.Is(err, profiles.ErrNoKey) {
		t.Errorf("Sign with an unknown key: %v, want profiles.ErrNoKey", err)
	}
	before := pinStatus(t, ctx, card)
	sent := tx.n
	for _, pin := range [][]byte{nil, []byte("1"), bytes.Repeat([]byte("1"), 200)} {
		if err := card.VerifyPIN(ctx, pin); err == nil {
			t.Errorf("VerifyPIN(%d bytes) succeeded", len(pin))
		}
	}
	if tx.n != sent {
		t.Errorf("malformed PINs reached the card: %d APDUs sent", tx.n-sent)
	}
	if after := pinStatus(t, ctx, card); after.Retries != before.Retries {
		t.Errorf("malformed PINs cost tries: %d -> %d", before.Retries, after.Retries)
	}
	if err := card.VerifyPIN(ctx, e.PIN); err != nil {
		t.Fatalf("VerifyPIN: %v", err)
	}
	for _, k := range keys(t, ctx, card) {
		if _, ok := k.Public.(*rsa.PublicKey); ok {
			// A digest that does not match its hash is refused before the card.
			sent := tx.n
			if _, err := card.Sign(ctx, k.ID, make([]byte, 7), crypto.SHA256); err == nil {
				t.Errorf("key %s: RSA Sign with a 7-byte SHA-256 digest succeeded", k.ID)
			}
			if tx.n != sent {
				t.Errorf("key %s: a malformed digest reached the card", k.ID)
			}
		}
	}
}
