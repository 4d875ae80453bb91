package vault

import (
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestHMACInputBounded: maxHMACInput is enforced before any TPM command
// (the TPM and the keys are nil here: reaching them would panic), and the
// longest input a caller makes (an entry's or a MAC's) is within it.
func TestHMACInputBounded(t *testing.T) {
	long := make([]byte, maxHMACInput+1)
	if _, err := (&tpmKey{}).hmac(nil, long); err == nil || !strings.Contains(err.Error(), "at most 1024") {
		t.Errorf("vault key HMAC of %d bytes: %v", len(long), err)
	}
	if _, err := keyHMAC(nil, nil, 0, tpm2.TPM2BName{}, nil, long); err == nil || !strings.Contains(err.Error(), "at most 1024") {
		t.Errorf("entry key HMAC of %d bytes: %v", len(long), err)
	}
	if err := checkHMACInput(make([]byte, maxHMACInput)); err != nil {
		t.Errorf("%d bytes: %v", maxHMACInput, err)
	}
	if n := len(labelMAC) + 1 + MaxLabelSize + 32; n > maxHMACInput {
		t.Errorf("MAC's TPM input is up to %d bytes, over %d", n, maxHMACInput)
	}
}
