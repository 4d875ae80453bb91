package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/server/audit"
)

// exportLines splits an export file (pscs admin export) into its header,
// and its record lines by sequence number.
func exportLines(t *testing.T, b []byte) (header []byte, records map[uint64][]byte, order []uint64) {
	t.Helper()
	records = map[uint64][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<20)
	for i := 0; sc.Scan(); i++ {
		line := bytes.Clone(sc.Bytes())
		if i == 0 {
			header = line
			continue
		}
		var probe struct {
			Seq uint64 `json:"seq"`
			Raw []byte `json:"raw"`
		}
		json.Unmarshal(line, &probe)
		if probe.Raw != nil {
			records[probe.Seq] = line
			order = append(order, probe.Seq)
		}
	}
	return header, records, order
}

// withCheckpointCert is export with the certificate in the PEM file
// certFile as its checkpoint certificate.
func withCheckpointCert(t *testing.T, export []byte, certFile string) []byte {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	first, rest, _ := bytes.Cut(export, []byte("\n"))
	var h map[string]any
	if err := json.Unmarshal(first, &h); err != nil {
		t.Fatal(err)
	}
	h["checkpoint_certificate"] = block.Bytes
	out, _ := json.Marshal(h)
	return append(append(out, '\n'), rest...)
}

// flipRaw flips one bit of the record a line of an export holds.
func flipRaw(t *testing.T, line []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	var e struct{ Raw []byte }
	json.Unmarshal(line, &e)
	e.Raw[len(e.Raw)/2] ^= 1
	m["raw"] = e.Raw
	out, _ := json.Marshal(m)
	return out
}

// forgedExport is what someone with a log image can make of an export:
// up to the header's checkpoint, the records of identity, of the owner
// and pscsd's shown, the others by digest, under the header of a genuine
// export.
func forgedExport(t *testing.T, header, log []byte, identity string) []byte {
	t.Helper()
	var h struct {
		Owner string `json:"owner"`
		Until uint64 `json:"until"`
	}
	if err := json.Unmarshal(header, &h); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.Write(header)
	out.WriteByte('\n')
	var digests [][]byte
	var lines [][]byte
	err := audit.ReadRaw(bytes.NewReader(log), func(r *audit.Record, data []byte) error {
		if r.Seq > h.Until {
			return nil
		}
		d := sha256.Sum256(data)
		digests = append(digests, d[:])
		if r.Identity == identity || r.Identity == h.Owner || r.Identity == audit.Identity {
			l, _ := json.Marshal(map[string]any{"seq": r.Seq, "time": time.UnixMilli(r.Time).UTC().Format(time.RFC3339Nano),
				"identity": r.Identity, "op": r.Op, "delegation": r.Delegation, "decision": r.Decision, "card": r.Card,
				"result": r.Result, "evidence": r.Evidence, "raw": data, "policy": r.Policy})
			lines = append(lines, l)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := json.Marshal(map[string]any{"digests_from": 1, "digests": digests})
	out.Write(c)
	out.WriteByte('\n')
	for _, l := range lines {
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// TestExportVerifiesOffline: an owner's export of the audit log, made by
// pscs admin export against pscsd on swtpm, verifies offline with pscs
// audit verify and the server's CA; each tampering an export's holder can
// do fails with its own message.
func TestExportVerifiesOffline(t *testing.T) {
	bin := buildPSCSD(t)
	dir := t.TempDir()
	pscsBin := filepath.Join(dir, "pscs")
	if out, err := exec.Command("go", "build", "-o", pscsBin, "../../../client/cmd/pscs").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	r := startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	// The demo delegate signs for a while.
	cfg, err := client.LoadConfig(filepath.Join(state, "demo", "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	load := startLoad(cfg, bytes.TrimSpace(vpin))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		load.mu.Lock()
		n := len(load.received)
		load.mu.Unlock()
		if n >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the delegate made %d signatures in a minute", n)
		}
	}
	load.stop()
	ownerConf := filepath.Join(state, "demo", "owner", "client.conf")
	ca := filepath.Join(state, "demo", "owner", "ca.pem")
	export := filepath.Join(dir, "export.jsonl")
	pscs := pscsAs(pscsBin, ownerConf)
	out, err := pscs("admin", "export", "-out", export)
	if err != nil || !regexp.MustCompile(`0 signed requests that do not verify; hash chain and [1-9][0-9]* checkpoints verified`).MatchString(out) {
		t.Fatalf("export: %v\n%s", err, out)
	}
	r.stop(t)
	good, _ := os.ReadFile(export)
	if out, err := pscs("audit", "verify", "-ca", ca, export); err != nil || !strings.Contains(out, "OK: export of") {
		t.Fatalf("verify the export: %v\n%s", err, out)
	}
	// The same on the log itself, with the checkpoint certificate pscsd
	// keeps beside it.
	logPath := filepath.Join(state, "audit.log")
	if out, err := pscs("audit", "verify", "-ca", ca, "-checkpoint-cert", filepath.Join(state, "checkpoint.pem"), logPath); err != nil ||
		!regexp.MustCompile(`OK: .* [1-9][0-9]* checkpoints verified`).MatchString(out) {
		t.Fatalf("verify the log: %v\n%s", err, out)
	}

	header, recs, order := exportLines(t, good)
	var delegateSeq uint64 // a signature of the delegate's, shown to the owner
	for _, s := range order[len(order)/2:] {
		if strings.Contains(string(recs[s]), `"op":"sign"`) {
			delegateSeq = s
			break
		}
	}
	if delegateSeq == 0 {
		t.Fatal("no signature in the export")
	}
	logBytes, _ := os.ReadFile(logPath)
	var delegate string
	audit.ReadAll(bytes.NewReader(logBytes), func(r *audit.Record) error {
		if r.Seq == delegateSeq {
			delegate = r.Identity
		}
		return nil
	})
	edit := func(fn func([]*audit.Record) []*audit.Record) []byte {
		return forgedExport(t, header, rebuilt(t, logBytes, fn), delegate)
	}
	// The forger shows the delegate's records: the same export, made by hand.
	if err := os.WriteFile(export, forgedExport(t, header, logBytes, delegate), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := pscs("audit", "verify", "-ca", ca, export); err != nil {
		t.Fatalf("an export made by hand of the genuine log: %v\n%s", err, out)
	}
	lines := bytes.SplitAfter(good, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty string after the last newline
	cases := []struct {
		name, want string
		export     []byte
	}{
		{"record flipped", "bytes do not match the export's digest|bytes are damaged", bytes.Replace(good, recs[delegateSeq], flipRaw(t, recs[delegateSeq]), 1)},
		{"record edited, chain recomputed", "checkpoint signature does not verify", edit(func(rs []*audit.Record) []*audit.Record {
			rs[delegateSeq-1].Result = []byte("another signature")
			return rs
		})},
		{"record deleted, chain recomputed", "checkpoint signature does not verify", edit(func(rs []*audit.Record) []*audit.Record {
			return append(rs[:delegateSeq-1], rs[delegateSeq:]...)
		})},
		{"record line deleted", "the records shown are not those the server exported", bytes.Replace(good, append(recs[delegateSeq], '\n'), nil, 1)},
		{"last record cut", "records after the last checkpoint", bytes.Join(lines[:len(lines)-1], nil)},
		{"last 5 records cut", "after the last checkpoint", bytes.Join(lines[:len(lines)-5], nil)},
		{"emptied", "no checkpoint", append(bytes.Clone(header), '\n')},
		{"not an export", "not a pscs audit export", []byte("{}\n")},
		{"a field shown differs from its record", "its fields differ from the record it carries",
			bytes.Replace(good, recs[delegateSeq], bytes.Replace(recs[delegateSeq], []byte(`"identity":"`), []byte(`"identity":"x`), 1), 1)},
		{"checkpoints signed by another certificate of the same CA", "not the checkpoint key's", withCheckpointCert(t, good,
			filepath.Join(state, "demo", "owner", "identity.pem"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(export, tc.export, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := pscs("audit", "verify", "-ca", ca, export)
			if err == nil || !regexp.MustCompile(tc.want).MatchString(out) {
				t.Fatalf("verify: %v\n%s\nwant a failure saying %q", err, out, tc.want)
			}
		})
	}
	// Another server's CA does not vouch for the checkpoints; without a CA
	// nothing is vouched for.
	os.WriteFile(export, good, 0o600)
	if out, err := pscs("audit", "verify", export); err == nil || !strings.Contains(out, "give -ca") {
		t.Fatalf("verified without a CA:\n%s", out)
	}
	if out, err := pscs("audit", "verify", "-ca", filepath.Join(state, "demo", "owner", "identity.pem"), export); err == nil {
		t.Fatalf("verified against a CA that is not the server's:\n%s", out)
	}
}
