package token

import (
	"errors"

	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/transport"
)

// The virtual PIN's state in CK_TOKEN_INFO's flags, as a card's PIN shows
// in them (PKCS #11 v2.40 section 3.2, CK_TOKEN_INFO):
//
//   - CKF_USER_PIN_COUNT_LOW: "An incorrect user login PIN has been entered
//     at least once since the last successful authentication."
//   - CKF_USER_PIN_FINAL_TRY: "Supplying an incorrect user PIN will cause
//     it to become locked."
//   - CKF_USER_PIN_LOCKED: "The user PIN has been locked. User login to
//     the token is not possible."
//
// The server counts the wrong virtual PINs of a delegation in a row and
// locks it at its threshold (server/policy); with a wrong-vPIN refusal it
// sends the tries left (transport.Response field 7). What the module
// knows is what its own logins and PIN-carrying signatures were told: the
// flags follow the last answer the server gave this process, as OpenSC's
// follow the card's retry counter (COUNT_LOW while tries are below the
// maximum, FINAL_TRY at one, LOCKED at none).

const (
	ckfUserPINCountLow = p11.CKFUserPINCountLow // CKF_USER_PIN_COUNT_LOW
	ckfUserPINFinalTry = p11.CKFUserPINFinalTry // CKF_USER_PIN_FINAL_TRY
)

// vpinState is what the server last said of the delegation's virtual PIN.
type vpinState struct {
	wrong bool // a wrong vPIN since the last right one
	left  int  // tries left before the lock; 0: unknown
}

// noteVPIN takes the server's answer to a request that carried the
// virtual PIN (a login, or a signature with a CKA_ALWAYS_AUTHENTICATE key):
// nil for a right vPIN, or the refusal.
func (m *Module) noteVPIN(s *slot, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		s.vpin, s.locked = vpinState{}, false
		return
	}
	te, ok := errors.AsType[*transport.Error](err)
	if !ok {
		return // no answer: nothing learnt
	}
	switch te.Code {
	case transport.CodeWrongPIN:
		s.vpin = vpinState{wrong: true, left: int(te.TriesLeft)}
	case transport.CodeLocked:
		s.vpin, s.locked = vpinState{}, true
	}
}

// pinFlags are the token flags of s's virtual PIN. m.mu is held.
func (s *slot) pinFlags() uint64 {
	switch {
	case s.locked:
		return ckfUserPINLocked
	case s.vpin.wrong && s.vpin.left == 1:
		return ckfUserPINCountLow | ckfUserPINFinalTry
	case s.vpin.wrong:
		return ckfUserPINCountLow
	}
	return 0
}
