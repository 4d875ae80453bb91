package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// demoRun is one run of pscsd --demo on a state directory.
type demoRun struct {
	log  *logBuffer
	done chan error
	cmd  *exec.Cmd
}

func startDemo(t testing.TB, bin, state string, args ...string) *demoRun {
	t.Helper()
	r := &demoRun{log: &logBuffer{}, done: make(chan error, 1)}
	r.cmd = exec.Command(bin, append([]string{"--demo", "--state", state, "--card-latency", "none"}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() { r.cmd.Process.Kill() })
	return r
}

// stop interrupts pscsd and waits for its clean exit.
func (r *demoRun) stop(t testing.TB) {
	t.Helper()
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("pscsd stopped with %v:\n%s", err, r.log.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("pscsd did not stop")
	}
}

// refused waits for pscsd to exit on its own and returns what it said.
func (r *demoRun) refused(t *testing.T) string {
	t.Helper()
	select {
	case err := <-r.done:
		out := r.log.String()
		if err == nil {
			t.Fatalf("pscsd exited 0; want a refusal:\n%s", out)
		}
		if strings.Contains(out, "serving on") {
			t.Fatalf("pscsd served before refusing:\n%s", out)
		}
		return out
	case <-time.After(60 * time.Second):
		t.Fatalf("pscsd still runs; want a refusal:\n%s", r.log.String())
		return ""
	}
}

var serving = regexp.MustCompile(`pscsd demo serving on`)

// frameEnds are the offsets where each record of a log file ends.
func frameEnds(t *testing.T, b []byte) []int {
	t.Helper()
	var ends []int
	for off := 24; off < len(b); {
		if len(b)-off < 8 {
			t.Fatalf("log ends in a partial frame at %d", off)
		}
		off += 8 + int(binary.BigEndian.Uint32(b[off:])) + 4
		ends = append(ends, off)
	}
	return ends
}

// wrongKey is what an attacker with the disk but not the TPM can MAC with.
type wrongKey struct{}

func (wrongKey) MAC(label string, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, []byte("not the TPM's key"))
	m.Write([]byte(label))
	m.Write(data)
	return m.Sum(nil), nil
}

// rebuilt is the log b with edit applied to its records and the hash chain
// recomputed, MACed with a key that is not the TPM's.
func rebuilt(t *testing.T, b []byte, edit func([]*audit.Record) []*audit.Record) []byte {
	t.Helper()
	var recs []*audit.Record
	if err := audit.ReadAll(bytes.NewReader(b), func(r *audit.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	out, err := audit.Build(edit(recs), wrongKey{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditRollbackRefused: pscsd, on swtpm, refuses to start on an audit
// log that was tampered with or rolled back, each time saying what it
// found; the state from before a revocation never lets the revoked
// delegate sign; a torn last record is still recovered; and the owner's
// pscsd recover accepts a named loss, records it in the log, and revokes
// every delegation, since what happened after the copy is unknown.
func TestAuditRollbackRefused(t *testing.T) {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	logPath, storePath := filepath.Join(state, "audit.log"), filepath.Join(state, "store")

	// A first run sets up the demo's delegation; its files are the state
	// from before the revocation.
	r := startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	r.stop(t)
	beforeLog, _ := os.ReadFile(logPath)
	beforeStore, _ := os.ReadFile(storePath)

	// The owner revokes the delegation.
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	ocfg, err := client.LoadConfig(filepath.Join(state, "demo", "owner", "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oc, err := client.Dial(ctx, ocfg)
	if err != nil {
		t.Fatal(err)
	}
	var list transport.AdminResponse
	if err := oc.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminList}, nil, &list); err != nil || len(list.Delegations) != 1 {
		t.Fatalf("list: %v %+v", err, list)
	}
	if err := oc.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRevoke, ID: list.Delegations[0].ID}, nil, nil); err != nil {
		t.Fatal(err)
	}
	oc.Close()
	r.stop(t)
	goodLog, _ := os.ReadFile(logPath)
	goodStore, _ := os.ReadFile(storePath)
	ends := frameEnds(t, goodLog)
	if len(ends) < 8 {
		t.Fatalf("only %d records", len(ends))
	}
	mid := len(ends) / 2

	cases := []struct {
		name        string
		log, store  []byte // nil: delete the file
		want        string
		startsAfter bool // the log is fine: pscsd starts
	}{
		{name: "record flipped", log: func() []byte {
			b := bytes.Clone(goodLog)
			b[ends[mid]-12] ^= 0x40
			return b
		}(), want: "log damaged: record .* checksum mismatch"},
		{name: "record edited, chain recomputed", log: rebuilt(t, goodLog, func(rs []*audit.Record) []*audit.Record {
			rs[mid].Identity = "someone else"
			return rs
		}), want: "log tampered with: record 1 .*MAC mismatch"},
		{name: "record deleted, chain recomputed", log: rebuilt(t, goodLog, func(rs []*audit.Record) []*audit.Record {
			return append(rs[:mid], rs[mid+1:]...)
		}), want: "log tampered with: record 1 .*MAC mismatch"},
		{name: "record deleted", log: append(bytes.Clone(goodLog[:ends[mid-1]]), goodLog[ends[mid]:]...),
			want: "log tampered with: .*records missing"},
		{name: "last record cut", log: goodLog[:ends[len(ends)-2]], want: "log is older than its anchor: 1 anchored batches missing"},
		{name: "last 5 records cut", log: goodLog[:ends[len(ends)-6]], want: "log is older than its anchor: [0-9]+ anchored batches missing"},
		{name: "log deleted", log: nil, want: "audit log was deleted"},
		{name: "log emptied", log: []byte{}, want: "audit log is empty"},
		{name: "log replaced by an older copy", log: beforeLog, want: "log is older than its anchor"},
		{name: "store and log from before the revocation", log: beforeLog, store: beforeStore, want: "log is older than its anchor"},
		{name: "store from before the revocation", log: goodLog, store: beforeStore, want: "store: .*rollback"},
		{name: "torn last record", log: append(bytes.Clone(goodLog), goodLog[ends[0]:ends[0]+30]...), startsAfter: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.log == nil {
				os.Remove(logPath)
			} else {
				os.WriteFile(logPath, tc.log, 0o600)
			}
			st := goodStore
			if tc.store != nil {
				st = tc.store
			}
			os.WriteFile(storePath, st, 0o600)
			r := startDemo(t, bin, state)
			if tc.startsAfter {
				r.log.waitFor(t, serving, 1)
				r.stop(t)
				if !strings.Contains(r.log.String(), "a record cut by a crash was dropped") {
					t.Errorf("the torn record was not reported:\n%s", r.log.String())
				}
				goodLog, _ = os.ReadFile(logPath) // the log goes on from here
				return
			}
			out := r.refused(t)
			if !regexp.MustCompile(tc.want).MatchString(out) {
				t.Fatalf("pscsd said:\n%s\nwant %q", out, tc.want)
			}
		})
	}

	// The store alone from before the revocation, its loss accepted: the
	// revocation the log holds goes to the store again (and the sealed
	// PIN copy it destroyed with it), as pscsd restore does.
	revokedID := list.Delegations[0].ID
	os.WriteFile(logPath, goodLog, 0o600)
	os.WriteFile(storePath, beforeStore, 0o600)
	if bytes.Contains(beforeStore, []byte("revoked:"+revokedID)) {
		t.Fatal("the store from before the revocation holds it")
	}
	if out, err := exec.Command(bin, "recover", "--demo", "--state", state, "-accept", "store", "-reason", "the store of Monday").CombinedOutput(); err != nil {
		t.Fatalf("pscsd recover -accept store: %v\n%s", err, out)
	}
	if st, _ := os.ReadFile(storePath); !bytes.Contains(st, []byte("revoked:"+revokedID)) {
		t.Error("after pscsd recover -accept store, the store does not keep the revocation the log holds")
	}

	// The owner restores the state from before the revocation on purpose
	// and accepts the loss; the loss is in the new log, and pscsd starts.
	os.WriteFile(logPath, beforeLog, 0o600)
	os.WriteFile(storePath, beforeStore, 0o600)
	out, err := exec.Command(bin, "recover", "--demo", "--state", state, "-accept", "log", "-reason", "restored the backup of Monday").CombinedOutput()
	if err != nil {
		t.Fatalf("pscsd recover: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "recorded in the audit log") {
		t.Fatalf("pscsd recover said:\n%s", out)
	}
	// The copy predates the revocation, and what came after it is
	// unknown: every delegation is revoked, and the revoked one stays so.
	if !strings.Contains(string(out), "every delegation was revoked: "+revokedID) {
		t.Errorf("pscsd recover did not revoke the delegation it cannot vouch for:\n%s", out)
	}
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	if err := tryLogin(t, state); err == nil {
		t.Error("the delegation revoked after the old copy was made logs in again after pscsd recover")
	}
	r.stop(t)
	b, _ := os.ReadFile(logPath)
	found, revokedRecord := false, false
	audit.ReadAll(bytes.NewReader(b), func(rec *audit.Record) error {
		if rec.Op == "recover:log" && strings.Contains(string(rec.Result), "restored the backup of Monday") &&
			strings.Contains(string(rec.Result), "older than its anchor") {
			found = true
		}
		if rec.Op == "recover:policy" && rec.Delegation == revokedID && rec.Policy != nil && rec.Policy.Revoked {
			revokedRecord = true
		}
		return nil
	})
	if !found {
		t.Fatal("the accepted loss is not in the log")
	}
	if !revokedRecord {
		t.Error("no recover:policy record revokes the delegation")
	}
	// Without -accept, recover refuses to guess.
	if out, err := exec.Command(bin, "recover", "--demo", "--state", state, "-reason", "x").CombinedOutput(); err == nil {
		t.Fatalf("recover without -accept: %s", out)
	}
}
