//go:build unix

package durable

import (
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// TestLockExcludes: a second open file of the same path cannot take the
// lock while the first holds it, and can once it is released.
func TestLockExcludes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	a, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	unlock, err := Lock(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(b); err == nil {
		t.Fatal("a second open file took the lock the first holds")
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlockB, err := Lock(b)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	unlockB()
}

// TestSync: Sync and SyncDir succeed on a file and its directory, and
// report a closed file and a missing directory.
func TestSync(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("data"); err != nil {
		t.Fatal(err)
	}
	if err := Sync(f); err != nil {
		t.Errorf("Sync: %v", err)
	}
	if err := SyncDir(dir); err != nil {
		t.Errorf("SyncDir: %v", err)
	}
	f.Close()
	if err := Sync(f); err == nil {
		t.Error("Sync of a closed file succeeded")
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}

// TestCRC is CRC-32C (its check value: "123456789" gives e3069283).
func TestCRC(t *testing.T) {
	if got := CRC([]byte("123456789")); got != 0xe3069283 {
		t.Errorf("CRC = %08x, want e3069283", got)
	}
	if CRC([]byte("x")) == crc32.ChecksumIEEE([]byte("x")) {
		t.Error("CRC is IEEE, not Castagnoli")
	}
}
