package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAsideDirOfOneSecond: two restores in one second keep their replaced
// files apart; the first one's stay as they were.
func TestAsideDirOfOneSecond(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 6, 3, 30, 0, 0, time.UTC)
	first, err := asideDir(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(first, "store"), []byte("the first restore's"), 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := asideDir(dir, now.Add(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatalf("both restores move their files to %s", first)
	}
	if want := filepath.Join(dir, "replaced-20261206T033000Z-2"); second != want {
		t.Errorf("second: %s, want %s", second, want)
	}
	if b, err := os.ReadFile(filepath.Join(first, "store")); err != nil || string(b) != "the first restore's" {
		t.Errorf("the first restore's files: %q, %v", b, err)
	}
	if _, err := os.ReadDir(second); err != nil {
		t.Error(err)
	}
}
