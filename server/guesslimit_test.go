package server_test

import (
	"fmt"
	"testing"

	"github.com/pscs/pscs/transport"
)

// TestGuessLimitRefusal: while the TPM is at its guess limit the vault
// tests no vPIN, and the server answers CodeGuessLimit (116), for right and
// wrong vPINs alike, without counting toward the delegation's lockout (5
// wrong vPINs); the refusals are audited. Once the TPM has room again,
// logins work as before.
func TestGuessLimitRefusal(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	r.vault.SetLimit(true)
	for i := range 10 {
		vpin := fmt.Sprintf("%04d", i)
		if i == 9 {
			vpin = "2718" // the right one
		}
		if _, err := c.Login(ctx(t), 7, []byte(vpin)); !isCode(err, transport.CodeGuessLimit) {
			t.Fatalf("login %d at the guess limit: %v, want code %d", i, err, transport.CodeGuessLimit)
		}
	}
	r.vault.SetLimit(false)
	if _, err := c.Login(ctx(t), 7, []byte("0000")); !isCode(err, transport.CodeWrongPIN) {
		t.Errorf("wrong vPIN after 10 guess-limit refusals: %v, want CodeWrongPIN (not locked)", err)
	}
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Errorf("right vPIN after the guess limit: %v", err)
	}
	n := 0
	for _, code := range r.audit.codes() {
		if code == transport.CodeGuessLimit {
			n++
		}
	}
	if n != 10 {
		t.Errorf("%d audit records with code %d, want 10", n, transport.CodeGuessLimit)
	}
}
