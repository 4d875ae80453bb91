package pgpsim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/simkit"
)

// Key status in DE (key information).
const (
	keyNone      = 0x00
	keyGenerated = 0x01
	keyImported  = 0x02
)

// maxDO is the largest special DO (URL, login data, private DOs, name), as
// C0 announces; maxCert the largest certificate.
const (
	maxDO        = 0xFF
	maxCert      = 0x800
	maxChallenge = 0x0BFE
)

type keySlot struct {
	attr   []byte // algorithm attributes (C1, C2, C3, DA)
	alg    simkit.Alg
	key    crypto.PrivateKey // nil: none
	status byte              // DE
	fp     [20]byte          // C7..C9 (C5)
	caFP   [20]byte          // CA..CC (C6)
	time   [4]byte           // CE..D0 (CD)
	uif    [2]byte           // D6..D9
}

type application int

const (
	appNone application = iota
	appOpenPGP
	appOTP
)

// applet is the OpenPGP application's state; the kit's card lock guards it.
type applet struct {
	seed     []byte
	version  [3]byte
	serial   uint32
	latency  simkit.Latency
	rand     io.Reader
	attestFP [20]byte

	pw1Initial, pw3Initial []byte
	pw1, rc, pw3           *simkit.PIN
	pw1Valid               byte // C4's first byte: 01 several signatures per VERIFY, 00 one

	keys        [numKeys]keySlot
	generations int
	sigCount    uint32
	name        []byte // 5B
	lang        []byte // 5F2D
	sex         []byte // 5F35
	url         []byte // 5F50
	login       []byte // 5E
	private     [4][]byte
	certs       [3][]byte // 7F21 occurrences 0 (AUT), 1 (DEC), 2 (SIG)
	kdf         []byte    // F9
	terminated  bool

	// session, cleared by Reset
	selected      application
	pw1Sign       bool // VERIFY 81
	pw1Other      bool // VERIFY 82
	pw3Verified   bool
	certOccurence int
}

// factoryReset puts the card in the state of a YubiKey after TERMINATE DF
// and ACTIVATE FILE.
func (a *applet) factoryReset() {
	a.pw1 = simkit.NewPIN(a.pw1Initial, 3)
	a.pw3 = simkit.NewPIN(a.pw3Initial, 3)
	a.rc = simkit.NewPIN(nil, 3)
	a.rc.Left = 0 // no resetting code
	for _, p := range []*simkit.PIN{a.pw1, a.rc, a.pw3} {
		p.WrongSW = apdu.SWSecurityStatusNotSatisfied
	}
	a.pw1Valid = 0x01
	for k := range a.keys {
		a.keys[k] = keySlot{attr: attributesOf(simkit.RSA2048, Key(k)), alg: simkit.RSA2048, uif: [2]byte{0x00, 0x20}}
	}
	a.keys[keyAttest].status = keyImported
	a.keys[keyAttest].fp = a.attestFP
	a.sigCount = 0
	a.name, a.lang, a.sex, a.url, a.login = nil, nil, []byte{'9'}, nil, nil // sex 9: not applicable
	a.private, a.certs = [4][]byte{}, [3][]byte{}
	a.kdf = []byte{0x81, 0x01, 0x00}
	a.terminated = false
	a.Reset()
}

// Reset forgets the session: verified PINs, the selected application.
func (a *applet) Reset() {
	a.selected = appNone
	a.pw1Sign, a.pw1Other, a.pw3Verified = false, false, false
	a.certOccurence = 0
}

func (a *applet) aid() []byte {
	aid := []byte{0xD2, 0x76, 0x00, 0x01, 0x24, 0x01, 0x03, 0x04, 0x00, 0x06}
	aid = binary.BigEndian.AppendUint32(aid, a.serial)
	return append(aid, 0x00, 0x00)
}

var otpAID = []byte{0xA0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01}

// Handle answers one command.
func (a *applet) Handle(cmd apdu.Command) simkit.Reply {
	r := a.handle(cmd)
	if r.Delay == 0 {
		r.Delay = a.latency.Other
	}
	return r
}

func (a *applet) handle(cmd apdu.Command) simkit.Reply {
	if cmd.INS == 0xA4 {
		return a.selectApp(cmd)
	}
	switch a.selected {
	case appOTP:
		if cmd.INS == 0x03 { // the YubiKey OTP application's status
			return simkit.OK(a.otpStatus())
		}
		return simkit.Status(apdu.SWINSNotSupported)
	case appNone:
		return simkit.Status(apdu.SWINSNotSupported)
	}
	if a.terminated && cmd.INS != 0x44 {
		return simkit.Status(apdu.SWConditionsNotSatisfied)
	}
	switch cmd.INS {
	case 0xCA:
		return a.getData(cmd, false)
	case 0xCC:
		return a.getData(cmd, true)
	case 0xA5:
		return a.selectData(cmd)
	case 0xDA:
		return a.putData(cmd)
	case 0xDB:
		return a.putKey(cmd)
	case 0x20:
		return a.verify(cmd)
	case 0x24:
		return a.changeReference(cmd)
	case 0x2C:
		return a.resetRetry(cmd)
	case 0xF2:
		return a.setRetries(cmd)
	case 0x47:
		return a.generate(cmd)
	case 0x2A:
		return a.pso(cmd)
	case 0x88:
		return a.internalAuthenticate(cmd)
	case 0x84:
		return a.challenge(cmd)
	case 0xE6:
		return a.terminate(cmd)
	case 0x44:
		if !a.terminated {
			return simkit.Status(apdu.SWSuccess) // as a YubiKey: nothing to activate
		}
		// A YubiKey keeps the session: PW3 verified before the reset is
		// still verified after it (the transcripts write attributes next).
		pw1Sign, pw1Other, pw3 := a.pw1Sign, a.pw1Other, a.pw3Verified
		a.factoryReset()
		a.selected, a.pw1Sign, a.pw1Other, a.pw3Verified = appOpenPGP, pw1Sign, pw1Other, pw3
		return simkit.Reply{SW: apdu.SWSuccess, Delay: a.latency.FactoryReset}
	}
	return simkit.Status(apdu.SWINSNotSupported)
}

func (a *applet) otpStatus() []byte { return append(a.version[:], 0x01, 0x05, 0x00) }

func (a *applet) selectApp(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0x04 {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	switch {
	case len(cmd.Data) >= 6 && bytes.HasPrefix(a.aid(), cmd.Data):
		a.selected = appOpenPGP
		if a.terminated {
			return simkit.Status(0x6285) // selected file in termination state
		}
		return simkit.Status(apdu.SWSuccess)
	case bytes.HasPrefix(cmd.Data, otpAID):
		a.selected = appOTP
		a.pw1Sign, a.pw1Other, a.pw3Verified = false, false, false
		return simkit.OK(a.otpStatus())
	}
	return simkit.Status(apdu.SWFileNotFound)
}

// pwStatus is C4: validity of PW1, the maximum lengths, the tries left.
func (a *applet) pwStatus() []byte {
	return []byte{a.pw1Valid, 0x7F, 0x7F, 0x7F, byte(a.pw1.Left), byte(a.rc.Left), byte(a.pw3.Left)}
}

// dataObject returns the value of a simple or constructed DO for GET DATA
// (without its tag), or false.
func (a *applet) dataObject(tag uint32) ([]byte, bool) {
	cat := func(f func(*keySlot) []byte, keys int) []byte {
		var out []byte
		for k := range keys {
			out = append(out, f(&a.keys[k])...)
		}
		return out
	}
	switch tag {
	case 0x4F:
		return a.aid(), true
	case 0x5F52:
		return []byte{0x00, 0x73, 0x00, 0x00, 0xE0, 0x05, 0x90, 0x00}, true
	case 0x7F74:
		return []byte{0x81, 0x01, 0x20}, true
	case 0xC0:
		return []byte{0x7D, 0x00, maxChallenge >> 8, maxChallenge & 0xFF, maxCert >> 8, maxCert & 0xFF, 0x00, maxDO, 0x00, 0x00}, true
	case 0xC1, 0xC2, 0xC3:
		return a.keys[tag-0xC1].attr, true
	case 0xDA:
		return a.keys[keyAttest].attr, true
	case 0xC4:
		return a.pwStatus(), true
	case 0xC5:
		return cat(func(s *keySlot) []byte { return s.fp[:] }, int(numKeys)), true
	case 0xC6:
		return cat(func(s *keySlot) []byte { return s.caFP[:] }, int(numKeys)), true
	case 0xCD:
		return cat(func(s *keySlot) []byte { return s.time[:] }, int(numKeys)), true
	case 0xDE:
		var out []byte
		for k := range numKeys {
			ref := byte(k) + 1
			if k == keyAttest {
				ref = 0x81
			}
			out = append(out, ref, a.keys[k].status)
		}
		return out, true
	case 0x7F66:
		return []byte{0x02, 0x02, 0x0B, 0xFE, 0x02, 0x02, 0x0B, 0xFE}, true
	case 0xD6, 0xD7, 0xD8:
		return a.keys[tag-0xD6].uif[:], true
	case 0xD9:
		return a.keys[keyAttest].uif[:], true
	case 0x73:
		var out []byte
		for _, t := range []uint32{0xC0, 0xC1, 0xC2, 0xC3, 0xDA, 0xC4, 0xC5, 0xC6, 0xCD, 0xDE, 0x7F66, 0xD6, 0xD7, 0xD8, 0xD9} {
			v, _ := a.dataObject(t)
			out = apdu.AppendTLV(out, t, v)
		}
		return out, true
	case 0x6E:
		var out []byte
		for _, t := range []uint32{0x4F, 0x5F52, 0x7F74, 0x73} {
			v, _ := a.dataObject(t)
			out = apdu.AppendTLV(out, t, v)
		}
		return out, true
	case 0x65:
		var out []byte
		out = apdu.AppendTLV(out, 0x5B, a.name)
		out = apdu.AppendTLV(out, 0x5F2D, a.lang)
		out = apdu.AppendTLV(out, 0x5F35, a.sex)
		return out, true
	case 0x5B:
		return a.name, true
	case 0x5F2D:
		return a.lang, true
	case 0x5F35:
		return a.sex, true
	case 0x7A:
		return apdu.AppendTLV(nil, 0x93, []byte{byte(a.sigCount >> 16), byte(a.sigCount >> 8), byte(a.sigCount)}), true
	case 0x5F50:
		return a.url, true
	case 0x5E:
		return a.login, true
	case 0x0101, 0x0102, 0x0103, 0x0104:
		return a.private[tag-0x0101], true
	case 0x7F21:
		return a.certs[a.certOccurence], true
	case 0xF9:
		return a.kdf, true
	case 0xFA:
		return algorithmInformation(), true
	}
	return nil, false
}

// algorithmInformation is FA: every attribute the card takes, per key.
func algorithmInformation() []byte {
	var out []byte
	for _, k := range []Key{KeySign, KeyDecrypt, KeyAuth, keyAttest} {
		tag := uint32(0xC1) + uint32(k)
		if k == keyAttest {
			tag = 0xDA
		}
		as := k
		if k == keyAttest {
			as = KeySign
		}
		for _, alg := range []simkit.Alg{simkit.RSA2048, simkit.RSA3072, simkit.RSA4096, simkit.ECCP256, simkit.ECCP384, simkit.ECCP521, simkit.Ed25519, simkit.X25519} {
			if attr := attributesOf(alg, as); attr != nil {
				out = apdu.AppendTLV(out, tag, attr)
			}
		}
	}
	return out
}

func (a *applet) getData(cmd apdu.Command, next bool) simkit.Reply {
	tag := uint32(cmd.P1)<<8 | uint32(cmd.P2)
	if next { // GET NEXT DATA: the next cardholder certificate
		if tag != 0x7F21 {
			return simkit.Status(apdu.SWIncorrectP1P2)
		}
		if a.certOccurence+1 >= len(a.certs) {
			return simkit.Status(apdu.SWWrongData)
		}
		a.certOccurence++
	}
	switch {
	case tag == 0x0103 && !a.pw1Other, tag == 0x0104 && !a.pw3Verified:
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	v, ok := a.dataObject(tag)
	if !ok {
		return simkit.Status(apdu.SWRefNotFound)
	}
	switch tag {
	case 0x6E, 0x65, 0x7A, 0x73, 0xFA: // constructed DOs come with their tag
		return simkit.OK(apdu.AppendTLV(nil, tag, v))
	}
	return simkit.OK(bytes.Clone(v))
}

// selectData handles SELECT DATA (A5): P1 = occurrence, P2 = 04,
// data 60 { 5C 02 7F 21 }.
func (a *applet) selectData(cmd apdu.Command) simkit.Reply {
	if cmd.P2 != 0x04 || int(cmd.P1) >= len(a.certs) {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	data := cmd.Data
	if len(data) > 1 && int(data[0]) == len(data)-1 && data[1] == 0x60 {
		// YubiKey firmware before 5.4.4 wants a length byte first, and
		// clients (GnuPG, go-openpgp-card) send it.
		data = data[1:]
	}
	inner, ok, err := apdu.FindTLV(data, 0x60)
	if err != nil || !ok {
		return simkit.Status(apdu.SWWrongData)
	}
	if tag, ok, err := apdu.FindTLV(inner, 0x5C); err != nil || !ok || !bytes.Equal(tag, []byte{0x7F, 0x21}) {
		return simkit.Status(apdu.SWWrongData)
	}
	a.certOccurence = int(cmd.P1)
	return simkit.Status(apdu.SWSuccess)
}

func (a *applet) putData(cmd apdu.Command) simkit.Reply {
	tag := uint32(cmd.P1)<<8 | uint32(cmd.P2)
	v := cmd.Data
	if tag == 0x0101 || tag == 0x0103 {
		if !a.pw1Other {
			return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
		}
	} else if !a.pw3Verified {
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	limit := maxDO
	if tag == 0x7F21 || tag == 0xF9 {
		limit = maxCert
	}
	if len(v) > limit {
		return simkit.Status(apdu.SWWrongLength)
	}
	fixed := func(n int, dst []byte) simkit.Reply {
		if len(v) != n {
			return simkit.Status(apdu.SWWrongLength)
		}
		copy(dst, v)
		return simkit.Status(apdu.SWSuccess)
	}
	switch tag {
	case 0x5B:
		a.name = bytes.Clone(v)
	case 0x5F2D:
		a.lang = bytes.Clone(v)
	case 0x5F35:
		a.sex = bytes.Clone(v)
	case 0x5F50:
		a.url = bytes.Clone(v)
	case 0x5E:
		a.login = bytes.Clone(v)
	case 0x0101, 0x0102, 0x0103, 0x0104:
		a.private[tag-0x0101] = bytes.Clone(v)
	case 0x7F21:
		a.certs[a.certOccurence] = bytes.Clone(v)
	case 0xC1, 0xC2, 0xC3:
		k := Key(tag - 0xC1)
		alg := parseAttributes(v, k)
		if alg == 0 {
			return simkit.Status(apdu.SWWrongData)
		}
		s := &a.keys[k]
		if alg != s.alg {
			*s = keySlot{uif: s.uif, caFP: s.caFP}
		}
		s.attr, s.alg = bytes.Clone(v), alg // as written, like a real card
	case 0xC4:
		if len(v) < 1 || v[0] > 1 {
			return simkit.Status(apdu.SWWrongData)
		}
		a.pw1Valid = v[0]
	case 0xC7, 0xC8, 0xC9:
		return fixed(20, a.keys[tag-0xC7].fp[:])
	case 0xCA, 0xCB, 0xCC:
		return fixed(20, a.keys[tag-0xCA].caFP[:])
	case 0xCE, 0xCF, 0xD0:
		return fixed(4, a.keys[tag-0xCE].time[:])
	case 0xD6, 0xD7, 0xD8:
		if len(v) != 2 || v[0] > 4 {
			return simkit.Status(apdu.SWWrongData)
		}
		a.keys[tag-0xD6].uif[0] = v[0]
	case 0xD3: // resetting code; empty removes it
		if len(v) == 0 {
			a.rc.Set(nil)
			a.rc.Left = 0
			break
		}
		if len(v) < 8 {
			return simkit.Status(apdu.SWWrongData)
		}
		a.rc.Unblock(v)
	case 0xF9:
		return a.putKDF(v)
	default:
		return simkit.Status(apdu.SWRefNotFound)
	}
	return simkit.Status(apdu.SWSuccess)
}

// putKDF stores the KDF DO and, as a YubiKey does, sets PW1 and PW3 to
// their initial values: the hashes in 87 and 88 when the DO carries them,
// otherwise the default PINs.
func (a *applet) putKDF(v []byte) simkit.Reply {
	tlvs, err := apdu.ParseTLVs(v)
	if err != nil || len(tlvs) == 0 || tlvs[0].Tag != 0x81 || len(tlvs[0].Value) != 1 {
		return simkit.Status(apdu.SWWrongData)
	}
	pw1, pw3 := a.pw1Initial, a.pw3Initial
	for _, t := range tlvs {
		switch t.Tag {
		case 0x87:
			pw1 = t.Value
		case 0x88:
			pw3 = t.Value
		}
	}
	a.kdf = bytes.Clone(v)
	a.pw1.Unblock(pw1)
	a.pw3.Unblock(pw3)
	return simkit.Status(apdu.SWSuccess)
}

// putKey handles key import, PUT DATA DB 3FFF with an extended header list.
func (a *applet) putKey(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	if !a.pw3Verified {
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	k, alg, key, err := parseImport(cmd.Data, func(k Key) simkit.Alg { return a.keys[k].alg })
	if err != nil {
		return simkit.Status(apdu.SWWrongData)
	}
	a.setKey(k, alg, key, keyImported)
	return simkit.Status(apdu.SWSuccess)
}

// setKey puts a new key in slot k; its fingerprint and time are the
// host's to write.
func (a *applet) setKey(k Key, alg simkit.Alg, key crypto.PrivateKey, status byte) {
	s := &a.keys[k]
	s.alg, s.key, s.status = alg, key, status
	s.fp, s.time = [20]byte{}, [4]byte{}
}

func pinRef(p2 byte) bool { return p2 == 0x81 || p2 == 0x82 || p2 == 0x83 }

func (a *applet) pinOf(p2 byte) (*simkit.PIN, int) {
	if p2 == 0x83 {
		return a.pw3, 8
	}
	return a.pw1, 6
}

func (a *applet) setVerified(p2 byte, ok bool) {
	switch p2 {
	case 0x81:
		a.pw1Sign = ok
	case 0x82:
		a.pw1Other = ok
	case 0x83:
		a.pw3Verified = ok
	}
}

func (a *applet) verified(p2 byte) bool {
	switch p2 {
	case 0x81:
		return a.pw1Sign
	case 0x82:
		return a.pw1Other
	}
	return a.pw3Verified
}

func (a *applet) verify(cmd apdu.Command) simkit.Reply {
	if !pinRef(cmd.P2) {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	pin, minLen := a.pinOf(cmd.P2)
	switch cmd.P1 {
	case 0xFF: // forget the verification (3.4)
		if len(cmd.Data) != 0 {
			return simkit.Status(apdu.SWWrongLength)
		}
		a.setVerified(cmd.P2, false)
		return simkit.Status(apdu.SWSuccess)
	case 0x00:
	default:
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	if len(cmd.Data) == 0 {
		return simkit.Status(pin.Status(a.verified(cmd.P2)))
	}
	if len(cmd.Data) < minLen || len(cmd.Data) > 127 {
		return simkit.Status(apdu.SWWrongData)
	}
	st := pin.Check(cmd.Data)
	a.setVerified(cmd.P2, st == apdu.SWSuccess)
	return simkit.Reply{SW: st, Delay: a.latency.Verify}
}

// changeReference handles CHANGE REFERENCE DATA (24) for PW1 (81) and PW3
// (83): the data is the old PIN followed by the new one, split at the old
// one's length.
func (a *applet) changeReference(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0x00 || (cmd.P2 != 0x81 && cmd.P2 != 0x83) {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	pin, minLen := a.pinOf(cmd.P2)
	n := pin.Len()
	if len(cmd.Data) <= n {
		return simkit.Status(apdu.SWWrongData)
	}
	if st := pin.Check(cmd.Data[:n]); st != apdu.SWSuccess {
		a.setVerified(cmd.P2, false)
		return simkit.Reply{SW: st, Delay: a.latency.Verify}
	}
	next := cmd.Data[n:]
	if len(next) < minLen || len(next) > 127 {
		return simkit.Status(apdu.SWWrongData)
	}
	pin.Set(next)
	a.setVerified(cmd.P2, true) // the old PIN was verified (a YubiKey then allows TERMINATE)
	return simkit.Reply{SW: apdu.SWSuccess, Delay: a.latency.Verify}
}

// resetRetry handles RESET RETRY COUNTER (2C) of PW1: P1 00 with the
// resetting code before the new PW1, P1 02 with PW3 verified.
func (a *applet) resetRetry(cmd apdu.Command) simkit.Reply {
	if cmd.P2 != 0x81 || (cmd.P1 != 0x00 && cmd.P1 != 0x02) {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	next := cmd.Data
	if cmd.P1 == 0x00 {
		n := a.rc.Len()
		if a.rc.Blocked() {
			return simkit.Status(apdu.SWAuthBlocked)
		}
		if len(cmd.Data) <= n {
			return simkit.Status(apdu.SWWrongData)
		}
		if st := a.rc.Check(cmd.Data[:n]); st != apdu.SWSuccess {
			return simkit.Reply{SW: st, Delay: a.latency.Verify}
		}
		next = cmd.Data[n:]
	} else if !a.pw3Verified {
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	if len(next) < 6 || len(next) > 127 {
		return simkit.Status(apdu.SWWrongData)
	}
	a.pw1.Unblock(next)
	return simkit.Reply{SW: apdu.SWSuccess, Delay: a.latency.Verify}
}

// setRetries handles the YubiKey SET PIN RETRIES (F2): data = tries of PW1,
// resetting code and PW3; PW3 must be verified. A resetting code that is
// not set keeps 0 tries.
func (a *applet) setRetries(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	if !a.pw3Verified {
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	d := cmd.Data
	if len(d) != 3 || d[0] == 0 || d[1] == 0 || d[2] == 0 || d[0] > 15 || d[1] > 15 || d[2] > 15 {
		return simkit.Status(apdu.SWWrongData)
	}
	rcSet := a.rc.Len() > 0
	a.pw1.SetTries(int(d[0]))
	a.rc.SetTries(int(d[1]))
	a.pw3.SetTries(int(d[2]))
	if !rcSet {
		a.rc.Left = 0
	}
	return simkit.Status(apdu.SWSuccess)
}

func (a *applet) generate(cmd apdu.Command) simkit.Reply {
	if cmd.P2 != 0x00 || (cmd.P1 != 0x80 && cmd.P1 != 0x81) {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	tlvs, err := apdu.ParseTLVs(cmd.Data)
	if err != nil || len(tlvs) != 1 {
		return simkit.Status(apdu.SWWrongData)
	}
	k, ok := keyOfCRT(tlvs[0])
	if !ok {
		return simkit.Status(apdu.SWWrongData)
	}
	s := &a.keys[k]
	delay := a.latency.Other
	if cmd.P1 == 0x80 {
		if !a.pw3Verified {
			return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
		}
		a.generations++
		key, err := simkit.GenerateKey(s.alg, a.seed, fmt.Sprintf("key %d generation %d", int(k), a.generations))
		if err != nil {
			return simkit.Status(apdu.SWUnknown)
		}
		a.setKey(k, s.alg, key, keyGenerated)
		delay = a.latency.Generate(s.alg)
	}
	if s.key == nil {
		return simkit.Status(apdu.SWRefNotFound)
	}
	return simkit.Reply{Data: publicTemplate(publicOf(s.key)), SW: apdu.SWSuccess, Delay: delay}
}

// sign makes a signature with the key of slot s: PKCS #1 v1.5 of a
// DigestInfo for RSA, raw r‖s for ECDSA, EdDSA of the input.
func (a *applet) sign(s *keySlot, in []byte) simkit.Reply {
	var sig []byte
	var err error
	switch key := s.key.(type) {
	case *rsa.PrivateKey:
		if len(in) == 0 || len(in) > key.Size()*2/5 {
			return simkit.Status(apdu.SWWrongData)
		}
		sig, err = rsa.SignPKCS1v15(nil, key, crypto.Hash(0), in)
	case *ecdsa.PrivateKey:
		if len(in) == 0 || len(in) > 64 {
			return simkit.Status(apdu.SWWrongData)
		}
		sig, err = simkit.SignECDSARaw(key, in)
	case ed25519.PrivateKey:
		sig = ed25519.Sign(key, in)
	case nil:
		return simkit.Status(apdu.SWRefNotFound)
	default:
		return simkit.Status(apdu.SWConditionsNotSatisfied)
	}
	if err != nil {
		return simkit.Status(apdu.SWWrongData)
	}
	return simkit.Reply{Data: sig, SW: apdu.SWSuccess, Delay: a.latency.Sign(s.alg)}
}

func (a *applet) pso(cmd apdu.Command) simkit.Reply {
	switch {
	case cmd.P1 == 0x9E && cmd.P2 == 0x9A: // COMPUTE DIGITAL SIGNATURE
		if !a.pw1Sign {
			return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
		}
		r := a.sign(&a.keys[KeySign], cmd.Data)
		if r.SW == apdu.SWSuccess {
			if a.sigCount < 0xFFFFFF {
				a.sigCount++
			}
			if a.pw1Valid == 0 {
				a.pw1Sign = false
			}
		}
		return r
	case cmd.P1 == 0x80 && cmd.P2 == 0x86: // DECIPHER
		if !a.pw1Other {
			return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
		}
		return a.decipher(cmd.Data)
	}
	return simkit.Status(apdu.SWIncorrectP1P2)
}

func (a *applet) decipher(in []byte) simkit.Reply {
	s := &a.keys[KeyDecrypt]
	if s.key == nil {
		return simkit.Status(apdu.SWRefNotFound)
	}
	if key, ok := s.key.(*rsa.PrivateKey); ok {
		if len(in) != key.Size()+1 || in[0] != 0x00 { // padding indicator 00
			return simkit.Status(apdu.SWWrongData)
		}
		// An OpenPGP card removes PKCS #1 v1.5 padding itself (section 7.2.11 of the
		// specification): the simulator must too, whatever the scheme's weaknesses.
		//lint:ignore SA1019 the card's PSO:DECIPHER is PKCS #1 v1.5 by definition
		pt, err := rsa.DecryptPKCS1v15(nil, key, in[1:])
		if err != nil {
			return simkit.Status(apdu.SWWrongData)
		}
		return simkit.Reply{Data: pt, SW: apdu.SWSuccess, Delay: a.latency.Decipher(s.alg)}
	}
	// A6 { 7F49 { 86 point } }
	tmpl, ok, err := apdu.FindTLV(in, 0xA6)
	if err != nil || !ok {
		return simkit.Status(apdu.SWWrongData)
	}
	pub, ok, err := apdu.FindTLV(tmpl, 0x7F49)
	if err != nil || !ok {
		return simkit.Status(apdu.SWWrongData)
	}
	pt, ok, err := apdu.FindTLV(pub, 0x86)
	if err != nil || !ok {
		return simkit.Status(apdu.SWWrongData)
	}
	secret, err := simkit.ECDH(s.key, pt)
	if err != nil {
		return simkit.Status(apdu.SWWrongData)
	}
	return simkit.Reply{Data: secret, SW: apdu.SWSuccess, Delay: a.latency.Decipher(s.alg)}
}

func (a *applet) internalAuthenticate(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0x00 || cmd.P2 != 0x00 {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	if !a.pw1Other {
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	return a.sign(&a.keys[KeyAuth], cmd.Data)
}

func (a *applet) challenge(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	if cmd.Ne == 0 {
		return simkit.Status(apdu.SWWrongLength)
	}
	out := make([]byte, min(cmd.Ne, maxChallenge))
	io.ReadFull(a.rand, out)
	return simkit.OK(out)
}

func (a *applet) terminate(cmd apdu.Command) simkit.Reply {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return simkit.Status(apdu.SWIncorrectP1P2)
	}
	if !a.pw3Verified && !a.pw3.Blocked() {
		return simkit.Status(apdu.SWSecurityStatusNotSatisfied)
	}
	a.terminated = true
	return simkit.Status(apdu.SWSuccess)
}
