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

// The decryption and key agreement entries (see token's decrypt.go). The
// mechanism parameters hold pointers, read here into Go copies.

// maxParamData bounds the label and point lengths read from the caller.
const maxParamData = 64 << 10

//export goDecryptInit
func goDecryptInit(hSession C.CK_SESSION_HANDLE, pMechanism *C.CK_MECHANISM, hKey C.CK_OBJECT_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pMechanism == nil {
		return ckrArgumentsBad
	}
	var oaep *token.OAEPParams
	if uint64(pMechanism.mechanism) == token.CKMRSAPKCSOAEP {
		if pMechanism.pParameter == nil || pMechanism.ulParameterLen != C.CK_ULONG(unsafe.Sizeof(C.CK_RSA_PKCS_OAEP_PARAMS{})) {
			return C.CK_RV(token.ErrMechanismParamInvalid)
		}
		p := (*C.CK_RSA_PKCS_OAEP_PARAMS)(pMechanism.pParameter)
		if p.ulSourceDataLen > maxParamData || (p.pSourceData == nil && p.ulSourceDataLen > 0) {
			return C.CK_RV(token.ErrMechanismParamInvalid)
		}
		oaep = &token.OAEPParams{Hash: uint64(p.hashAlg), MGF: uint64(p.mgf), Source: uint64(p.source),
			Label: C.GoBytes(unsafe.Pointer(p.pSourceData), C.int(p.ulSourceDataLen))}
	}
	return rv(m.DecryptInit(uint64(hSession), uint64(pMechanism.mechanism), oaep, uint64(hKey)))
}

//export goDecrypt
func goDecrypt(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pOut C.CK_BYTE_PTR,
	pulOutLen C.CK_ULONG_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pulOutLen == nil || (pData == nil && ulDataLen > 0) {
		return ckrArgumentsBad
	}
	out, has := output(pOut, pulOutLen)
	n, err := m.Decrypt(uint64(hSession), bytesOf(unsafe.Pointer(pData), ulDataLen), out, has)
	return sized(n, err, pulOutLen)
}

//export goDeriveKey
func goDeriveKey(hSession C.CK_SESSION_HANDLE, pMechanism *C.CK_MECHANISM, hBase C.CK_OBJECT_HANDLE,
	pTemplate *C.CK_ATTRIBUTE, ulCount C.CK_ULONG, phKey C.CK_OBJECT_HANDLE_PTR) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	if pMechanism == nil || phKey == nil || (pTemplate == nil && ulCount > 0) {
		return ckrArgumentsBad
	}
	var ecdh *token.ECDHParams
	if uint64(pMechanism.mechanism) == token.CKMECDH1Derive {
		if pMechanism.pParameter == nil || pMechanism.ulParameterLen != C.CK_ULONG(unsafe.Sizeof(C.CK_ECDH1_DERIVE_PARAMS{})) {
			return C.CK_RV(token.ErrMechanismParamInvalid)
		}
		p := (*C.CK_ECDH1_DERIVE_PARAMS)(pMechanism.pParameter)
		if p.ulSharedDataLen > maxParamData || p.ulPublicDataLen > maxParamData ||
			(p.pSharedData == nil && p.ulSharedDataLen > 0) || (p.pPublicData == nil && p.ulPublicDataLen > 0) {
			return C.CK_RV(token.ErrMechanismParamInvalid)
		}
		ecdh = &token.ECDHParams{KDF: uint64(p.kdf),
			Shared: C.GoBytes(unsafe.Pointer(p.pSharedData), C.int(p.ulSharedDataLen)),
			Public: C.GoBytes(unsafe.Pointer(p.pPublicData), C.int(p.ulPublicDataLen))}
	}
	h, err := m.DeriveKey(uint64(hSession), uint64(pMechanism.mechanism), ecdh, uint64(hBase), template(pTemplate, ulCount))
	if err != nil {
		return rv(err)
	}
	*phKey = C.CK_OBJECT_HANDLE(h)
	return ckrOK
}

//export goDestroyObject
func goDestroyObject(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE) (r C.CK_RV) {
	defer recovered(&r)
	m, r := inSession(hSession)
	if r != ckrOK {
		return r
	}
	return rv(m.DestroyObject(uint64(hSession), uint64(hObject)))
}
