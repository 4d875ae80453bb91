package vault_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/internal/cborpolicy"
	"github.com/pscs/pscs/internal/swtpmtest"
	"github.com/pscs/pscs/server/vault"
)

// openSWTPM returns a link to s, closed at cleanup.
func openSWTPM(t testing.TB, s *swtpmtest.TPM) transport.TPM {
	t.Helper()
	tpm, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

// TestSWTPM runs the suite on one swtpm, a real TPM over a unix socket.
func TestSWTPM(t *testing.T) {
	s := swtpmtest.Start(t)
	runSuite(t, func(t *testing.T) transport.TPM { return openSWTPM(t, s) })
}

// TestStolenApplianceSWTPM: see testStolenAppliance; the reboot is a
// restart of swtpm on the same state.
func TestStolenApplianceSWTPM(t *testing.T) {
	s := swtpmtest.Start(t)
	testStolenAppliance(t, openSWTPM(t, s), s.Restart)
}

// TestVersion1Fixture: an entry sealed by the code before entry keys
// (testdata/v1-swtpm, made with commit bf756ec on a swtpm whose state is
// kept there) still opens, on that swtpm, with this code; its wrong vPINs
// are refused without counting in the TPM.
func TestVersion1Fixture(t *testing.T) {
	if err := swtpmtest.Check(); err != nil {
		swtpmtest.Start(t) // fails or skips, saying how to install swtpm
	}
	fix := filepath.Join("testdata", "v1-swtpm")
	dir := t.TempDir()
	for _, f := range [][2]string{
		{"tpm2-00.permall", filepath.Join(dir, "state", "tpm2-00.permall")},
		{"vault-key", filepath.Join(dir, "vault", vault.KeyFileName)},
	} {
		b, err := os.ReadFile(filepath.Join(fix, f[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(f[1]), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := swtpmtest.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	tpm := openSWTPM(t, s)
	v := openVault(t, tpm, filepath.Join(dir, "vault"), vault.WithDA(testDA))
	b, err := os.ReadFile(filepath.Join(fix, "entry"))
	if err != nil {
		t.Fatal(err)
	}
	e := unmarshal(t, b)
	if e.Version != 1 {
		t.Fatalf("fixture entry version %d, want 1", e.Version)
	}
	if again := marshal(t, e); !bytes.Equal(again, b) {
		t.Errorf("version 1 entry re-encodes as %x, was %x", again, b)
	}
	const ctx = "pscs delegation\x00d-fixture"
	if got, err := v.Unseal(e, []byte("48291375"), []byte(ctx)); err != nil || string(got) != "31415926" {
		t.Errorf("Unseal(old entry, right vPIN) = %q, %v", got, err)
	}
	before := daStatus(t, v).Counter
	if got, err := v.Unseal(e, []byte("48291376"), []byte(ctx)); !errors.Is(err, vault.ErrWrongVPIN) || got != nil {
		t.Errorf("Unseal(old entry, wrong vPIN) = %q, %v; want ErrWrongVPIN", got, err)
	}
	if after := daStatus(t, v).Counter; after != before {
		t.Errorf("a version 1 wrong vPIN moved the TPM's counter from %d to %d", before, after)
	}
	assertNoHandles(t, tpm)
}

// TestDAParametersNotOurs: on a TPM whose lockout authorization someone
// else set, Open keeps the TPM's parameters and refuses to run when they
// leave no tries above the reserve or disable the protection.
func TestDAParametersNotOurs(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		maxTries, recovery, lockRe uint32
		want                       string // in Open's error; "" for none
	}{
		{"kept", 50, 120, 600, ""},
		{"no tries above the reserve", 3, 60, 0, "no more than the reserve"},
		{"protection disabled", 32, 0, 0, "disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpm := openSWTPM(t, swtpmtest.Start(t))
			if err := vault.SetDAParameters(tpm, tc.maxTries, tc.recovery, tc.lockRe); err != nil {
				t.Fatal(err)
			}
			if _, err := (tpm2.HierarchyChangeAuth{
				AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)},
				NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("the owner's secret")},
			}).Execute(tpm); err != nil {
				t.Fatal(err)
			}
			v, err := vault.Open(tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(vault.DefaultDA))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Open = %v; want an error mentioning %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			st := daStatus(t, v)
			if st.MaxTries != tc.maxTries || st.Recovery != time.Duration(tc.recovery)*time.Second || !st.LockoutAuthSet {
				t.Errorf("DAStatus = %+v; want the TPM's own parameters kept", st)
			}
		})
	}
}

// TestPersistence: the vault survives a TPM restart (a reboot), both in a
// running process and reopened from its directory.
func TestPersistence(t *testing.T) {
	s := swtpmtest.Start(t)
	tpm := openSWTPM(t, s)
	dir := t.TempDir()
	v := openVault(t, tpm, dir, vault.WithParams(fast))
	const vpin, secret, ctx = "482913", "31415926", "owner=1 card=2 delegation=3"
	e := marshal(t, seal(t, v, vpin, secret, ctx))
	mac, err := v.MAC("audit", []byte("record"))
	if err != nil {
		t.Fatal(err)
	}

	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	// The running vault holds no handles, so it just works.
	if got, err := v.Unseal(unmarshal(t, e), []byte(vpin), []byte(ctx)); err != nil || string(got) != secret {
		t.Errorf("after restart, same Vault: Unseal = %q, %v", got, err)
	}
	v.Close()

	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	w := openVault(t, openSWTPM(t, s), dir)
	if got, err := w.Unseal(unmarshal(t, e), []byte(vpin), []byte(ctx)); err != nil || string(got) != secret {
		t.Errorf("after restart, reopened Vault: Unseal = %q, %v", got, err)
	}
	if err := w.VerifyMAC("audit", []byte("record"), mac); err != nil {
		t.Errorf("after restart: VerifyMAC = %v", err)
	}
	assertNoHandles(t, tpm)
}

// TestAnotherTPM: a copy of the vault directory and of an entry is useless
// on another TPM, even with the right vPIN and context.
func TestAnotherTPM(t *testing.T) {
	a, b := swtpmtest.Start(t), swtpmtest.Start(t)
	tpmA, tpmB := openSWTPM(t, a), openSWTPM(t, b)
	dirA := t.TempDir()
	va := openVault(t, tpmA, dirA, vault.WithParams(fast))
	const vpin, secret, ctx = "482913", "31415926", "owner=1 card=2 delegation=3"
	e := unmarshal(t, marshal(t, seal(t, va, vpin, secret, ctx)))
	macA, err := va.MAC("audit", []byte("record"))
	if err != nil {
		t.Fatal(err)
	}

	// The stolen directory does not open on B.
	dirB := copyDir(t, dirA)
	if v, err := vault.Open(tpmB, dirB); !errors.Is(err, vault.ErrWrongTPM) {
		t.Fatalf("Open(copy of A's dir) on B = %v, %v; want ErrWrongTPM", v, err)
	} else {
		t.Logf("Open(copy of A's dir) on B: %v", err)
	}

	// Nor when the key file claims B's storage root key: then the TPM itself
	// refuses the private area (its integrity check uses A's seed).
	dirVB := t.TempDir()
	vb := openVault(t, tpmB, dirVB, vault.WithParams(fast))
	rewriteKeyFile(t, dirB, func(m map[int]any) {
		m[2] = readKeyFileField(t, dirVB, 2)
	})
	if v, err := vault.Open(tpmB, dirB); !errors.Is(err, vault.ErrWrongTPM) {
		t.Errorf("Open(A's key under B's SRK name) on B = %v, %v; want ErrWrongTPM", v, err)
	} else {
		t.Logf("Open(A's key file relabelled with B's SRK) on B: %v", err)
	}

	// A vault of B's own refuses A's entry, relabelled or not.
	if got, err := vb.Unseal(e, []byte(vpin), []byte(ctx)); !errors.Is(err, vault.ErrWrongKey) || got != nil {
		t.Errorf("B's vault: Unseal(A's entry) = %q, %v; want ErrWrongKey", got, err)
	}
	f := *e
	f.KeyID = vb.KeyID()
	if got, err := vb.Unseal(&f, []byte(vpin), []byte(ctx)); err == nil || got != nil {
		t.Errorf("B's vault: Unseal(A's entry relabelled) = %q, %v; want an error", got, err)
	}

	// MACs differ across TPMs.
	if err := vb.VerifyMAC("audit", []byte("record"), macA); !errors.Is(err, vault.ErrBadMAC) {
		t.Errorf("B verifies A's MAC: %v, want ErrBadMAC", err)
	}
	assertNoHandles(t, tpmA)
	assertNoHandles(t, tpmB)
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func readKeyFileField(t *testing.T, dir string, k int) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, vault.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[int]any
	if err := cborpolicy.DecMode.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m[k]
}

func rewriteKeyFile(t *testing.T, dir string, edit func(map[int]any)) {
	t.Helper()
	path := filepath.Join(dir, vault.KeyFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[int]any
	if err := cborpolicy.DecMode.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	em, _ := cbor.CoreDetEncOptions().EncMode()
	if b, err = em.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// benchVault runs the vault's operations as sub-benchmarks on v: Seal and
// Unseal (version 2 entries), SealV1 and UnsealV1 (SealNoDA), MAC, and,
// with wrongVPIN, UnsealWrongVPIN: each a real, counted TPM authorization
// failure, so v's TPM must allow as many as the benchmark runs.
func benchVault(b *testing.B, v *vault.Vault, wrongVPIN bool) {
	secret, vpin, ctx := []byte("31415926"), []byte("482913"), []byte("owner=1 card=2 delegation=3")
	run := func(name string, op func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("Seal", func() error { _, err := v.Seal(vpin, secret, ctx); return err })
	e, err := v.Seal(vpin, secret, ctx)
	if err != nil {
		b.Fatal(err)
	}
	run("Unseal", func() error { _, err := v.Unseal(e, vpin, ctx); return err })
	if wrongVPIN {
		run("UnsealWrongVPIN", func() error {
			if _, err := v.Unseal(e, []byte("000000"), ctx); !errors.Is(err, vault.ErrWrongVPIN) {
				return fmt.Errorf("wrong vPIN: %v", err)
			}
			return nil
		})
	}
	run("SealV1", func() error { _, err := v.SealNoDA(vpin, secret, ctx); return err })
	v1, err := v.SealNoDA(vpin, secret, ctx)
	if err != nil {
		b.Fatal(err)
	}
	run("UnsealV1", func() error { _, err := v.Unseal(v1, vpin, ctx); return err })
	run("MAC", func() error { _, err := v.MAC("audit", secret); return err })
}

// manyTries lets a benchmark's TPM take a million failures.
var manyTries = vault.WithDA(vault.DA{MaxTries: 1 << 20, Recovery: time.Second, Reserve: 1})

// BenchmarkSWTPM: the vault on swtpm with the default Argon2id parameters,
// and Open.
func BenchmarkSWTPM(b *testing.B) {
	s := swtpmtest.Start(b)
	tpm := openSWTPM(b, s)
	benchVault(b, openVault(b, tpm, b.TempDir(), manyTries), true)
	b.Run("Open", func(b *testing.B) {
		dir := b.TempDir()
		openVault(b, tpm, dir)
		for b.Loop() {
			w, err := vault.Open(tpm, dir)
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
		}
	})
}

// BenchmarkSWTPMFast is BenchmarkSWTPM with Argon2id made negligible: the
// TPM's share of Seal and Unseal, and what entry keys add to it.
func BenchmarkSWTPMFast(b *testing.B) {
	s := swtpmtest.Start(b)
	benchVault(b, openVault(b, openSWTPM(b, s), b.TempDir(), vault.WithParams(fast), manyTries), false)
}
