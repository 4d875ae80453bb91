package audit

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var writeFuzzSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzVerify seeds from the encoder")

// fuzzSeeds are log files made by the writer: intact, empty, torn, with a
// zero tail, and with a record swapped.
func fuzzSeeds(t testing.TB) map[string][]byte {
	t.Helper()
	path, _ := createLog(t, t.TempDir(), 3)
	good := readFile(t, path)
	spans := frameSpans(t, good)
	f := func(k int) []byte { return good[spans[k].off:spans[k].end] }
	return map[string][]byte{
		"header-only": header(),
		"three":       good,
		"torn":        good[:len(good)-9],
		"zero-tail":   append(bytes.Clone(good), make([]byte, 16)...),
		"swapped":     rebuild(good, [][]byte{f(0), f(2), f(1)}),
	}
}

// TestWriteFuzzSeeds rewrites the committed seed corpus when run with
// -write-fuzz-seeds; otherwise it checks that the seeds are still what the
// writer produces.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	for name, data := range fuzzSeeds(t) {
		file := filepath.Join(dir, "seed-"+name)
		content := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
		if *writeFuzzSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, content, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s is stale or missing (%v): run go test -run TestWriteFuzzSeeds -write-fuzz-seeds", file, err)
		}
	}
}

// FuzzVerify feeds arbitrary bytes to Verify and ReadAll: they must return
// an error rather than panic, allocate no more than a frame's limit, and
// agree with each other; whatever Verify accepts must be exactly what the
// writer would have produced for those records.
func FuzzVerify(f *testing.F) {
	for _, data := range fuzzSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Verify(bytes.NewReader(data), testKey, nil)
		var ve *VerifyError
		if err != nil {
			if !errors.As(err, &ve) {
				t.Fatalf("Verify: %v is not a *VerifyError", err)
			}
			if ve.Offset < 0 || ve.Offset > int64(len(data)) {
				t.Fatalf("Verify: offset %d outside %d bytes", ve.Offset, len(data))
			}
			if ve.Seq != uint64(n)+1 && !(ve.Seq == 0 && n == 0) {
				t.Fatalf("Verify: %d good records but names record %d", n, ve.Seq)
			}
		}

		// Without the key, ReadAll accepts at least what Verify did.
		var recs []*Record
		rerr := ReadAll(bytes.NewReader(data), func(r *Record) error { recs = append(recs, r); return nil })
		if len(recs) < n {
			t.Fatalf("ReadAll read %d records, Verify %d", len(recs), n)
		}
		if err == nil && rerr != nil {
			t.Fatalf("Verify accepted, ReadAll: %v", rerr)
		}

		// Round trip: the accepted prefix re-encodes to the same bytes.
		if n > 0 {
			out := bytes.Clone(data[:headerSize]) // either version
			for _, r := range recs[:n] {
				data, err := seal(r, testKey)
				if err != nil {
					t.Fatal(err)
				}
				out = appendFrame(out, data)
			}
			if !bytes.HasPrefix(data, out) {
				t.Fatalf("accepted records do not re-encode to the input")
			}
		}
	})
}
