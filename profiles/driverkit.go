package profiles

// The driver kit: what every card driver needs besides its APDUs. A driver
// built on it is mostly a table of its card's commands; see profiles/openpgp.

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"strconv"

	"github.com/pscs/pscs/apdu"
)

// KeyType is the kind of public key a card's key template (7F49) holds.
// RSA templates say their size themselves (81 modulus, 82 exponent); EC
// templates (86 point) do not say their curve: the card's algorithm
// attributes do, and the driver passes it to [PublicKeyFromTemplate].
type KeyType int

const (
	KeyRSA     KeyType = iota + 1 // 81 modulus, 82 public exponent
	KeyP256                       // 86 uncompressed point 04‖X‖Y
	KeyP384                       // 86 uncompressed point
	KeyP521                       // 86 uncompressed point
	KeyEd25519                    // 86 32-byte public key (RFC 8032)
	KeyX25519                     // 86 32-byte u-coordinate (RFC 7748)
)

func (t KeyType) String() string {
	switch t {
	case KeyRSA:
		return "RSA"
	case KeyP256:
		return "P-256"
	case KeyP384:
		return "P-384"
	case KeyP521:
		return "P-521"
	case KeyEd25519:
		return "Ed25519"
	case KeyX25519:
		return "X25519"
	}
	return "KeyType(" + strconv.Itoa(int(t)) + ")"
}

// Curve is the NIST curve of t, or nil.
func (t KeyType) Curve() elliptic.Curve {
	switch t {
	case KeyP256:
		return elliptic.P256()
	case KeyP384:
		return elliptic.P384()
	case KeyP521:
		return elliptic.P521()
	}
	return nil
}

// Select selects the application aid (SELECT by DF name, ISO 7816-4
// 11.2.2) and returns the card's answer (an FCI, or nothing). A card
// without the application gives an error wrapping [ErrNotPresent] and the
// status word, so that [Detect] tries the next profile.
func Select(ctx context.Context, conn *apdu.Conn, aid []byte) ([]byte, error) {
	rsp, err := conn.Do(ctx, apdu.Command{INS: 0xA4, P1: 0x04, Data: aid, Ne: 256})
	if errors.Is(err, apdu.ErrNotFound) {
		err = fmt.Errorf("%w (%w)", ErrNotPresent, err)
	}
	return rsp, err
}

// maxRSABits bounds the modulus a template may carry.
const maxRSABits = 8192

// PublicKeyFromTemplate decodes a public key template: the data objects
// 81 (modulus) and 82 (public exponent) of an RSA key, or 86 (the point)
// of an EC key of type t, either bare or inside 7F49 (ISO 7816-8; OpenPGP
// card 3.4, 7.2.14; PIV GENERATE ASYMMETRIC KEY PAIR). The result is an
// *rsa.PublicKey (t is [KeyRSA]; modulus 1024 to 8192 bits, odd exponent
// from 3 to 2³¹-1), an *ecdsa.PublicKey (a point on the curve), an
// ed25519.PublicKey or an *ecdh.PublicKey of ecdh.X25519(). Anything else
// gives an error wrapping apdu.ErrMalformed.
func PublicKeyFromTemplate(b []byte, t KeyType) (crypto.PublicKey, error) {
	if v, ok, err := apdu.FindTLV(b, 0x7F49); err == nil && ok {
		b = v
	}
	tlvs, err := apdu.ParseTLVs(b)
	if err != nil {
		return nil, fmt.Errorf("profiles: public key template: %w", err)
	}
	get := func(tag uint32) []byte {
		for _, t := range tlvs {
			if t.Tag == tag {
				return t.Value
			}
		}
		return nil
	}
	bad := func(what string) error {
		return fmt.Errorf("profiles: public key template: %s: %w", what, apdu.ErrMalformed)
	}
	point := get(0x86)
	switch t {
	case KeyRSA:
		n, e := new(big.Int).SetBytes(get(0x81)), new(big.Int).SetBytes(get(0x82))
		if n.BitLen() < 1024 || n.BitLen() > maxRSABits || n.Bit(0) == 0 {
			return nil, bad("RSA modulus of " + strconv.Itoa(n.BitLen()) + " bits")
		}
		if e.BitLen() > 31 || e.Int64() < 3 || e.Bit(0) == 0 {
			return nil, bad("RSA exponent")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case KeyP256, KeyP384, KeyP521:
		pub, err := ecdsa.ParseUncompressedPublicKey(t.Curve(), point)
		if err != nil {
			return nil, bad(t.String() + " point")
		}
		return pub, nil
	case KeyEd25519:
		if len(point) != ed25519.PublicKeySize {
			return nil, bad("Ed25519 key of " + strconv.Itoa(len(point)) + " bytes")
		}
		return ed25519.PublicKey(append([]byte(nil), point...)), nil
	case KeyX25519:
		pub, err := ecdh.X25519().NewPublicKey(point)
		if err != nil {
			return nil, bad("X25519 key of " + strconv.Itoa(len(point)) + " bytes")
		}
		return pub, nil
	}
	return nil, fmt.Errorf("profiles: public key template: key type %v: %w", t, apdu.ErrMalformed)
}

// AlgorithmOf names pub as [Key.Algorithm] does: "RSA2048" (any size),
// "ECCP256", "ECCP384", "ECCP521", "ED25519", "X25519"; "" for other keys.
func AlgorithmOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA" + strconv.Itoa(k.N.BitLen())
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ECCP256"
		case elliptic.P384():
			return "ECCP384"
		case elliptic.P521():
			return "ECCP521"
		}
	case ed25519.PublicKey:
		return "ED25519"
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			return "X25519"
		}
	}
	return ""
}

// PublicEqual reports whether a and b are the same public key (both
// implement Equal, as the standard library's keys do).
func PublicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && e.Equal(b)
}

// DigestInfo returns the DER DigestInfo of digest, a hash of h (RFC 8017,
// 9.2): what an RSA card pads and signs with PKCS #1 v1.5. A digest whose
// length is not h's, or a hash without a DigestInfo (SHA-1, SHA-224,
// SHA-256, SHA-384, SHA-512 have one), is refused, so it never reaches the
// card.
func DigestInfo(h crypto.Hash, digest []byte) ([]byte, error) {
	p, ok := DigestInfoPrefix(h)
	if !ok {
		return nil, fmt.Errorf("profiles: no DigestInfo for hash %v", h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("profiles: %d-byte digest for %v (%d bytes)", len(digest), h, h.Size())
	}
	return append(append(make([]byte, 0, len(p)+len(digest)), p...), digest...), nil
}

// ErrPINFormat: the PIN's length is outside the card's bounds; it was not
// sent to the card. See [CheckPIN].
var ErrPINFormat = errors.New("profiles: PIN of the wrong length")

// CheckPIN finds PIN id among pins and checks pin's length against it,
// before a driver sends pin to the card. The error wraps [ErrNoPIN] or
// [ErrPINFormat] and never shows the PIN.
func CheckPIN(pins []PINInfo, id string, pin []byte) (PINInfo, error) {
	p, ok := FindPIN(pins, id)
	if !ok {
		return p, fmt.Errorf("profiles: PIN %q: %w", id, ErrNoPIN)
	}
	if len(pin) < p.Min || len(pin) > p.Max {
		return p, fmt.Errorf("%s must have %d to %d characters: %w", p.Label, p.Min, p.Max, ErrPINFormat)
	}
	return p, nil
}

// PINError is a wrong or blocked PIN, as [NewPINError] makes it. It
// unwraps to the status word the card answered: 63Cx, 6983, or 6982 for
// the cards that answer a wrong VERIFY so (several OpenPGP
// implementations); it matches apdu.ErrWrongPIN while tries are left and
// apdu.ErrBlocked when none are, whatever that status word, so callers
// need not know the card's convention.
type PINError struct {
	PIN     string          // the PIN's ID
	Retries int             // tries left; 0: blocked; -1: the card did not say
	SW      apdu.StatusWord // what the card answered
}

func (e *PINError) Error() string {
	switch e.Retries {
	case 0:
		return fmt.Sprintf("PIN %s blocked (%v)", e.PIN, e.SW)
	case -1:
		return fmt.Sprintf("wrong PIN %s (%v)", e.PIN, e.SW)
	case 1:
		return fmt.Sprintf("wrong PIN %s, 1 try left (%v)", e.PIN, e.SW)
	}
	return fmt.Sprintf("wrong PIN %s, %d tries left (%v)", e.PIN, e.Retries, e.SW)
}

// Unwrap returns the card's status word.
func (e *PINError) Unwrap() error { return e.SW }

// Is matches apdu.ErrWrongPIN while tries are left, apdu.ErrBlocked when
// none are.
func (e *PINError) Is(target error) bool {
	switch target {
	case apdu.ErrWrongPIN:
		return e.Retries != 0
	case apdu.ErrBlocked:
		return e.Retries == 0
	}
	return false
}

// PINFailed reports whether err, the error of a VERIFY, says the PIN was
// refused: 63Cx (and 6301–630F), 6983, or 6982.
func PINFailed(err error) bool {
	var sw apdu.StatusWord
	if !errors.As(err, &sw) {
		return false
	}
	_, counted := sw.Retries()
	return counted || sw == apdu.SWSecurityStatusNotSatisfied
}

// NewPINError turns err, the error of a VERIFY of PIN id, into a
// *PINError when the card refused the PIN ([PINFailed]), and returns it
// unchanged otherwise. retries is the count of tries left as the driver
// read it elsewhere after the failure (OpenPGP: the PW status bytes), or
// -1: then the status word's count is taken (63Cx; 6983 is 0), and none
// is faked where the card gave none.
func NewPINError(id string, err error, retries int) error {
	if !PINFailed(err) {
		return err
	}
	var sw apdu.StatusWord
	errors.As(err, &sw)
	if retries < 0 {
		if n, ok := sw.Retries(); ok {
			retries = n
		}
	}
	if sw == apdu.SWAuthBlocked {
		retries = 0
	}
	return &PINError{PIN: id, Retries: max(retries, -1), SW: sw}
}

// Keyring holds the keys of an opened card by ID, for a driver to embed:
// it implements [KeyCache] (UseKeys), and [Keyring.Key] finds a key,
// reading the card's keys once when nothing gave them.
type Keyring struct {
	keys map[string]Key
}

// UseKeys implements [KeyCache].
func (r *Keyring) UseKeys(keys []Key) {
	r.keys = make(map[string]Key, len(keys))
	for _, k := range keys {
		r.keys[k.ID] = k
	}
}

// Key returns the key id, calling load (the driver's Keys, which should
// call UseKeys with its result) first if the ring is empty. An unknown
// id gives an error wrapping [ErrNoKey].
func (r *Keyring) Key(ctx context.Context, id string, load func(context.Context) ([]Key, error)) (Key, error) {
	if r.keys == nil {
		ks, err := load(ctx)
		if err != nil {
			return Key{}, err
		}
		r.UseKeys(ks)
	}
	k, ok := r.keys[id]
	if !ok {
		return Key{}, fmt.Errorf("profiles: key %q: %w", id, ErrNoKey)
	}
	return k, nil
}

// CheckSigned verifies sig, what the card signed with key k, under k's
// public key ([VerifySignature]) and returns it, or a
// *[BadSignatureError] carrying it: a faulty card, or another key in the
// slot since the keys were read.
func CheckSigned(k Key, digest, sig []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := VerifySignature(k.Public, digest, sig, opts); err != nil {
		return nil, &BadSignatureError{Key: k.ID, Signature: sig}
	}
	return sig, nil
}
