package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMakeDemo runs the demo as `make demo` does (bin/pscs and bin/pscsd
// beside it, built here into a temporary directory): it ends well, its
// signature verifies, and it prints the demo owner's one-time link to the
// web console.
func TestMakeDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the whole demo")
	}
	dir := t.TempDir()
	for name, pkg := range map[string]string{"pscs": "../../client/cmd/pscs", "pscsd": "../../server/cmd/pscsd", "demo": "."} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "bin", "demo"))
	cmd.Dir = dir
	cmd.Stdin = nil // not a terminal: the demo does not wait for Enter
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	s := string(out)
	link := regexp.MustCompile(`(?m)^https://127\.0\.0\.1:[0-9]+/login\?token=[A-Za-z0-9_-]{43}$`).FindString(s)
	if link == "" {
		t.Errorf("the demo printed no console link:\n%s", s)
	}
	// OpenSSL verifies the card's signature, then the delegate's.
	if !strings.Contains(s, "## Done:") || strings.Count(s, "Verified OK") != 2 {
		t.Errorf("the demo did not end with two signatures OpenSSL verifies:\n%s", s)
	}
	t.Logf("console link: %s", link)
}
