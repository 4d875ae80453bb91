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
//     value answers 63 Cx and costs a try of that counter only (the last
//     try 63 C0), a blocked PIN 69 83, a value not 12 bytes long 67 00 (no
//     try lost); an empty VERIFY asks the state.
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
//   - PSO: DECIPHER (2A 80 86) in the key agreement environment: ECDH of
//     the authentication key with the peer's uncompressed point (after
//     OpenSC's padding indicator 00), once PIN1 is verified; the answer
//     is the shared X coordinate, 48 bytes.
//   - GET RESPONSE (C0) for answers longer than Le, and command chaining
//     (CLA 10): the simulator kit (profiles/simkit) does these, the
//     framing and the latency model ([RealLatency]).
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
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/simkit"
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

// Latency is how long the card takes for each kind of operation (the
// kit's model: VERIFY, SignECCP384, ECDHP384 and Other, which READ BINARY
// and SELECT take). The zero value answers at once.
type Latency = simkit.Latency

// RealLatency is a national-ID-class card, no IDEMIA measurement being
// published (cards.md section 6): VERIFY 20 ms, ECDSA P-384 150 ms, 15 ms
// for every other command (a READ BINARY of 233 bytes takes 20-100 ms on
// such cards).
var RealLatency = Latency{
	Verify:      20 * time.Millisecond,
	SignECCP384: 150 * time.Millisecond,
	ECDHP384:    150 * time.Millisecond,
	Other:       15 * time.Millisecond,
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

// securityEnv is the environment MSE:SET established: its template, A4
// (authentication, key 81), B6 (signature, key 9F) or B8 (key agreement,
// key 81); 0 for none.
type securityEnv struct {
	crt byte
}

// Card is a simulated EstEID 2018 card: the kit's card running the EstEID
// applet. It is safe for concurrent use; like a real card it processes one
// command at a time.
type Card struct {
	*simkit.Card
	a *applet
}

// applet is the card's state; the kit's card lock guards it.
type applet struct {
	latency   Latency
	person    Person
	notBefore time.Time
	keys      map[Key]*ecdsa.PrivateKey
	certs     *pki
	pins      map[PIN]*simkit.PIN

	mf, adf1, adf2 *node

	// session, cleared by Reset
	verified map[PIN]bool
	df, ef   *node
	se       securityEnv
}

// New makes a card.
func New(cfg Config) (*Card, error) {
	seed := cfg.Seed
	if seed == nil {
		seed = make([]byte, 32)
		rand.Read(seed)
	}
	c := &applet{latency: cfg.Latency, person: cfg.Person, notBefore: cfg.NotBefore,
		keys: map[Key]*ecdsa.PrivateKey{}, pins: map[PIN]*simkit.PIN{}, verified: map[PIN]bool{}}
	atr := cfg.ATR
	if atr == nil {
		atr = DefaultATR
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
		c.pins[p.ref] = simkit.NewPIN(pad([]byte(v)), retries)
	}
	for _, k := range []Key{KeyAuthentication, KeySignature} {
		key, err := simkit.GenerateKey(simkit.ECCP384, seed, fmt.Sprintf("key %02x", byte(k)))
		if err != nil {
			return nil, err
		}
		c.keys[k] = key.(*ecdsa.PrivateKey)
	}
	certs, err := issue(seed, c.person, c.keys[KeyAuthentication], c.keys[KeySignature], c.notBefore)
	if err != nil {
		return nil, err
	}
	c.certs = certs
	c.buildFiles(c.person, certs.auth.Raw, certs.sign.Raw)
	return &Card{Card: simkit.New(c, simkit.Options{ATR: atr, Latency: c.latency}), a: c}, nil
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

// Person returns the card holder.
func (c *Card) Person() Person { return c.a.person }

// Certificate returns the certificate of key k.
func (c *Card) Certificate(k Key) *x509.Certificate {
	switch k {
	case KeyAuthentication:
		return c.a.certs.auth
	case KeySignature:
		return c.a.certs.sign
	}
	return nil
}

// CACertificate returns the test CA that issued the card's certificates.
func (c *Card) CACertificate() *x509.Certificate { return c.a.certs.ca }

// PublicKey returns the public key of k, or nil.
func (c *Card) PublicKey(k Key) *ecdsa.PublicKey {
	if key := c.a.keys[k]; key != nil {
		return &key.PublicKey
	}
	return nil
}

// Retries returns the tries left of PIN p, or -1 for an unknown reference.
func (c *Card) Retries(p PIN) (n int) {
	n = -1
	c.Locked(func() {
		if pin := c.a.pins[p]; pin != nil {
			n = pin.Left
		}
	})
	return n
}

// Verified reports whether PIN p is verified now.
func (c *Card) Verified(p PIN) (ok bool) {
	c.Locked(func() { ok = c.a.verified[p] })
	return ok
}

// Reset forgets the session (the kit's card calls it on a reset or power
// cycle): the MF is selected, the security status and environment are
// cleared. Keys, PINs and counters stay.
func (c *applet) Reset() {
	c.logout()
	c.df, c.ef = c.mf, nil
}

func (c *applet) logout() {
	clear(c.verified)
	c.se = securityEnv{}
}

// Handle answers one command (the kit has joined chained blocks and
// answers GET RESPONSE).
func (c *applet) Handle(cmd apdu.Command) simkit.Reply {
	delay := c.latency.Other
	var data []byte
	var st apdu.StatusWord
	switch cmd.INS {
	case 0xA4:
		data, st = c.selectFile(cmd)
	case 0xB0:
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
	case 0x2A:
		if cmd.P1 == 0x80 {
			data, st = c.decipher(cmd)
			if st == apdu.SWSuccess {
				delay = c.latency.ECDHP384
			}
			break
		}
		data, st = c.computeSignature(cmd)
	default:
		st = apdu.SWINSNotSupported
	}
	if st == apdu.SWSuccess && (cmd.INS == 0x88 || (cmd.INS == 0x2A && cmd.P1 == 0x9E)) {
		delay = c.latency.SignECCP384
	}
	return simkit.Reply{Data: data, SW: st, Delay: delay}
}

// check verifies candidate against PIN ref. The kit answers the last wrong
// try with 69 83; this card answers 63 C0 (web-eid's libelectronic-id,
// written for these cards, reads 63 C0 as "blocked") and 69 83 only to a
// PIN that was blocked before.
func (c *applet) check(ref PIN, candidate []byte) apdu.StatusWord {
	p := c.pins[ref]
	was := p.Blocked()
	st := p.Check(candidate)
	c.verified[ref] = st == apdu.SWSuccess
	if st == apdu.SWAuthBlocked && !was {
		return apdu.SWRetries(0)
	}
	return st
}

// pin returns PIN ref as seen from the current DF (PIN2 is local to
// ADF2), or nil.
func (c *applet) pin(ref byte) *simkit.PIN {
	if PIN(ref) == PIN2 && c.df != c.adf2 {
		return nil
	}
	return c.pins[PIN(ref)]
}

func (c *applet) verify(cmd apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x00 {
		return apdu.SWIncorrectP1P2
	}
	p := c.pin(cmd.P2)
	if p == nil {
		return apdu.SWRefNotFound
	}
	if len(cmd.Data) == 0 {
		return p.Status(c.verified[PIN(cmd.P2)])
	}
	if len(cmd.Data) != 12 {
		return apdu.SWWrongLength
	}
	return c.check(PIN(cmd.P2), cmd.Data)
}

func (c *applet) changeReference(cmd apdu.Command) apdu.StatusWord {
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
	if st := c.check(PIN(cmd.P2), cmd.Data[:12]); st != apdu.SWSuccess {
		return st
	}
	p.Set(cmd.Data[12:])
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

// resetRetryCounter is RESET RETRY COUNTER (2C) of PIN1 or PIN2: P1 00
// with the PUK and the new PIN, 02 with the new PIN once the PUK is
// verified (as OpenSC's driver does it), 03 to unblock only.
func (c *applet) resetRetryCounter(cmd apdu.Command) apdu.StatusWord {
	if PIN(cmd.P2) == PUK {
		return apdu.SWRefNotFound
	}
	p := c.pin(cmd.P2)
	if p == nil {
		return apdu.SWRefNotFound
	}
	var next []byte
	switch cmd.P1 {
	case 0x00:
		if len(cmd.Data) != 24 {
			return apdu.SWWrongLength
		}
		if !validPadded(cmd.Data[12:]) {
			return apdu.SWWrongData
		}
		if st := c.check(PUK, cmd.Data[:12]); st != apdu.SWSuccess {
			return st
		}
		next = cmd.Data[12:]
	case 0x02, 0x03:
		if cmd.P1 == 0x02 && (len(cmd.Data) != 12 || !validPadded(cmd.Data)) {
			return apdu.SWWrongData
		}
		if cmd.P1 == 0x03 && len(cmd.Data) != 0 {
			return apdu.SWWrongLength
		}
		if !c.verified[PUK] {
			return apdu.SWSecurityStatusNotSatisfied
		}
		next = cmd.Data
	default:
		return apdu.SWIncorrectP1P2
	}
	if len(next) > 0 {
		p.Unblock(next)
	} else {
		p.SetTries(p.Max)
	}
	c.verified[PIN(cmd.P2)] = false
	return apdu.SWSuccess
}

// getData answers GET DATA (CB 3F FF) of the PIN information object
// 4D { 70 { BF 81 0r { A0 80 } } }: the template of PIN r with its
// maximum (9A) and remaining tries (9B), laid out as the card lays it out
// (32 bytes; OpenSC reads byte 13, web-eid bytes 10 and 13).
func (c *applet) getData(cmd apdu.Command) ([]byte, apdu.StatusWord) {
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
	var ref byte
	switch r := byte(tlvs[0].Tag); r {
	case byte(PIN1), byte(PUK):
		ref = r
	case byte(PIN2) & 0x0F:
		ref = byte(PIN2)
	default:
		return nil, apdu.SWRefNotFound
	}
	p := c.pin(ref)
	if p == nil {
		return nil, apdu.SWRefNotFound
	}
	var info []byte
	info = apdu.AppendTLV(info, 0x9A, []byte{byte(p.Max)})
	info = apdu.AppendTLV(info, 0x9B, []byte{byte(p.Left)})
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

// manageSecurityEnv is MSE:SET (22 41 xx): the template, the key (84) in
// the current DF and an algorithm reference (80) the template allows.
func (c *applet) manageSecurityEnv(cmd apdu.Command) apdu.StatusWord {
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
	want, home := KeyAuthentication, c.adf1
	if cmd.P2 == 0xB6 {
		want, home = KeySignature, c.adf2
	}
	if Key(ref[0]) != want || c.df != home {
		return apdu.SWRefNotFound
	}
	known := false
	for _, a := range algs {
		known = known || bytes.Equal(a, alg)
	}
	if !known {
		return apdu.SWWrongData
	}
	c.se = securityEnv{crt: cmd.P2}
	return apdu.SWSuccess
}

// internalAuthenticate is INTERNAL AUTHENTICATE (88 00 00) with the
// authentication key: PIN1 stays verified for as many as the session
// wants.
func (c *applet) internalAuthenticate(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x00 || cmd.P2 != 0x00 {
		return nil, apdu.SWIncorrectP1P2
	}
	if c.se.crt != 0xA4 {
		return nil, apdu.SWConditionsNotSatisfied
	}
	if !c.verified[PIN1] {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	return c.sign(KeyAuthentication, cmd.Data)
}

// computeSignature is PSO: COMPUTE DIGITAL SIGNATURE (2A 9E 9A) with the
// qualified signature key: one VERIFY of PIN2 allows one signature.
func (c *applet) computeSignature(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x9E || cmd.P2 != 0x9A {
		return nil, apdu.SWIncorrectP1P2
	}
	if c.se.crt != 0xB6 {
		return nil, apdu.SWConditionsNotSatisfied
	}
	if !c.verified[PIN2] {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	data, st := c.sign(KeySignature, cmd.Data)
	if st == apdu.SWSuccess {
		c.verified[PIN2] = false
	}
	return data, st
}

// decipher is PSO: DECIPHER (2A 80 86) in the key agreement environment:
// ECDH of the authentication key with the peer's point, uncompressed,
// after the padding indicator 00 OpenSC puts first (or without it). The
// answer is the shared secret, the X coordinate, 48 bytes. PIN1 guards it.
func (c *applet) decipher(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P2 != 0x86 {
		return nil, apdu.SWIncorrectP1P2
	}
	if c.se.crt != 0xB8 {
		return nil, apdu.SWConditionsNotSatisfied
	}
	if !c.verified[PIN1] {
		return nil, apdu.SWSecurityStatusNotSatisfied
	}
	point := cmd.Data
	if len(point) == 98 && point[0] == 0x00 {
		point = point[1:]
	}
	if len(point) != 97 {
		return nil, apdu.SWWrongLength
	}
	secret, err := simkit.ECDH(c.keys[KeyAuthentication], point)
	if err != nil {
		return nil, apdu.SWWrongData
	}
	return secret, apdu.SWSuccess
}

// sign makes the raw ECDSA signature r‖s (96 bytes) of a hash of 1 to 48
// bytes.
func (c *applet) sign(k Key, hash []byte) ([]byte, apdu.StatusWord) {
	if len(hash) == 0 || len(hash) > 48 {
		return nil, apdu.SWWrongLength
	}
	sig, err := simkit.SignECDSARaw(c.keys[k], hash)
	if err != nil {
		return nil, apdu.SWUnknown
	}
	return sig, apdu.SWSuccess
}
