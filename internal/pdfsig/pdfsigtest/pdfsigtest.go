// Package pdfsigtest makes PDF files with tools nobody here wrote
// (ghostscript, qpdf) and judges signed ones with them (qpdf --check,
// poppler's pdfsig), for tests.
package pdfsigtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// MakePDF has ghostscript write a one-page PDF (with a classic
// cross-reference table) from a tiny PostScript program; with xrefStream,
// qpdf rewrites it with object streams and a cross-reference stream.
func MakePDF(t testing.TB, xrefStream bool) []byte {
	t.Helper()
	return MakePDFFrom(t, "%!PS\n/Helvetica findfont 24 scalefont setfont\n72 700 moveto (pscs PAdES test) show\nshowpage\n", xrefStream)
}

// Annotated is a PostScript program of a page with two annotations, a
// text field's widget and a link (pdfmark), for MakePDFFrom.
const Annotated = `%!PS
/Helvetica findfont 24 scalefont setfont
72 700 moveto (pscs PAdES form) show
[ /Rect [72 600 300 620] /Subtype /Widget /FT /Tx /T (name) /V (x) /F 4 /ANN pdfmark
[ /Rect [72 500 300 520] /Subtype /Link /Border [0 0 1] /Action << /Subtype /URI /URI (https://example.org/) >> /ANN pdfmark
showpage
`

// MakePDFFrom is MakePDF of the PostScript program program.
func MakePDFFrom(t testing.TB, program string, xrefStream bool) []byte {
	t.Helper()
	dir := t.TempDir()
	ps := filepath.Join(dir, "in.ps")
	if err := os.WriteFile(ps, []byte(program), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "gs.pdf")
	if b, err := exec.Command("gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", "-sOutputFile="+out, ps).CombinedOutput(); err != nil {
		t.Fatalf("gs: %v\n%s", err, b)
	}
	if xrefStream {
		qout := filepath.Join(dir, "qpdf.pdf")
		if b, err := exec.Command("qpdf", "--object-streams=generate", out, qout).CombinedOutput(); err != nil {
			t.Fatalf("qpdf: %v\n%s", err, b)
		}
		out = qout
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Check has qpdf check the structure of the signed file pdf and pdfsig
// its signatures: as many as names, each "Signature is Valid.", the i-th
// by a certificate whose common name is names[i]. It returns pdfsig's
// output.
func Check(t testing.TB, pdf []byte, names ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "signed.pdf")
	if err := os.WriteFile(p, pdf, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qpdf", "--check", p).CombinedOutput(); err != nil || !strings.Contains(string(out), "No syntax or stream encoding errors found") {
		t.Fatalf("qpdf --check: %v\n%s", err, out)
	}
	b, _ := exec.Command("pdfsig", p).CombinedOutput()
	out := string(b)
	sigs := regexp.MustCompile(`(?m)^Signature #\d+:$`).Split(out, -1)[1:]
	if len(sigs) != len(names) {
		t.Fatalf("pdfsig shows %d signatures, want %d:\n%s", len(sigs), len(names), out)
	}
	for i, s := range sigs {
		if !strings.Contains(s, "Signature Validation: Signature is Valid.") {
			t.Fatalf("pdfsig: signature %d is not valid:\n%s", i+1, out)
		}
		if !strings.Contains(s, "Signer Certificate Common Name: "+names[i]+"\n") {
			t.Fatalf("pdfsig: signature %d is not by %s:\n%s", i+1, names[i], out)
		}
	}
	return out
}
