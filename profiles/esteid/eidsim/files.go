package eidsim

import (
	"bytes"
	"encoding/binary"

	"github.com/pscs/pscs/apdu"
)

// File identifiers and application identifiers of the EstEID 2018 file
// system.
const (
	fidMF           = 0x3F00
	fidDocNumber    = 0xD003 // 3F00/D003: document number, 04 LL …
	fidPersonalData = 0x5000 // 3F00/5000: personal data file, EFs 5001-500F
	fidADF1         = 0xADF1 // authentication application (key 81, PIN1)
	fidADF2         = 0xADF2 // QSCD application (key 9F, PIN2)
	fidAuthCert     = 0x3401 // 3F00/ADF1/3401
	fidSignCert     = 0x341F // 3F00/ADF2/341F
)

var (
	// aidMain is the IAS-ECC application OpenSC selects to match the card.
	aidMain = []byte{0xA0, 0x00, 0x00, 0x00, 0x77, 0x01, 0x08, 0x00, 0x07, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x01, 0x00}
	aidADF1 = []byte{0xE8, 0x28, 0xBD, 0x08, 0x0F, 0xF2, 0x50, 0x4F, 0x54, 0x20, 0x41, 0x57, 0x50}
	aidADF2 = []byte("QSCD Application")
)

// node is a file: a DF with children or an EF with data.
type node struct {
	fid      uint16
	aid      []byte // DFs selectable by name
	parent   *node
	children []*node
	data     []byte // EF content; nil for a DF
}

func (n *node) isDF() bool { return n.data == nil }

func (n *node) add(c *node) *node {
	c.parent = n
	n.children = append(n.children, c)
	return c
}

func (n *node) child(fid uint16) *node {
	for _, c := range n.children {
		if c.fid == fid {
			return c
		}
	}
	return nil
}

func (n *node) find(aid []byte) *node {
	if n.aid != nil && bytes.Equal(n.aid, aid) {
		return n
	}
	for _, c := range n.children {
		if f := c.find(aid); f != nil {
			return f
		}
	}
	return nil
}

// fcp is the file control parameters template (62) a SELECT with P2 = 04
// answers: descriptor, identifier, size of an EF or name of a DF, life
// cycle "operational, activated".
func (n *node) fcp() []byte {
	var b []byte
	if n.isDF() {
		b = apdu.AppendTLV(b, 0x82, []byte{0x38})
	} else {
		b = apdu.AppendTLV(b, 0x82, []byte{0x01})
	}
	b = apdu.AppendTLV(b, 0x83, binary.BigEndian.AppendUint16(nil, n.fid))
	if n.isDF() {
		if n.aid != nil {
			b = apdu.AppendTLV(b, 0x84, n.aid)
		}
	} else {
		b = apdu.AppendTLV(b, 0x80, binary.BigEndian.AppendUint16(nil, uint16(len(n.data))))
	}
	b = apdu.AppendTLV(b, 0x8A, []byte{0x05})
	return apdu.AppendTLV(nil, 0x62, b)
}

// selectFile is SELECT (A4), ISO 7816-4 §11.1.1, in the forms EstEID
// clients send: P1 00 (MF, or a file of the current DF by identifier), 01
// (child DF), 02 (EF of the current DF), 04 (application by name), 08
// (path from the MF) and 09 (path from the current DF); P2 0C (no answer),
// 04 (FCP) or 00 (FCI).
func (c *applet) selectFile(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P2 != 0x00 && cmd.P2 != 0x04 && cmd.P2 != 0x0C {
		return nil, apdu.SWIncorrectP1P2
	}
	var target *node
	switch cmd.P1 {
	case 0x00:
		switch {
		case len(cmd.Data) == 0:
			target = c.mf
		case len(cmd.Data) == 2 && binary.BigEndian.Uint16(cmd.Data) == fidMF:
			target = c.mf
		case len(cmd.Data) == 2:
			target = c.df.child(binary.BigEndian.Uint16(cmd.Data))
		default:
			return nil, apdu.SWWrongLength
		}
	case 0x01, 0x02:
		if len(cmd.Data) != 2 {
			return nil, apdu.SWWrongLength
		}
		target = c.df.child(binary.BigEndian.Uint16(cmd.Data))
		if target != nil && target.isDF() != (cmd.P1 == 0x01) {
			target = nil
		}
	case 0x04:
		if len(cmd.Data) == 0 || len(cmd.Data) > 16 {
			return nil, apdu.SWWrongLength
		}
		if bytes.Equal(cmd.Data, aidMain) {
			// Selecting the main application starts it afresh: OpenSC
			// logs out this way.
			c.logout()
			target = c.mf
		} else {
			target = c.mf.find(cmd.Data)
		}
	case 0x08, 0x09:
		if len(cmd.Data) == 0 || len(cmd.Data)%2 != 0 {
			return nil, apdu.SWWrongLength
		}
		target = c.df
		if cmd.P1 == 0x08 {
			target = c.mf
		}
		for p := cmd.Data; len(p) > 0 && target != nil; p = p[2:] {
			if !target.isDF() {
				target = nil
				break
			}
			target = target.child(binary.BigEndian.Uint16(p))
		}
	default:
		return nil, apdu.SWIncorrectP1P2
	}
	if target == nil {
		return nil, apdu.SWFileNotFound
	}
	if target.isDF() {
		if target != c.df {
			c.se = securityEnv{} // the environment belongs to its DF
		}
		c.df, c.ef = target, nil
	} else {
		if target.parent != c.df {
			c.se = securityEnv{}
		}
		c.df, c.ef = target.parent, target
	}
	switch cmd.P2 {
	case 0x04:
		return target.fcp(), apdu.SWSuccess
	case 0x00:
		if target.isDF() && target.aid != nil {
			return apdu.AppendTLV(nil, 0x6F, apdu.AppendTLV(nil, 0x84, target.aid)), apdu.SWSuccess
		}
		return apdu.AppendTLV(nil, 0x6F, target.fcp()[2:]), apdu.SWSuccess
	}
	return nil, apdu.SWSuccess
}

// readBinary is READ BINARY (B0) of the current EF at the offset P1-P2.
// Reading at or past the end answers 6B 00, as the card does (OpenSC's
// driver reads until it sees it); a read that runs past the end returns
// the bytes there are.
func (c *applet) readBinary(cmd apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1&0x80 != 0 {
		return nil, apdu.SWFuncNotSupported // short EF identifiers: not on this card
	}
	if c.ef == nil {
		return nil, apdu.SWNoCurrentEF
	}
	if len(cmd.Data) != 0 {
		return nil, apdu.SWWrongLength
	}
	off := int(binary.BigEndian.Uint16([]byte{cmd.P1, cmd.P2}))
	if off >= len(c.ef.data) {
		return nil, apdu.SWWrongP1P2
	}
	n := cmd.Ne
	if n == 0 || (!cmd.Extended && n > 256) {
		n = 256
	}
	return c.ef.data[off:min(off+n, len(c.ef.data))], apdu.SWSuccess
}

// buildFiles lays out the card's file system.
func (c *applet) buildFiles(p Person, authCert, signCert []byte) {
	mf := &node{fid: fidMF, aid: aidMain}
	doc := apdu.AppendTLV(nil, 0x04, []byte(p.DocumentNumber))
	mf.add(&node{fid: fidDocNumber, data: doc})
	pd := mf.add(&node{fid: fidPersonalData})
	for i, v := range c.personalData(p) {
		pd.add(&node{fid: fidPersonalData + uint16(i) + 1, data: []byte(v)})
	}
	adf1 := mf.add(&node{fid: fidADF1, aid: aidADF1})
	adf1.add(&node{fid: fidAuthCert, data: authCert})
	adf2 := mf.add(&node{fid: fidADF2, aid: aidADF2})
	adf2.add(&node{fid: fidSignCert, data: signCert})
	c.mf, c.adf1, c.adf2 = mf, adf1, adf2
	c.df = mf
}

// personalData returns the fifteen fields of the personal data file
// (EFs 5001 to 500F), in the order the card has them: surname, given
// name, sex, citizenship, date and place of birth, personal code,
// document number, expiry date, date and place of issue, residence
// permit type, notes lines 1 to 5. An empty field holds one space.
func (c *applet) personalData(p Person) []string {
	sex, birth := "M", " "
	if len(p.PersonalCode) > 0 && p.PersonalCode[0]%2 == 0 {
		sex = "N" // naine
	}
	if d, ok := p.birthDate(); ok {
		birth = d.Format("02 01 2006") + " EST"
	}
	out := []string{p.Surname, p.GivenName, sex, "EST", birth, p.PersonalCode, p.DocumentNumber,
		c.notBefore.AddDate(5, 0, -1).Format("02 01 2006"), c.notBefore.Format("02 01 2006") + " PPA", " "}
	for len(out) < 15 {
		out = append(out, " ")
	}
	return out
}
