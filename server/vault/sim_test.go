//go:build cgo

// The go-tpm-tools simulator is the Microsoft reference TPM compiled in with
// cgo and linked against the system OpenSSL (Debian: libssl-dev). It needs
// nothing started, so it is the quick check of the vault logic; this file is
// left out of CGO_ENABLED=0 builds, where swtpm_test.go still runs the same
// suite. There is one simulator per process (go-tpm-tools holds a global
// lock), so these tests never run in parallel with each other.

package vault_test

import (
	"errors"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/server/vault"
)

// startSimulator powers on the simulator with fresh seeds (a new TPM) and
// closes it at cleanup.
func startSimulator(t *testing.T) *simulator.Simulator {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func TestSimulator(t *testing.T) {
	tpm := transport.FromReadWriteCloser(startSimulator(t))
	runSuite(t, func(*testing.T) transport.TPM { return tpm })
}

// TestStolenApplianceSimulator: see testStolenAppliance; the reboot is a
// TPM reset.
func TestStolenApplianceSimulator(t *testing.T) {
	sim := startSimulator(t)
	testStolenAppliance(t, transport.FromReadWriteCloser(sim), sim.Reset)
}

// TestSimulatorResets: a reboot keeps the vault; a TPM clear (new seeds,
// the same as another TPM) loses it for good.
func TestSimulatorResets(t *testing.T) {
	sim := startSimulator(t)
	tpm := transport.FromReadWriteCloser(sim)
	dir := t.TempDir()
	v := openVault(t, tpm, dir, vault.WithParams(fast))
	const vpin, secret, ctx = "482913", "31415926", "owner=1 card=2 delegation=3"
	e := seal(t, v, vpin, secret, ctx)

	if err := sim.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if got, err := v.Unseal(e, []byte(vpin), []byte(ctx)); err != nil || string(got) != secret {
		t.Errorf("after reboot: Unseal = %q, %v", got, err)
	}

	if err := sim.ManufactureReset(); err != nil {
		t.Fatalf("ManufactureReset: %v", err)
	}
	if got, err := v.Unseal(e, []byte(vpin), []byte(ctx)); !errors.Is(err, vault.ErrWrongTPM) || got != nil {
		t.Errorf("after clear, open Vault: Unseal = %q, %v; want ErrWrongTPM", got, err)
	}
	if w, err := vault.Open(tpm, dir); !errors.Is(err, vault.ErrWrongTPM) {
		t.Errorf("after clear: Open = %v, %v; want ErrWrongTPM", w, err)
	}
	assertNoHandles(t, tpm)
}

func BenchmarkSimulator(b *testing.B) {
	sim, err := simulator.Get()
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	benchVault(b, openVault(b, transport.FromReadWriteCloser(sim), b.TempDir(), manyTries), false)
}
