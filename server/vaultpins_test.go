package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/vault"
)

// TestVaultPINsGuessLimit: on a TPM simulator, VaultPINs passes the
// vault's refusals on as the server's: wrong vPINs as ErrWrongVPIN until
// only the TPM's reserve is left, then ErrGuessLimit, for the delegation's
// vPIN and the owner's passphrase alike.
func TestVaultPINsGuessLimit(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	da := vault.DA{MaxTries: 6, Recovery: time.Hour, LockoutRecovery: time.Hour, Reserve: 2}
	v, err := vault.Open(transport.FromReadWriteCloser(sim), t.TempDir(),
		vault.WithParams(vault.Params{Time: 1, Memory: 64, Threads: 1}), vault.WithDA(da))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	p := &server.VaultPINs{Vault: v}
	if _, err := p.SealOwnerPIN("mayor", []byte("passphrase"), []byte("123456")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Delegate("mayor", "d1", []byte("passphrase"), []byte("2718")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range int(da.MaxTries - da.Reserve) {
		if _, err := p.OpenPIN(ctx, "d1", []byte("0000")); !errors.Is(err, server.ErrWrongVPIN) {
			t.Fatalf("wrong vPIN %d: %v, want ErrWrongVPIN", i+1, err)
		}
	}
	if _, err := p.OpenPIN(ctx, "d1", []byte("2718")); !errors.Is(err, server.ErrGuessLimit) || errors.Is(err, server.ErrWrongVPIN) {
		t.Errorf("right vPIN at the reserve: %v, want ErrGuessLimit only", err)
	}
	if _, err := p.Delegate("mayor", "d2", []byte("passphrase"), []byte("1414")); !errors.Is(err, server.ErrGuessLimit) {
		t.Errorf("owner passphrase at the reserve: %v, want ErrGuessLimit", err)
	}
}
