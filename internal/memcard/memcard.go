// Package memcard is a card held in memory: a [profiles.Profile] and its
// [profiles.Card] (and [profiles.Decrypter]) whose keys are Go keys, for
// fast tests of pscsd and the PKCS #11 module with key types that no
// simulator of a real card application needs to be in the loop for
// (Ed25519, X25519, a decryption-only key, a card that signs wrongly).
//
// It speaks no APDU. A [Card] is at once the card a test holds (a
// cards.Transmitter that answers every command with 6D00, and Reset) and
// the state its profile opens: plugged into a cards.Worker with
// cards.Direct and given [Card.Profile] (internal/rig's ProfileMember), it
// is a member of a remote card like a simulated PIV card. Reset and
// Logout clear the verified PIN, as a card reset does.
//
// It keeps the [profiles.Card] contract where it concerns the server:
// signing without the PIN gives apdu.ErrSecurityStatus, a PIN of policy
// [profiles.PINAlways] is spent by one operation, a wrong PIN costs a try
// and the last blocks it, a PIN of a bad length never counts, a key marked
// NoSign is refused with [profiles.ErrKeyUsage], an unknown key with
// [profiles.ErrNoKey]. Ed25519 keys sign the whole message (opts.HashFunc()
// zero); X25519 keys answer the raw shared secret, all zeros for a
// small-order peer, as a card computing RFC 7748's function does.
//
// # Concurrency
//
// A Card is safe for concurrent use; pscsd uses it from one worker
// goroutine anyway.
package memcard

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// PIN is the ID of the card's one PIN; [DefaultPIN] is its value unless
// the Config says otherwise.
const (
	PIN        = "pin"
	DefaultPIN = "123456"
	Retries    = 3
)

// Key is one key of a card. Private is an ed25519.PrivateKey, an
// *ecdh.PrivateKey of X25519 or P-256, or an *ecdsa.PrivateKey.
type Key struct {
	ID        string
	Label     string
	Private   crypto.PrivateKey
	PINPolicy profiles.PINPolicy // zero: profiles.PINOnce
	Decrypt   bool               // offered for key agreement
	NoSign    bool
	// Faulty makes the card's signatures with this key wrong (one bit
	// flipped): a broken card, or a key that changed behind pscsd.
	Faulty bool
	// Certificate is the key's certificate on the card; nil: none.
	Certificate *x509.Certificate
}

// Config makes a card.
type Config struct {
	Serial string // "" : "mem-1"
	PIN    string // "" : DefaultPIN
	Keys   []Key
}

// Card is a card in memory.
type Card struct {
	serial string
	pin    string
	keys   []Key

	mu       sync.Mutex
	verified bool
	spent    bool // the PIN was used by an operation of a PINAlways key
	tries    int
	signs    int // signatures made
}

// New makes a card.
func New(cfg Config) *Card {
	c := &Card{serial: cfg.Serial, pin: cfg.PIN, keys: cfg.Keys, tries: Retries}
	if c.serial == "" {
		c.serial = "mem-1"
	}
	if c.pin == "" {
		c.pin = DefaultPIN
	}
	for i := range c.keys {
		if c.keys[i].PINPolicy == 0 {
			c.keys[i].PINPolicy = profiles.PINOnce
		}
	}
	return c
}

// OpenPGPLike is a card shaped as an OpenPGP card with Curve25519 keys,
// keys derived from seed: "sig" (Ed25519, the PIN before every
// signature), "dec" (X25519, key agreement only) and "aut" (Ed25519).
func OpenPGPLike(seed string) *Card {
	return New(Config{Serial: "mem-" + seed, Keys: []Key{
		{ID: "sig", Label: "Signature key", Private: Ed25519(seed + "/sig"), PINPolicy: profiles.PINAlways},
		{ID: "dec", Label: "Decryption key", Private: X25519(seed + "/dec"), Decrypt: true, NoSign: true},
		{ID: "aut", Label: "Authentication key", Private: Ed25519(seed + "/aut")},
	}})
}

// Ed25519 is an Ed25519 key derived from seed.
func Ed25519(seed string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte("memcard ed25519 " + seed))
	return ed25519.NewKeyFromSeed(s[:])
}

// X25519 is an X25519 key derived from seed.
func X25519(seed string) *ecdh.PrivateKey {
	s := sha256.Sum256([]byte("memcard x25519 " + seed))
	k, err := ecdh.X25519().NewPrivateKey(s[:])
	if err != nil {
		panic(err) // every 32 bytes are an X25519 private key
	}
	return k
}

// Transmit answers every command with 6D00 (instruction not supported):
// the card speaks no APDU.
func (c *Card) Transmit(context.Context, []byte) ([]byte, error) { return []byte{0x6D, 0x00}, nil }

// Reset drops the verified PIN, as a card reset does.
func (c *Card) Reset() {
	c.mu.Lock()
	c.verified = false
	c.mu.Unlock()
}

// Signatures is the number of signatures the card made.
func (c *Card) Signatures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signs
}

// Public returns key id's public key.
func (c *Card) Public(id string) crypto.PublicKey {
	k, ok := c.key(id)
	if !ok {
		return nil
	}
	return public(k.Private)
}

// Profile is the card's profile: its Open returns the card, whatever the
// Transmitter.
func (c *Card) Profile() profiles.Profile { return profile{func() *Card { return c }} }

// profile opens the card card returns.
type profile struct{ card func() *Card }

func (p profile) Name() string { return "memcard" }

func (p profile) Open(context.Context, profiles.Transmitter) (profiles.Card, error) {
	return p.card(), nil
}

var (
	_ profiles.Card      = (*Card)(nil)
	_ profiles.Decrypter = (*Card)(nil)
)

// Info implements profiles.Card.
func (c *Card) Info(context.Context) (profiles.Info, error) {
	return profiles.Info{Profile: "memcard", Serial: c.serial, Version: "1", Label: "in-memory card"}, nil
}

// Keys implements profiles.Card.
func (c *Card) Keys(context.Context) ([]profiles.Key, error) {
	out := make([]profiles.Key, 0, len(c.keys))
	for _, k := range c.keys {
		pin := PIN
		if k.PINPolicy == profiles.PINNever {
			pin = ""
		}
		out = append(out, profiles.Key{ID: k.ID, Label: k.Label, Algorithm: profiles.AlgorithmOf(public(k.Private)), Decrypt: k.Decrypt,
			NoSign: k.NoSign, Public: public(k.Private), PINPolicy: k.PINPolicy, PIN: pin, Certificate: k.Certificate})
	}
	return out, nil
}

func public(priv crypto.PrivateKey) crypto.PublicKey {
	switch p := priv.(type) {
	case ed25519.PrivateKey:
		return p.Public()
	case *ecdh.PrivateKey:
		if p.Curve() == ecdh.P256() {
			pub, _ := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p.PublicKey().Bytes())
			return pub
		}
		return p.PublicKey()
	case *ecdsa.PrivateKey:
		return &p.PublicKey
	}
	return nil
}

// PINs implements profiles.Card.
func (c *Card) PINs() []profiles.PINInfo {
	return []profiles.PINInfo{{ID: PIN, Label: "PIN", Min: 4, Max: 64}}
}

// PINStatus implements profiles.Card.
func (c *Card) PINStatus(_ context.Context, id string) (profiles.PINStatus, error) {
	if id != PIN {
		return profiles.PINStatus{}, fmt.Errorf("memcard: PIN %q: %w", id, profiles.ErrNoPIN)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return profiles.PINStatus{Verified: c.verified, Retries: c.tries, Blocked: c.tries == 0}, nil
}

// VerifyPIN implements profiles.Card.
func (c *Card) VerifyPIN(_ context.Context, id string, pin []byte) error {
	if id != PIN {
		return fmt.Errorf("memcard: PIN %q: %w", id, profiles.ErrNoPIN)
	}
	if len(pin) < 4 || len(pin) > 64 {
		return errors.New("memcard: PIN of a bad length")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tries == 0 {
		return fmt.Errorf("memcard: verify: %w", apdu.StatusWord(0x6983))
	}
	if !bytes.Equal(pin, []byte(c.pin)) {
		c.tries--
		c.verified = false
		if c.tries == 0 {
			return fmt.Errorf("memcard: verify: %w", apdu.StatusWord(0x6983))
		}
		return fmt.Errorf("memcard: verify: %w", apdu.StatusWord(0x63C0|uint16(c.tries)))
	}
	c.tries, c.verified, c.spent = Retries, true, false
	return nil
}

// Logout implements profiles.Card.
func (c *Card) Logout(context.Context) error {
	c.Reset()
	return nil
}

func (c *Card) key(id string) (Key, bool) {
	for _, k := range c.keys {
		if k.ID == id {
			return k, true
		}
	}
	return Key{}, false
}

// authorize checks that k may be used now, and spends the PIN of a
// PINAlways key.
func (c *Card) authorize(k Key) error {
	if k.PINPolicy == profiles.PINNever {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.verified || (k.PINPolicy == profiles.PINAlways && c.spent) {
		return fmt.Errorf("memcard: key %s: %w", k.ID, apdu.StatusWord(0x6982))
	}
	if k.PINPolicy == profiles.PINAlways {
		c.spent = true
	}
	return nil
}

// Sign implements profiles.Card: Ed25519 over the whole message (digest,
// with opts.HashFunc() zero), ECDSA over a digest (ASN.1 DER).
func (c *Card) Sign(_ context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k, ok := c.key(id)
	if !ok {
		return nil, fmt.Errorf("memcard: key %q: %w", id, profiles.ErrNoKey)
	}
	if k.NoSign {
		return nil, fmt.Errorf("memcard: key %s: %w", id, profiles.ErrKeyUsage)
	}
	var sig []byte
	var err error
	switch p := k.Private.(type) {
	case ed25519.PrivateKey:
		if opts.HashFunc() != 0 {
			return nil, fmt.Errorf("memcard: key %s: Ed25519 signs messages, not %v digests: %w", id, opts.HashFunc(), profiles.ErrKeyUsage)
		}
		if err := c.authorize(k); err != nil {
			return nil, err
		}
		sig = ed25519.Sign(p, digest)
	case *ecdsa.PrivateKey:
		if err := c.authorize(k); err != nil {
			return nil, err
		}
		sig, err = ecdsa.SignASN1(rand.Reader, p, digest)
	default:
		return nil, fmt.Errorf("memcard: key %s does not sign: %w", id, profiles.ErrKeyUsage)
	}
	if err != nil {
		return nil, err
	}
	if k.Faulty {
		sig[len(sig)-1] ^= 1
	}
	c.mu.Lock()
	c.signs++
	c.mu.Unlock()
	return sig, nil
}

// Decrypt implements profiles.Decrypter: the card has no RSA key.
func (c *Card) Decrypt(_ context.Context, id string, _ []byte, _ crypto.DecrypterOpts) ([]byte, error) {
	if _, ok := c.key(id); !ok {
		return nil, fmt.Errorf("memcard: key %q: %w", id, profiles.ErrNoKey)
	}
	return nil, fmt.Errorf("memcard: key %s: %w", id, profiles.ErrKeyUsage)
}

// zeroSecret is what RFC 7748's X25519 gives for a small-order peer.
var zeroSecret = make([]byte, 32)

// DeriveECDH implements profiles.Decrypter: X25519 with a 32-byte peer,
// ECDH on P-256 with an uncompressed point.
func (c *Card) DeriveECDH(_ context.Context, id string, peer []byte) ([]byte, error) {
	k, ok := c.key(id)
	if !ok {
		return nil, fmt.Errorf("memcard: key %q: %w", id, profiles.ErrNoKey)
	}
	p, isECDH := k.Private.(*ecdh.PrivateKey)
	if !k.Decrypt || !isECDH {
		return nil, fmt.Errorf("memcard: key %s: %w", id, profiles.ErrKeyUsage)
	}
	if err := c.authorize(k); err != nil {
		return nil, err
	}
	pub, err := p.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("memcard: key %s: peer: %w", id, profiles.ErrDecryption)
	}
	secret, err := p.ECDH(pub)
	if err != nil && p.Curve() == ecdh.X25519() {
		// crypto/ecdh refuses the all-zero result of a small-order
		// point; a card computing X25519 answers it.
		return bytes.Clone(zeroSecret), nil
	}
	if err != nil {
		return nil, fmt.Errorf("memcard: key %s: %w", id, profiles.ErrDecryption)
	}
	return secret, nil
}
