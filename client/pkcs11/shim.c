/*
 * The C half of the pscs PKCS #11 module: the function list (in C memory,
 * for keeps), C_GetFunctionList, the PKCS #11 v3.0 interface discovery,
 * and the entries the module does not support, each with its own
 * prototype. Every entry checks the process (see Fork below) and calls
 * the Go functions exported from module.go and conformance.go (declared
 * in _cgo_export.h); the unsupported ones check initialization and their
 * session or slot there before they answer CKR_FUNCTION_NOT_SUPPORTED.
 */
#include <string.h>
#include "_cgo_export.h"

#define CKR_OK                      0x000UL
#define CKR_ARGUMENTS_BAD           0x007UL
#define CKR_BUFFER_TOO_SMALL        0x150UL

/*
 * Fork. The Go runtime does not survive fork(): in a child, only the
 * forking thread exists, and the first call into Go would wait forever for
 * the runtime's other threads. So the entries check the process here, in C:
 * in a child of the process that loaded the module, every entry answers
 * CKR_CRYPTOKI_NOT_INITIALIZED without entering Go (and so never touches
 * the parent's connection), and C_Initialize fails. A child that wants the
 * module execs a program that loads it afresh.
 */
#include <sys/types.h>
#include <unistd.h>

static pid_t loadPid;

__attribute__((constructor)) static void recordLoadPid(void) { loadPid = getpid(); }

#define CKR_GENERAL_ERROR             0x005UL
#define CKR_CRYPTOKI_NOT_INITIALIZED  0x190UL
#define FORKED (getpid() != loadPid)

CK_RV C_Initialize(CK_VOID_PTR a) { return FORKED ? CKR_GENERAL_ERROR : goInitialize(a); }
CK_RV C_Finalize(CK_VOID_PTR a) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goFinalize(a); }
CK_RV C_GetInfo(CK_INFO *i) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetInfo(i); }
CK_RV C_GetSlotList(CK_BBOOL p, CK_SLOT_ID_PTR l, CK_ULONG_PTR n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetSlotList(p, l, n);
}
CK_RV C_GetSlotInfo(CK_SLOT_ID s, CK_SLOT_INFO *i) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetSlotInfo(s, i); }
CK_RV C_GetTokenInfo(CK_SLOT_ID s, CK_TOKEN_INFO *i) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetTokenInfo(s, i); }
CK_RV C_GetMechanismList(CK_SLOT_ID s, CK_MECHANISM_TYPE_PTR l, CK_ULONG_PTR n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetMechanismList(s, l, n);
}
CK_RV C_GetMechanismInfo(CK_SLOT_ID s, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *i) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetMechanismInfo(s, t, i);
}
CK_RV C_OpenSession(CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY n, CK_SESSION_HANDLE_PTR h) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goOpenSession(s, f, a, n, h);
}
CK_RV C_CloseSession(CK_SESSION_HANDLE h) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goCloseSession(h); }
CK_RV C_CloseAllSessions(CK_SLOT_ID s) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goCloseAllSessions(s); }
CK_RV C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO *i) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetSessionInfo(h, i);
}
CK_RV C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_UTF8CHAR_PTR p, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goLogin(h, u, p, n);
}
CK_RV C_Logout(CK_SESSION_HANDLE h) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goLogout(h); }
CK_RV C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetAttributeValue(h, o, t, n);
}
CK_RV C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goFindObjectsInit(h, t, n);
}
CK_RV C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR o, CK_ULONG m, CK_ULONG_PTR n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goFindObjects(h, o, m, n);
}
CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE h) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goFindObjectsFinal(h); }
CK_RV C_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM *m) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDigestInit(h, m); }
CK_RV C_Digest(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDigest(h, d, n, o, on);
}
CK_RV C_DigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDigestUpdate(h, d, n);
}
CK_RV C_DigestFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR on) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDigestFinal(h, o, on);
}
CK_RV C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goSignInit(h, m, k);
}
CK_RV C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goSign(h, d, n, o, on);
}
CK_RV C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goSignUpdate(h, d, n);
}
CK_RV C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR on) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goSignFinal(h, o, on);
}
CK_RV C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDecryptInit(h, m, k);
}
CK_RV C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDecrypt(h, d, n, o, on);
}
CK_RV C_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE b, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDeriveKey(h, m, b, t, n, k);
}
CK_RV C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goDestroyObject(h, o);
}
CK_RV C_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGenerateRandom(h, o, n);
}
CK_RV C_WaitForSlotEvent(CK_FLAGS f, CK_SLOT_ID_PTR s, CK_VOID_PTR r) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goWaitForSlotEvent(f, s, r);
}

/*
 * The entries the module does not support answer CKR_FUNCTION_NOT_SUPPORTED
 * after the checks every entry makes first (PKCS #11 v2.40 section 5.1.7;
 * see conformance.go): CKR_CRYPTOKI_NOT_INITIALIZED before C_Initialize,
 * then CKR_SESSION_HANDLE_INVALID for a session handle that names no
 * session (h), or the token checks for a slot (s).
 */
#define UNSUPPORTED(name, args) \
	CK_RV name args { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goUnsupported(h); }

CK_RV C_InitToken(CK_SLOT_ID s, CK_UTF8CHAR_PTR p, CK_ULONG n, CK_UTF8CHAR_PTR l) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goUnsupportedSlot(s);
}
UNSUPPORTED(C_InitPIN, (CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR p, CK_ULONG n))
UNSUPPORTED(C_SetPIN, (CK_SESSION_HANDLE h, CK_UTF8CHAR_PTR o, CK_ULONG on, CK_UTF8CHAR_PTR n, CK_ULONG nn))
UNSUPPORTED(C_GetOperationState, (CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG_PTR n))
UNSUPPORTED(C_SetOperationState, (CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n, CK_OBJECT_HANDLE e, CK_OBJECT_HANDLE a))
UNSUPPORTED(C_CreateObject, (CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o))
UNSUPPORTED(C_CopyObject, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE_PTR p))
UNSUPPORTED(C_SetAttributeValue, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, CK_ULONG n))
UNSUPPORTED(C_EncryptInit, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k))
UNSUPPORTED(C_Encrypt, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_EncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_EncryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_DecryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_DecryptFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_DigestKey, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k))
UNSUPPORTED(C_SignRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k))
UNSUPPORTED(C_SignRecover, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_VerifyInit, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k))
UNSUPPORTED(C_Verify, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR s, CK_ULONG sn))
UNSUPPORTED(C_VerifyUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n))
UNSUPPORTED(C_VerifyFinal, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sn))
UNSUPPORTED(C_VerifyRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE k))
UNSUPPORTED(C_VerifyRecover, (CK_SESSION_HANDLE h, CK_BYTE_PTR s, CK_ULONG sn, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_DigestEncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_DecryptDigestUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_SignEncryptUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG n, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_GenerateKey, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k))
UNSUPPORTED(C_GenerateKeyPair, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_ATTRIBUTE *pt, CK_ULONG pn,
	CK_ATTRIBUTE *st, CK_ULONG sn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR sk))
UNSUPPORTED(C_WrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k, CK_BYTE_PTR o, CK_ULONG_PTR on))
UNSUPPORTED(C_UnwrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE u, CK_BYTE_PTR w, CK_ULONG wn,
	CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k))

/* Objects have no size worth telling (see token.Module.ObjectSize). */
CK_RV C_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ULONG_PTR n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goGetObjectSize(h, o, n);
}

/* Random numbers come from the operating system; they take no seed. */
CK_RV C_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR p, CK_ULONG n) {
	return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goSeedRandom(h, p, n);
}

/* Legacy parallel functions (section 5.16): CKR_FUNCTION_NOT_PARALLEL. */
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE h) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goLegacyParallel(h); }
CK_RV C_CancelFunction(CK_SESSION_HANDLE h) { return FORKED ? CKR_CRYPTOKI_NOT_INITIALIZED : goLegacyParallel(h); }

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList);

static CK_FUNCTION_LIST functionList = {
	{2, 40},
	C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList, C_GetSlotList, C_GetSlotInfo,
	C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_InitToken, C_InitPIN, C_SetPIN,
	C_OpenSession, C_CloseSession, C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState,
	C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject, C_DestroyObject,
	C_GetObjectSize, C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit, C_FindObjects,
	C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal, C_DecryptInit,
	C_Decrypt, C_DecryptUpdate, C_DecryptFinal, C_DigestInit, C_Digest, C_DigestUpdate, C_DigestKey,
	C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, C_SignRecoverInit, C_SignRecover,
	C_VerifyInit, C_Verify, C_VerifyUpdate, C_VerifyFinal, C_VerifyRecoverInit, C_VerifyRecover,
	C_DigestEncryptUpdate, C_DecryptDigestUpdate, C_SignEncryptUpdate, C_DecryptVerifyUpdate,
	C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey, C_SeedRandom,
	C_GenerateRandom, C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent,
};

__attribute__((visibility("default")))
CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
	if (ppFunctionList == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppFunctionList = &functionList;
	return CKR_OK;
}

static CK_CHAR interfaceName[] = "PKCS 11";
static CK_INTERFACE interfaces[] = {{interfaceName, &functionList, 0}};

__attribute__((visibility("default")))
CK_RV C_GetInterfaceList(CK_INTERFACE *pInterfacesList, CK_ULONG_PTR pulCount) {
	if (pulCount == NULL)
		return CKR_ARGUMENTS_BAD;
	if (pInterfacesList == NULL) {
		*pulCount = 1;
		return CKR_OK;
	}
	if (*pulCount < 1) {
		*pulCount = 1;
		return CKR_BUFFER_TOO_SMALL;
	}
	pInterfacesList[0] = interfaces[0];
	*pulCount = 1;
	return CKR_OK;
}

__attribute__((visibility("default")))
CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION *pVersion, CK_INTERFACE **ppInterface, CK_FLAGS flags) {
	if (ppInterface == NULL)
		return CKR_ARGUMENTS_BAD;
	if (pInterfaceName != NULL && strcmp((const char *)pInterfaceName, (const char *)interfaceName) != 0)
		return CKR_ARGUMENTS_BAD;
	if (pVersion != NULL && (pVersion->major != 2 || pVersion->minor != 40))
		return CKR_ARGUMENTS_BAD;
	if ((flags & ~interfaces[0].flags) != 0)
		return CKR_ARGUMENTS_BAD;
	*ppInterface = &interfaces[0];
	return CKR_OK;
}
