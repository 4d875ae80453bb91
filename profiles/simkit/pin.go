package simkit

import (
	"bytes"
	"crypto/subtle"

	"github.com/pscs/pscs/apdu"
)

// PIN is a card secret with a retry counter: a PIN, a PUK, an OpenPGP PW1,
// PW3 or resetting code. Its methods are not safe for concurrent use: the
// applet's card lock guards it.
type PIN struct {
	value []byte
	// Max is the number of tries a correct check restores; Left the tries
	// that remain. Left = 0 is blocked.
	Max, Left int
	// WrongSW is what a wrong value answers while tries remain; zero means
	// 63 Cx with x the tries left.
	WrongSW apdu.StatusWord
}

// NewPIN returns a PIN of value with tries tries.
func NewPIN(value []byte, tries int) *PIN {
	return &PIN{value: bytes.Clone(value), Max: tries, Left: tries}
}

// Check compares candidate with the PIN in constant time (for equal
// lengths). A match restores the tries and answers 90 00; a mismatch uses a
// try and answers 63 Cx (or WrongSW), or 69 83 when that was the last. A
// blocked PIN answers 69 83 without comparing.
func (p *PIN) Check(candidate []byte) apdu.StatusWord {
	if p.Left <= 0 {
		return apdu.SWAuthBlocked
	}
	if subtle.ConstantTimeCompare(candidate, p.value) != 1 {
		p.Left--
		switch {
		case p.Left == 0:
			return apdu.SWAuthBlocked
		case p.WrongSW != 0:
			return p.WrongSW
		}
		return apdu.SWRetries(p.Left)
	}
	p.Left = p.Max
	return apdu.SWSuccess
}

// Status is the answer to an empty VERIFY: 69 83 when blocked, 90 00 when
// verified, else 63 Cx.
func (p *PIN) Status(verified bool) apdu.StatusWord {
	switch {
	case p.Left <= 0:
		return apdu.SWAuthBlocked
	case verified:
		return apdu.SWSuccess
	}
	return apdu.SWRetries(p.Left)
}

// Blocked reports whether no tries are left.
func (p *PIN) Blocked() bool { return p.Left <= 0 }

// Set changes the value and keeps the counter.
func (p *PIN) Set(value []byte) { p.value = bytes.Clone(value) }

// Unblock sets the value and restores the tries (RESET RETRY COUNTER).
func (p *PIN) Unblock(value []byte) {
	p.value = bytes.Clone(value)
	p.Left = p.Max
}

// SetTries sets the tries allowed and left to n.
func (p *PIN) SetTries(n int) { p.Max, p.Left = n, n }

// Len returns the length of the value: OpenPGP's CHANGE REFERENCE DATA
// carries old and new PIN without a separator, and the card splits them at
// the length of the old one.
func (p *PIN) Len() int { return len(p.value) }

// Is reports whether the value is v, in constant time, without using a try:
// for "is this still the default PIN" reports, never for authentication.
func (p *PIN) Is(v []byte) bool { return subtle.ConstantTimeCompare(v, p.value) == 1 }
