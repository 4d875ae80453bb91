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

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/transport"
)

// TestStoreRollbackRefused: an old copy of the whole store (say, from a
// backup, from before a revocation) is refused at start, against the
// store head that the audit log recorded after the revocation.
func TestStoreRollbackRefused(t *testing.T) {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	demo := func() (*logBuffer, func() error, <-chan error) {
		var log logBuffer
		cmd := exec.Command(bin, "--demo", "--state", state)
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			if t.Failed() {
				t.Logf("pscsd said:\n%s", log.String())
			}
		})
		return &log, func() error {
			cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-done:
				return err
			case <-time.After(30 * time.Second):
				t.Fatal("pscsd did not stop")
				return nil
			}
		}, done
	}
	serving := regexp.MustCompile(`pscsd demo serving on`)
	log, stop, _ := demo()
	log.waitFor(t, serving, 1)
	stop()
	old, err := os.ReadFile(filepath.Join(state, "store"))
	if err != nil {
		t.Fatal(err)
	}

	// The owner revokes the demo delegation.
	log, stop, _ = demo()
	log.waitFor(t, serving, 1)
	cfg, err := client.LoadConfig(filepath.Join(state, "demo", "owner", "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var list transport.AdminResponse
	if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminList}, nil, &list); err != nil || len(list.Delegations) != 1 {
		t.Fatalf("list: %v %+v", err, list)
	}
	if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRevoke, ID: list.Delegations[0].ID}, nil, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stop()

	// The store from before the revocation is put back: pscsd refuses it.
	if err := os.WriteFile(filepath.Join(state, "store"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	log, _, done := demo()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("pscsd still runs on a rolled-back store")
	}
	if err == nil || !strings.Contains(log.String(), "rollback") {
		t.Errorf("pscsd on a rolled-back store: %v; want a refusal naming the rollback", err)
	}
	if strings.Contains(log.String(), "pscsd demo serving") {
		t.Error("pscsd served from a rolled-back store")
	}
}

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
