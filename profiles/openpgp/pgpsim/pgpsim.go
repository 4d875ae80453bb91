// Package pgpsim simulates an OpenPGP card 3.4 (OpenPGP smart card
// application specification 3.4.1) as a YubiKey 5.4.3 implements it, well
// enough that GnuPG's scdaemon, OpenSC's openpgp driver and the pscs
// OpenPGP driver take it for a real card, and that it answers the commands
// of the 57 recorded YubiKey transcripts with the same status words and the
// same structure.
//
// # Use
//
// A [Card] is a cards.Transmitter: use it in process for unit tests, or plug
// it into a real pcscd with cards/vpcd (simkittest.Plug in tests):
//
//	card, err := pgpsim.New(pgpsim.Config{Seed: []byte("test")})
//	go vpcd.Plug(ctx, "127.0.0.1:35963", card)
//
// By default the card holds three RSA-2048 keys (signature, decryption,
// authentication) with their fingerprints and creation times written as
// GnuPG writes them (OpenPGP v4 fingerprints of [Config.KeyTime]), PW1
// 123456, PW3 12345678 and no resetting code, three tries each.
// [Config.Keys] chooses other algorithms; [Config.Factory] starts in the
// state of a YubiKey after a factory reset (RSA-2048 attributes, no keys).
// With [Config.Seed] keys and serial are the same on every run, generated
// keys included.
//
// # What it does
//
//   - SELECT of the OpenPGP AID (D2 76 00 01 24 01, or any longer prefix of
//     the full AID D2 76 00 01 24 01 03 04 00 06 <serial> 00 00) answers
//     90 00 without FCI, as a YubiKey does; the Yubico OTP AID answers the
//     firmware version, as clients probing for a YubiKey expect; other AIDs
//     answer 6A 82.
//   - GET DATA of the application related data 6E (AID 4F, historical bytes
//     5F52, general feature management 7F74, and in 73: extended
//     capabilities C0, algorithm attributes C1 C2 C3 and the attestation
//     key's DA, PW status C4, fingerprints C5, CA fingerprints C6,
//     generation times CD, key information DE, extended length information
//     7F66, user interaction flags D6 to D9), of each of these alone, of
//     the cardholder data 65 (5B, 5F2D, 5F35), the security support
//     template 7A (signature counter 93), the URL 5F50, login data 5E, the
//     cardholder certificates 7F21 (with SELECT DATA and GET NEXT DATA),
//     the private DOs 0101 to 0104, the KDF DO F9 and the algorithm
//     information FA.
//   - VERIFY of PW1 for signing (81), PW1 for the other operations (82) and
//     PW3 (83), empty VERIFY as status query (90 00 or 63 Cx), P1 = FF to
//     forget a verification; a wrong PIN answers 69 82 as on a YubiKey (the
//     tries left are in C4), a blocked one 69 83, a PIN too short 6A 80
//     without using a try. CHANGE REFERENCE DATA (PW1, PW3), RESET RETRY
//     COUNTER (with the resetting code, or new PW1 after PW3), the
//     YubiKey's SET PIN RETRIES (F2).
//   - PUT DATA of every writable DO above with the access rules of the
//     specification (PW3, or PW1 82 for private DOs 0101 and 0103); a
//     write of the KDF DO sets PW1 and PW3 to their initial values, as a
//     YubiKey does.
//   - GENERATE ASYMMETRIC KEY PAIR (47; 80 generate with PW3, 81 read the
//     public key) and key import (PUT DATA DB 3FFF with the extended header
//     list 4D) for RSA-2048, 3072 and 4096, NIST P-256, P-384, P-521,
//     Ed25519 (signature and authentication keys) and X25519 (decryption
//     key). Changing a key's algorithm attributes deletes the key.
//   - PSO: COMPUTE DIGITAL SIGNATURE (RSA from a DigestInfo, which the card
//     pads; ECDSA as raw r‖s; EdDSA), INTERNAL AUTHENTICATE with the
//     authentication key, PSO: DECIPHER (RSA with padding indicator 00,
//     ECDH with A6 { 7F49 { 86 point } }); the signature counter; PW1 valid
//     for one signature only when C4's first byte is 00.
//   - GET CHALLENGE up to 3070 bytes; TERMINATE DF and ACTIVATE FILE
//     (factory reset), TERMINATE only with PW3 verified or blocked.
//   - Command chaining, extended length, GET RESPONSE and the latency model
//     come from the kit (profiles/simkit): [simkit.YubiKey5] has the
//     measured figures.
//
// What it does not: secure messaging, the AES PSO:ENCIPHER/DECIPHER, the
// YubiKey attestation (its key's attributes and fingerprint are shown, it
// signs nothing), brainpool curves, touch (the flags are stored, the
// simulator has no button).
//
// # State
//
// Everything a command changes lives in the [Card] until the process ends,
// whichever client sent the command; a reset ([Card.Reset], which cards/vpcd
// calls when pcscd powers the card) forgets the verified PINs and the
// selected application.
//
// The simulator's keys are test keys: it keeps them in ordinary memory.
package pgpsim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/pscs/pscs/profiles/simkit"
)

// Key names one of the card's keys.
type Key int

const (
	KeySign    Key = iota // signature key (CRT B6)
	KeyDecrypt            // decryption key (CRT B8)
	KeyAuth               // authentication key (CRT A4)
	keyAttest             // YubiKey attestation key: attributes and fingerprint only
	numKeys
)

func (k Key) String() string {
	switch k {
	case KeySign:
		return "signature"
	case KeyDecrypt:
		return "decryption"
	case KeyAuth:
		return "authentication"
	}
	return fmt.Sprintf("Key(%d)", int(k))
}

// DefaultKeys is the key layout of a new card.
var DefaultKeys = map[Key]simkit.Alg{KeySign: simkit.RSA2048, KeyDecrypt: simkit.RSA2048, KeyAuth: simkit.RSA2048}

// DefaultATR is the answer to reset of a YubiKey 5 (the transcripts' card).
var DefaultATR = []byte{0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40}

// Config configures a simulated card. The zero value is a usable default card.
type Config struct {
	// Seed makes keys, serial and other values reproducible. Nil: random.
	Seed []byte
	// Serial is the card's serial number (in the AID); zero derives one
	// from Seed.
	Serial uint32
	// Version is the firmware version the Yubico OTP probe reports; zero
	// means 5.4.3.
	Version [3]byte
	// PW1 and PW3; default "123456" and "12345678".
	PW1, PW3 string
	// Keys is the key layout; nil means DefaultKeys. Ed25519 may be the
	// signature or authentication key, X25519 only the decryption key.
	Keys map[Key]simkit.Alg
	// Factory starts without keys, as after a factory reset.
	Factory bool
	// KeyTime is the creation time of the initial keys, from which their
	// fingerprints are made; zero means 2026-01-01 UTC.
	KeyTime time.Time
	// PW1Single makes a PW1 verification good for one signature (C4's
	// first byte 00); by default it is good for several, as on a YubiKey.
	PW1Single bool
	// Latency is the time each operation takes; zero value: none.
	Latency simkit.Latency
	// ATR is the answer to reset; nil means DefaultATR.
	ATR []byte
}

// Card is a simulated OpenPGP card: the kit's card running the OpenPGP
// applet. It is safe for concurrent use.
type Card struct {
	*simkit.Card
	a *applet
}

// New makes a card.
func New(cfg Config) (*Card, error) {
	a := &applet{
		seed:    bytes.Clone(cfg.Seed),
		version: cfg.Version,
		serial:  cfg.Serial,
		latency: cfg.Latency,
		rand:    rand.Reader,
	}
	if a.version == [3]byte{} {
		a.version = [3]byte{5, 4, 3}
	}
	ids := make([]byte, 32)
	io.ReadFull(simkit.SeedReader(cfg.Seed, "identifiers"), ids)
	if a.serial == 0 {
		a.serial = binary.BigEndian.Uint32(ids[0:4])&0x7FFFFFF | 0x1000000
	}
	copy(a.attestFP[:], ids[4:24])
	a.pw1Initial, a.pw3Initial = []byte(cfg.PW1), []byte(cfg.PW3)
	if cfg.PW1 == "" {
		a.pw1Initial = []byte("123456")
	}
	if cfg.PW3 == "" {
		a.pw3Initial = []byte("12345678")
	}
	if len(a.pw1Initial) < 6 || len(a.pw1Initial) > 127 || len(a.pw3Initial) < 8 || len(a.pw3Initial) > 127 {
		return nil, fmt.Errorf("pgpsim: PW1 must have 6 to 127 bytes, PW3 8 to 127")
	}
	a.factoryReset()
	if cfg.PW1Single {
		a.pw1Valid = 0
	}
	if !cfg.Factory {
		layout := cfg.Keys
		if layout == nil {
			layout = DefaultKeys
		}
		t := cfg.KeyTime
		if t.IsZero() {
			t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		for k, alg := range layout {
			if k < KeySign || k > KeyAuth {
				return nil, fmt.Errorf("pgpsim: %v is not a key of the card", k)
			}
			attr := attributesOf(alg, k)
			if attr == nil {
				return nil, fmt.Errorf("pgpsim: the %v key cannot be %v", k, alg)
			}
			key, err := simkit.GenerateKey(alg, cfg.Seed, fmt.Sprintf("key %d", int(k)))
			if err != nil {
				return nil, err
			}
			s := &a.keys[k]
			s.attr, s.alg, s.key, s.status = attr, alg, key, keyGenerated
			binary.BigEndian.PutUint32(s.time[:], uint32(t.Unix()))
			s.fp = Fingerprint(publicOf(key), alg, k, t)
		}
	}
	return &Card{Card: simkit.New(a, simkit.Options{ATR: atrOr(cfg.ATR), Latency: cfg.Latency}), a: a}, nil
}

func atrOr(atr []byte) []byte {
	if atr == nil {
		return DefaultATR
	}
	return atr
}

// Serial returns the card's serial number.
func (c *Card) Serial() (s uint32) {
	c.Locked(func() { s = c.a.serial })
	return s
}

// PublicKey returns the public key of k, or nil: an *rsa.PublicKey, an
// *ecdsa.PublicKey, an ed25519.PublicKey or an *ecdh.PublicKey (X25519).
func (c *Card) PublicKey(k Key) (pub crypto.PublicKey) {
	c.Locked(func() {
		if k >= KeySign && k <= KeyAuth && c.a.keys[k].key != nil {
			pub = publicOf(c.a.keys[k].key)
		}
	})
	return pub
}

// Algorithm returns the algorithm of key k (of its attributes).
func (c *Card) Algorithm(k Key) (alg simkit.Alg) {
	c.Locked(func() {
		if k >= KeySign && k <= KeyAuth {
			alg = c.a.keys[k].alg
		}
	})
	return alg
}

// KeyFingerprint returns the fingerprint stored for key k (C5), all zero
// when none is.
func (c *Card) KeyFingerprint(k Key) (fp [20]byte) {
	c.Locked(func() {
		if k >= KeySign && k <= keyAttest {
			fp = c.a.keys[k].fp
		}
	})
	return fp
}

// SignatureCount returns the signature counter (7A/93).
func (c *Card) SignatureCount() (n int) {
	c.Locked(func() { n = int(c.a.sigCount) })
	return n
}

// PINRetries returns the tries left of PW1, the resetting code and PW3.
func (c *Card) PINRetries() (pw1, rc, pw3 int) {
	c.Locked(func() { pw1, rc, pw3 = c.a.pw1.Left, c.a.rc.Left, c.a.pw3.Left })
	return
}
