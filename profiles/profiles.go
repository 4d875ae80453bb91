// Package profiles defines what a card application driver ("profile") is: the
// small set of operations pscs needs from a signature card, whatever APDUs
// the card speaks.
//
// # Writing a profile
//
// A profile is one package (profiles/piv, profiles/openpgp, …) that
//
//   - implements [Profile]: it opens its application on a card reached
//     through a [Transmitter] and returns a [Card];
//   - never opens hardware itself: it gets a Transmitter, so the same driver
//     runs against PC/SC, a simulator in process, or a recorded transcript;
//   - normalises its card's conventions: [Card.Sign] takes a digest and
//     returns signatures in the form crypto.Signer returns them (ASN.1 DER
//     for ECDSA, PKCS #1 v1.5 or PSS bytes for RSA), whatever the card
//     returns on the wire;
//   - returns errors that wrap the card's status word (apdu.StatusWord), so
//     errors.Is(err, apdu.ErrWrongPIN) and errors.As work on every profile;
//   - declares which of its APDUs carry secrets ([Redactor]), so that
//     traces of card exchanges never show them;
//   - is listed in profiles/registry, which pscs, pscsd and `pscs sim` use;
//   - ships a simulator of its card that plugs into pcscd through cards/vpcd;
//   - passes the conformance suite in profiles/profiletest against that
//     simulator, in process and through pcscd.
//
// # Concurrency
//
// A Card is not safe for concurrent use. pscs gives each physical card one
// owner goroutine (cards.Worker) and runs one request at a time inside a
// PC/SC transaction.
package profiles

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/pscs/pscs/apdu"
)

// Transmitter sends one command APDU and returns the response APDU. It is
// the consumer-side declaration of cards.Transmitter.
type Transmitter interface {
	Transmit(ctx context.Context, cmd []byte) ([]byte, error)
}

// Profile opens one card application.
type Profile interface {
	// Name is the short lower-case name used in configuration and output ("piv").
	Name() string
	// Open selects the application on the card behind t. It returns an
	// error wrapping [ErrNotPresent] if the card does not have it.
	Open(ctx context.Context, t Transmitter) (Card, error)
}

// Redactor is what a [Profile] implements to declare which of its APDUs
// carry secrets: cards.Trace, which knows no card application, asks the
// profiles (through profiles/registry) before it logs an exchange.
type Redactor interface {
	// Redact says whether the data of cmd (the first or only block of a
	// chain; later blocks and GET RESPONSEs follow the decision) carries
	// a secret (a PIN, a PUK, a private or management key) and whether
	// the response to it does (a decryption, a shared secret). When in
	// doubt, hide.
	Redact(cmd apdu.Command) (secretCommand, secretResponse bool)
}

// RedactISO is the part of every Redactor that ISO 7816-4 fixes: the data
// of VERIFY (20), CHANGE REFERENCE DATA (24) and RESET RETRY COUNTER (2C)
// are PINs and PUKs.
func RedactISO(cmd apdu.Command) (secretCommand, secretResponse bool) {
	switch cmd.INS {
	case 0x20, 0x24, 0x2C:
		return true, false
	}
	return false, false
}

// ErrNotPresent: the card does not carry the profile's application.
var ErrNotPresent = errors.New("profiles: application not present on card")

// ErrNoKey: the card has no key in the slot asked for.
var ErrNoKey = errors.New("profiles: no such key")

// Card is an opened card application.
//
// Every method may send APDUs; none keeps a PIN. A method's error wraps the
// status word the card answered with, where there was one.
//
// # The contract
//
// profiles/profiletest checks every point below against a profile's
// simulator (in process and through pcscd) and, where one is at hand, a
// real card. A profile that keeps to them works in pscs, pscsd and the
// PKCS #11 module without any change outside its package.
//
//   - Info returns a non-empty Serial, and Profile equal to the
//     [Profile.Name] that opened the card.
//   - Keys returns at least one key; IDs are non-empty and unique; every
//     key has a Public key, an Algorithm, a [PINPolicy] in range and, unless
//     its policy is [PINNever], the ID of one of [Card.PINs] in Key.PIN.
//     A key's Certificate, when there is one, holds the key's public key.
//   - PINs lists at least one PIN; IDs are non-empty and unique, and do not
//     change between openings of the same card. The first is the card's
//     default PIN (the one a caller that names none means).
//   - Sign with a key that needs a PIN, before its PIN was verified, fails
//     with an error matching apdu.ErrSecurityStatus (6982). A key of policy
//     [PINAlways] needs VerifyPIN of its PIN immediately before every Sign:
//     the second Sign after one VerifyPIN gives apdu.ErrSecurityStatus too.
//   - Sign's signature verifies under the key's public key (and its
//     certificate's) for SHA-256, SHA-384 and SHA-512 digests, and RSA-PSS
//     for RSA keys (a card that does only PKCS #1 v1.5 refuses PSS with
//     [ErrKeyUsage] before any APDU); Ed25519 keys sign the message itself
//     (opts.HashFunc() zero). An RSA digest whose length does not match its
//     hash never reaches the card; an unknown key ID gives [ErrNoKey]; a
//     [Key.NoSign] key gives [ErrKeyUsage] without any APDU.
//   - VerifyPIN with a wrong PIN gives an error matching apdu.ErrWrongPIN
//     that unwraps to the card's status word (errors.As to
//     apdu.StatusWord) and never shows the PIN; the retry count afterwards
//     is one less, read through PINStatus. A card that answers 63Cx says
//     the count in its status word; a card that answers 6982 (several
//     OpenPGP implementations) does not, and the profile must not fake a
//     63Cx: its error wraps 6982 and matches apdu.ErrWrongPIN, and
//     PINStatus reads the count (OpenPGP: from the PW status bytes).
//   - The last wrong PIN and every PIN after it give apdu.ErrBlocked; a
//     blocked PIN's PINStatus is Blocked with Retries 0; no key that needs
//     it signs.
//   - The right PIN restores the retry counter; PINStatus then says
//     Verified.
//   - PINStatus spends no try. A card whose empty VERIFY answers 6A80
//     rather than 63Cx reads the count elsewhere; Retries is -1 only when
//     the card has no way to say.
//   - A PIN of a length outside the PIN's [PINInfo.Min] and [PINInfo.Max]
//     (empty, one byte, 200 bytes) is refused without any APDU reaching
//     the card: it costs no try.
//   - Logout makes every PIN unverified: Sign with a key that needs a PIN
//     gives apdu.ErrSecurityStatus again.
//   - A card that implements [KeyCache] signs, once given its keys, with
//     no more APDUs than VERIFY and the signature (and their chaining).
type Card interface {
	// Info describes the card: serial, application version, label.
	Info(ctx context.Context) (Info, error)
	// Keys lists the signing keys with their certificates and PIN policies.
	Keys(ctx context.Context) ([]Key, error)
	// PINs names the card's PINs, the default one first. It sends no APDU.
	PINs() []PINInfo
	// PINStatus reads the state of PIN pinID without spending a try. An
	// unknown pinID gives an error wrapping [ErrNoPIN].
	PINStatus(ctx context.Context, pinID string) (PINStatus, error)
	// VerifyPIN presents PIN pinID. A wrong PIN gives an error that wraps
	// the status word (errors.Is(err, apdu.ErrWrongPIN)); a blocked PIN
	// wraps apdu.ErrBlocked. An unknown pinID gives an error wrapping
	// [ErrNoPIN].
	VerifyPIN(ctx context.Context, pinID string, pin []byte) error
	// Sign signs digest with key id. opts.HashFunc() names the hash that
	// produced digest; *rsa.PSSOptions asks for RSA-PSS. An Ed25519 key
	// signs the whole message: digest is the message and opts.HashFunc()
	// is zero (as crypto/ed25519 does), and the signature is the 64 bytes
	// of RFC 8032. Keys whose policy is [PINAlways] need VerifyPIN of their
	// PIN immediately before every Sign. A key marked [Key.NoSign] is
	// refused with an error wrapping [ErrKeyUsage], before any APDU.
	Sign(ctx context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error)
	// Logout resets the card's PIN verification state, of every PIN.
	Logout(ctx context.Context) error
}

// ErrNoPIN: the card has no PIN of the ID asked for.
var ErrNoPIN = errors.New("profiles: no such PIN")

// PINInfo names one PIN of a card.
type PINInfo struct {
	// ID is stable across cards of a profile and across versions of pscs:
	// the vault keeps the registered PIN under it. "piv-pin"; OpenPGP
	// "pw1-sign", "pw1", "pw3"; EstEID "pin1", "pin2".
	ID string
	// Label is what a user is shown, "PIV PIN", "PIN2 (signature)".
	Label string
	// Min and Max bound the PIN's length in bytes; a PIN outside them is
	// refused before it reaches the card.
	Min, Max int
}

// DefaultPIN is the ID of the first of pins, the card's default PIN; ""
// if there is none.
func DefaultPIN(pins []PINInfo) string {
	if len(pins) == 0 {
		return ""
	}
	return pins[0].ID
}

// FindPIN returns the PIN of pins with ID id.
func FindPIN(pins []PINInfo, id string) (PINInfo, bool) {
	for _, p := range pins {
		if p.ID == id {
			return p, true
		}
	}
	return PINInfo{}, false
}

// KeyCache is an optional interface of a Card: UseKeys hands it the keys an
// earlier Keys call returned for the same card, so that Sign does not read
// the card's inventory again. pscsd reads a card's keys when the card joins
// a remote card and again when it may have changed (see server/rsc), and
// opens the card for every request.
type KeyCache interface {
	UseKeys(keys []Key)
}

// ErrBadSignature: the card's signature does not verify under the public
// key the driver has for the key (see [BadSignatureError]).
var ErrBadSignature = errors.New("profiles: the card's signature does not verify under the key's public key")

// BadSignatureError is the error of [Card.Sign] when the card's signature
// does not verify under the public key the driver has for the key: the card
// is faulty, or another program put a new key in the slot since the keys
// were read (see [KeyCache]). Signature is what the card returned, so that
// a caller that reads the card's keys again can check it under the new
// public key ([VerifySignature]) instead of signing again. It matches
// [ErrBadSignature] with errors.Is.
type BadSignatureError struct {
	Key       string // the key's ID
	Signature []byte // as Sign would have returned it
}

func (e *BadSignatureError) Error() string {
	return fmt.Sprintf("profiles: key %s: the card's signature does not verify under the key's public key", e.Key)
}

// Is makes a *BadSignatureError match ErrBadSignature.
func (e *BadSignatureError) Is(target error) bool { return target == ErrBadSignature }

// VerifySignature checks sig, a signature in the form [Card.Sign] returns
// it, of digest under pub: ECDSA (ASN.1 DER; a digest longer than the
// curve is cut to its leftmost bits, a shorter one taken as the integer
// it encodes, as FIPS 186-4 does), RSA PKCS #1 v1.5 (opts.HashFunc() names
// the DigestInfo; zero: digest is signed as it is), PSS (*rsa.PSSOptions)
// or Ed25519 (opts.HashFunc() is zero and digest is the whole message, as
// crypto/ed25519 signs).
func VerifySignature(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if opts.HashFunc() != 0 {
			return fmt.Errorf("profiles: verify: Ed25519 signs the message, not a %v digest", opts.HashFunc())
		}
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, digest, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		if ecdsa.VerifyASN1(k, digest, sig) {
			return nil
		}
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(k, pss.Hash, digest, sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(k, opts.HashFunc(), digest, sig)
		}
		if err == nil {
			return nil
		}
	default:
		return fmt.Errorf("profiles: verify: unsupported key %T", pub)
	}
	return ErrBadSignature
}

// Info identifies a card.
type Info struct {
	Profile string // profile name, "piv"
	Serial  string // card serial, as the card reports it (hex or decimal)
	Version string // application or firmware version, "5.4.3"
	Label   string // a human-readable label
}

// PINPolicy says when a key needs the PIN.
type PINPolicy int

const (
	PINNever  PINPolicy = iota + 1 // no PIN needed
	PINOnce                        // once per card session
	PINAlways                      // before every operation
)

func (p PINPolicy) String() string {
	switch p {
	case PINNever:
		return "never"
	case PINOnce:
		return "once"
	case PINAlways:
		return "always"
	}
	return fmt.Sprintf("PINPolicy(%d)", int(p))
}

// Key is one private key on a card.
type Key struct {
	ID        string // profile-specific slot name, e.g. "9a"
	Label     string // what the slot is for, e.g. "PIV Authentication"
	Algorithm string // "ECCP256", "ECCP384", "RSA2048", …
	Decrypt   bool   // the key decrypts (RSA) or agrees keys (EC) through [Decrypter]
	// NoSign: the key does not sign (a decryption key, such as OpenPGP's
	// "dec"): Sign with it fails with [ErrKeyUsage] before any APDU.
	NoSign bool
	// Public is an *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey,
	// or *ecdh.PublicKey (X25519, a NoSign key).
	Public      crypto.PublicKey
	Certificate *x509.Certificate // nil if the slot has none
	PINPolicy   PINPolicy
	// PIN is the ID of the PIN (one of [Card.PINs]) the key needs; "" for
	// a key of policy [PINNever].
	PIN string
}

// PINStatus is the state of one PIN of a card.
type PINStatus struct {
	Verified bool // the PIN is verified in the current card session
	Retries  int  // tries left; 0 means blocked; -1 when the card does not say
	Blocked  bool
}

// Detect opens the card behind t with the first of ps whose application the
// card has. It returns an error wrapping [ErrNotPresent] if none has.
func Detect(ctx context.Context, t Transmitter, ps ...Profile) (Profile, Card, error) {
	for _, p := range ps {
		c, err := p.Open(ctx, t)
		if err == nil {
			return p, c, nil
		}
		if !errors.Is(err, ErrNotPresent) {
			return nil, nil, fmt.Errorf("%s: %w", p.Name(), err)
		}
	}
	return nil, nil, ErrNotPresent
}
