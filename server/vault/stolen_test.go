package vault_test

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/argon2"

	"github.com/pscs/pscs/internal/cborpolicy"
	"github.com/pscs/pscs/server/vault"
)

// stolenDA is what the appliance was configured with: 10 tries, and a
// recovery long enough that no failure is forgotten during the test.
var stolenDA = vault.DA{MaxTries: 10, Recovery: time.Hour, LockoutRecovery: time.Hour, Reserve: 2, DiscardLockoutAuth: true}

// testStolenAppliance is the acceptance test of a stolen appliance: the
// thief has the state directory (vault key file and sealed entries) and
// the TPM, and drives the TPM directly with go-tpm, as an attacker would,
// not through the vault and pscsd's policy. The TPM stops the guesses
// after its configured number of tries, the thief cannot reset the counter
// or raise the limit, and a reboot changes nothing. tpm must be a TPM of
// its own (the test discards its lockout authorization); reboot restarts
// it on the same state.
func testStolenAppliance(t *testing.T, tpm transport.TPM, reboot func() error) {
	// The appliance, in service.
	state := t.TempDir()
	const vpin, secret, ctx = "48291375", "31415926", "pscs delegation\x00d1"
	v := openVault(t, tpm, filepath.Join(state, "vault"), vault.WithParams(fast), vault.WithDA(stolenDA))
	entryPath := filepath.Join(state, "entry")
	if err := os.WriteFile(entryPath, marshal(t, seal(t, v, vpin, secret, ctx)), 0o600); err != nil {
		t.Fatal(err)
	}
	st := daStatus(t, v)
	if !st.LockoutAuthSet || st.MaxTries != stolenDA.MaxTries || st.Recovery != stolenDA.Recovery {
		t.Fatalf("after Open: %+v; want the configured parameters and the lockout authorization set (discarded)", st)
	}
	v.Close()

	// The thief reads the entry as the package documentation describes it.
	b, err := os.ReadFile(entryPath)
	if err != nil {
		t.Fatal(err)
	}
	var ent struct {
		Params  vault.Params `cbor:"3,keyasint"`
		Salt    []byte       `cbor:"4,keyasint"`
		Public  []byte       `cbor:"8,keyasint"`
		Private []byte       `cbor:"9,keyasint"`
	}
	if err := cborpolicy.DecMode.Unmarshal(b, &ent); err != nil {
		t.Fatal(err)
	}
	auth := func(guess string) []byte {
		k := argon2.IDKey([]byte(guess), ent.Salt, ent.Params.Time, ent.Params.Memory, ent.Params.Threads, 32)
		a, err := hkdf.Key(sha256.New, k, ent.Salt, "pscs vault auth v2\x00", 16)
		if err != nil {
			t.Fatal(err)
		}
		return hex.AppendEncode(nil, a)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](ent.Public)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](ent.Private)
	if err != nil {
		t.Fatal(err)
	}
	// One test of a vPIN: load the entry key under the SRK and ask for an
	// HMAC with the guessed authorization.
	try := func(guess string) error {
		srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tpm)
		if err != nil {
			t.Fatalf("CreatePrimary: %v", err)
		}
		defer tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(tpm)
		k, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
			InPublic:     *pub,
			InPrivate:    *priv,
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		defer tpm2.FlushContext{FlushHandle: k.ObjectHandle}.Execute(tpm)
		_, err = tpm2.Hmac{
			Handle:  tpm2.AuthHandle{Handle: k.ObjectHandle, Name: k.Name, Auth: tpm2.PasswordAuth(auth(guess))},
			Buffer:  tpm2.TPM2BMaxBuffer{Buffer: []byte("guess")},
			HashAlg: tpm2.TPMAlgSHA256,
		}.Execute(tpm)
		return err
	}

	// The thief's method works: the right vPIN passes (and costs no try).
	if err := try(vpin); err != nil {
		t.Fatalf("the right vPIN, tried directly: %v", err)
	}
	// Then guesses until the TPM stops answering them.
	wrong := 0
	for i := 0; ; i++ {
		err := try(fmt.Sprintf("%08d", i))
		if errors.Is(err, tpm2.TPMRCLockout) {
			break
		}
		if !errors.Is(err, tpm2.TPMRCAuthFail) {
			t.Fatalf("guess %d: %v, want TPM_RC_AUTH_FAIL", i, err)
		}
		wrong++
		if wrong > int(stolenDA.MaxTries) {
			t.Fatalf("the TPM answered %d wrong guesses, configured for %d", wrong, stolenDA.MaxTries)
		}
	}
	if wrong != int(stolenDA.MaxTries) {
		t.Errorf("the TPM answered %d wrong guesses before lockout, want %d", wrong, stolenDA.MaxTries)
	}
	t.Logf("the TPM stopped the thief after %d wrong guesses", wrong)
	// In lockout even the right vPIN is refused.
	if err := try(vpin); !errors.Is(err, tpm2.TPMRCLockout) {
		t.Errorf("the right vPIN in lockout: %v, want TPM_RC_LOCKOUT", err)
	}
	// The thief cannot reset the counter or change the limit: the lockout
	// authorization is no longer empty, and nobody knows it.
	if err := vault.LockReset(tpm); err == nil {
		t.Errorf("DictionaryAttackLockReset with the empty authorization succeeded")
	} else {
		t.Logf("DictionaryAttackLockReset: %v", err)
	}
	// A reboot forgets nothing.
	if err := reboot(); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	if err := try(vpin); !errors.Is(err, tpm2.TPMRCLockout) {
		t.Errorf("the right vPIN after a reboot: %v, want TPM_RC_LOCKOUT", err)
	}

	// The appliance itself, restarted on its state: it refuses vPINs
	// without testing them, and still MACs its records.
	w := openVault(t, tpm, filepath.Join(state, "vault"), vault.WithParams(fast), vault.WithDA(vault.DA{MaxTries: 1000, Recovery: time.Second, Reserve: 1}))
	st = daStatus(t, w)
	if st.MaxTries != stolenDA.MaxTries || !st.InLockout {
		t.Errorf("reopened with other parameters: %+v; want the discarded authorization to keep %d tries, in lockout", st, stolenDA.MaxTries)
	}
	if got, err := w.Unseal(unmarshal(t, b), []byte(vpin), []byte(ctx)); !errors.Is(err, vault.ErrGuessLimit) || got != nil {
		t.Errorf("pscsd's vault in lockout: Unseal(right vPIN) = %q, %v; want ErrGuessLimit", got, err)
	}
	if _, err := w.MAC("audit", []byte("record")); err != nil {
		t.Errorf("MAC in lockout: %v", err)
	}
	assertNoHandles(t, tpm)
}
