package transcript_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/transcript"
)

// Synthetic transcripts in the layouts of the real ones (which live beside
// the repository and may not be copied into it).
var samples = map[string]string{
	"v3": `mockfile

file version v3
file created 2024-01-14T17:55:47Z

meta status.atr 3bfd1300008131fe158073c021c057597562694b657940
meta yubikey.version 5.4.3

#     start      end method
on    0.000    0.000 BeginTransaction
on    0.059    0.059 Transmit 00a4040006d2760001240100 9000
on    1.882    1.882 Transmit 00ca006e00 6e03010203613b
on   39.835   39.835 EndTransaction
`,
	"v1":    "# Mockfile/v1 created=2023-12-03T02:57:09+01:00\r\non BeginTransaction\r\non Transmit 00ca007a000bfe 7a0593030000009000\r\non EndTransaction\r\n",
	"empty": "",
}

func TestParse(t *testing.T) {
	tr, err := transcript.Parse([]byte(samples["v3"]))
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Calls) != 4 || tr.MetaValue("yubikey.version") != "5.4.3" || len(tr.File) != 2 {
		t.Fatalf("parsed %+v", tr)
	}
	ex := tr.Exchanges()
	if len(ex) != 2 || !bytes.Equal(ex[1].Command, []byte{0x00, 0xCA, 0x00, 0x6E, 0x00}) || !bytes.Equal(ex[1].Response[len(ex[1].Response)-2:], []byte{0x61, 0x3B}) {
		t.Errorf("exchanges %X", ex)
	}
	if c := tr.Calls[2]; !c.Timed || c.Start != 1.882 {
		t.Errorf("times %+v", c)
	}
	v1, err := transcript.Parse([]byte(samples["v1"]))
	if err != nil || len(v1.Exchanges()) != 1 || v1.Calls[0].Timed {
		t.Errorf("v1: %+v, %v", v1, err)
	}
	for _, bad := range []string{
		"on Transmit 00a404 9000",            // command too short
		"on Transmit 00a40400 90",            // response too short
		"on Transmit 00a40400",               // no response
		"on Transmit 00a4040g 9000",          // not hex
		"on 1.0 2.0 BeginTransaction xx",     // arguments
		"on -1.0 2.0 Transmit 00a40400 9000", // negative time
		"what is this",
		"mockfile extra",
		"on",
	} {
		if _, err := transcript.Parse([]byte(bad)); !errors.Is(err, transcript.ErrSyntax) {
			t.Errorf("%q: %v, want a syntax error", bad, err)
		}
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzParse from samples")

func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if !*writeSeeds {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) < len(samples) {
			t.Fatalf("seeds missing in %s (go test ./internal/transcript -run TestFuzzSeeds -write-seeds): %v", dir, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for name, in := range samples {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts survives Format:
// Parse(Format(t)) is t, but for untimed calls, which Format writes at 0.
func FuzzParse(f *testing.F) {
	for _, s := range samples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := transcript.Parse(in)
		if err != nil {
			return
		}
		out := tr.Format()
		again, err := transcript.Parse(out)
		if err != nil {
			t.Fatalf("Format wrote what Parse refuses: %v\n%s", err, out)
		}
		for i := range tr.Calls {
			tr.Calls[i].Timed = true
			// Format rounds to microseconds.
			tr.Calls[i].Start, tr.Calls[i].End = again.Calls[i].Start, again.Calls[i].End
		}
		norm := func(fs []transcript.Field) []transcript.Field {
			var out []transcript.Field
			for _, f := range fs {
				out = append(out, transcript.Field{Key: f.Key, Value: strings.Join(strings.Fields(f.Value), " ")})
			}
			return out
		}
		tr.File, tr.Meta = norm(tr.File), norm(tr.Meta)
		if !reflect.DeepEqual(tr, again) {
			t.Fatalf("round trip changed the transcript:\n%+v\n%+v", tr, again)
		}
	})
}
