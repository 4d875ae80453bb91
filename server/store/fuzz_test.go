package store

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz seeds from the encoder")

// FuzzScan feeds arbitrary files to the reader Open and Verify use. It
// must never panic, every frame it accepts must re-encode to the same
// bytes, and every record it serves must come from a frame with a valid MAC.
func FuzzScan(f *testing.F) {
	for _, s := range seedFiles(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := scan(data, testMAC, &Anchor{Version: 3})
		if err != nil {
			return
		}
		for pos := len(fileMagic); pos < len(data); {
			enc, _, n, st := readFrame(data[pos:])
			if st != frameOK {
				break
			}
			if b, err := parseBody(enc); err == nil {
				if got := b.append(nil); !bytes.Equal(got, enc) {
					t.Fatalf("re-encoding %x gives %x", enc, got)
				}
			}
			pos += n
		}
		for k, r := range l.recs {
			if !bytes.Contains(data, r.value) || !bytes.Contains(data, []byte(k.key)) {
				t.Fatalf("record %q served from bytes not in the file", k.key)
			}
		}
	})
}

// seedFiles builds store files with the real encoder: new, with writes,
// compacted, with a quarantined record.
func seedFiles(tb testing.TB) [][]byte {
	dir := tb.TempDir()
	path := filepath.Join(dir, "s")
	s, err := Open(path, testMAC)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	snap := func() {
		d, _ := os.ReadFile(path)
		out = append(out, d)
	}
	snap()
	s.Put(KindIdentity, "alice", []byte("cert"))
	s.Put(KindVault, "d1", []byte{0, 1, 2})
	s.Delete(KindIdentity, "alice")
	snap()
	s.Compact()
	s.Put(KindConfig, "x", []byte("y"))
	snap()
	s.Close()
	d := out[1]
	out = append(out, append(bytes.Clone(d[:len(d)/2]), d[len(d)/2+30:]...)) // a removed middle
	return out
}

func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzScan")
	if !*updateSeeds {
		// Without the flag: the committed seeds must be there.
		if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
			t.Fatalf("no seeds in %s (go test ./server/store -run TestWriteFuzzSeeds -update-seeds): %v", dir, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for i, s := range seedFiles(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
