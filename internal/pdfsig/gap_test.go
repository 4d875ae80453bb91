package pdfsig_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
)

// byteRange is the /ByteRange that Prepare writes, in its fixed width.
var byteRange = regexp.MustCompile(`/ByteRange\[0 (\d+) (\d+) (\d+) *\]`)

// withByteRange returns signed with the last signature's /ByteRange
// replaced by br (written in place, in the same width: the objects do
// not move).
func withByteRange(t *testing.T, signed []byte, br string) []byte {
	t.Helper()
	all := byteRange.FindAllIndex(signed, -1)
	if all == nil {
		t.Fatal("no /ByteRange in the signed file")
	}
	at := all[len(all)-1]
	old := signed[at[0]:at[1]]
	repl := "/ByteRange[" + br
	if len(repl)+1 > len(old) {
		t.Fatalf("/ByteRange[%s] is wider than %s", br, old)
	}
	repl += strings.Repeat(" ", len(old)-len(repl)-1) + "]"
	out := bytes.Clone(signed)
	copy(out[at[0]:], repl)
	return out
}

// TestGapOnlyHex: a signature whose /ByteRange is not the file around
// its /Contents hex string ('<', the digits, '>', nothing else between the
// ranges) is refused, by Digest (pscs verify) and by Prepare (a second
// signature): ranges out of order, overlapping, beyond the file,
// negative, not from the start, more than two; a gap that holds more than
// the string (objects hidden in it, the string shifted) or a string that
// is not hex.
func TestGapOnlyHex(t *testing.T) {
	signed := newSigner(t, "Alice Signer").Sign(t, pdfsigtest.MakePDF(t, false))
	m := byteRange.FindSubmatch(signed)
	var b [3]int64
	for i := range b {
		b[i], _ = strconv.ParseInt(string(m[i+1]), 10, 64)
	}
	size := int64(len(signed))
	if b[1]+b[2] != size {
		t.Fatalf("/ByteRange %v does not end the file of %d bytes", b, size)
	}
	contents := bytes.LastIndex(signed, []byte("/Contents<")) + len("/Contents")
	digit := contents + 1 + 2*300 // a digit of the padding
	for _, tc := range []struct {
		name string
		file []byte
	}{
		{"gap one byte longer", withByteRange(t, signed, fmt.Sprintf("0 %d %d %d", b[0], b[1]+1, b[2]-1))},
		{"gap one byte shorter", withByteRange(t, signed, fmt.Sprintf("0 %d %d %d", b[0]+1, b[1], b[2]))},
		{"gap shifted", withByteRange(t, signed, fmt.Sprintf("0 %d %d %d", b[0]-1, b[1]-1, b[2]+1))},
		{"gap hides the tail", withByteRange(t, signed, fmt.Sprintf("0 %d %d 0", b[0], size))},
		{"ranges overlap", withByteRange(t, signed, fmt.Sprintf("0 %d %d %d", b[0], b[0]-10, b[2]+b[1]-b[0]+10))},
		{"ranges in reverse", withByteRange(t, signed, fmt.Sprintf("0 %d 0 %d", b[0], b[0]))},
		{"beyond the file", withByteRange(t, signed, fmt.Sprintf("0 %d %d %d", b[0], b[1], b[2]+1))},
		{"far beyond the file", withByteRange(t, signed, fmt.Sprintf("0 %d %d 9223372036854775807", b[0], b[1]))},
		{"negative", withByteRange(t, signed, fmt.Sprintf("0 %d %d -%d", b[0], b[1], b[2]))},
		{"not from the start", withByteRange(t, signed, fmt.Sprintf("1 %d %d %d", b[0]-1, b[1], b[2]))},
		{"three ranges", withByteRange(t, signed, fmt.Sprintf("0 %d %d %d %d 0", b[0], b[1], b[2], size))},
		{"one range", withByteRange(t, signed, fmt.Sprintf("0 %d", b[0]))},
		{"a space in the string", replaceAt(signed, digit, "  ")},
		{"a comment in the string", replaceAt(signed, digit, "%x")},
		{"a string closed early", replaceAt(signed, digit, "><")},
		{"a literal string", replaceAt(replaceAt(signed, contents, "("), contents+1+2*16384, ")")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := pdfsig.Read(bytes.NewReader(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			sigs, err := doc.Signatures()
			if errors.Is(err, pdfsig.ErrNotPDF) {
				t.Logf("the parser refuses it: %v", err) // a '%' ends the dictionary
				return
			}
			if err != nil || len(sigs) != 1 {
				t.Fatalf("Signatures: %d, %v", len(sigs), err)
			}
			if _, err := sigs[0].Digest(bytes.NewReader(tc.file), sha256.New()); !errors.Is(err, pdfsig.ErrByteRange) {
				t.Errorf("Digest: %v, want ErrByteRange", err)
			} else {
				t.Log(err)
			}
			if _, err := doc.Prepare(pdfsig.Options{}); !errors.Is(err, pdfsig.ErrByteRange) {
				t.Errorf("Prepare: %v, want ErrByteRange", err)
			}
		})
	}
	// The file as signed passes.
	doc, err := pdfsig.Read(bytes.NewReader(signed))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := doc.Signatures()
	if err != nil || len(sigs) != 1 {
		t.Fatal(len(sigs), err)
	}
	if err := sigs[0].Check(bytes.NewReader(signed)); err != nil {
		t.Fatalf("the file as signed: %v", err)
	}
}

// replaceAt returns b with s written over it at i.
func replaceAt(b []byte, i int, s string) []byte {
	out := bytes.Clone(b)
	copy(out[i:], s)
	return out
}
