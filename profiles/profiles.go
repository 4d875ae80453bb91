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
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
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

// ErrNotPresent: the card does not carry the profile's application.
var ErrNotPresent = errors.New("profiles: application not present on card")

// ErrNoKey: the card has no key in the slot asked for.
var ErrNoKey = errors.New("profiles: no such key")

// Card is an opened card application.
//
// Every method may send APDUs; none keeps a PIN. A method's error wraps the
// status word the card answered with, where there was one.
type Card interface {
	// Info describes the card: serial, application version, label.
	Info(ctx context.Context) (Info, error)
	// Keys lists the signing keys with their certificates and PIN policies.
	Keys(ctx context.Context) ([]Key, error)
	// PINStatus reads the PIN state without spending a try.
	PINStatus(ctx context.Context) (PINStatus, error)
	// VerifyPIN presents the PIN. A wrong PIN gives an error that wraps the
	// status word (errors.Is(err, apdu.ErrWrongPIN)); a blocked PIN wraps
	// apdu.ErrBlocked.
	VerifyPIN(ctx context.Context, pin []byte) error
	// Sign signs digest with key id. opts.HashFunc() names the hash that
	// produced digest; *rsa.PSSOptions asks for RSA-PSS. Keys whose policy is
	// [PINAlways] need VerifyPIN immediately before every Sign.
	Sign(ctx context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error)
	// Logout resets the card's PIN verification state.
	Logout(ctx context.Context) error
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
// the DigestInfo; zero: digest is signed as it is) or PSS (*rsa.PSSOptions).
func VerifySignature(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	switch k := pub.(type) {
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
	ID          string            // profile-specific slot name, e.g. "9a"
	Label       string            // what the slot is for, e.g. "PIV Authentication"
	Algorithm   string            // "ECCP256", "ECCP384", "RSA2048", …
	Decrypt     bool              // the key decrypts (RSA) or agrees keys (EC) through [Decrypter]
	Public      crypto.PublicKey  // *ecdsa.PublicKey or *rsa.PublicKey
	Certificate *x509.Certificate // nil if the slot has none
	PINPolicy   PINPolicy
}

// PINStatus is the PIN state of a card.
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
