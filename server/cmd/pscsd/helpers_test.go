package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildPSCSD builds this command into a temporary directory.
func buildPSCSD(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pscsd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// waitForFile waits up to a minute for path to exist (pscsd --demo writes
// client.conf once it serves).
func waitForFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 60 s", filepath.Base(path))
		}
	}
}
