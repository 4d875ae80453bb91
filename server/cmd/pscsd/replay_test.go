package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
)

// copyFile copies a state file (the test's stand-in for an attacker's
// copy of the disk).
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreOlderBackup: a delegation is used and revoked after a backup;
// someone with the disk then puts back an old copy of the store and the
// audit log (taken at the backup), which pscsd refuses to start on (the
// TPM's counter is ahead). pscsd restore of the backup, with no log at hand
// that knows what came after it, must not resurrect the delegation: the
// TPM's counter says anchored events are unknown, so every delegation is
// revoked, in the log and in the store (the delegate's vPIN opens
// nothing), and the log verifies.
func TestRestoreOlderBackup(t *testing.T) {
	bin, pscsBin := buildPSCSD(t), buildPSCS(t)
	smtp := startSMTPD(t, true)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	r := startDemo(t, bin, state, "--backup", smtp.backupConfig(t, ""))
	r.log.waitFor(t, serving, 1)
	owner := filepath.Join(state, "demo", "owner")
	ca := filepath.Join(owner, "ca.pem")
	pscs := pscsAs(pscsBin, filepath.Join(owner, "client.conf"))
	signN(t, state, 1)
	if out, err := pscs("admin", "backup"); err != nil {
		t.Fatalf("pscs admin backup: %v\n%s", err, out)
	}
	mail := smtp.waitMails(t, 1)[0]
	r.stop(t)
	old := filepath.Join(dir, "old")
	os.MkdirAll(old, 0o700)
	for _, f := range []string{"store", "audit.log"} {
		copyFile(t, filepath.Join(state, f), filepath.Join(old, f))
	}

	// After the backup: uses, then the revocation.
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	signN(t, state, 2)
	list, _ := pscs("admin", "list")
	m := regexp.MustCompile(`(?m)^(\S+)\tmayor\tto demo-delegate`).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("no demo delegation in:\n%s", list)
	}
	id := m[1]
	if out, err := pscs("admin", "revoke", id); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	r.stop(t)

	// The old copy put back: pscsd refuses it.
	for _, f := range []string{"store", "audit.log"} {
		copyFile(t, filepath.Join(old, f), filepath.Join(state, f))
	}
	r = startDemo(t, bin, state)
	if out := r.refused(t); !strings.Contains(out, "TPM counter") {
		t.Errorf("pscsd on an old copy of its files:\n%s", out)
	}

	// The restore of the backup: the old log is all there is.
	out, err := exec.Command(bin, "restore", "--demo", "--state", state, "-ca", ca, "-reason", "test",
		"-key", filepath.Join(owner, "identity.key"), mail).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is unknown, so every delegation was revoked: ") || !strings.Contains(string(out), id) {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	list, err = pscs("admin", "list")
	if err != nil {
		t.Fatalf("list after the restore: %v\n%s", err, list)
	}
	if st, _ := delegationIn(t, list, id); st != "revoked" {
		t.Errorf("the delegation revoked after the backup is %s after restoring the backup over an old copy", st)
	}
	if err := tryLogin(t, state); err == nil {
		t.Error("the delegate logged in with its vPIN after the restore")
	}
	export := filepath.Join(dir, "export.jsonl")
	if out, err := pscs("admin", "export", "-out", export); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	if out, err := pscs("audit", "verify", "-ca", ca, export); err != nil || !strings.Contains(out, "OK: export of") {
		t.Fatalf("verify the export: %v\n%s", err, out)
	}
	exp, _ := os.ReadFile(export)
	if !regexp.MustCompile(`(?m)^.*"op":"restore:policy".*` + regexp.QuoteMeta(id) + `.*"revoked":true`).Match(exp) {
		t.Errorf("the export has no record of the restore's revocation of %s", id)
	}
	r.stop(t)
}

// tryLogin has the demo delegate log in on the mayor with its vPIN.
func tryLogin(t *testing.T, state string) error {
	t.Helper()
	cfg, err := client.LoadConfig(filepath.Join(state, "demo", "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Login(ctx, 1, bytes.TrimSpace(vpin))
	return err
}
