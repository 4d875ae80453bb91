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

// SetDAParameters runs TPM2_DictionaryAttackParameters with the empty
// lockout authorization.
func SetDAParameters(tpm transport.TPM, maxTries, recoverySeconds, lockoutRecoverySeconds uint32) error {
	var p []byte
	for _, v := range []uint32{maxTries, recoverySeconds, lockoutRecoverySeconds} {
		p = append(p, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return lockoutCommand(tpm, tpm2.TPMCCDictionaryAttackParameters, p)
}
