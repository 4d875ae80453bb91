package token

import "hash"

// What the PKCS #11 v2.40 base specification (OASIS Standard, plus
// Errata 01; "the spec" below) says about the order of checks, and the
// functions that follow it. Section numbers are the spec's.
//
// Section 5.1.7: "error codes from Section 5.1.1 (other than CKR_OK) take
// precedence over error codes from Section 5.1.2, which take precedence
// over error codes from Section 5.1.3, which take precedence over error
// codes from Section 5.1.6". So in a function that takes a session handle
// CKR_SESSION_HANDLE_INVALID (5.1.2) beats CKR_ARGUMENTS_BAD (5.1.6), and
// in one that uses a token CKR_TOKEN_NOT_PRESENT (5.1.3) beats it too.
// The C layer (client/pkcs11) therefore asks [Module.CheckSession] or
// [Module.CheckToken] before it looks at its pointers.
// CKR_CRYPTOKI_NOT_INITIALIZED comes first of all: before C_Initialize
// there is no session or slot a handle could name.

// CheckSession answers the checks of section 5.1.2 for session h, without
// waiting for a call in progress on the session: CKR_SESSION_HANDLE_INVALID
// for a handle that names no open session, CKR_DEVICE_REMOVED when the
// session's token went away (its sessions are gone), and
// CKR_CRYPTOKI_NOT_INITIALIZED after Finalize.
func (m *Module) CheckSession(h uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finalized {
		return ErrNotInitialized
	}
	ss, ok := m.sessions[h]
	if !ok {
		return ErrSessionHandleInvalid
	}
	if ss.gen != ss.slot.gen {
		return ErrDeviceRemoved
	}
	return nil
}

// CheckSlot answers CKR_SLOT_ID_INVALID for a slot the module does not
// have (waiting for the first catalogue as [Module.SlotList] does).
func (m *Module) CheckSlot(id uint64) error {
	_, err := m.slot(id)
	return err
}

// CheckToken answers the checks of a function that uses the token in slot
// id (section 5.1.3): CKR_SLOT_ID_INVALID, then CKR_TOKEN_NOT_PRESENT.
func (m *Module) CheckToken(id uint64) error {
	s, err := m.slot(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return ErrTokenNotPresent
	}
	return nil
}

// ObjectSize answers C_GetObjectSize (section 5.7.4) for object oh: the
// size is [Unavailable] (CK_UNAVAILABLE_INFORMATION).
//
// The spec leaves the meaning of an object's size open ("Intuitively, it
// is some measure of how much token memory the object takes up"), and
// ties it to the token's free memory: deleting an object of size S should
// raise ulFreePrivateMemory by about S. The token's memory fields are
// CK_UNAVAILABLE_INFORMATION here (the card's memory is the server's
// business, and nothing can be created or deleted), so the one size that
// is consistent with them is unavailable too; SoftHSM answers the same.
// OpenSC answers CKR_FUNCTION_NOT_SUPPORTED, which tells an application
// less: with this answer, it learns that the object exists and is visible
// to the session (CKR_OBJECT_HANDLE_INVALID otherwise, also for a private
// object before login).
func (m *Module) ObjectSize(h, oh uint64) (uint64, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	if _, err := m.visible(ss, oh); err != nil {
		return 0, err
	}
	return Unavailable, nil
}

// loginSO answers C_Login with CKU_SO. A delegate is never a security
// officer: the token has no SO PIN, and nothing is sent to the server.
// The answers, in the order of C_Login's text (section 5.6.7):
//
//   - CKR_SESSION_READ_ONLY_EXISTS while any read-only session with the
//     token is open: "If the application calling C_Login has a R/O session
//     open with the token, then it will be unable to log the SO into a
//     session". This holds whatever the PIN, so it comes first, as in
//     SoftHSM and OpenSC.
//   - CKR_USER_ANOTHER_ALREADY_LOGGED_IN while the normal user is logged
//     in (section 5.1.6: "the specified user cannot be logged into the
//     session, because another user is already logged into the session").
//   - CKR_PIN_INCORRECT otherwise: no PIN authenticates an SO that does not
//     exist ("the attempt to authenticate the user has failed", 5.1.6).
//     Not CKR_USER_TYPE_INVALID, which the spec keeps for a value that is
//     not a CK_USER_TYPE ("Valid types are CKU_SO, CKU_USER, and
//     CKU_CONTEXT_SPECIFIC"); and not OpenSC's answer for a card without
//     an SO PIN (it logs the SO in with any PIN, and the session then
//     claims SO functions that do nothing).
//
// The PIN's length is not looked at: CKR_PIN_LEN_RANGE is not a return
// value of C_Login in the spec. The caller holds ss.mu.
func (m *Module) loginSO(ss *session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, other := range m.sessions {
		if other.slot == ss.slot && other.gen == ss.slot.gen && !other.rw {
			return ErrSessionReadOnlyExists
		}
	}
	if ss.slot.loggedIn {
		return ErrUserAnotherAlreadyLoggedIn
	}
	return ErrPINIncorrect
}

// digestOp is a digest operation that remembers whether C_DigestUpdate fed
// it: C_Digest "cannot be used to terminate a multi-part operation, and
// must be called after C_DigestInit without intervening C_DigestUpdate
// calls" (section 5.10.2).
type digestOp struct {
	hash.Hash
	parts bool
}

func newDigest(h hash.Hash) *digestOp { return &digestOp{Hash: h} }

// Write is C_DigestUpdate's (C_Digest checks [multiPart] before it writes).
func (d *digestOp) Write(p []byte) (int, error) {
	d.parts = true
	return d.Hash.Write(p)
}

// multiPart reports whether C_DigestUpdate has fed the digest h.
func multiPart(h hash.Hash) bool {
	d, ok := h.(*digestOp)
	return ok && d.parts
}

// Return values of section 5.1.6 that only this file's functions give.
const (
	ErrSessionReadOnlyExists      RV = 0x0B7 // CKR_SESSION_READ_ONLY_EXISTS
	ErrUserAnotherAlreadyLoggedIn RV = 0x104 // CKR_USER_ANOTHER_ALREADY_LOGGED_IN
)

func init() {
	rvNames[ErrSessionReadOnlyExists] = "CKR_SESSION_READ_ONLY_EXISTS"
	rvNames[ErrUserAnotherAlreadyLoggedIn] = "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"
}
