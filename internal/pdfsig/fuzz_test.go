package pdfsig_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/pdfsig"
)

// FuzzRead feeds the reading of a PDF (pdfcpu's parser and this
// package's use of it) arbitrary bytes: the signatures found and the
// incremental update prepared, which must not panic; an update prepared
// must parse again with one signature more. The seeds in testdata are
// real files: ghostscript's (cross-reference table), qpdf's rewrite with
// object streams and a cross-reference stream, and a file signed twice
// here; testdata/fuzz/FuzzRead adds hostile ones: that file with a
// /ByteRange whose gap is longer than the /Contents string, shifted, or
// overlapping the first range, text or a literal string in the gap,
// encrypted files (qpdf's, a table or a stream; a direct /Encrypt
// dictionary), DocMDP P=1 certified files, a linearized one.
func FuzzRead(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.pdf")
	if len(seeds) == 0 {
		f.Fatal("no seeds in testdata")
	}
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		doc, err := pdfsig.Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		sigs, err := doc.Signatures()
		if err != nil {
			return
		}
		for _, s := range sigs {
			s.Digest(bytes.NewReader(b), sha256.New()) // errors are fine; panics are not
		}
		u, err := doc.Prepare(pdfsig.Options{Reserve: 64})
		if err != nil {
			return
		}
		if err := u.Embed([]byte{0x30, 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Digest(sha256.New(), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		signed := append(bytes.Clone(b), u.Tail...)
		again, err := pdfsig.Read(bytes.NewReader(signed))
		if err != nil {
			t.Fatalf("the updated file does not parse: %v", err)
		}
		after, err := again.Signatures()
		if err != nil {
			t.Fatalf("the updated file's signatures: %v", err)
		}
		if len(after) != len(sigs)+1 {
			t.Fatalf("%d signatures after adding one to %d", len(after), len(sigs))
		}
	})
}

// FuzzByteRange rewrites the /ByteRange of the last signature of a file
// signed twice here (testdata/signed-twice.pdf) with four arbitrary
// numbers, in place, and writes a few arbitrary bytes at an arbitrary
// offset (into the gap, say): a signature that Check accepts must then be
// what it says, two ranges from the start of the file to its end at most,
// in order, the gap between them exactly '<', hex digits, '>', whose
// value begins with the signature's CMS; Digest and Prepare must not
// panic.
func FuzzByteRange(f *testing.F) {
	signed, err := os.ReadFile("testdata/signed-twice.pdf")
	if err != nil {
		f.Fatal(err)
	}
	all := byteRange.FindAllSubmatchIndex(signed, -1)
	if len(all) != 2 {
		f.Fatalf("testdata/signed-twice.pdf: %d /ByteRange, want 2", len(all))
	}
	last := all[1]
	num := func(i int) int64 {
		v, _ := strconv.ParseInt(string(signed[last[2*i]:last[2*i+1]]), 10, 64)
		return v
	}
	a, b, c := num(1), num(2), num(3)
	f.Add(int64(0), a, b, c, uint32(0), []byte(nil))           // as signed
	f.Add(int64(0), a, b+1, c-1, uint32(0), []byte(nil))       // the gap one byte longer
	f.Add(int64(0), a-1, b-1, c+1, uint32(0), []byte(nil))     // the gap shifted
	f.Add(int64(0), a, a-10, b+c-a+10, uint32(0), []byte(nil)) // overlapping
	f.Add(int64(0), a, b, int64(math.MaxInt64), uint32(0), []byte(nil))
	f.Add(int64(0), a, b, c, uint32(a+40), []byte("><"))     // the string closed early
	f.Add(int64(0), a, b, c, uint32(a+40), []byte(" \n"))    // white space in the string
	f.Add(int64(0), a, b, c, uint32(a+40), []byte(") /X (")) // text in the string
	f.Add(int64(-1), a, b, c, uint32(b-1), []byte("0>"))     // the string's end moved
	f.Fuzz(func(t *testing.T, r0, r1, r2, r3 int64, at uint32, patch []byte) {
		if len(patch) > 64 {
			return
		}
		br := fmt.Sprintf("/ByteRange[%d %d %d %d", r0, r1, r2, r3)
		width := last[1] - last[0]
		if len(br)+1 > width {
			return
		}
		file := bytes.Clone(signed)
		copy(file[last[0]:], br+strings.Repeat(" ", width-len(br)-1)+"]")
		if int(at) < len(file) {
			copy(file[at:], patch)
		}
		doc, err := pdfsig.Read(bytes.NewReader(file))
		if err != nil {
			return
		}
		sigs, err := doc.Signatures()
		if err != nil {
			return
		}
		for _, s := range sigs {
			s.Digest(bytes.NewReader(file), sha256.New()) // errors are fine; panics are not
			if err := s.Check(bytes.NewReader(file)); err != nil {
				if !errors.Is(err, pdfsig.ErrByteRange) {
					t.Fatalf("Check: %v, not ErrByteRange", err)
				}
				continue
			}
			r := s.ByteRange
			if len(r) != 4 || r[0] != 0 || r[1] < 0 || r[2] < r[1]+2 || r[3] < 0 || r[2]+r[3] > int64(len(file)) || r[2]+r[3] < r[2] {
				t.Fatalf("Check accepts /ByteRange %v of a file of %d bytes", r, len(file))
			}
			gap := file[r[1]:r[2]]
			if gap[0] != '<' || gap[len(gap)-1] != '>' {
				t.Fatalf("Check accepts a gap that is not a string: %q...", gap[:min(len(gap), 16)])
			}
			v, err := hex.DecodeString(string(gap[1 : len(gap)-1]))
			if err != nil {
				t.Fatalf("Check accepts a gap that is not hex: %v", err)
			}
			if !bytes.HasPrefix(v, s.Contents) {
				t.Fatal("the gap is not the signature's /Contents")
			}
		}
		doc.Prepare(pdfsig.Options{Reserve: 64}) // errors are fine; panics are not
	})
}
