package vault

import (
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// LockReset runs TPM2_DictionaryAttackLockReset with the empty lockout
// authorization, as anyone with the TPM can while that authorization is
// empty: the tests use it to start from a zero counter, and to show that
// an attacker cannot once the vault discarded the authorization.
func LockReset(tpm transport.TPM) error {
	return lockoutCommand(tpm, tpm2.TPMCCDictionaryAttackLockReset, nil)
}
