/*
 * A C application that loads the module, signs, forks, tries the module
 * in the child, and signs in the parent again.
 * Usage: forkhost MODULE VPIN
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "p11.h"

static CK_FUNCTION_LIST_PTR f;

static int sign(const char *who, const char *pin) {
	CK_SLOT_ID slots[4];
	CK_ULONG n = 4;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = {0x1041 /* CKM_ECDSA */, NULL, 0};
	unsigned char hash[32] = {1, 2, 3}, sig[128];
	CK_ULONG sl = sizeof sig;
	CK_RV rv;
	if ((rv = f->C_GetSlotList(1, slots, &n)) != 0 || n != 1) {
		printf("%s: C_GetSlotList rv=0x%lx n=%lu\n", who, rv, n);
		return 1;
	}
	if ((rv = f->C_OpenSession(slots[0], 4 /* CKF_SERIAL_SESSION */, NULL, NULL, &s)) != 0) {
		printf("%s: C_OpenSession rv=0x%lx\n", who, rv);
		return 1;
	}
	rv = f->C_Login(s, 1 /* CKU_USER */, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	if (rv != 0 && rv != 0x100 /* CKR_USER_ALREADY_LOGGED_IN */) {
		printf("%s: C_Login rv=0x%lx\n", who, rv);
		return 1;
	}
	if ((rv = f->C_SignInit(s, &m, 1)) != 0) {
		printf("%s: C_SignInit rv=0x%lx\n", who, rv);
		return 1;
	}
	if ((rv = f->C_Sign(s, hash, sizeof hash, sig, &sl)) != 0 || sl != 64) {
		printf("%s: C_Sign rv=0x%lx len=%lu\n", who, rv, sl);
		return 1;
	}
	f->C_CloseSession(s);
	printf("%s ok\n", who);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	void *h = dlopen(argv[1], RTLD_NOW);
	if (h == NULL) {
		printf("dlopen: %s\n", dlerror());
		return 2;
	}
	CK_RV (*getList)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(h, "C_GetFunctionList");
	if (getList == NULL || getList(&f) != 0)
		return 2;
	if (f->C_Initialize(NULL) != 0)
		return 2;
	if (sign("parent", argv[2]))
		return 3;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		/* The child: the module is not initialised here, and cannot be
		 * (the Go runtime does not survive fork); nothing hangs, and the
		 * parent's connection is not touched. */
		CK_ULONG n = 0;
		CK_RV rv = f->C_GetSlotList(1, NULL, &n);
		if (rv != 0x190 /* CKR_CRYPTOKI_NOT_INITIALIZED */) {
			printf("child: C_GetSlotList rv=0x%lx\n", rv);
			_exit(4);
		}
		if ((rv = f->C_Finalize(NULL)) != 0x190) {
			printf("child: C_Finalize rv=0x%lx\n", rv);
			_exit(5);
		}
		if ((rv = f->C_Initialize(NULL)) != 0x5 /* CKR_GENERAL_ERROR */) {
			printf("child: C_Initialize rv=0x%lx\n", rv);
			_exit(5);
		}
		printf("child refused\n");
		fflush(stdout);
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		printf("child failed: status %d\n", st);
		return 6;
	}
	if (sign("parent again", argv[2]))
		return 7;
	f->C_Finalize(NULL);
	return 0;
}
