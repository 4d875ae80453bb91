// Package eidsim simulates an Estonian ID card of the 2018 generation
// (EstEID 2018, IDEMIA Cosmo platform) well enough that OpenSC's
// esteid2018 driver takes it for a real card.
//
// # Use
//
// A [Card] is a cards.Transmitter and a vpcd.Card: use it in process, or
// plug it into a real pcscd with cards/vpcd:
//
//	card, err := eidsim.New(eidsim.Config{Seed: []byte("test")})
//	go vpcd.Plug(ctx, "127.0.0.1:35963", card)
//
// # The card
//
// The answer to reset is the EstEID 2018 one ([DefaultATR]). The file
// system is the real card's:
//
//	3F00            MF, also selected by the IAS-ECC AID A0 00 00 00 77 01 08 00 07 00 00 FE 00 00 01 00
//	  D003          document number: 04 09 "AC1234567"
//	  5000          personal data file, EFs 5001-500F (surname, given name, sex, citizenship,
//	                date and place of birth, personal code, document number, expiry, issue, …)
//	  ADF1          authentication application, AID E8 28 BD 08 0F F2 50 4F 54 20 41 57 50
//	    3401        authentication certificate (DER)
//	  ADF2          qualified signature application, AID "QSCD Application"
//	    341F        signature certificate (DER)
//
// Two ECC P-384 keys: the authentication key, reference 81 in ADF1, under
// PIN1 (reference 01, global); the qualified signature key, reference 9F
// in ADF2, under PIN2 (reference 85, local to ADF2). The PUK (reference
// 02) unblocks both. Each has its own retry counter (three tries), padded
// with FF to 12 bytes.
//
// # Commands
//
//   - SELECT (A4) by identifier, child DF, child EF, name (AID) and path
//     (P1 00, 01, 02, 04, 08, 09), answering nothing (P2 0C), the FCP (04)
//     or the FCI (00). Selecting the main AID logs out every PIN.
//   - READ BINARY (B0) of the current EF; at or past the end it answers
//     6B 00.
//   - VERIFY (20) of PIN1, PIN2 (with ADF2 current) and the PUK: a wrong
//     value answers 63 Cx and costs a try of that counter only, a blocked
//     one 69 83, a value not 12 bytes long 67 00 (no try lost); an empty
//     VERIFY asks the state.
//   - CHANGE REFERENCE DATA (24, old and new value, 24 bytes), RESET
//     RETRY COUNTER (2C: P1 00 with PUK and new PIN, 02 with a new PIN
//     after the PUK was verified, 03 to unblock after it).
//   - GET DATA (CB 3F FF) of the PIN information object, 4D 08 70 06 BF 81
//     <ref & 0F> 02 A0 80: a 32-byte answer whose byte 10 is the maximum
//     and byte 13 the tries left.
//   - MANAGE SECURITY ENVIRONMENT SET (22 41) with the key in the current
//     DF: A4 (authentication, key 81), B6 (signature, key 9F) or B8 (key
//     agreement, key 81), algorithm reference 80 either one byte (04, 54,
//     0B, as web-eid sends) or four (FF 20 08 00, FF 15 08 00, FF 30 04
//     00, as OpenSC sends).
//   - INTERNAL AUTHENTICATE (88 00 00) with the authentication key, once
//     PIN1 is verified; PSO: COMPUTE DIGITAL SIGNATURE (2A 9E 9A) with the
//     signature key, after a VERIFY of PIN2 for every signature: the
//     security status of PIN2 is spent by one signature. Input: the hash,
//     at most 48 bytes (OpenSC left-pads with zeros to 48); output: the
//     raw ECDSA signature r‖s, 96 bytes.
//   - GET RESPONSE (C0) for answers longer than Le, and command chaining
//     (CLA 10).
//
// A reset ([Card.Reset], called by cards/vpcd when pcscd powers the card)
// selects the MF and clears the security status and environment.
//
// # Keys and certificates
//
// At creation the card makes its keys and issues both certificates from a
// test CA of its own ([Card.CACertificate]), with subjects shaped like real
// EstEID ones: C=EE, CN "SURNAME,GIVEN,CODE", SN, GN and serialNumber
// "PNOEE-CODE", for a made-up person with a valid personal code. With
// [Config.Seed] set the keys, the person, the CA and the certificates (signed
// by RFC 6979) are the same on every run. The keys are test keys in
// ordinary memory.
package eidsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/pscs/pscs/apdu"
)

// Key is a private key reference.
type Key byte

const (
	KeyAuthentication Key = 0x81 // in ADF1, under PIN1
	KeySignature      Key = 0x9F // in ADF2, under PIN2
)

// PIN is a PIN reference.
type PIN byte

const (
	PIN1 PIN = 0x01 // authentication PIN, global
	PIN2 PIN = 0x85 // signature PIN, local to ADF2
	PUK  PIN = 0x02 // unblocks PIN1 and PIN2
)

// DefaultATR is the answer to reset of an EstEID 2018 card.
var DefaultATR = []byte{0x3B, 0xDB, 0x96, 0x00, 0x80, 0xB1, 0xFE, 0x45, 0x1F, 0x83, 0x00, 0x12,
	0x23, 0x3F, 0x53, 0x65, 0x49, 0x44, 0x0F, 0x90, 0x00, 0xF1}

// Latency is how long the card takes for each kind of operation. The zero
// value answers at once.
type Latency struct {
	Verify     time.Duration // VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER
	Sign       time.Duration // ECDSA P-384
	ReadBinary time.Duration
	Other      time.Duration
}

// RealLatency is a national-ID-class card (no IDEMIA measurement is
// published): VERIFY 20 ms, ECDSA P-384 150 ms, 30 ms per READ BINARY.
var RealLatency = Latency{
	Verify:     20 * time.Millisecond,
	Sign:       150 * time.Millisecond,
	ReadBinary: 30 * time.Millisecond,
	Other:      2 * time.Millisecond,
}

// Config configures a simulated card. The zero value is a usable card.
type Config struct {
	// Seed makes keys, person, CA and certificates reproducible. Nil:
	// random.
	Seed []byte
	// PIN1 (4 to 12 digits, default "1234"), PIN2 (5 to 12, default
	// "12345") and PUK (8 to 12, default "12345678").
	PIN1, PIN2, PUK string
	// Retries is the number of tries of each PIN and the PUK; default 3.
	Retries int
	// Person is the card holder; zero: made up from Seed.
	Person Person
	// ATR is the answer to reset; nil means DefaultATR.
	ATR []byte
	// Latency is the time each operation takes.
	Latency Latency
	// NotBefore starts the certificates' validity; zero means
	// 2026-01-01 UTC.
	NotBefore time.Time
}

// securityEnv is the environment MSE:SET established.
type securityEnv struct {
	crt byte // A4, B6 or B8; 0: none
	key Key
}

// Card is a simulated EstEID 2018 card. It is safe for concurrent use; like
// a real card it processes one command at a time.
type Card struct {
	mu sync.Mutex

	atr       []byte
	latency   Latency
	person    Person
	notBefore time.Time
	keys      map[Key]*ecdsa.PrivateKey
	certs     *pki
	pins      map[PIN]*counter

	mf, adf1, adf2 *node

	// volatile, cleared by Reset
	sess   session
	df, ef *node
	se     securityEnv
}

// New makes a card.
func New(cfg Config) (*Card, error) {
	seed := cfg.Seed
	if seed == nil {
		seed = make([]byte, 32)
		rand.Read(seed)
	}
	c := &Card{atr: cfg.ATR, latency: cfg.Latency, person: cfg.Person, notBefore: cfg.NotBefore,
		keys: map[Key]*ecdsa.PrivateKey{}, pins: map[PIN]*counter{}}
	if c.atr == nil {
		c.atr = DefaultATR
	}
	if c.notBefore.IsZero() {
		c.notBefore = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.person == (Person{}) {
		c.person = seededPerson(seed)
	}
	retries := cfg.Retries
	if retries <= 0 {
		retries = 3
	}
	if retries > 15 {
		return nil, fmt.Errorf("eidsim: at most 15 retries")
	}
	for _, p := range []struct {
		ref      PIN
		value    string
		def      string
		min, max int
	}{{PIN1, cfg.PIN1, "1234", 4, 12}, {PIN2, cfg.PIN2, "12345", 5, 12}, {PUK, cfg.PUK, "12345678", 8, 12}} {
		v := p.value
		if v == "" {
			v = p.def
		}
		if len(v) < p.min || len(v) > p.max || !digits(v) {
			return nil, fmt.Errorf("eidsim: PIN %02X must be %d to %d digits", byte(p.ref), p.min, p.max)
		}
		c.pins[p.ref] = &counter{value: pad([]byte(v)), max: retries, left: retries}
	}
	for _, k := range []Key{KeyAuthentication, KeySignature} {
		key, err := seededECKey(elliptic.P384(), seed, fmt.Sprintf("key %02x", byte(k)))
		if err != nil {
			return nil, err
		}
		c.keys[k] = key
	}
	certs, err := issue(seed, c.person, c.keys[KeyAuthentication], c.keys[KeySignature], c.notBefore)
	if err != nil {
		return nil, err
	}
	c.certs = certs
	c.buildFiles(c.person, certs.auth.Raw, certs.sign.Raw)
	return c, nil
}

func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// pad pads a PIN with FF to the 12 bytes the card compares.
func pad(pin []byte) []byte {
	out := bytes.Repeat([]byte{0xFF}, 12)
	copy(out, pin)
	return out
}

// ATR returns the card's answer to reset.
func (c *Card) ATR() []byte { return bytes.Clone(c.atr) }

// Person returns the card holder.
func (c *Card) Person() Person { return c.person }

// Certificate returns the certificate of key k.
func (c *Card) Certificate(k Key) *x509.Certificate {
	switch k {
	case KeyAuthentication:
		return c.certs.auth
	case KeySignature:
		return c.certs.sign
	}
	return nil
}

// CACertificate returns the test CA that issued the card's certificates.
func (c *Card) CACertificate() *x509.Certificate { return c.certs.ca }

// PublicKey returns the public key of k, or nil.
func (c *Card) PublicKey(k Key) *ecdsa.PublicKey {
	if key := c.keys[k]; key != nil {
		return &key.PublicKey
	}
	return nil
}

// Retries returns the tries left of PIN p, or -1 for an unknown reference.
func (c *Card) Retries(p PIN) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pin := c.pins[p]; pin != nil {
		return pin.left
	}
	return -1
}

// Reset models a reset or power cycle: the MF is selected, the security
// status and environment are cleared, pending answers and chains dropped.
// Keys, PINs and counters stay.
func (c *Card) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess.reset()
	c.logout()
	c.df, c.ef = c.mf, nil
}

func (c *Card) logout() {
	for _, p := range c.pins {
		p.verified = false
	}
	c.se = securityEnv{}
}

// Transmit processes one command APDU and returns the response APDU. It
// returns an error only when ctx ends while the card is "working" (the
// latency model); a malformed command gets a status word, as on a card.
func (c *Card) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, delay := c.process(cmd)
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return rsp, nil
}

func (c *Card) process(raw []byte) ([]byte, time.Duration) {
	delay := c.latency.Other
	cmd, rsp, done := c.sess.begin(raw)
	if done {
		return rsp, delay
	}
	var data []byte
	var st apdu.StatusWord
	switch cmd.INS {
	case 0xA4:
		data, st = c.selectFile(cmd)
	case 0xB0:
		delay = c.latency.ReadBinary
		data, st = c.readBinary(cmd)
	case 0x20:
		delay = c.latency.Verify
		st = c.verify(cmd)
	case 0x24:
		delay = c.latency.Verify
		st = c.changeReference(cmd)
	case 0x2C:
		delay = c.latency.Verify
		st = c.resetRetryCounter(cmd)
	case 0xCB:
		data, st = c.getData(cmd)
	case 0x22:
		st = c.manageSecurityEnv(cmd)
	case 0x88:
		data, st = c.internalAuthenticate(cmd)
		if st == apdu.SWSuccess {
			delay = c.latency.Sign
		}
	case 0x2A:
		data, st = c.computeSignature(cmd)
		if st == apdu.SWSuccess {
			delay = c.latency.Sign
		}
	default:
		st = apdu.SWINSNotSupported
	}
	if st != apdu.SWSuccess {
		return sw(st), delay
	}
	return c.sess.respond(data, cmd), delay
}

// pin returns the counter of reference ref as seen from the current DF:
// PIN2 is local to ADF2.
func (c *Card) pin(ref byte) *counter {
	if PIN(ref) == PIN2 && c.df != c.adf2 {
		return nil
	}
	return c.pins[PIN(ref)]
}

func (c *Card) verify(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x00 {
		return apdu.SWIncorrectP1P2
	}
	p := c.pin(cmd.P2)
	if p == nil {
		return apdu.SWRefNotFound
	}
	if len(cmd.Data) == 0 {
		return p.status()
	}
	if len(cmd.Data) != 12 {
		return apdu.SWWrongLength
	}
	return p.check(cmd.Data)
}

func (c *Card) changeReference(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x00 {
		return apdu.SWIncorrectP1P2
	}
	p := c.pin(cmd.P2)
	if p == nil {
		return apdu.SWRefNotFound
	}
	if len(cmd.Data) != 24 {
		return apdu.SWWrongLength
	}
	if !validPadded(cmd.Data[12:]) {
		return apdu.SWWrongData
	}
	if st := p.check(cmd.Data[:12]); st != apdu.SWSuccess {
		return st
	}
	p.value = bytes.Clone(cmd.Data[12:])
	return apdu.SWSuccess
}

// validPadded reports whether b is 4 or more digits padded with FF.
func validPadded(b []byte) bool {
	n := bytes.IndexByte(b, 0xFF)
	if n < 0 {
		n = len(b)
	}
	if n < 4 || !digits(string(b[:n])) {
		return false
	}
	return len(bytes.Trim(b[n:], "\xFF")) == 0
}

func (c *Card) resetRetryCounter(cmd apdu.Command) apdu.StatusWord {
	if PIN(cmd.P2) == PUK {
		return apdu.SWRefNotFound
	}
	p := c.pin(cmd.P2)
	if p == nil {
		return apdu.SWRefNotFound
	}
	puk := c.pins[PUK]
	var next []byte
	switch cmd.P1 {
	case 0x00: // PUK and new PIN
		if len(cmd.Data) != 24 {
			return apdu.SWWrongLength
		}
		if !validPadded(cmd.Data[12:]) {
			return apdu.SWWrongData
		}
		if st := puk.check(cmd.Data[:12]); st != apdu.SWSuccess {
			return st
		}
		next = cmd.Data[12:]
	case 0x02: // new PIN, PUK verified before
		if len(cmd.Data) != 12 {
			return apdu.SWWrongLength
		}
		if !validPadded(cmd.Data) {
			return apdu.SWWrongData
		}
		next = cmd.Data
		fallthrough
	case 0x03: // unblock only, PUK verified before
		if cmd.P1 == 0x03 && len(cmd.Data) != 0 {
			return apdu.SWWrongLength
		}
		if !puk.verified {
			return apdu.SWSecurityStatusNotSatisfied
		}
	default:
		return apdu.SWIncorrectP1P2
	}
	if next != nil {
		p.value = bytes.Clone(next)
	}
	p.left, p.verified = p.max, false
	return apdu.SWSuccess
}

// getData answers GET DATA (CB 3F FF) of the PIN information object
// 4D { 70 { BF 81 0r { A0 80 } } }: the template of PIN r with its
// maximum (9A) and remaining tries (9B), laid out as the card lays it out.
func (c *Card) getData(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return nil, apdu.SWIncorrectP1P2
	}
	ext, ok, err := apdu.FindTLV(cmd.Data, 0x4D)
	if err != nil || !ok {
		return nil, apdu.SWWrongData
	}
	tmpl, ok, err := apdu.FindTLV(ext, 0x70)
	if err != nil || !ok {
		return nil, apdu.SWWrongData
	}
	tlvs, err := apdu.ParseTLVs(tmpl)
	if err != nil || len(tlvs) != 1 || tlvs[0].Tag&^0xFF != 0xBF8100 {
		return nil, apdu.SWWrongData
	}
	ref := byte(tlvs[0].Tag)
	if ref == byte(PIN2)&0x0F {
		ref = byte(PIN2)
	}
	p := c.pin(ref)
	if p == nil || (ref != byte(PIN1) && ref != byte(PUK) && ref != byte(PIN2)) {
		return nil, apdu.SWRefNotFound
	}
	var info []byte
	info = apdu.AppendTLV(info, 0x9A, []byte{byte(p.max)})
	info = apdu.AppendTLV(info, 0x9B, []byte{byte(p.left)})
	// Usage rules of the PIN object as the card reports them (opaque here).
	rule := []byte{0xF3, 0x00, 0x00, 0x73, 0x43, 0x00}
	info = apdu.AppendTLV(info, 0xA1, append(apdu.AppendTLV(nil, 0x8C, rule), apdu.AppendTLV(nil, 0x9C, rule)...))
	obj := apdu.AppendTLV(nil, 0xBF8100|uint32(ref&0x0F), apdu.AppendTLV(nil, 0xA0, info))
	return apdu.AppendTLV(nil, 0x70, obj), apdu.SWSuccess
}

// Algorithm references MSE:SET accepts for each template: the one-byte
// form and OpenSC's four-byte form.
var seAlgorithms = map[byte][][]byte{
	0xA4: {{0x04}, {0xFF, 0x20, 0x08, 0x00}},
	0xB6: {{0x54}, {0xFF, 0x15, 0x08, 0x00}},
	0xB8: {{0x0B}, {0xFF, 0x30, 0x04, 0x00}},
}

func (c *Card) manageSecurityEnv(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x41 {
		return apdu.SWIncorrectP1P2
	}
	algs, ok := seAlgorithms[cmd.P2]
	if !ok {
		return apdu.SWIncorrectP1P2
	}
	c.se = securityEnv{}
	tlvs, err := apdu.ParseTLVs(cmd.Data)
	if err != nil {
		return apdu.SWWrongData
	}
	var alg, ref []byte
	for _, t := range tlvs {
		switch t.Tag {
		case 0x80:
			alg = t.Value
		case 0x84:
			ref = t.Value
		default:
			return apdu.SWWrongData
		}
	}
	if len(ref) != 1 {
		return apdu.SWWrongData
	}
	key := Key(ref[0])
	want := KeyAuthentication
	home := c.adf1
	if cmd.P2 == 0xB6 {
		want, home = KeySignature, c.adf2
	}
	if key != want || c.df != home {
		return apdu.SWRefNotFound
	}
	known := false
	for _, a := range algs {
		known = known || bytes.Equal(a, alg)
	}
	if !known {
		return apdu.SWWrongData
	}
	c.se = securityEnv{crt: cmd.P2, key: key}
	return apdu.SWSuccess
}

func (c *Card) internalAuthenticate(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x00 || cmd.P2 != 0x00 {
		return nil, apdu.SWIncorrectP1P2
	}
	if c.se.crt != 0xA4 {
		return nil, apdu.SWConditionsNotSatisfied
	}
	if !c.pins[PIN1].verified {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	return c.sign(KeyAuthentication, cmd.Data)
}

func (c *Card) computeSignature(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x9E || cmd.P2 != 0x9A {
		return nil, apdu.SWIncorrectP1P2
	}
	if c.se.crt != 0xB6 {
		return nil, apdu.SWConditionsNotSatisfied
	}
	pin2 := c.pins[PIN2]
	if !pin2.verified {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	data, st := c.sign(KeySignature, cmd.Data)
	if st != apdu.SWWrongLength {
		pin2.verified = false // one VERIFY, one signature
	}
	return data, st
}

// sign makes the raw ECDSA signature r‖s of a hash of at most 48 bytes.
func (c *Card) sign(k Key, hash []byte) ([]byte, apdu.StatusWord) {
	if len(hash) == 0 || len(hash) > 48 {
		return nil, apdu.SWWrongLength
	}
	key := c.keys[k]
	r, s, err := ecdsa.Sign(rand.Reader, key, hash)
	if err != nil {
		return nil, apdu.SWUnknown
	}
	out := make([]byte, 96)
	r.FillBytes(out[:48])
	s.FillBytes(out[48:])
	return out, apdu.SWSuccess
}
