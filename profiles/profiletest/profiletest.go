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
//
// # What it checks
//
// The contract in the docs of profiles.Card, point by point: Info
// (non-empty serial), Keys (unique IDs, certificate key = key's public
// key, each key naming one of the card's PINs), PINs, signatures that
// verify, ErrSecurityStatus without the key's PIN and for a second
// signature of a PIN-always key, wrong PINs (ErrWrongPIN with the card's
// status word, the retry count read through PINStatus, so that cards that
// answer a wrong VERIFY with 69 82 and an empty one with 6A 80 pass as
// well as those that answer 63 Cx), blocking, Logout, malformed PINs and
// unknown PIN IDs that never reach the card, and KeyCache. Each PIN test
// runs for every PIN of the card, on a fresh card.
//
// Ed25519 keys sign the message itself (crypto.Hash(0)) where other keys
// sign a digest; keys marked NoSign must refuse Sign with
// profiles.ErrKeyUsage before any APDU, and are left out of the signature
// tests; an RSA key may refuse PSS the same way (OpenPGP cards do PKCS #1
// v1.5 only).
package profiletest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
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
	// PIN is the card's correct PIN, of every PIN that PINs does not name.
	PIN []byte
	// PINs holds the correct PIN by PIN ID, for cards with several.
	PINs map[string][]byte
	// WrongPIN is a PIN of valid format that is not the card's PIN.
	WrongPIN []byte
	// Timeout bounds each operation; default 30 s.
	Timeout time.Duration
}

// pin returns the correct PIN of PIN id.
func (e Env) pin(id string) []byte {
	if p, ok := e.PINs[id]; ok {
		return p
	}
	return e.PIN
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
	for id, p := range e.PINs {
		if bytes.Equal(p, e.WrongPIN) {
			t.Fatalf("profiletest: PIN %s and WrongPIN are the same", id)
		}
	}
	t.Run("Info", func(t *testing.T) { testInfo(t, e) })
	t.Run("PINs", func(t *testing.T) { testPINs(t, e) })
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
	for _, k := range signers(ks) {
		d, opts := sample(k, []byte("cached"))
		sent := tx.n
		sig := signOnce(t, ctx, e, card2, k, d, opts)
		verify(t, k, d, sig, opts)
		want := 2 // VERIFY, sign
		if k.PINPolicy == profiles.PINNever {
			want = 1
		}
		if got := tx.n - sent; got > want+2 { // +2: response or command chaining
			t.Errorf("key %s: %d APDUs for a signature with cached keys, want about %d", k.ID, got, want)
		}
	}
}

func testPINs(t *testing.T, e Env) {
	_, card := e.open(t)
	ps := card.PINs()
	if len(ps) == 0 {
		t.Fatal("PINs: none")
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if p.ID == "" || seen[p.ID] {
			t.Errorf("PIN ID %q empty or repeated", p.ID)
		}
		seen[p.ID] = true
		if p.Label == "" || p.Min < 1 || p.Max < p.Min {
			t.Errorf("PIN %s: label %q, length %d to %d", p.ID, p.Label, p.Min, p.Max)
		}
	}
}

// eachPIN runs f for every PIN of the card, each on a fresh card.
func eachPIN(t *testing.T, e Env, f func(t *testing.T, ctx context.Context, card profiles.Card, p profiles.PINInfo)) {
	_, card := e.open(t)
	for _, p := range card.PINs() {
		t.Run(p.ID, func(t *testing.T) {
			ctx, card := e.open(t)
			f(t, ctx, card, p)
		})
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
		if k.PINPolicy != profiles.PINNever {
			if _, ok := profiles.FindPIN(card.PINs(), k.PIN); !ok {
				t.Errorf("key %s (PIN %v) names PIN %q, not one of the card's", k.ID, k.PINPolicy, k.PIN)
			}
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

// signers returns the keys of ks that sign.
func signers(ks []profiles.Key) []profiles.Key {
	var out []profiles.Key
	for _, k := range ks {
		if !k.NoSign {
			out = append(out, k)
		}
	}
	return out
}

// sample is what key k signs for a test of msg: the SHA-256 digest, or
// msg itself for Ed25519.
func sample(k profiles.Key, msg []byte) ([]byte, crypto.SignerOpts) {
	if _, ok := k.Public.(ed25519.PublicKey); ok {
		return msg, crypto.Hash(0)
	}
	return hashes[0].sum(msg), crypto.SHA256
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
	case ed25519.PublicKey:
		if opts.HashFunc() != 0 || !ed25519.Verify(p, digest, sig) {
			err = errors.New("Ed25519 signature does not verify")
		}
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
		if err := card.VerifyPIN(ctx, k.PIN, e.pin(k.PIN)); err != nil {
			t.Fatalf("VerifyPIN(%s): %v", k.PIN, err)
		}
	}
	sig, err := card.Sign(ctx, k.ID, digest, opts)
	if err != nil {
		t.Fatalf("Sign(%s, %T): %v", k.ID, opts, err)
	}
	return sig
}

func testSign(t *testing.T, e Env) {
	ctx, card, tx := e.openCounted(t)
	msg := []byte("pscs conformance: the document to sign")
	for _, k := range signers(keys(t, ctx, card)) {
		if _, ok := k.Public.(ed25519.PublicKey); ok {
			t.Run(k.ID+"/Ed25519", func(t *testing.T) {
				sig := signOnce(t, ctx, e, card, k, msg, crypto.Hash(0))
				verify(t, k, msg, sig, crypto.Hash(0))
			})
			continue
		}
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
				sent := tx.n
				if _, err := card.Sign(ctx, k.ID, d, opts); errors.Is(err, profiles.ErrKeyUsage) {
					if tx.n != sent {
						t.Errorf("PSS refused with ErrKeyUsage after %d APDUs, want none", tx.n-sent)
					}
					return // the card does PKCS #1 v1.5 only
				}
				sig := signOnce(t, ctx, e, card, k, d, opts)
				verify(t, k, d, sig, opts)
			})
		}
	}
}

func testPINRequired(t *testing.T, e Env) {
	ctx, card := e.open(t)
	for _, k := range signers(keys(t, ctx, card)) {
		d, opts := sample(k, []byte("no PIN"))
		_, err := card.Sign(ctx, k.ID, d, opts)
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
	for _, k := range signers(keys(t, ctx, card)) {
		if k.PINPolicy != profiles.PINAlways {
			continue
		}
		d, opts := sample(k, []byte("always"))
		signOnce(t, ctx, e, card, k, d, opts)
		if _, err := card.Sign(ctx, k.ID, d, opts); !errors.Is(err, apdu.ErrSecurityStatus) {
			t.Errorf("key %s (PIN always): second Sign after one VerifyPIN: got %v, want security status not satisfied", k.ID, err)
		}
	}
}

func pinStatus(t *testing.T, ctx context.Context, card profiles.Card, id string) profiles.PINStatus {
	t.Helper()
	st, err := card.PINStatus(ctx, id)
	if err != nil {
		t.Fatalf("PINStatus(%s): %v", id, err)
	}
	return st
}

// testWrongPIN: a wrong PIN matches apdu.ErrWrongPIN and unwraps to the
// card's status word; the count of tries it left is read through
// PINStatus (and, where the status word carries one, 63 Cx, it agrees).
func testWrongPIN(t *testing.T, e Env) {
	eachPIN(t, e, func(t *testing.T, ctx context.Context, card profiles.Card, p profiles.PINInfo) {
		before := pinStatus(t, ctx, card, p.ID)
		if before.Verified || before.Blocked || before.Retries < 2 {
			t.Fatalf("fresh card PINStatus = %+v, want unverified with at least 2 tries", before)
		}
		err := card.VerifyPIN(ctx, p.ID, e.WrongPIN)
		if !errors.Is(err, apdu.ErrWrongPIN) {
			t.Fatalf("VerifyPIN(wrong) = %v, want an error matching apdu.ErrWrongPIN", err)
		}
		var sw apdu.StatusWord
		if !errors.As(err, &sw) {
			t.Fatalf("VerifyPIN(wrong) error %v does not unwrap to a status word", err)
		}
		if n, ok := sw.Retries(); ok && n != before.Retries-1 {
			t.Errorf("status word %v says %d tries left; want %d", sw, n, before.Retries-1)
		}
		if got := pinStatus(t, ctx, card, p.ID); got.Retries != before.Retries-1 || got.Verified {
			t.Errorf("PINStatus after a wrong PIN = %+v, want %d tries, unverified", got, before.Retries-1)
		}
		if bytes.Contains([]byte(err.Error()), e.WrongPIN) {
			t.Errorf("error %q shows the PIN", err)
		}
		// The right PIN restores the counter.
		if err := card.VerifyPIN(ctx, p.ID, e.pin(p.ID)); err != nil {
			t.Fatalf("VerifyPIN(right): %v", err)
		}
		got := pinStatus(t, ctx, card, p.ID)
		if !got.Verified {
			t.Errorf("PINStatus after the right PIN = %+v, want verified", got)
		}
		if got.Retries >= 0 && got.Retries != before.Retries {
			t.Errorf("PINStatus after the right PIN: %d tries, want %d", got.Retries, before.Retries)
		}
	})
}

func testBlock(t *testing.T, e Env) {
	eachPIN(t, e, func(t *testing.T, ctx context.Context, card profiles.Card, p profiles.PINInfo) {
		n := pinStatus(t, ctx, card, p.ID).Retries
		for i := n; i > 0; i-- {
			err := card.VerifyPIN(ctx, p.ID, e.WrongPIN)
			if i > 1 && !errors.Is(err, apdu.ErrWrongPIN) {
				t.Fatalf("wrong PIN with %d tries left: %v, want wrong PIN", i, err)
			}
			if i == 1 && !errors.Is(err, apdu.ErrBlocked) {
				t.Fatalf("last wrong PIN: %v, want blocked", err)
			}
		}
		if st := pinStatus(t, ctx, card, p.ID); !st.Blocked || st.Retries != 0 {
			t.Errorf("PINStatus after %d wrong PINs = %+v, want blocked", n, st)
		}
		if err := card.VerifyPIN(ctx, p.ID, e.pin(p.ID)); !errors.Is(err, apdu.ErrBlocked) {
			t.Errorf("right PIN when blocked: %v, want blocked", err)
		}
		for _, k := range signers(keys(t, ctx, card)) {
			if k.PINPolicy == profiles.PINNever || k.PIN != p.ID {
				continue
			}
			d, opts := sample(k, []byte("x"))
			if _, err := card.Sign(ctx, k.ID, d, opts); err == nil {
				t.Errorf("key %s signed with its PIN %s blocked", k.ID, p.ID)
			}
		}
	})
}

func testLogout(t *testing.T, e Env) {
	ctx, card := e.open(t)
	for _, p := range card.PINs() {
		if err := card.VerifyPIN(ctx, p.ID, e.pin(p.ID)); err != nil {
			t.Fatalf("VerifyPIN(%s): %v", p.ID, err)
		}
	}
	if err := card.Logout(ctx); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	for _, p := range card.PINs() {
		if st := pinStatus(t, ctx, card, p.ID); st.Verified {
			t.Errorf("PINStatus(%s) after Logout = %+v, want unverified", p.ID, st)
		}
	}
	for _, k := range signers(keys(t, ctx, card)) {
		if k.PINPolicy == profiles.PINNever {
			continue
		}
		d, opts := sample(k, []byte("x"))
		if _, err := card.Sign(ctx, k.ID, d, opts); !errors.Is(err, apdu.ErrSecurityStatus) {
			t.Errorf("key %s: Sign after Logout: %v, want security status not satisfied", k.ID, err)
		}
	}
}

func testBadInput(t *testing.T, e Env) {
	ctx, card, tx := e.openCounted(t)
	if _, err := card.Sign(ctx, "no such key", make([]byte, 32), crypto.SHA256); !errors.Is(err, profiles.ErrNoKey) {
		t.Errorf("Sign with an unknown key: %v, want profiles.ErrNoKey", err)
	}
	sent := tx.n
	if err := card.VerifyPIN(ctx, "no such PIN", e.PIN); !errors.Is(err, profiles.ErrNoPIN) {
		t.Errorf("VerifyPIN of an unknown PIN: %v, want profiles.ErrNoPIN", err)
	}
	if _, err := card.PINStatus(ctx, "no such PIN"); !errors.Is(err, profiles.ErrNoPIN) {
		t.Errorf("PINStatus of an unknown PIN: %v, want profiles.ErrNoPIN", err)
	}
	if tx.n != sent {
		t.Errorf("an unknown PIN ID reached the card: %d APDUs sent", tx.n-sent)
	}
	for _, p := range card.PINs() {
		before := pinStatus(t, ctx, card, p.ID)
		sent := tx.n
		bad := [][]byte{nil, bytes.Repeat([]byte("1"), p.Max+1), bytes.Repeat([]byte("1"), 200)}
		if p.Min > 1 {
			bad = append(bad, bytes.Repeat([]byte("1"), p.Min-1))
		}
		for _, pin := range bad {
			if err := card.VerifyPIN(ctx, p.ID, pin); err == nil {
				t.Errorf("VerifyPIN(%s, %d bytes) succeeded", p.ID, len(pin))
			}
		}
		if tx.n != sent {
			t.Errorf("PIN %s: malformed PINs reached the card: %d APDUs sent", p.ID, tx.n-sent)
		}
		if after := pinStatus(t, ctx, card, p.ID); after.Retries != before.Retries {
			t.Errorf("PIN %s: malformed PINs cost tries: %d -> %d", p.ID, before.Retries, after.Retries)
		}
		if err := card.VerifyPIN(ctx, p.ID, e.pin(p.ID)); err != nil {
			t.Fatalf("VerifyPIN(%s): %v", p.ID, err)
		}
	}
	for _, k := range keys(t, ctx, card) {
		if k.NoSign {
			// A key that does not sign says so before the card.
			sent := tx.n
			if _, err := card.Sign(ctx, k.ID, make([]byte, 32), crypto.SHA256); !errors.Is(err, profiles.ErrKeyUsage) {
				t.Errorf("key %s (NoSign): Sign: %v, want profiles.ErrKeyUsage", k.ID, err)
			}
			if tx.n != sent {
				t.Errorf("key %s (NoSign): Sign reached the card", k.ID)
			}
			continue
		}
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
