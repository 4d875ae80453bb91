package anchor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/internal/swtpmtest"
	"github.com/pscs/pscs/server/anchor"
)

// link gives a test's swtpm link to one sequence of commands at a time.
func link(t testing.TB) (anchor.Do, *swtpmtest.TPM) {
	sw := swtpmtest.Start(t)
	tpm, err := sw.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	var mu sync.Mutex
	return func(fn func(transport.TPM) error) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(tpm)
	}, sw
}

func TestCounterOnSWTPM(t *testing.T) {
	do, _ := link(t)
	ctx := context.Background()
	h := anchor.CounterHandle([]byte("a vault key name"))
	c, err := anchor.OpenCounter(do, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Read(ctx); err != nil || ok {
		t.Fatalf("new counter: ok %v, err %v; want no value yet", ok, err)
	}
	if err := c.Increment(ctx); err != nil {
		t.Fatal(err)
	}
	first, ok, err := c.Read(ctx)
	if err != nil || !ok {
		t.Fatalf("after the first increment: ok %v, err %v", ok, err)
	}
	for i := uint64(1); i <= 3; i++ {
		if err := c.Increment(ctx); err != nil {
			t.Fatal(err)
		}
		if v, _, err := c.Read(ctx); err != nil || v != first+i {
			t.Fatalf("increment %d: %d, %v; want %d", i, v, err, first+i)
		}
	}
	// Opened again (a restart), it is the same counter, where it was.
	c2, err := anchor.OpenCounter(do, h)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c2.Read(ctx); err != nil || !ok || v != first+3 {
		t.Fatalf("reopened: %d %v %v, want %d", v, ok, err, first+3)
	}
	// Another state directory's counter is another index.
	if anchor.CounterHandle([]byte("another")) == h {
		t.Fatal("two vault keys, one counter handle")
	}
}

func TestKeyOnSWTPM(t *testing.T) {
	do, _ := link(t)
	dir := t.TempDir()
	k, err := anchor.OpenKey(do, dir)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("head"))
	sig, err := k.SignDigest(context.Background(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public(), d[:], sig) {
		t.Fatal("signature does not verify")
	}
	// Reopened from its file: the same key.
	k2, err := anchor.OpenKey(do, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Public().Equal(k.Public()) {
		t.Fatal("reopened key differs")
	}
	// The key file on another TPM is refused.
	do2, _ := link(t)
	if _, err := anchor.OpenKey(do2, dir); err == nil {
		t.Fatal("key file opened on another TPM")
	}
	// A damaged file is refused.
	b, _ := os.ReadFile(filepath.Join(dir, anchor.KeyFileName))
	b[len(b)-40] ^= 1
	os.WriteFile(filepath.Join(dir, anchor.KeyFileName), b, 0o600)
	if _, err := anchor.OpenKey(do, dir); err == nil {
		t.Fatal("damaged key file used")
	}
}

// BenchmarkIncrement is the cost of one anchor on swtpm.
func BenchmarkIncrement(b *testing.B) {
	do, _ := link(b)
	c, err := anchor.OpenCounter(do, anchor.CounterHandle([]byte("bench")))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := c.Increment(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignCheckpoint is the cost of one checkpoint signature on swtpm.
func BenchmarkSignCheckpoint(b *testing.B) {
	do, _ := link(b)
	k, err := anchor.OpenKey(do, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256(nil)
	for b.Loop() {
		if _, err := k.SignDigest(context.Background(), d[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// A TPM that answers a warning (NV rate limit, busy) is asked again; an
// error that is not a warning is not.
func TestRetryTPMWarnings(t *testing.T) {
	swtpm, _ := link(t)
	ctx := context.Background()
	var calls, fail int
	var rc error
	do := func(fn func(transport.TPM) error) error {
		calls++
		if fail > 0 {
			fail--
			return fmt.Errorf("anchor: TPM NV_Increment: %w", rc)
		}
		return swtpm(fn)
	}
	c, err := anchor.OpenCounter(do, anchor.CounterHandle([]byte("retry")))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []tpm2.TPMRC{tpm2.TPMRCNVRate, tpm2.TPMRCRetry} {
		calls, fail, rc = 0, 3, w
		if err := c.Increment(ctx); err != nil || calls != 4 {
			t.Fatalf("%v: %v after %d calls", w, err, calls)
		}
	}
	calls, fail, rc = 0, 3, tpm2.TPMRCNVLocked
	if err := c.Increment(ctx); err == nil || calls != 1 {
		t.Fatalf("an error that is no warning: %v after %d calls", err, calls)
	}
}
