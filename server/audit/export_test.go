package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exportEntry is one record of an export: its bytes, or its digest alone.
type exportEntry struct {
	seq    uint64
	data   []byte
	digest []byte
}

// exportOf is the export of the log at path that shows the records of
// identity (and the log's own), and only the digests of the others.
func exportOf(t *testing.T, b []byte, identity string) []exportEntry {
	t.Helper()
	var out []exportEntry
	err := ReadRaw(bytes.NewReader(b), func(r *Record, data []byte) error {
		if r.Identity == identity || r.Identity == Identity {
			out = append(out, exportEntry{seq: r.Seq, data: bytes.Clone(data)})
		} else {
			d := sha256.Sum256(data)
			out = append(out, exportEntry{seq: r.Seq, digest: d[:]})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func verifyExport(s softSigner, es []exportEntry) (CheckpointStats, error) {
	v := NewExportVerifier(&s.k.PublicKey)
	for _, e := range es {
		var err error
		if e.data != nil {
			_, err = v.Record(e.data)
		} else {
			err = v.Digest(e.seq, e.digest)
		}
		if err != nil {
			return CheckpointStats{}, err
		}
	}
	return v.Close()
}

func TestExportVerifier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s := newSigner(t)
	anchoredLog(t, path, &memCounter{}, s, 30)
	good, _ := os.ReadFile(path)
	es := exportOf(t, good, "delegate-1@example.org")
	st, err := verifyExport(s, es)
	if err != nil || st.Checkpoints == 0 {
		t.Fatalf("intact export: %+v, %v", st, err)
	}
	shown := -1 // a shown delegate record in the middle
	for i := len(es) / 2; i < len(es); i++ {
		if es[i].data != nil && !strings.Contains(string(es[i].data), "pscsd") {
			shown = i
			break
		}
	}
	if shown < 0 {
		t.Fatal("no shown record to tamper with")
	}
	cases := []struct {
		name string
		es   func() []exportEntry
		kind error
		want string
	}{
		{"shown record edited, chain recomputed", func() []exportEntry {
			b, _ := os.ReadFile(path)
			forged := rebuiltBytes(t, b, func(rs []*Record) []*Record { rs[es[shown].seq-1].Result = []byte("forged"); return rs })
			return exportOf(t, forged, "delegate-1@example.org")
		}, ErrTampered, "checkpoint signature"},
		{"shown record deleted, chain recomputed", func() []exportEntry {
			b, _ := os.ReadFile(path)
			forged := rebuiltBytes(t, b, func(rs []*Record) []*Record {
				i := es[shown].seq - 1
				return append(rs[:i], rs[i+1:]...)
			})
			return exportOf(t, forged, "delegate-1@example.org")
		}, ErrTampered, "checkpoint signature"},
		{"shown record left out", func() []exportEntry {
			return append(append([]exportEntry(nil), es[:shown]...), es[shown+1:]...)
		}, ErrTampered, "records missing"},
		{"digest of another's record changed", func() []exportEntry {
			c := append([]exportEntry(nil), es...)
			for i := range c {
				if c[i].digest != nil {
					c[i].digest = bytes.Repeat([]byte{1}, 32)
					break
				}
			}
			return c
		}, ErrTampered, ""},
		{"last record cut", func() []exportEntry { return es[:len(es)-1] }, ErrMissingTail, "after the last checkpoint"},
		{"last 5 records cut", func() []exportEntry { return es[:len(es)-5] }, ErrMissingTail, "after the last checkpoint"},
		{"empty", func() []exportEntry { return nil }, ErrMissingTail, "no checkpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyExport(s, tc.es())
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want %v saying %q", err, tc.kind, tc.want)
			}
		})
	}
}

// rebuiltBytes is rewrite on bytes.
func rebuiltBytes(t *testing.T, b []byte, edit func([]*Record) []*Record) []byte {
	t.Helper()
	var recs []*Record
	if err := ReadAll(bytes.NewReader(b), func(r *Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	out, err := Build(edit(recs), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzExportRecord: whatever bytes an export holds, the verifier answers
// with an error or a record that re-encodes to them, and never panics.
func FuzzExportRecord(f *testing.F) {
	b, err := Build([]*Record{testRecord(1), testRecord(2)}, testKey)
	if err != nil {
		f.Fatal(err)
	}
	ReadRaw(bytes.NewReader(b), func(_ *Record, data []byte) error { f.Add(bytes.Clone(data)); return nil })
	f.Fuzz(func(t *testing.T, data []byte) {
		v := NewExportVerifier(&newSigner(t).k.PublicKey)
		r, err := v.Record(data)
		if err != nil {
			return
		}
		again, err := encMode.Marshal(r)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted record does not re-encode to its bytes")
		}
	})
}
