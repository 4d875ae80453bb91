package pdfsig_test

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/pscs/pscs/internal/pdfsig"
)

// FuzzRead feeds the reading of a PDF (pdfcpu's parser and this
// package's use of it) arbitrary bytes: the signatures found and the
// incremental update prepared, which must not panic; an update prepared
// must parse again with one signature more. The seeds in testdata are
// real files: ghostscript's (cross-reference table), qpdf's rewrite with
// object streams and a cross-reference stream, and a file signed twice
// here.
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
