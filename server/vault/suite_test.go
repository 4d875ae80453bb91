package vault_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/server/vault"
)

// fast are Argon2id parameters that make a vPIN guess cost microseconds:
// for tests that unseal hundreds of times.
var fast = vault.Params{Time: 1, Memory: 64, Threads: 1}

// opener gives a test a link to a TPM. The same opener may return links to
// the same TPM; tests must not assume a fresh one.
type opener func(t *testing.T) transport.TPM

// The same assertions run on every TPM implementation: the go-tpm-tools
// simulator (sim_test.go, needs cgo) and swtpm (swtpm_test.go).
func runSuite(t *testing.T, open opener) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, transport.TPM)
	}{
		{"RoundTrip", testRoundTrip},
		{"WrongVPIN", testWrongVPIN},
		{"WrongContext", testWrongContext},
		{"NoSecretOnDisk", testNoSecretOnDisk},
		{"Tampering", testTampering},
		{"OtherVaultSameTPM", testOtherVaultSameTPM},
		{"Reopen", testReopen},
		{"KeyFile", testKeyFile},
		{"MAC", testMAC},
		{"Concurrent", testConcurrent},
		{"Close", testClose},
		{"Arguments", testArguments},
		{"DACounts", testDACounts},
		{"GuessReserve", testGuessReserve},
		{"ReserveConcurrent", testReserveConcurrent},
		{"Version1", testVersion1},
		{"DAConfig", testDAConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpm := open(t)
			resetDA(t, tpm)
			t.Cleanup(func() { assertNoHandles(t, tpm) })
			tc.f(t, tpm)
		})
	}
}

// testDA are DA parameters for tests that count: the TPM forgets a failure
// only after an hour, so no count changes during a test, however slow the
// machine.
var testDA = vault.DA{MaxTries: 16, Recovery: time.Hour, LockoutRecovery: time.Hour, Reserve: 4}

// resetDA zeroes the TPM's lockout counter (its lockout authorization is
// empty in the suite), so that each test starts from no failures.
func resetDA(t testing.TB, tpm transport.TPM) {
	t.Helper()
	if err := vault.LockReset(tpm); err != nil {
		t.Fatalf("DictionaryAttackLockReset: %v", err)
	}
}

// daStatus reads the TPM's DA state through v.
func daStatus(t testing.TB, v *vault.Vault) vault.DAStatus {
	t.Helper()
	st, err := v.DAStatus()
	if err != nil {
		t.Fatalf("DAStatus: %v", err)
	}
	return st
}

// openVault opens (or creates) a vault in dir, closing it at cleanup.
func openVault(t testing.TB, tpm transport.TPM, dir string, opts ...vault.Option) *vault.Vault {
	t.Helper()
	v, err := vault.Open(tpm, dir, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func seal(t testing.TB, v *vault.Vault, vpin, secret, ctx string) *vault.Entry {
	t.Helper()
	e, err := v.Seal([]byte(vpin), []byte(secret), []byte(ctx))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return e
}

func marshal(t testing.TB, e *vault.Entry) []byte {
	t.Helper()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

func unmarshal(t testing.TB, b []byte) *vault.Entry {
	t.Helper()
	var e vault.Entry
	if err := e.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	return &e
}

// assertNoHandles fails t if any transient object or session is still
// loaded in the TPM: swtpm has no resource manager, so a leak would make
// later commands fail with TPM_RC_OBJECT_MEMORY.
func assertNoHandles(t testing.TB, tpm transport.TPM) {
	t.Helper()
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(ht) << 24,
			PropertyCount: 16,
		}.Execute(tpm)
		if err != nil {
			t.Errorf("GetCapability(handles %#x): %v", ht, err)
			continue
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Errorf("GetCapability(handles %#x): %v", ht, err)
			continue
		}
		for _, h := range hs.Handle {
			if h>>24 == tpm2.TPMHandle(ht) {
				t.Errorf("handle %#x left loaded in the TPM", h)
			}
		}
	}
}

func testRoundTrip(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	for _, tc := range []struct{ name, vpin, secret, ctx string }{
		{"pin", "482913", "31415926", "owner=1 card=2 delegation=3"},
		{"empty context", "v", "123456", ""},
		{"long everything", string(bytes.Repeat([]byte("p"), 4096)), string(bytes.Repeat([]byte{0xA5}, vault.MaxSecretSize)), string(bytes.Repeat([]byte("c"), 1<<20))},
		{"binary", "\x00\xff", "\x00", "\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := unmarshal(t, marshal(t, seal(t, v, tc.vpin, tc.secret, tc.ctx)))
			got, err := v.Unseal(e, []byte(tc.vpin), []byte(tc.ctx))
			if err != nil {
				t.Fatalf("Unseal: %v", err)
			}
			if string(got) != tc.secret {
				t.Errorf("Unseal = %q, want %q", got, tc.secret)
			}
		})
	}
	// Sealing twice gives unrelated entries.
	a, b := seal(t, v, "1", "31415926", "c"), seal(t, v, "1", "31415926", "c")
	if bytes.Equal(a.Salt, b.Salt) || bytes.Equal(a.Ciphertext, b.Ciphertext) {
		t.Errorf("two Seals share salt or ciphertext")
	}
	// The default parameters are what Open without WithParams writes.
	d := openVault(t, tpm, t.TempDir())
	e := seal(t, d, "1", "2", "3")
	if e.Params != vault.DefaultParams {
		t.Errorf("default Params = %+v, want %+v", e.Params, vault.DefaultParams)
	}
	if got, err := d.Unseal(e, []byte("1"), []byte("3")); err != nil || string(got) != "2" {
		t.Errorf("Unseal with default params = %q, %v; want \"2\", nil", got, err)
	}
}

func testWrongVPIN(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(testDA))
	const ctx = "owner=1 card=2 delegation=3"
	e := seal(t, v, "482913", "31415926", ctx)
	wrong := []string{"", "482913\x00", "48291", "482914", "\x00482913", "000000"}
	for i, vpin := range wrong {
		got, err := v.Unseal(e, []byte(vpin), []byte(ctx))
		if !errors.Is(err, vault.ErrWrongVPIN) || got != nil {
			t.Fatalf("Unseal(vPIN %q) = %q, %v; want nil, ErrWrongVPIN", vpin, got, err)
		}
		if st := daStatus(t, v); st.Counter != uint32(i+1) {
			t.Fatalf("after %d wrong vPINs the TPM's lockout counter is %d, want %d", i+1, st.Counter, i+1)
		}
	}
	// The right one still works below the reserve, and costs no failure.
	if got, err := v.Unseal(e, []byte("482913"), []byte(ctx)); err != nil || string(got) != "31415926" {
		t.Errorf("Unseal(right vPIN) after %d wrong = %q, %v", len(wrong), got, err)
	}
	if st := daStatus(t, v); st.Counter != uint32(len(wrong)) {
		t.Errorf("after the right vPIN the lockout counter is %d, want %d", st.Counter, len(wrong))
	}
}

// testDACounts: what counts as a failed authorization in the TPM is a
// wrong vPIN and nothing else: not a wrong context, a tampered entry, an
// entry of another vault, a Seal, or a MAC.
func testDACounts(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(testDA))
	w := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(testDA))
	const ctx = "c"
	e := seal(t, v, "1234", "31415926", ctx)
	if _, err := v.Unseal(e, []byte("1234"), []byte("other")); !errors.Is(err, vault.ErrWrongVPIN) {
		t.Errorf("wrong context: %v, want ErrWrongVPIN", err)
	}
	f := *e
	f.Salt = bytes.Clone(e.Salt)
	f.Salt[0] ^= 1
	if _, err := v.Unseal(&f, []byte("1235"), []byte(ctx)); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("tampered salt, wrong vPIN: %v, want ErrCorrupt", err)
	}
	if _, err := w.Unseal(e, []byte("1235"), []byte(ctx)); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("other vault: %v, want ErrWrongKey", err)
	}
	if _, err := v.MAC("audit", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if st := daStatus(t, v); st.Counter != 0 {
		t.Errorf("lockout counter %d after no wrong vPIN, want 0", st.Counter)
	}
	if _, err := v.Unseal(e, []byte("1235"), []byte(ctx)); !errors.Is(err, vault.ErrWrongVPIN) {
		t.Errorf("wrong vPIN: %v, want ErrWrongVPIN", err)
	}
	if st := daStatus(t, v); st.Counter != 1 {
		t.Errorf("lockout counter %d after one wrong vPIN, want 1", st.Counter)
	}
}

// testGuessReserve: wrong vPINs never put the TPM in lockout. Until only
// the reserve is left, everyone's right vPIN opens; then the vault refuses
// every vPIN with ErrGuessLimit without asking the TPM (the counter stops),
// and the TPM is still not in lockout: its other DA-protected users keep
// the reserve, and the right vPIN opens again once the TPM forgets.
func testGuessReserve(t *testing.T, tpm transport.TPM) {
	da := vault.DA{MaxTries: 10, Recovery: time.Hour, LockoutRecovery: time.Hour, Reserve: 3}
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(da))
	a := seal(t, v, "111111", "secret a", "delegation a")
	b := seal(t, v, "222222", "secret b", "delegation b")
	ca := seal(t, v, "pscs CA", "ca key", "ca") // a version 2 entry too
	fixed, err := v.SealNoDA([]byte("constant"), []byte("v1 secret"), []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	budget := int(da.MaxTries - da.Reserve)
	for i := range budget {
		if got, err := v.Unseal(b, []byte("222222"), []byte("delegation b")); err != nil || string(got) != "secret b" {
			t.Fatalf("after %d wrong vPINs of another entry: Unseal(b, right vPIN) = %q, %v", i, got, err)
		}
		if _, err := v.Unseal(a, []byte("999999"), []byte("delegation a")); !errors.Is(err, vault.ErrWrongVPIN) {
			t.Fatalf("wrong vPIN %d: %v, want ErrWrongVPIN", i+1, err)
		}
	}
	st := daStatus(t, v)
	if st.Counter != uint32(budget) || st.InLockout || st.Left() != 0 {
		t.Fatalf("after %d wrong vPINs: %+v; want counter %d, no lockout, none left", budget, st, budget)
	}
	for _, tc := range []struct {
		name      string
		e         *vault.Entry
		vpin, ctx string
	}{
		{"wrong vPIN", a, "999999", "delegation a"},
		{"right vPIN", a, "111111", "delegation a"},
		{"another entry", b, "222222", "delegation b"},
		{"CA entry", ca, "pscs CA", "ca"},
	} {
		if got, err := v.Unseal(tc.e, []byte(tc.vpin), []byte(tc.ctx)); !errors.Is(err, vault.ErrGuessLimit) || got != nil {
			t.Errorf("at the reserve, %s: Unseal = %q, %v; want ErrGuessLimit", tc.name, got, err)
		}
	}
	if got := daStatus(t, v); got.Counter != st.Counter || got.InLockout {
		t.Errorf("refusals at the reserve touched the TPM: %+v, was %+v", got, st)
	}
	// The TPM is not in lockout: a DA-protected key with its right
	// authorization still works (a new Seal tests one), and so do the
	// NoDA vault key's MACs and version 1 entries.
	if _, err := v.Seal([]byte("333333"), []byte("c"), nil); err != nil {
		t.Errorf("Seal at the reserve: %v", err)
	}
	if _, err := v.MAC("audit", []byte("x")); err != nil {
		t.Errorf("MAC at the reserve: %v", err)
	}
	if got, err := v.Unseal(fixed, []byte("constant"), []byte("v1")); err != nil || string(got) != "v1 secret" {
		t.Errorf("version 1 entry at the reserve: %q, %v", got, err)
	}
	// Once the TPM forgets (here its owner resets the counter; in service,
	// one failure per Recovery), the right vPIN opens again.
	resetDA(t, tpm)
	if got, err := v.Unseal(a, []byte("111111"), []byte("delegation a")); err != nil || string(got) != "secret a" {
		t.Errorf("after the counter is reset: Unseal(a) = %q, %v", got, err)
	}
}

// testReserveConcurrent: wrong vPINs from many goroutines at once never
// pass the reserve: the counter check and the test run under one lock.
func testReserveConcurrent(t *testing.T, tpm transport.TPM) {
	da := vault.DA{MaxTries: 12, Recovery: time.Hour, LockoutRecovery: time.Hour, Reserve: 2}
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(da))
	e := seal(t, v, "111111", "secret", "ctx")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong, limited := 0, 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 4 {
				_, err := v.Unseal(e, []byte(fmt.Sprint(g, "-", i)), []byte("ctx"))
				mu.Lock()
				switch {
				case errors.Is(err, vault.ErrWrongVPIN):
					wrong++
				case errors.Is(err, vault.ErrGuessLimit):
					limited++
				default:
					t.Errorf("Unseal: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if want := int(da.MaxTries - da.Reserve); wrong != want || limited != 32-want {
		t.Errorf("%d wrong, %d refused at the reserve; want %d and %d", wrong, limited, want, 32-want)
	}
	if st := daStatus(t, v); st.Counter != da.MaxTries-da.Reserve || st.InLockout {
		t.Errorf("after 32 concurrent wrong vPINs: %+v; want counter %d, no lockout", st, da.MaxTries-da.Reserve)
	}
}

// testVersion1: entries sealed before the entry keys (version 1) still
// open, their wrong vPINs are refused without counting in the TPM (the
// vault key is NoDA), and they open in TPM lockout.
func testVersion1(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(testDA))
	e, err := v.SealNoDA([]byte("482913"), []byte("31415926"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != 1 || e.Public != nil || e.Private != nil {
		t.Fatalf("SealNoDA wrote version %d with entry key %x/%x; want version 1 without", e.Version, e.Public, e.Private)
	}
	e = unmarshal(t, marshal(t, e))
	if got, err := v.Unseal(e, []byte("482913"), []byte("ctx")); err != nil || string(got) != "31415926" {
		t.Errorf("Unseal(version 1) = %q, %v", got, err)
	}
	if _, err := v.Unseal(e, []byte("482914"), []byte("ctx")); !errors.Is(err, vault.ErrWrongVPIN) {
		t.Errorf("Unseal(version 1, wrong vPIN) = %v, want ErrWrongVPIN", err)
	}
	if st := daStatus(t, v); st.Counter != 0 {
		t.Errorf("a version 1 wrong vPIN counted in the TPM: counter %d", st.Counter)
	}
	// A version 1 entry cannot be passed off as version 2 or back.
	f := *e
	f.Version = vault.EntryVersion
	if _, err := v.Unseal(&f, []byte("482913"), []byte("ctx")); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("version 1 relabelled 2: %v, want ErrCorrupt", err)
	}
	g := *seal(t, v, "482913", "31415926", "ctx")
	g.Version, g.Public, g.Private = 1, nil, nil
	if _, err := v.Unseal(&g, []byte("482913"), []byte("ctx")); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("version 2 stripped to 1: %v, want ErrCorrupt", err)
	}
}

// testDAConfig: Open applies the DA parameters while the lockout
// authorization is empty, and refuses parameters it cannot use.
func testDAConfig(t *testing.T, tpm transport.TPM) {
	da := vault.DA{MaxTries: 21, Recovery: 7 * time.Second, LockoutRecovery: 13 * time.Second, Reserve: 5}
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast), vault.WithDA(da))
	st := daStatus(t, v)
	if st.MaxTries != 21 || st.Recovery != 7*time.Second || st.LockoutRecovery != 13*time.Second || st.Reserve != 5 || st.LockoutAuthSet {
		t.Errorf("DAStatus = %+v; want the parameters of %+v, lockout auth still empty", st, da)
	}
	if st.Left() != 16 {
		t.Errorf("Left() = %d, want 21-0-5", st.Left())
	}
	for _, bad := range []vault.DA{
		{MaxTries: 4, Recovery: time.Second, Reserve: 4},
		{MaxTries: 10, Recovery: time.Second, Reserve: 0},
		{MaxTries: 10, Recovery: 0, Reserve: 1},
		{MaxTries: 10, Recovery: 1500 * time.Millisecond, Reserve: 1},
		{MaxTries: 10, Recovery: time.Second, LockoutRecovery: -time.Second, Reserve: 1},
	} {
		if w, err := vault.Open(tpm, t.TempDir(), vault.WithDA(bad)); err == nil {
			w.Close()
			t.Errorf("Open(WithDA(%+v)) succeeded", bad)
		}
	}
	if got := vault.DefaultDA; got.MaxTries <= got.Reserve || got.DiscardLockoutAuth {
		t.Errorf("DefaultDA = %+v", got)
	}
}
func testWrongContext(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	e := seal(t, v, "482913", "31415926", "owner=1 card=2 delegation=3")
	for _, ctx := range []string{"", "owner=1 card=2 delegation=4", "owner=1 card=2 delegation=3 ", "owner=1 card=2"} {
		got, err := v.Unseal(e, []byte("482913"), []byte(ctx))
		if !errors.Is(err, vault.ErrWrongVPIN) || got != nil {
			t.Errorf("Unseal(context %q) = %q, %v; want nil, ErrWrongVPIN", ctx, got, err)
		}
	}
}

func testNoSecretOnDisk(t *testing.T, tpm transport.TPM) {
	dir := filepath.Join(t.TempDir(), "vault") // Open creates it
	v := openVault(t, tpm, dir, vault.WithParams(fast))
	const secret, vpin = "31415926", "271828"
	e := seal(t, v, vpin, secret, "owner=1 card=2 delegation=3")
	b := marshal(t, e)
	// Store the entry where a store would, so the walk covers it too.
	if err := os.WriteFile(filepath.Join(dir, "entry"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range []string{secret, vpin} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s contains %q", path, s)
			}
		}
		if fi, _ := d.Info(); filepath.Base(path) == vault.KeyFileName && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 2 {
		t.Errorf("walked %d files, want 2 (key file and entry)", files)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("vault dir created with mode %v, %v; want no group or other access", fi.Mode(), err)
	}
}

func testTampering(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	const secret, vpin, ctx = "31415926", "482913", "owner=1 card=2 delegation=3"
	b := marshal(t, seal(t, v, vpin, secret, ctx))
	decoded, unsealed := 0, 0
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(b)
			c[i] ^= x
			var e vault.Entry
			if err := e.UnmarshalBinary(c); err != nil {
				if !errors.Is(err, vault.ErrCorrupt) {
					t.Errorf("byte %d ^ %#x: UnmarshalBinary error %v does not wrap ErrCorrupt", i, x, err)
				}
				continue
			}
			decoded++
			got, err := v.Unseal(&e, []byte(vpin), []byte(ctx))
			if err == nil || got != nil {
				t.Fatalf("byte %d ^ %#x: Unseal = %q, %v; want an error", i, x, got, err)
			}
			unsealed++
		}
	}
	t.Logf("%d-byte entry, %d flips: %d decoded and refused by Unseal, the rest refused by UnmarshalBinary", len(b), 3*len(b), unsealed)
	if decoded == 0 {
		t.Errorf("no flipped entry decoded; the test does not reach Unseal")
	}
	// Truncations and extensions never decode.
	for n := range len(b) {
		var e vault.Entry
		if err := e.UnmarshalBinary(b[:n]); err == nil {
			t.Errorf("UnmarshalBinary(first %d of %d bytes) succeeded", n, len(b))
		}
	}
	var e vault.Entry
	if err := e.UnmarshalBinary(append(bytes.Clone(b), 0)); err == nil {
		t.Errorf("UnmarshalBinary with a trailing byte succeeded")
	}
}

func testOtherVaultSameTPM(t *testing.T, tpm transport.TPM) {
	a := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	b := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	if bytes.Equal(a.KeyID(), b.KeyID()) {
		t.Fatalf("two vaults share key id %x", a.KeyID())
	}
	e := seal(t, a, "1234", "31415926", "ctx")
	if got, err := b.Unseal(e, []byte("1234"), []byte("ctx")); !errors.Is(err, vault.ErrWrongKey) || got != nil {
		t.Errorf("other vault: Unseal = %q, %v; want ErrWrongKey", got, err)
	}
	// Relabelling the entry with the other vault's key id is caught by the
	// TPM header check.
	f := *e
	f.KeyID = b.KeyID()
	if got, err := b.Unseal(&f, []byte("1234"), []byte("ctx")); !errors.Is(err, vault.ErrCorrupt) || got != nil {
		t.Errorf("relabelled entry: Unseal = %q, %v; want ErrCorrupt", got, err)
	}
}

func testReopen(t *testing.T, tpm transport.TPM) {
	dir := t.TempDir()
	v := openVault(t, tpm, dir, vault.WithParams(fast))
	e := seal(t, v, "1234", "31415926", "ctx")
	v.Close()
	w := openVault(t, tpm, dir)
	if !bytes.Equal(v.KeyID(), w.KeyID()) {
		t.Errorf("reopened vault key id %x, want %x", w.KeyID(), v.KeyID())
	}
	if got, err := w.Unseal(e, []byte("1234"), []byte("ctx")); err != nil || string(got) != "31415926" {
		t.Errorf("reopened vault: Unseal = %q, %v", got, err)
	}
}

func testKeyFile(t *testing.T, tpm transport.TPM) {
	dir := t.TempDir()
	openVault(t, tpm, dir, vault.WithParams(fast))
	path := filepath.Join(dir, vault.KeyFileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)/2]},
		{"garbage", []byte("not a key file")},
		{"trailing", append(bytes.Clone(good), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if v, err := vault.Open(tpm, dir); !errors.Is(err, vault.ErrCorrupt) {
				t.Errorf("Open = %v, %v; want ErrCorrupt", v, err)
			}
		})
	}
	// Any flipped byte: the open fails one way or another (the TPM refuses
	// a private area whose integrity check fails, a different public area
	// has another Name, or the SRK Name differs).
	for i := range good {
		c := bytes.Clone(good)
		c[i] ^= 0x01
		if err := os.WriteFile(path, c, 0o600); err != nil {
			t.Fatal(err)
		}
		if v, err := vault.Open(tpm, dir); err == nil {
			v.Close()
			t.Errorf("Open with byte %d of the key file flipped succeeded", i)
		}
	}
}

func testMAC(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	mac := func(label, data string) []byte {
		t.Helper()
		m, err := v.MAC(label, []byte(data))
		if err != nil {
			t.Fatalf("MAC(%q): %v", label, err)
		}
		if len(m) != 32 {
			t.Fatalf("MAC length %d, want 32", len(m))
		}
		return m
	}
	a := mac("audit", "record 1")
	if !vault.Equal(a, mac("audit", "record 1")) {
		t.Errorf("MAC not deterministic")
	}
	for _, o := range [][2]string{{"store", "record 1"}, {"audit", "record 2"}, {"audit ", "record 1"}, {"audi", "trecord 1"}} {
		if vault.Equal(a, mac(o[0], o[1])) {
			t.Errorf("MAC(%q, %q) equals MAC(audit, record 1)", o[0], o[1])
		}
	}
	if err := v.VerifyMAC("audit", []byte("record 1"), a); err != nil {
		t.Errorf("VerifyMAC(good) = %v", err)
	}
	bad := bytes.Clone(a)
	bad[31] ^= 1
	for _, m := range [][]byte{bad, a[:31], nil} {
		if err := v.VerifyMAC("audit", []byte("record 1"), m); !errors.Is(err, vault.ErrBadMAC) {
			t.Errorf("VerifyMAC(%x) = %v, want ErrBadMAC", m, err)
		}
	}
	mac("big", string(make([]byte, 1<<20)))
	for _, label := range []string{"", string(make([]byte, vault.MaxLabelSize+1))} {
		if _, err := v.MAC(label, nil); err == nil {
			t.Errorf("MAC(label of %d bytes) succeeded", len(label))
		}
	}
	// Another vault on the same TPM has another key.
	w := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	if m, err := w.MAC("audit", []byte("record 1")); err != nil || vault.Equal(a, m) {
		t.Errorf("other vault MAC = %x, %v; want a different MAC", m, err)
	}
}

func testConcurrent(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				vpin, secret, ctx := fmt.Sprint("v", g, i), fmt.Sprint("s", g, i), fmt.Sprint("c", g)
				e, err := v.Seal([]byte(vpin), []byte(secret), []byte(ctx))
				if err != nil {
					t.Errorf("Seal: %v", err)
					return
				}
				got, err := v.Unseal(e, []byte(vpin), []byte(ctx))
				if err != nil || string(got) != secret {
					t.Errorf("Unseal = %q, %v; want %q", got, err, secret)
				}
				if _, err := v.MAC("c", []byte(secret)); err != nil {
					t.Errorf("MAC: %v", err)
				}
			}
		})
	}
	wg.Wait()
}

func testClose(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	e := seal(t, v, "1", "2", "3")
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := v.Seal([]byte("1"), []byte("2"), nil); !errors.Is(err, vault.ErrClosed) {
		t.Errorf("Seal after Close: %v, want ErrClosed", err)
	}
	if _, err := v.Unseal(e, []byte("1"), []byte("3")); !errors.Is(err, vault.ErrClosed) {
		t.Errorf("Unseal after Close: %v, want ErrClosed", err)
	}
	if _, err := v.MAC("l", nil); !errors.Is(err, vault.ErrClosed) {
		t.Errorf("MAC after Close: %v, want ErrClosed", err)
	}
}

func testArguments(t *testing.T, tpm transport.TPM) {
	v := openVault(t, tpm, t.TempDir(), vault.WithParams(fast))
	for _, tc := range []struct{ name, vpin, secret string }{
		{"empty vPIN", "", "1234"},
		{"empty secret", "1234", ""},
		{"huge secret", "1234", string(make([]byte, vault.MaxSecretSize+1))},
	} {
		if e, err := v.Seal([]byte(tc.vpin), []byte(tc.secret), nil); err == nil {
			t.Errorf("Seal(%s) = %+v, want an error", tc.name, e)
		}
	}
	if _, err := v.Unseal(nil, []byte("1"), nil); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("Unseal(nil) = %v, want ErrCorrupt", err)
	}
	e := seal(t, v, "1", "2", "3")
	e.Params.Memory = vault.MaxMemory + 1
	if _, err := v.Unseal(e, []byte("1"), []byte("3")); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("Unseal(memory over the bound) = %v, want ErrCorrupt", err)
	}
	if _, err := vault.Open(tpm, t.TempDir(), vault.WithParams(vault.Params{Time: 1, Memory: 1, Threads: 1})); err == nil {
		t.Errorf("Open with 1 KiB memory succeeded")
	}
}
