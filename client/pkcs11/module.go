package main

/*
#include <stdlib.h>
#include "p11.h"
*/
import "C"

import (
	"unsafe"

	"github.com/pscs/pscs/client/pkcs11/internal/token"
)

// This file holds the exported PKCS #11 functions the module implements.
// Each one recovers a panic into CKR_GENERAL_ERROR, checks its pointers,
// zeroes and blank-pads what it writes, converts its arguments and calls
// the pure-Go token.Module. They write into the caller's memory only; no
// Go pointer is handed to C.

const (
	ckrOK               = C.CK_RV(token.OK)
	ckrGeneral          = C.CK_RV(token.ErrGeneral)
	ckrArgumentsBad     = C.CK_RV(token.ErrArgumentsBad)
	ckrBufferTooSmall   = C.CK_RV(token.ErrBufferTooSmall)
	ckrNotInitialized   = C.CK_RV(token.ErrNotInitialized)
	ckrAlreadyInitiated = C.CK_RV(token.ErrAlreadyInitialized)
	ckrPINLenRange      = C.CK_RV(token.ErrPINLenRange)
)

// maxPINLen bounds the PIN lengths the module reads from its caller: far
// above any virtual PIN, far below what could exhaust memory.
const maxPINLen = 1024

// rv converts an error of the token package.
func rv(err error) C.CK_RV { return C.CK_RV(token.RVOf(err)) }

// recovered turns a panic into CKR_GENERAL_ERROR; every export defers it.
func recovered(r *C.CK_RV) {
	if recover() != nil {
		*r = ckrGeneral
	}
}

// pad writes s into a fixed-size text field of CK_UTF8CHAR, blank-padded
// and cut at a character boundary, with no terminating NUL.
func pad(field unsafe.Pointer, size int, s string) {
	b := unsafe.Slice((*byte)(field), size)
	for i := range b {
		b[i] = ' '
	}
	n := 0
	for i, r := range s {
		w := len(string(r))
		if i+w > size {
			break
		}
		n = i + w
	}
	copy(b, s[:n])
}

func version(v token.Version) C.CK_VERSION {
	return C.CK_VERSION{major: C.CK_BYTE(v.Major), minor: C.CK_BYTE(v.Minor)}
}

// bytesOf views C memory as a byte slice (nil for a NULL pointer).
func bytesOf(p unsafe.Pointer, n C.CK_ULONG) []byte {
	if p == nil {
		return nil
	}
	return unsafe.Slice((*byte)(p), int(n))
}

// output prepares an output buffer of the two-call convention.
func output(p C.CK_BYTE_PTR, pLen C.CK_ULONG_PTR) ([]byte, bool) {
	if p == nil {
		return nil, false
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(*pLen)), true
}

// list writes ids with the two-call convention.
func list[T ~uint64](ids []T, p *C.CK_ULONG, pCount C.CK_ULONG_PTR) C.CK_RV {
	n := C.CK_ULONG(len(ids))
	if p == nil {
		*pCount = n
		return ckrOK
	}
	if *pCount < n {
		*pCount = n
		return ckrBufferTooSmall
	}
	out := unsafe.Slice(p, len(ids))
	for i, id := range ids {
		out[i] = C.CK_ULONG(id)
	}
	*pCount = n
	return ckrOK
}

func mechanism(p *C.CK_MECHANISM) token.Mechanism {
	m := token.Mechanism{Type: uint64(p.mechanism)}
	if p.pParameter == nil || p.ulParameterLen == 0 {
		return m
	}
	if m.Type == token.CKMEDDSA {
		// CK_EDDSA_PARAMS holds a pointer: read what the module checks
		// (a prehash flag, a context's length), never the bytes as they
		// are. Parameters of another size stay raw, and are refused.
		if p.ulParameterLen == C.CK_ULONG(unsafe.Sizeof(C.CK_EDDSA_PARAMS{})) {
			e := (*C.CK_EDDSA_PARAMS)(p.pParameter)
			m.EdDSA = &token.EdDSAParams{Prehash: e.phFlag != 0, ContextLen: uint64(e.ulContextDataLen)}
			return m
		}
	}
	m.Param = C.GoBytes(unsafe.Pointer(p.pParameter), C.int(p.ulParameterLen))
	return m
}

func template(p *C.CK_ATTRIBUTE, n C.CK_ULONG) []token.Attribute {
	if p == nil || n == 0 {
		return nil
	}
	out := make([]token.Attribute, 0, n)
	for _, a := range unsafe.Slice(p, int(n)) {
		v := []byte{}
		if a.pValue != nil && a.ulValueLen > 0 {
			v = C.GoBytes(unsafe.Pointer(a.pValue), C.int(a.ulValueLen))
		}
		out = append(out, token.Attribute{Type: uint64(a._type), Value: v})
	}
	return out
}

//export goInitialize
func goInitialize(pInitArgs C.CK_VOID_PTR) (r C.CK_RV) {
	defer recovered(&r)
	if pInitArgs != nil {
		a := (*C.CK_C_INITIALIZE_ARGS)(pInitArgs)
		if a.pReserved != nil {
			return ckrArgumentsBad
		}
		given := 0
		for _, f := range []unsafe.Pointer{unsafe.Pointer(a.CreateMutex), unsafe.Pointer(a.DestroyMutex),
			unsafe.Pointer(a.LockMutex), unsafe.Pointer(a.UnlockMutex)} {
			if f != nil {
				given++
			}
		}
		if given != 0 && given != 4 {
			return ckrArgumentsBad
		}
		// With or without CKF_OS_LOCKING_OK and the application's mutex
		// functions, the module locks with its own (Go) primitives: it is
		// safe for concurrent use either way. The Go runtime runs threads
		// of its own whatever CKF_LIBRARY_CANT_CREATE_OS_THREADS says;
		// refusing the flag (CKR_NEED_TO_CREATE_THREADS) would only shut
		// out GnuTLS, which always sets it, so the flag is accepted.
	}
	return initialize()
}

//export goFinalize
func goFinalize(pReserved C.CK_VOID_PTR) (r C.CK_RV) {
	defer recovered(&r)
	if _, r := module(); r != ckrOK {
		return r // before the argument (section 5.1.7)
	}
	if pReserved != nil {
		return ckrArgumentsBad
	}
	return finalize()
}

//export goGetInfo
func goGetInfo(pInfo *C.CK_INFO) (r C.CK_RV) {
	defer recovered(&r)
	if _, r := module(); r != ckrOK {
		return r
	}
	if pInfo == nil {
		return ckrArgumentsBad
	}
	*pInfo = C.CK_INFO{}
	info := token.LibraryInfo()
	pInfo.cryptokiVersion = C.CK_VERSION{major: 2, minor: 40}
	pad(unsafe.Pointer(&pInfo.manufacturerID[0]), len(pInfo.manufacturerID), info.Manufacturer)
	pad(unsafe.Pointer(&pInfo.libraryDescription[0]), len(pInfo.libraryDescription), info.Description)
	pInfo.libraryVersion = version(info.Version)
	return ckrOK
}

//export goGetSlotList
func goGetSlotList(tokenPresent C.CK_BBOOL, pSlotList C.CK_SLOT_ID_PTR, pulCount C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := module()
	if r != ckrOK {
		return r
	}
	if pulCount == nil {
		return ckrArgumentsBad
	}
	ids, err := m.SlotList(tokenPresent != 0)
	if err != nil {
		return rv(err)
	}
	return list(ids, pSlotList, pulCount)
}

//export goGetSlotInfo
func goGetSlotInfo(slotID C.CK_SLOT_ID, pInfo *C.CK_SLOT_INFO) (r C.CK_RV) {
	defer recovered(&r)
	m, r := withSlot(slotID)
	if r != ckrOK {
		return r
	}
	if pInfo == nil {
		return ckrArgumentsBad
	}
	info, err := m.SlotInfo(uint64(slotID))
	if err != nil {
		return rv(err)
	}
	*pInfo = C.CK_SLOT_INFO{}
	pad(unsafe.Pointer(&pInfo.slotDescription[0]), len(pInfo.slotDescription), info.Description)
	pad(unsafe.Pointer(&pInfo.manufacturerID[0]), len(pInfo.manufacturerID), info.Manufacturer)
	pInfo.flags = C.CK_FLAGS(info.Flags)
	pInfo.hardwareVersion = version(info.Hardware)
	pInfo.firmwareVersion = version(info.Firmware)
	return ckrOK
}

//export goGetTokenInfo
func goGetTokenInfo(slotID C.CK_SLOT_ID, pInfo *C.CK_TOKEN_INFO) (r C.CK_RV) {
	defer recovered(&r)
	m, r := withToken(slotID)
	if r != ckrOK {
		return r
	}
	if pInfo == nil {
		return ckrArgumentsBad
	}
	t, err := m.TokenInfo(uint64(slotID))
	if err != nil {
		return rv(err)
	}
	*pInfo = C.CK_TOKEN_INFO{}
	pad(unsafe.Pointer(&pInfo.label[0]), len(pInfo.label), t.Label)
	pad(unsafe.Pointer(&pInfo.manufacturerID[0]), len(pInfo.manufacturerID), t.Manufacturer)
	pad(unsafe.Pointer(&pInfo.model[0]), len(pInfo.model), t.Model)
	pad(unsafe.Pointer(&pInfo.serialNumber[0]), len(pInfo.serialNumber), t.Serial)
	pad(unsafe.Pointer(&pInfo.utcTime[0]), len(pInfo.utcTime), "")
	pInfo.flags = C.CK_FLAGS(t.Flags)
	pInfo.ulMaxSessionCount = C.CK_ULONG(t.MaxSessions)
	pInfo.ulSessionCount = C.CK_ULONG(t.Sessions)
	pInfo.ulMaxRwSessionCount = C.CK_ULONG(t.MaxRWSessions)
	pInfo.ulRwSessionCount = C.CK_ULONG(t.RWSessions)
	pInfo.ulMaxPinLen = C.CK_ULONG(t.MaxPIN)
	pInfo.ulMinPinLen = C.CK_ULONG(t.MinPIN)
	pInfo.ulTotalPublicMemory = C.CK_ULONG(t.TotalPublic)
	pInfo.ulFreePublicMemory = C.CK_ULONG(t.FreePublic)
	pInfo.ulTotalPrivateMemory = C.CK_ULONG(t.TotalPrivate)
	pInfo.ulFreePrivateMemory = C.CK_ULONG(t.FreePrivate)
	pInfo.hardwareVersion = version(t.Hardware)
	pInfo.firmwareVersion = version(t.Firmware)
	return ckrOK
}

//export goGetMechanismList
func goGetMechanismList(slotID C.CK_SLOT_ID, pMechanismList C.CK_MECHANISM_TYPE_PTR, pulCount C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := withToken(slotID)
	if r != ckrOK {
		return r
	}
	if pulCount == nil {
		return ckrArgumentsBad
	}
	mechs, err := m.MechanismList(uint64(slotID))
	if err != nil {
		return rv(err)
	}
	return list(mechs, pMechanismList, pulCount)
}

//export goGetMechanismInfo
func goGetMechanismInfo(slotID C.CK_SLOT_ID, typ C.CK_MECHANISM_TYPE, pInfo *C.CK_MECHANISM_INFO) (r C.CK_RV) {
	defer recovered(&r)
	m, r := withToken(slotID)
	if r != ckrOK {
		return r
	}
	if pInfo == nil {
		return ckrArgumentsBad
	}
	info, err := m.MechanismInfo(uint64(slotID), uint64(typ))
	if err != nil {
		return rv(err)
	}
	*pInfo = C.CK_MECHANISM_INFO{ulMinKeySize: C.CK_ULONG(info.MinKey), ulMaxKeySize: C.CK_ULONG(info.MaxKey),
		flags: C.CK_FLAGS(info.Flags)}
	return ckrOK
}

//export goOpenSession
func goOpenSession(slotID C.CK_SLOT_ID, flags C.CK_FLAGS, pApplication C.CK_VOID_PTR, notify C.CK_NOTIFY,
	phSession C.CK_SESSION_HANDLE_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := withToken(slotID)
	if r != ckrOK {
		return r
	}
	if phSession == nil {
		return ckrArgumentsBad
	}
	// Notify callbacks are optional and never called: this module does not
	// take surrender requests.
	h, err := m.OpenSession(uint64(slotID), uint64(flags))
	if err != nil {
		return rv(err)
	}
	*phSession = C.CK_SESSION_HANDLE(h)
	return ckrOK
}

//export goCloseSession
func goCloseSession(hSession C.CK_SESSION_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	m, r := module()
	if r != ckrOK {
		return r
	}
	return rv(m.CloseSession(uint64(hSession)))
}

//export goCloseAllSessions
func goCloseAllSessions(slotID C.CK_SLOT_ID) (r C.CK_RV) {
	defer recovered(&r)
	m, r := module()
	if r != ckrOK {
		return r
	}
	return rv(m.CloseAllSessions(uint64(slotID)))
}

//export goGetSessionInfo
func goGetSessionInfo(hSession C.CK_SESSION_HANDLE, pInfo *C.CK_SESSION_INFO) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pInfo == nil {
		return ckrArgumentsBad
	}
	info, err := m.SessionInfo(uint64(hSession))
	if err != nil {
		return rv(err)
	}
	*pInfo = C.CK_SESSION_INFO{slotID: C.CK_SLOT_ID(info.Slot), state: C.CK_STATE(info.State),
		flags: C.CK_FLAGS(info.Flags), ulDeviceError: C.CK_ULONG(info.DeviceError)}
	return ckrOK
}

//export goLogin
func goLogin(hSession C.CK_SESSION_HANDLE, userType C.CK_USER_TYPE, pPin C.CK_UTF8CHAR_PTR, ulPinLen C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pPin == nil && ulPinLen > 0 {
		return ckrArgumentsBad
	}
	if ulPinLen > maxPINLen {
		return ckrPINLenRange // before touching the caller's memory
	}
	// The virtual PIN is copied so that the caller may wipe its own; the
	// copy is wiped once sent.
	pin := make([]byte, int(ulPinLen))
	copy(pin, bytesOf(unsafe.Pointer(pPin), ulPinLen))
	defer clear(pin)
	return rv(m.Login(uint64(hSession), uint64(userType), pin))
}

//export goLogout
func goLogout(hSession C.CK_SESSION_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	return rv(m.Logout(uint64(hSession)))
}

//export goGetAttributeValue
func goGetAttributeValue(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE, pTemplate *C.CK_ATTRIBUTE, ulCount C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pTemplate == nil && ulCount > 0 {
		return ckrArgumentsBad
	}
	var attrs []C.CK_ATTRIBUTE
	if ulCount > 0 {
		attrs = unsafe.Slice(pTemplate, int(ulCount))
	}
	q := make([]token.AttrQuery, len(attrs))
	for i, a := range attrs {
		q[i] = token.AttrQuery{Type: uint64(a._type), HasBuf: a.pValue != nil, Buf: bytesOf(unsafe.Pointer(a.pValue), a.ulValueLen)}
	}
	err := m.GetAttributeValue(uint64(hSession), uint64(hObject), q)
	switch token.RVOf(err) {
	case token.OK, token.ErrAttributeSensitive, token.ErrAttributeTypeInvalid, token.ErrBufferTooSmall:
		for i := range attrs {
			attrs[i].ulValueLen = C.CK_ULONG(q[i].Len)
		}
	}
	return rv(err)
}

//export goFindObjectsInit
func goFindObjectsInit(hSession C.CK_SESSION_HANDLE, pTemplate *C.CK_ATTRIBUTE, ulCount C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pTemplate == nil && ulCount > 0 {
		return ckrArgumentsBad
	}
	return rv(m.FindObjectsInit(uint64(hSession), template(pTemplate, ulCount)))
}

//export goFindObjects
func goFindObjects(hSession C.CK_SESSION_HANDLE, phObject C.CK_OBJECT_HANDLE_PTR, ulMaxObjectCount C.CK_ULONG,
	pulObjectCount C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulObjectCount == nil || (phObject == nil && ulMaxObjectCount > 0) {
		return ckrArgumentsBad
	}
	hs, err := m.FindObjects(uint64(hSession), int(min(ulMaxObjectCount, 1<<20)))
	if err != nil {
		return rv(err)
	}
	if len(hs) > 0 {
		out := unsafe.Slice(phObject, len(hs))
		for i, h := range hs {
			out[i] = C.CK_OBJECT_HANDLE(h)
		}
	}
	*pulObjectCount = C.CK_ULONG(len(hs))
	return ckrOK
}

//export goFindObjectsFinal
func goFindObjectsFinal(hSession C.CK_SESSION_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	return rv(m.FindObjectsFinal(uint64(hSession)))
}

//export goDigestInit
func goDigestInit(hSession C.CK_SESSION_HANDLE, pMechanism *C.CK_MECHANISM) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pMechanism == nil {
		return ckrArgumentsBad
	}
	return rv(m.DigestInit(uint64(hSession), mechanism(pMechanism)))
}

//export goDigest
func goDigest(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pDigest C.CK_BYTE_PTR,
	pulDigestLen C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulDigestLen == nil || (pData == nil && ulDataLen > 0) {
		return ckrArgumentsBad
	}
	out, has := output(pDigest, pulDigestLen)
	n, err := m.Digest(uint64(hSession), bytesOf(unsafe.Pointer(pData), ulDataLen), out, has)
	return sized(n, err, pulDigestLen)
}

// sized sets the output length of a two-call function.
func sized(n int, err error, pLen C.CK_ULONG_PTR) C.CK_RV {
	if rv := token.RVOf(err); rv == token.OK || rv == token.ErrBufferTooSmall {
		*pLen = C.CK_ULONG(n)
	}
	return rv(err)
}

//export goDigestUpdate
func goDigestUpdate(hSession C.CK_SESSION_HANDLE, pPart C.CK_BYTE_PTR, ulPartLen C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pPart == nil && ulPartLen > 0 {
		return ckrArgumentsBad
	}
	return rv(m.DigestUpdate(uint64(hSession), bytesOf(unsafe.Pointer(pPart), ulPartLen)))
}

//export goDigestFinal
func goDigestFinal(hSession C.CK_SESSION_HANDLE, pDigest C.CK_BYTE_PTR, pulDigestLen C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulDigestLen == nil {
		return ckrArgumentsBad
	}
	out, has := output(pDigest, pulDigestLen)
	n, err := m.DigestFinal(uint64(hSession), out, has)
	return sized(n, err, pulDigestLen)
}

//export goSignInit
func goSignInit(hSession C.CK_SESSION_HANDLE, pMechanism *C.CK_MECHANISM, hKey C.CK_OBJECT_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pMechanism == nil {
		return ckrArgumentsBad
	}
	return rv(m.SignInit(uint64(hSession), mechanism(pMechanism), uint64(hKey)))
}

//export goSign
func goSign(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pSignature C.CK_BYTE_PTR,
	pulSignatureLen C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulSignatureLen == nil || (pData == nil && ulDataLen > 0) {
		return ckrArgumentsBad
	}
	out, has := output(pSignature, pulSignatureLen)
	n, err := m.Sign(uint64(hSession), bytesOf(unsafe.Pointer(pData), ulDataLen), out, has)
	return sized(n, err, pulSignatureLen)
}

//export goSignUpdate
func goSignUpdate(hSession C.CK_SESSION_HANDLE, pPart C.CK_BYTE_PTR, ulPartLen C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pPart == nil && ulPartLen > 0 {
		return ckrArgumentsBad
	}
	return rv(m.SignUpdate(uint64(hSession), bytesOf(unsafe.Pointer(pPart), ulPartLen)))
}

//export goSignFinal
func goSignFinal(hSession C.CK_SESSION_HANDLE, pSignature C.CK_BYTE_PTR, pulSignatureLen C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulSignatureLen == nil {
		return ckrArgumentsBad
	}
	out, has := output(pSignature, pulSignatureLen)
	n, err := m.SignFinal(uint64(hSession), out, has)
	return sized(n, err, pulSignatureLen)
}

//export goGenerateRandom
func goGenerateRandom(hSession C.CK_SESSION_HANDLE, pRandomData C.CK_BYTE_PTR, ulRandomLen C.CK_ULONG) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pRandomData == nil && ulRandomLen > 0 {
		return ckrArgumentsBad
	}
	return rv(m.GenerateRandom(uint64(hSession), bytesOf(unsafe.Pointer(pRandomData), ulRandomLen)))
}

//export goWaitForSlotEvent
func goWaitForSlotEvent(flags C.CK_FLAGS, pSlot C.CK_SLOT_ID_PTR, pReserved C.CK_VOID_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := module()
	if r != ckrOK {
		return r
	}
	if pSlot == nil || pReserved != nil {
		return ckrArgumentsBad
	}
	id, err := m.WaitForSlotEvent(flags&token.FlagDontBlock != 0)
	if err != nil {
		return rv(err)
	}
	*pSlot = C.CK_SLOT_ID(id)
	return ckrOK
}
