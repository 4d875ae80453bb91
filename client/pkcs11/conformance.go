package main

/*
#include "p11.h"
*/
import "C"

import "github.com/pscs/pscs/client/pkcs11/internal/token"

// The order of checks (PKCS #11 v2.40 section 5.1.7): every export first
// answers CKR_CRYPTOKI_NOT_INITIALIZED before C_Initialize, then the
// session-handle checks of section 5.1.2 (inSession) or the token checks of
// section 5.1.3 (withToken), and only then looks at its pointers
// (CKR_ARGUMENTS_BAD, section 5.1.6). The entries the module does not
// support follow the same order before they answer
// CKR_FUNCTION_NOT_SUPPORTED. client/pkcs11/e2e's TestCheckOrder calls
// every entry of the function list to hold this.

const (
	ckrFunctionNotSupported   = C.CK_RV(token.ErrFunctionNotSupported)
	ckrFunctionNotParallel    = C.CK_RV(token.ErrFunctionNotParallel)
	ckrRandomSeedNotSupported = C.CK_RV(token.ErrRandomSeedNotSupported)
)

// inSession returns the module once session h passed the checks of
// section 5.1.2.
func inSession(h C.CK_SESSION_HANDLE) (*token.Module, C.CK_RV) {
	m, r := module()
	if r != ckrOK {
		return nil, r
	}
	if err := m.CheckSession(uint64(h)); err != nil {
		return nil, rv(err)
	}
	return m, ckrOK
}

// withToken returns the module once slot id passed the checks of a
// function that uses its token (CKR_SLOT_ID_INVALID, then section 5.1.3's
// CKR_TOKEN_NOT_PRESENT).
func withToken(id C.CK_SLOT_ID) (*token.Module, C.CK_RV) {
	m, r := module()
	if r != ckrOK {
		return nil, r
	}
	if err := m.CheckToken(uint64(id)); err != nil {
		return nil, rv(err)
	}
	return m, ckrOK
}

// withSlot returns the module once slot id is known (C_GetSlotInfo, which
// does not use the token).
func withSlot(id C.CK_SLOT_ID) (*token.Module, C.CK_RV) {
	m, r := module()
	if r != ckrOK {
		return nil, r
	}
	if err := m.CheckSlot(uint64(id)); err != nil {
		return nil, rv(err)
	}
	return m, ckrOK
}

//export goGetObjectSize
func goGetObjectSize(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE, pulSize C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulSize == nil {
		return ckrArgumentsBad
	}
	n, err := m.ObjectSize(uint64(hSession), uint64(hObject))
	if err != nil {
		return rv(err)
	}
	*pulSize = C.CK_ULONG(n)
	return ckrOK
}

// goSeedRandom: random numbers come from the operating system and take no
// seed (section 5.15.1), once the session and the arguments are checked.
//
//export goSeedRandom
func goSeedRandom(hSession C.CK_SESSION_HANDLE, pSeed C.CK_BYTE_PTR, ulSeedLen C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	if _, r := inSession(hSession); r != ckrOK {
		return r
	}
	if pSeed == nil && ulSeedLen > 0 {
		return ckrArgumentsBad
	}
	return ckrRandomSeedNotSupported
}

// goLegacyParallel is C_GetFunctionStatus and C_CancelFunction (section
// 5.16): "a legacy function which should simply return the value
// CKR_FUNCTION_NOT_PARALLEL", after the universal checks.
//
//export goLegacyParallel
func goLegacyParallel(hSession C.CK_SESSION_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	if _, r := inSession(hSession); r != ckrOK {
		return r
	}
	return ckrFunctionNotParallel
}

// goUnsupported is the stub of an entry the module does not support that
// takes a session handle.
//
//export goUnsupported
func goUnsupported(hSession C.CK_SESSION_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	if _, r := inSession(hSession); r != ckrOK {
		return r
	}
	return ckrFunctionNotSupported
}

// goUnsupportedSlot is the stub of an entry the module does not support
// that names a slot (C_InitToken).
//
//export goUnsupportedSlot
func goUnsupportedSlot(slotID C.CK_SLOT_ID) (r C.CK_RV) {
	defer recovered(&r)
	if _, r := withToken(slotID); r != ckrOK {
		return r
	}
	return ckrFunctionNotSupported
}
