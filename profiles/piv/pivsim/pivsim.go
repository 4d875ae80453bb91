// Package pivsim simulates a PIV card (NIST SP 800-73-4) with the YubiKey
// extensions that common clients call, well enough that OpenSC,
// yubico-piv-tool and the pscs PIV driver take it for a real card.
//
// # Use
//
// A [Card] is a cards.Transmitter: use it in process for unit tests, or plug
// it into a real pcscd with cards/vpcd, where every PC/SC client sees it in a
// reader:
//
//	card, err := pivsim.New(pivsim.Config{Seed: []byte("test")})
//	go vpcd.Plug(ctx, "127.0.0.1:35963", card)
//
// # What it does
//
//   - SELECT of the PIV AID (any prefix of A0 00 00 03 08 00 00 10 00 01 00
//     of five bytes or more); other AIDs answer 6A 82, as a YubiKey does.
//   - GET DATA of the discovery object, CHUID, CCC and the certificates of
//     the key slots, in every form clients send (with and without Le, short
//     and extended), with response chaining (61 xx, GET RESPONSE).
//   - VERIFY (FF-padded to 8 bytes, empty VERIFY as status query, P1 = FF to
//     log out), CHANGE REFERENCE DATA, RESET RETRY COUNTER; PIN and PUK
//     retry counters that block at 0 (69 83).
//   - GENERAL AUTHENTICATE signatures: ECDSA P-256 and P-384 (DER out) and
//     raw RSA-1024 and RSA-2048 (the host pads), command chaining (CLA 10) for
//     long input.
//   - GENERAL AUTHENTICATE RSA decryption (the raw operation on 81, as a
//     signature; the host removes the padding) and ECDH key agreement on
//     P-256 and P-384 keys (the peer's uncompressed point in 85, the shared
//     x coordinate out in 82), as OpenSC's PIV driver sends them.
//   - PIN policies per slot: never, once, always (VERIFY before every
//     signature).
//   - YubiKey extensions: GET VERSION (FD), GET SERIAL (F8), GET METADATA (F7)
//     for every reference a YubiKey 5.4 answers (PIN 80, PUK 81, management
//     key 9B, key slots 9A, 9C, 9D, 9E, 82 to 95 and F9; an empty slot
//     answers 6A 88).
//   - Provisioning, as yubico-piv-tool and ykman do it: management-key
//     authentication (GENERAL AUTHENTICATE with key reference 9B, mutual or
//     single, TDES or AES-128/192/256), then GENERATE ASYMMETRIC KEY PAIR
//     (47: RSA-1024, RSA-2048, ECC P-256, P-384, with the YubiKey PIN and
//     touch policy tags AA and AB), IMPORT KEY (FE), PUT DATA (DB: the PIV
//     objects 5FC101 to 5FC123 and the YubiKey objects 5FFF00 to 5FFF15; an
//     empty object deletes), SET MANAGEMENT KEY (FF), SET PIN RETRIES (FA)
//     and RESET (FB, once PIN and PUK are blocked). Without the management
//     key they answer 69 82.
//   - A latency model per operation ([Latency]); the zero value answers at
//     once, [RealLatency] follows measured cards.
//
// By default the card holds 9A ECC P-256, 9C RSA-2048, 9D ECC P-256 and
// 9E ECC P-384 keys, each with a self-signed certificate, an RSA-2048
// attestation key in F9 marked imported, PIN 123456, PUK 12345678 (three
// tries each) and the default management key 0102…08 ×3 (TDES; AES-192 when
// [Config.Version] is 5.7 or later). With [Config.Seed] set, the keys (not
// the ECDSA certificate signatures) are the same on every run, generated
// keys included.
//
// # State, and what other clients see
//
// Everything a command changes (keys, certificates and other objects, PINs,
// the management key, counters) lives in the [Card] until the process ends,
// whichever client sent the command: a key that yubico-piv-tool generates
// through pcscd is the key the next signature uses, for every PC/SC client,
// and [Card.PublicKey] and [Card.Certificate] report it. As on a YubiKey, a
// new key leaves the slot's old certificate in place until a client writes
// another one.
//
// What a reset clears ([Card.Reset], which cards/vpcd calls when pcscd
// powers the card down or up or resets it) is the session: PIN and
// management-key authentication, pending responses and command chains.
// yubico-piv-tool disconnects with SCARD_RESET_CARD, so after it ran, every
// other client's next exchange fails with SCARD_W_RESET_CARD
// (cards.ErrCardReset from cards/pcsc): that is how a card changed by
// another program announces itself.
//
// The simulator is written on the simulator kit (profiles/simkit), which
// does the framing, chaining, GET RESPONSE, PIN counters, seeded keys and
// latency; this package holds only what PIV does.
//
// The simulator's keys are test keys: it keeps them in ordinary memory.
package pivsim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/simkit"
)

// Slot is a PIV key reference.
type Slot byte

const (
	SlotAuthentication     Slot = 0x9A
	SlotSignature          Slot = 0x9C
	SlotKeyManagement      Slot = 0x9D
	SlotCardAuthentication Slot = 0x9E
	SlotAttestation        Slot = 0xF9 // YubiKey attestation key
	// SlotManagement is the card management key (symmetric), the key
	// reference of GENERAL AUTHENTICATE for management-key authentication.
	SlotManagement Slot = 0x9B
)

// SlotRetired returns the retired key-management slot n (1 to 20: 82 to 95).
func SlotRetired(n int) Slot { return Slot(0x81 + n) }

// keySlot reports whether s names an asymmetric key slot of a YubiKey 5.
func keySlot(s Slot) bool {
	switch {
	case s == SlotAuthentication, s == SlotSignature, s == SlotKeyManagement,
		s == SlotCardAuthentication, s == SlotAttestation:
		return true
	}
	return s >= 0x82 && s <= 0x95
}

// PINPolicy is a slot's PIN policy, numbered as YubiKey metadata numbers it.
type PINPolicy byte

const (
	PINPolicyNever  PINPolicy = 1
	PINPolicyOnce   PINPolicy = 2
	PINPolicyAlways PINPolicy = 3
)

// TouchPolicy is a key's touch policy, numbered as YubiKey metadata numbers
// it. The simulator has no button: it records the policy and reports it,
// and acts as if the user always touched in time.
type TouchPolicy byte

const (
	TouchPolicyNever  TouchPolicy = 1
	TouchPolicyAlways TouchPolicy = 2
	TouchPolicyCached TouchPolicy = 3
)

// Key origins, as GET METADATA tag 03 reports them.
const (
	originGenerated = 1
	originImported  = 2
)

// SlotConfig configures one key slot.
type SlotConfig struct {
	Algorithm     Algorithm
	PINPolicy     PINPolicy // zero: the slot's PIV default (9C always, 9E never, others once)
	NoCertificate bool      // leave the certificate object empty
}

// Latency is how long the card takes for each kind of operation (the
// kit's model: VERIFY, signatures by algorithm, every other command). The
// zero value answers at once.
type Latency = simkit.Latency

// RealLatency follows real cards: YubiKey 5 timings for VERIFY and ECDSA
// (measured from real-card transcripts), and the middle of the published
// 150–500 ms range for RSA-2048.
var RealLatency = Latency{
	Verify:      10 * time.Millisecond,
	SignECCP256: 76 * time.Millisecond,
	SignECCP384: 126 * time.Millisecond,
	SignRSA2048: 300 * time.Millisecond,
	Other:       1 * time.Millisecond,
}

// DefaultSlots is the key layout of a new card.
var DefaultSlots = map[Slot]SlotConfig{
	SlotAuthentication:     {Algorithm: ECCP256},
	SlotSignature:          {Algorithm: RSA2048},
	SlotKeyManagement:      {Algorithm: ECCP256},
	SlotCardAuthentication: {Algorithm: ECCP384},
}

// DefaultATR is the answer to reset of a YubiKey 4/5 in CCID mode; OpenSC and
// yubico-piv-tool recognise it.
var DefaultATR = []byte{0x3B, 0xF8, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x59, 0x75, 0x62, 0x69, 0x6B, 0x65, 0x79, 0x34, 0xD4}

// Config configures a simulated card. The zero value is a usable default card.
type Config struct {
	// Seed makes keys, serial and identifiers reproducible. Nil: random.
	Seed []byte
	// PIN and PUK; default "123456" and "12345678". 6 to 8 bytes.
	PIN, PUK string
	// PINRetries and PUKRetries are the tries allowed; default 3 each.
	PINRetries, PUKRetries int
	// Slots is the key layout; nil means DefaultSlots.
	Slots map[Slot]SlotConfig
	// Serial is the YubiKey serial number; zero derives one from Seed.
	Serial uint32
	// Version is the firmware version GET VERSION reports; zero means 5.4.3.
	Version [3]byte
	// ATR is the answer to reset; nil means DefaultATR.
	ATR []byte
	// Latency is the time each operation takes; zero value: none.
	Latency Latency
	// NotBefore is the validity start of the certificates; zero means
	// 2026-01-01 UTC.
	NotBefore time.Time
	// ManagementKey is the card management key (9B); nil means the YubiKey
	// default 010203040506070801020304050607080102030405060708.
	// ManagementAlgorithm is its algorithm: TDES, AES128, AES192 or
	// AES256; zero means TDES, or AES192 when Version is 5.7 or later, as
	// on YubiKeys.
	ManagementKey       []byte
	ManagementAlgorithm Algorithm
	// NoAttestationKey leaves slot F9 empty. By default F9 holds an
	// RSA-2048 key marked imported, as Yubico loads it at the factory; it is
	// made the first time something asks for it.
	NoAttestationKey bool
}

type slotState struct {
	cfg    SlotConfig
	touch  TouchPolicy
	origin byte
	key    crypto.Signer // nil until first use for a lazily made key
	lazy   string        // label of the seeded key to make on first use
}

// Card is a simulated PIV card: the kit's card running the PIV applet. It
// is safe for concurrent use; like a real card it processes one command at
// a time.
type Card struct {
	*simkit.Card
	a      *applet
	serial uint32
}

// applet is the PIV application's state; the kit's card lock guards it.
type applet struct {
	version [3]byte
	serial  uint32
	latency Latency
	slots   map[Slot]*slotState
	objects map[uint32][]byte // GET DATA objects, whole (53 … or 7E …)

	pin, puk               *simkit.PIN // values padded to 8 bytes
	pinDefault, pukDefault bool

	seed        []byte
	mgm         mgmKey
	generations uint64 // GENERATE commands so far: labels the seeded keys they make

	// volatile state, cleared by Reset
	mgmAuth    bool         // management key authenticated
	mgmPending *mgmExchange // first half of a 9B GENERAL AUTHENTICATE
	verified   bool
	pinFresh   bool // VERIFY succeeded and no PIN-always signature consumed it yet
}

const (
	defaultPIN = "123456"
	defaultPUK = "12345678"
)

// New makes a card.
func New(cfg Config) (*Card, error) {
	c := &applet{
		version: cfg.Version,
		serial:  cfg.Serial,
		latency: cfg.Latency,
		slots:   map[Slot]*slotState{},
		objects: map[uint32][]byte{},
	}
	atr := cfg.ATR
	if atr == nil {
		atr = DefaultATR
	}
	if c.version == [3]byte{} {
		c.version = [3]byte{5, 4, 3}
	}
	pinMax, pukMax := cfg.PINRetries, cfg.PUKRetries
	if pinMax <= 0 {
		pinMax = 3
	}
	if pukMax <= 0 {
		pukMax = 3
	}
	pin, puk := cfg.PIN, cfg.PUK
	if pin == "" {
		pin = defaultPIN
	}
	if puk == "" {
		puk = defaultPUK
	}
	paddedPIN, ok := padPIN([]byte(pin))
	if !ok {
		return nil, fmt.Errorf("pivsim: PIN must be 6 to 8 bytes")
	}
	paddedPUK, ok := padPIN([]byte(puk))
	if !ok {
		return nil, fmt.Errorf("pivsim: PUK must be 6 to 8 bytes")
	}
	c.pin, c.puk = simkit.NewPIN(paddedPIN, pinMax), simkit.NewPIN(paddedPUK, pukMax)
	c.pinDefault, c.pukDefault = pin == defaultPIN, puk == defaultPUK
	c.seed = bytes.Clone(cfg.Seed)
	mgm, err := newMgmKey(cfg.ManagementAlgorithm, cfg.ManagementKey, c.version)
	if err != nil {
		return nil, err
	}
	c.mgm = mgm

	ids := make([]byte, 64)
	io.ReadFull(simkit.SeedReader(cfg.Seed, "identifiers"), ids)
	if c.serial == 0 {
		c.serial = binary.BigEndian.Uint32(ids[0:4])&0x7FFFFFF | 0x1000000
	}
	notBefore := cfg.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}

	layout := cfg.Slots
	if layout == nil {
		layout = DefaultSlots
	}
	for slot, sc := range layout {
		if !keySlot(slot) {
			return nil, fmt.Errorf("pivsim: %02X is not a key slot", byte(slot))
		}
		if sc.PINPolicy == 0 {
			sc.PINPolicy = defaultPolicy(slot)
		}
		key, err := generateKey(sc.Algorithm, cfg.Seed, fmt.Sprintf("slot %02x", byte(slot)))
		if err != nil {
			return nil, err
		}
		st := &slotState{cfg: sc, key: key, touch: TouchPolicyNever, origin: originGenerated}
		if !sc.NoCertificate && certObject(slot) != 0 {
			serial := new(big.Int).SetBytes(ids[8:16])
			serial.Add(serial, big.NewInt(int64(slot)))
			// The key management key's certificate names what it is for
			// (keyEncipherment for RSA, keyAgreement for EC), as a PIV
			// key management certificate does; OpenSC offers the key for
			// decryption or derivation only then.
			usage := x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
			if slot == SlotKeyManagement {
				usage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement
				if _, ok := key.(*rsa.PrivateKey); ok {
					usage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
				}
			}
			der, err := simkit.SelfSignedFor(key, fmt.Sprintf("pscs sim %08d slot %02X", c.serial, byte(slot)), serial, notBefore, usage)
			if err != nil {
				return nil, err
			}
			var inner []byte
			inner = apdu.AppendTLV(inner, 0x70, der)
			inner = apdu.AppendTLV(inner, 0x71, []byte{0x00})
			inner = apdu.AppendTLV(inner, 0xFE, nil)
			c.objects[certObject(slot)] = apdu.AppendTLV(nil, 0x53, inner)
		}
		c.slots[slot] = st
	}
	if _, ok := c.slots[SlotAttestation]; !ok && !cfg.NoAttestationKey {
		c.slots[SlotAttestation] = &slotState{
			cfg:   SlotConfig{Algorithm: RSA2048, PINPolicy: PINPolicyNever},
			touch: TouchPolicyNever, origin: originImported, lazy: "slot f9",
		}
	}

	// Discovery object: the PIV AID and the PIN usage policy (PIV PIN only).
	var disc []byte
	disc = apdu.AppendTLV(disc, 0x4F, pivAID)
	disc = apdu.AppendTLV(disc, 0x5F2F, []byte{0x40, 0x00})
	c.objects[0x7E] = apdu.AppendTLV(nil, 0x7E, disc)

	// CHUID: the FASC-N placeholder YubiKeys use, a GUID, an expiry date, an
	// empty signature.
	var chuid []byte
	chuid = apdu.AppendTLV(chuid, 0x30, fascn)
	chuid = apdu.AppendTLV(chuid, 0x34, ids[16:32])
	chuid = apdu.AppendTLV(chuid, 0x35, []byte("20451231"))
	chuid = apdu.AppendTLV(chuid, 0x3E, nil)
	chuid = apdu.AppendTLV(chuid, 0xFE, nil)
	c.objects[0x5FC102] = apdu.AppendTLV(nil, 0x53, chuid)

	// CCC, laid out as SP 800-73-4 Part 1 Appendix A lists it.
	cardID := append([]byte{0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02}, ids[32:46]...)
	var ccc []byte
	ccc = apdu.AppendTLV(ccc, 0xF0, cardID)
	ccc = apdu.AppendTLV(ccc, 0xF1, []byte{0x21})
	ccc = apdu.AppendTLV(ccc, 0xF2, []byte{0x21})
	ccc = apdu.AppendTLV(ccc, 0xF3, nil)
	ccc = apdu.AppendTLV(ccc, 0xF4, []byte{0x00})
	ccc = apdu.AppendTLV(ccc, 0xF5, []byte{0x10})
	for _, t := range []uint32{0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE} {
		ccc = apdu.AppendTLV(ccc, t, nil)
	}
	c.objects[0x5FC107] = apdu.AppendTLV(nil, 0x53, ccc)
	return &Card{Card: simkit.New(c, simkit.Options{ATR: atr, Latency: c.latency}), a: c, serial: c.serial}, nil
}

var (
	pivAID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}
	fascn  = []byte{0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68,
		0x58, 0x21, 0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB}
)

func defaultPolicy(s Slot) PINPolicy {
	switch s {
	case SlotSignature:
		return PINPolicyAlways
	case SlotCardAuthentication, SlotAttestation:
		return PINPolicyNever
	}
	return PINPolicyOnce
}

func certObject(s Slot) uint32 {
	switch s {
	case SlotAuthentication:
		return 0x5FC105
	case SlotSignature:
		return 0x5FC10A
	case SlotKeyManagement:
		return 0x5FC10B
	case SlotCardAuthentication:
		return 0x5FC101
	}
	if s >= 0x82 && s <= 0x95 {
		return 0x5FC10D + uint32(s-0x82)
	}
	return 0
}

func padPIN(p []byte) ([]byte, bool) {
	if len(p) < 6 || len(p) > 8 {
		return nil, false
	}
	out := bytes.Repeat([]byte{0xFF}, 8)
	copy(out, p)
	return out, true
}

// Serial returns the card's serial number.
func (c *Card) Serial() uint32 { return c.serial }

// Certificate returns the certificate stored for slot s (its data object,
// as GET DATA returns it, written by PUT DATA), or nil when there is none or
// it does not parse. Like a YubiKey, the card does not tie the certificate
// to the key: after a new key is generated the old certificate stays until
// a client writes a new one.
func (c *Card) Certificate(s Slot) (cert *x509.Certificate) {
	c.Locked(func() { cert = c.a.certificateLocked(s) })
	return cert
}

// PublicKey returns the public key in slot s, or nil.
func (c *Card) PublicKey(s Slot) (pub crypto.PublicKey) {
	c.Locked(func() {
		if key := c.a.keyLocked(s); key != nil {
			pub = key.Public()
		}
	})
	return pub
}

// keyLocked returns the private key in slot s, making a lazily made key
// first, or nil.
func (c *applet) keyLocked(s Slot) crypto.Signer {
	st := c.slots[s]
	if st == nil {
		return nil
	}
	if st.key == nil && st.lazy != "" {
		key, err := generateKey(st.cfg.Algorithm, c.seed, st.lazy)
		if err != nil {
			return nil
		}
		st.key, st.lazy = key, ""
	}
	return st.key
}

// PINRetries returns the PIN tries left.
func (c *Card) PINRetries() (n int) {
	c.Locked(func() { n = c.a.pin.Left })
	return n
}

// Reset forgets the session (the kit's card calls it on a card reset or
// power cycle, see [simkit.Card.Reset]): the PIN and the management key are
// no longer verified. Keys, certificates, PINs, the management key and
// counters stay.
func (c *applet) Reset() {
	c.verified, c.pinFresh = false, false
	c.mgmAuth, c.mgmPending = false, nil
}

// Handle answers one command (the kit has joined chained blocks and
// answers GET RESPONSE).
func (c *applet) Handle(cmd apdu.Command) simkit.Reply {
	delay := c.latency.Other
	if cmd.INS != 0x87 || cmd.P2 != byte(SlotManagement) {
		c.mgmPending = nil // the second half of an exchange must follow the first
	}

	var data []byte
	var status apdu.StatusWord
	switch cmd.INS {
	case 0xA4:
		data, status = c.selectApp(cmd)
	case 0xCB:
		data, status = c.getData(cmd)
	case 0x20:
		delay = c.latency.Verify
		status = c.verify(cmd)
	case 0x24:
		delay = c.latency.Verify
		status = c.changeReference(cmd)
	case 0x2C:
		delay = c.latency.Verify
		status = c.resetRetry(cmd)
	case 0x87:
		if cmd.P2 == byte(SlotManagement) {
			data, status = c.authenticateManagement(cmd)
		} else {
			data, status, delay = c.generalAuthenticate(cmd, delay)
		}
	case 0x47:
		data, status = c.generate(cmd)
	case 0xFE:
		status = c.importKey(cmd)
	case 0xDB:
		status = c.putData(cmd)
	case 0xFF:
		status = c.setManagementKey(cmd)
	case 0xFA:
		status = c.setPINRetries(cmd)
	case 0xFB:
		status = c.factoryReset(cmd)
	case 0xFD:
		data, status = c.version[:], apdu.SWSuccess
	case 0xF8:
		data = binary.BigEndian.AppendUint32(nil, c.serial)
		status = apdu.SWSuccess
	case 0xF7:
		data, status = c.metadata(cmd)
	default:
		status = apdu.SWINSNotSupported
	}
	return simkit.Reply{Data: data, SW: status, Delay: delay}
}

func (c *applet) selectApp(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x04 {
		return nil, apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) < 5 || !bytes.HasPrefix(pivAID, cmd.Data) {
		return nil, apdu.SWFileNotFound
	}
	// Application property template, as a YubiKey answers.
	var apt []byte
	apt = apdu.AppendTLV(apt, 0x4F, []byte{0x00, 0x00, 0x10, 0x00, 0x01, 0x00})
	apt = apdu.AppendTLV(apt, 0x79, apdu.AppendTLV(nil, 0x4F, pivAID[:5]))
	return apdu.AppendTLV(nil, 0x61, apt), apdu.SWSuccess
}

func (c *applet) getData(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return nil, apdu.SWIncorrectP1P2
	}
	tag, ok, err := apdu.FindTLV(cmd.Data, 0x5C)
	if err != nil || !ok || len(tag) == 0 || len(tag) > 3 {
		return nil, apdu.SWWrongData
	}
	var id uint32
	for _, b := range tag {
		id = id<<8 | uint32(b)
	}
	obj, ok := c.objects[id]
	if !ok {
		return nil, apdu.SWFileNotFound
	}
	if pinProtectedObject(id) && !c.verified {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	return obj, apdu.SWSuccess
}

func (c *applet) verify(cmd apdu.Command) apdu.StatusWord {
	if cmd.P2 != 0x80 {
		return apdu.SWRefNotFound
	}
	switch cmd.P1 {
	case 0xFF: // log out (SP 800-73-4 Part 2, 3.2.1)
		if len(cmd.Data) != 0 {
			return apdu.SWWrongData
		}
		c.verified, c.pinFresh = false, false
		return apdu.SWSuccess
	case 0x00:
	default:
		return apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) == 0 { // status query
		switch {
		}
		return c.pin.Status(c.verified)
	}
	if len(cmd.Data) != 8 {
		return apdu.SWWrongData
	}
	return c.checkPINLocked(cmd.Data)
}

func (c *applet) checkPINLocked(padded []byte) apdu.StatusWord {
	st := c.pin.Check(padded)
	c.verified = st == apdu.SWSuccess
	c.pinFresh = c.verified
	return st
}

func validNewPIN(p []byte) bool {
	n := bytes.IndexByte(p, 0xFF)
	if n < 0 {
		n = len(p)
	}
	if n < 6 {
		return false
	}
	for _, b := range p[n:] {
		if b != 0xFF {
			return false
		}
	}
	return true
}

func (c *applet) changeReference(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x00 || (cmd.P2 != 0x80 && cmd.P2 != 0x81) {
		return apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) != 16 {
		return apdu.SWWrongData
	}
	old, next := cmd.Data[:8], cmd.Data[8:]
	if cmd.P2 == 0x80 {
		if st := c.checkPINLocked(old); st != apdu.SWSuccess {
			return st
		}
		if !validNewPIN(next) {
			return apdu.SWWrongData
		}
		c.pin.Set(next)
		c.pinDefault = false
		return apdu.SWSuccess
	}
	if st := c.puk.Check(old); st != apdu.SWSuccess {
		return st
	}
	if !validNewPIN(next) {
		return apdu.SWWrongData
	}
	c.puk.Set(next)
	c.pukDefault = false
	return apdu.SWSuccess
}

func (c *applet) resetRetry(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x00 || cmd.P2 != 0x80 {
		return apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) != 16 {
		return apdu.SWWrongData
	}
	if st := c.puk.Check(cmd.Data[:8]); st != apdu.SWSuccess {
		return st
	}
	if !validNewPIN(cmd.Data[8:]) {
		return apdu.SWWrongData
	}
	c.pin.Unblock(cmd.Data[8:])
	c.pinDefault = false
	c.verified, c.pinFresh = false, false
	return apdu.SWSuccess
}

// generalAuthenticate handles INS 87 for signatures and RSA decryptions
// (the same raw private-key operation): 7C { 82 00, 81 challenge }, and for
// ECDH: 7C { 82 00, 85 point } -> 7C { 82 x }.
func (c *applet) generalAuthenticate(cmd apdu.Command, delay time.Duration) ([]byte, apdu.StatusWord, time.Duration) {
	st := c.slots[Slot(cmd.P2)]
	key := c.keyLocked(Slot(cmd.P2))
	if st == nil || key == nil {
		return nil, apdu.SWRefNotFound, delay
	}
	if Algorithm(cmd.P1) != st.cfg.Algorithm {
		return nil, apdu.SWIncorrectP1P2, delay
	}
	tmpl, ok, err := apdu.FindTLV(cmd.Data, 0x7C)
	if err != nil || !ok {
		return nil, apdu.SWWrongData, delay
	}
	tlvs, err := apdu.ParseTLVs(tmpl)
	if err != nil {
		return nil, apdu.SWWrongData, delay
	}
	var challenge, peer []byte
	var wantResponse, haveChallenge, havePeer bool
	for _, t := range tlvs {
		switch t.Tag {
		case 0x82:
			wantResponse = len(t.Value) == 0
		case 0x81:
			challenge, haveChallenge = t.Value, true
		case 0x85: // key agreement: the peer's point (SP 800-73-4 Part 2, A.5)
			peer, havePeer = t.Value, true
		default:
			return nil, apdu.SWWrongData, delay
		}
	}
	if !wantResponse || haveChallenge == havePeer {
		return nil, apdu.SWWrongData, delay
	}
	switch st.cfg.PINPolicy {
	case PINPolicyOnce:
		if !c.verified {
			return nil, apdu.SWSecurityStatusNotSatisfied, delay
		}
	case PINPolicyAlways:
		if !c.verified || !c.pinFresh {
			return nil, apdu.SWSecurityStatusNotSatisfied, delay
		}
		c.pinFresh = false
	}
	var sig []byte
	if havePeer {
		return c.agreeLocked(st, key, peer, delay)
	}
	switch key := key.(type) {
	case *ecdsa.PrivateKey:
		// Like a YubiKey, take input shorter than the curve order as the
		// integer it encodes (yubico-piv-tool sends SHA-256 for P-384).
		size := (key.Curve.Params().BitSize + 7) / 8
		if len(challenge) == 0 || len(challenge) > size {
			return nil, apdu.SWWrongData, delay
		}
		if sig, err = ecdsa.SignASN1(rand.Reader, key, challenge); err != nil {
			return nil, apdu.SWUnknown, delay
		}
		if st.cfg.Algorithm == ECCP384 {
			delay = c.latency.SignECCP384
		} else {
			delay = c.latency.SignECCP256
		}
	case *rsa.PrivateKey:
		if len(challenge) != key.Size() {
			return nil, apdu.SWWrongData, delay
		}
		m := new(big.Int).SetBytes(challenge)
		if m.Cmp(key.N) >= 0 {
			return nil, apdu.SWWrongData, delay
		}
		sig = simkit.RawRSA(key, m).FillBytes(make([]byte, key.Size()))
		delay = c.latency.SignRSA2048 // RSA-1024 too: no measured figure
	default:
		return nil, apdu.SWUnknown, delay
	}
	return apdu.AppendTLV(nil, 0x7C, apdu.AppendTLV(nil, 0x82, sig)), apdu.SWSuccess, delay
}

// Fingerprint returns a short hash of the public key in slot s, for logs.
func (c *Card) Fingerprint(s Slot) string {
	pub := c.PublicKey(s)
	if pub == nil {
		return ""
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.Sum256(der)
	return fmt.Sprintf("%x", h[:8])
}

// agreeLocked answers an ECDH GENERAL AUTHENTICATE: the x coordinate of
// the shared point of the slot's EC key and peer.
func (c *applet) agreeLocked(st *slotState, key crypto.Signer, peer []byte, delay time.Duration) ([]byte, apdu.StatusWord, time.Duration) {
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, apdu.SWWrongData, delay
	}
	priv, err := k.ECDH()
	if err != nil {
		return nil, apdu.SWUnknown, delay
	}
	pub, err := priv.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, apdu.SWWrongData, delay
	}
	switch st.cfg.PINPolicy {
	case PINPolicyOnce:
		if !c.verified {
			return nil, apdu.SWSecurityStatusNotSatisfied, delay
		}
	case PINPolicyAlways:
		if !c.verified || !c.pinFresh {
			return nil, apdu.SWSecurityStatusNotSatisfied, delay
		}
		c.pinFresh = false
	}
	x, err := priv.ECDH(pub)
	if err != nil {
		return nil, apdu.SWWrongData, delay
	}
	if st.cfg.Algorithm == ECCP384 {
		delay = c.latency.SignECCP384
	} else {
		delay = c.latency.SignECCP256
	}
	return apdu.AppendTLV(nil, 0x7C, apdu.AppendTLV(nil, 0x82, x)), apdu.SWSuccess, delay
}
