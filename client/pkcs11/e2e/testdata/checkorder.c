/*
 * Calls every entry of the module's function list (but C_Initialize and
 * C_GetFunctionList) with NULL for every pointer, in phases, and prints
 * one line per call: "PHASE C_Name 0xRV". TestCheckOrder holds the answers
 * against what PKCS #11 v2.40 says (section 5.1.7: initialization and the
 * session handle before the arguments).
 *
 * Usage: checkorder MODULE full    (a token in slot 1)
 *        checkorder MODULE notoken (slot 0 has no token)
 *
 * Phases of "full":
 *   uninit    before C_Initialize; session 1, slot 1
 *   badhandle session 0xdead, slot 0x77 (neither exists)
 *   null      a fresh R/W session with the token in slot 1, slot 1
 * Phase of "notoken": notoken, session 1 (none is open), slot 0.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "p11.h"

static CK_FUNCTION_LIST_PTR f;

#define W(name, args) \
	static CK_RV w_##name(CK_SESSION_HANDLE h, CK_SLOT_ID s) { (void)h; (void)s; return f->name args; }

W(C_Finalize, ((CK_VOID_PTR)1))
W(C_GetInfo, (NULL))
W(C_GetSlotList, (0, NULL, NULL))
W(C_GetSlotInfo, (s, NULL))
W(C_GetTokenInfo, (s, NULL))
W(C_GetMechanismList, (s, NULL, NULL))
W(C_GetMechanismInfo, (s, 0x1041, NULL))
W(C_InitToken, (s, NULL, 4, NULL))
W(C_InitPIN, (h, NULL, 4))
W(C_SetPIN, (h, NULL, 4, NULL, 4))
W(C_OpenSession, (s, 6, NULL, NULL, NULL))
W(C_CloseSession, (h))
W(C_CloseAllSessions, (s))
W(C_GetSessionInfo, (h, NULL))
W(C_GetOperationState, (h, NULL, NULL))
W(C_SetOperationState, (h, NULL, 4, 0, 0))
W(C_Login, (h, 1, NULL, 4))
W(C_Logout, (h))
W(C_CreateObject, (h, NULL, 1, NULL))
W(C_CopyObject, (h, 1, NULL, 1, NULL))
W(C_DestroyObject, (h, 1))
W(C_GetObjectSize, (h, 1, NULL))
W(C_GetAttributeValue, (h, 1, NULL, 1))
W(C_SetAttributeValue, (h, 1, NULL, 1))
W(C_FindObjectsInit, (h, NULL, 1))
W(C_FindObjects, (h, NULL, 1, NULL))
W(C_FindObjectsFinal, (h))
W(C_EncryptInit, (h, NULL, 1))
W(C_Encrypt, (h, NULL, 4, NULL, NULL))
W(C_EncryptUpdate, (h, NULL, 4, NULL, NULL))
W(C_EncryptFinal, (h, NULL, NULL))
W(C_DecryptInit, (h, NULL, 1))
W(C_Decrypt, (h, NULL, 4, NULL, NULL))
W(C_DecryptUpdate, (h, NULL, 4, NULL, NULL))
W(C_DecryptFinal, (h, NULL, NULL))
W(C_DigestInit, (h, NULL))
W(C_Digest, (h, NULL, 4, NULL, NULL))
W(C_DigestUpdate, (h, NULL, 4))
W(C_DigestKey, (h, 1))
W(C_DigestFinal, (h, NULL, NULL))
W(C_SignInit, (h, NULL, 1))
W(C_Sign, (h, NULL, 4, NULL, NULL))
W(C_SignUpdate, (h, NULL, 4))
W(C_SignFinal, (h, NULL, NULL))
W(C_SignRecoverInit, (h, NULL, 1))
W(C_SignRecover, (h, NULL, 4, NULL, NULL))
W(C_VerifyInit, (h, NULL, 1))
W(C_Verify, (h, NULL, 4, NULL, 4))
W(C_VerifyUpdate, (h, NULL, 4))
W(C_VerifyFinal, (h, NULL, 4))
W(C_VerifyRecoverInit, (h, NULL, 1))
W(C_VerifyRecover, (h, NULL, 4, NULL, NULL))
W(C_DigestEncryptUpdate, (h, NULL, 4, NULL, NULL))
W(C_DecryptDigestUpdate, (h, NULL, 4, NULL, NULL))
W(C_SignEncryptUpdate, (h, NULL, 4, NULL, NULL))
W(C_DecryptVerifyUpdate, (h, NULL, 4, NULL, NULL))
W(C_GenerateKey, (h, NULL, NULL, 1, NULL))
W(C_GenerateKeyPair, (h, NULL, NULL, 1, NULL, 1, NULL, NULL))
W(C_WrapKey, (h, NULL, 1, 1, NULL, NULL))
W(C_UnwrapKey, (h, NULL, 1, NULL, 4, NULL, 1, NULL))
W(C_DeriveKey, (h, NULL, 1, NULL, 1, NULL))
W(C_SeedRandom, (h, NULL, 4))
W(C_GenerateRandom, (h, NULL, 4))
W(C_GetFunctionStatus, (h))
W(C_CancelFunction, (h))
W(C_WaitForSlotEvent, (1 /* CKF_DONT_BLOCK */, NULL, NULL))

#define E(name) {#name, w_##name}
static const struct {
	const char *name;
	CK_RV (*call)(CK_SESSION_HANDLE, CK_SLOT_ID);
} entries[] = {
	E(C_Finalize), E(C_GetInfo), E(C_GetSlotList), E(C_GetSlotInfo), E(C_GetTokenInfo),
	E(C_GetMechanismList), E(C_GetMechanismInfo), E(C_InitToken), E(C_InitPIN), E(C_SetPIN),
	E(C_OpenSession), E(C_CloseSession), E(C_CloseAllSessions), E(C_GetSessionInfo),
	E(C_GetOperationState), E(C_SetOperationState), E(C_Login), E(C_Logout), E(C_CreateObject),
	E(C_CopyObject), E(C_DestroyObject), E(C_GetObjectSize), E(C_GetAttributeValue),
	E(C_SetAttributeValue), E(C_FindObjectsInit), E(C_FindObjects), E(C_FindObjectsFinal),
	E(C_EncryptInit), E(C_Encrypt), E(C_EncryptUpdate), E(C_EncryptFinal), E(C_DecryptInit),
	E(C_Decrypt), E(C_DecryptUpdate), E(C_DecryptFinal), E(C_DigestInit), E(C_Digest),
	E(C_DigestUpdate), E(C_DigestKey), E(C_DigestFinal), E(C_SignInit), E(C_Sign), E(C_SignUpdate),
	E(C_SignFinal), E(C_SignRecoverInit), E(C_SignRecover), E(C_VerifyInit), E(C_Verify),
	E(C_VerifyUpdate), E(C_VerifyFinal), E(C_VerifyRecoverInit), E(C_VerifyRecover),
	E(C_DigestEncryptUpdate), E(C_DecryptDigestUpdate), E(C_SignEncryptUpdate),
	E(C_DecryptVerifyUpdate), E(C_GenerateKey), E(C_GenerateKeyPair), E(C_WrapKey), E(C_UnwrapKey),
	E(C_DeriveKey), E(C_SeedRandom), E(C_GenerateRandom), E(C_GetFunctionStatus),
	E(C_CancelFunction), E(C_WaitForSlotEvent),
};
#define N (sizeof entries / sizeof entries[0])

static void phase(const char *name, CK_SESSION_HANDLE h, CK_SLOT_ID s) {
	for (size_t i = 0; i < N; i++)
		printf("%s %s 0x%lx\n", name, entries[i].name, entries[i].call(h, s));
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL) {
		printf("dlopen: %s\n", dlerror());
		return 2;
	}
	CK_RV (*getList)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList");
	if (getList == NULL || getList(&f) != 0)
		return 2;
	printf("entries %zu\n", N + 2); /* with C_Initialize and C_GetFunctionList */
	CK_RV rv;
	if (strcmp(argv[2], "notoken") == 0) {
		if ((rv = f->C_Initialize(NULL)) != 0) {
			printf("C_Initialize 0x%lx\n", rv);
			return 3;
		}
		phase("notoken", 1, 0);
		return f->C_Finalize(NULL) == 0 ? 0 : 4;
	}
	phase("uninit", 1, 1);
	if ((rv = f->C_Initialize(NULL)) != 0) {
		printf("C_Initialize 0x%lx\n", rv);
		return 3;
	}
	phase("badhandle", 0xdead, 0x77);
	for (size_t i = 0; i < N; i++) {
		CK_SESSION_HANDLE h;
		if ((rv = f->C_OpenSession(1, 6 /* CKF_SERIAL_SESSION|CKF_RW_SESSION */, NULL, NULL, &h)) != 0) {
			printf("C_OpenSession 0x%lx\n", rv);
			return 3;
		}
		printf("null %s 0x%lx\n", entries[i].name, entries[i].call(h, 1));
		f->C_CloseSession(h);
	}
	return f->C_Finalize(NULL) == 0 ? 0 : 4;
}
