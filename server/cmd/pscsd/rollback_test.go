package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStateCopyOnAnotherTPM: the whole state directory, copied to a
// machine with another TPM, opens nothing: pscsd refuses to start, naming
// the TPM, and no real PIN is in the copy.
func TestStateCopyOnAnotherTPM(t *testing.T) {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	var log logBuffer
	cmd := exec.Command(bin, "--demo", "--state", state)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, regexp.MustCompile(`pscsd demo serving on`), 1)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()

	// Everything but the TPM itself (swtpm's state) to another place,
	// where the demo starts a new swtpm: another TPM.
	stolen := filepath.Join(t.TempDir(), "stolen")
	err := filepath.Walk(state, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(state, path)
		if rel == "tpm" {
			return filepath.SkipDir
		}
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(stolen, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "123456") {
			t.Errorf("%s holds the real PIN in clear", rel)
		}
		return os.WriteFile(filepath.Join(stolen, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	var log2 logBuffer
	cmd = exec.Command(bin, "--demo", "--state", stolen)
	cmd.Stdout, cmd.Stderr = &log2, &log2
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pscsd runs on a copied state with another TPM")
	}
	if err == nil || !strings.Contains(log2.String(), "another TPM") || strings.Contains(log2.String(), "serving") {
		t.Errorf("pscsd on a copy with another TPM: %v\n%s", err, log2.String())
	}
}
