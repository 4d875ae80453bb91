package pdfsig_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
)

// newSigner returns a signer of its own key and certificate (common
// name name).
func newSigner(t testing.TB, name string) pdfsigtest.Signer { return pdfsigtest.NewSigner(t, name) }

// check has qpdf and pdfsig judge pdf (pdfsigtest.Check), then reads
// its signatures back here: each CMS verifies against the digest of its
// byte range.
func check(t testing.TB, pdf []byte, names ...string) {
	t.Helper()
	pdfsigtest.Check(t, pdf, names...)
	doc, err := pdfsig.Read(bytes.NewReader(pdf))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := doc.Signatures()
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != len(names) {
		t.Fatalf("Signatures: %d, want %d", len(sigs), len(names))
	}
	for i, s := range sigs {
		sd, err := cms.Parse(s.Contents)
		if err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
		d, err := s.Digest(bytes.NewReader(pdf), sd.Signers[0].Hash.New())
		if err != nil {
			t.Fatal(err)
		}
		if err := sd.Signers[0].Verify(d); err != nil {
			t.Fatalf("signature %d (%s): %v", i, s.Field, err)
		}
		if sd.Signers[0].Certificate.Subject.CommonName != names[i] || s.SubFilter != "ETSI.CAdES.detached" || !sd.Signers[0].SigningTime.IsZero() {
			t.Fatalf("signature %d: %s, %s, signing-time %v", i, sd.Signers[0].Certificate.Subject, s.SubFilter, sd.Signers[0].SigningTime)
		}
		if s.Whole() != (i == len(sigs)-1) {
			t.Fatalf("signature %d covers the whole file: %v", i, s.Whole())
		}
	}
}

// TestSign signs ghostscript's PDF (cross-reference table) and qpdf's
// rewrite of it (object streams, cross-reference stream), once and twice:
// qpdf finds the files well formed, pdfsig finds every signature valid.
func TestSign(t *testing.T) {
	alice, bob := newSigner(t, "Alice Signer"), newSigner(t, "Bob Signer")
	for _, tc := range []struct {
		name       string
		xrefStream bool
	}{{"xref table", false}, {"xref stream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			pdf := pdfsigtest.MakePDF(t, tc.xrefStream)
			once := alice.Sign(t, pdf)
			if !bytes.HasPrefix(once, pdf) {
				t.Fatal("the signed file does not start with the original")
			}
			check(t, once, "Alice Signer")
			twice := bob.Sign(t, once)
			if !bytes.HasPrefix(twice, once) {
				t.Fatal("the second signature changed the first revision")
			}
			check(t, twice, "Alice Signer", "Bob Signer")
		})
	}
}

// debianSample is a PDF that Debian ships (package shared-mime-info, in
// .ci/deps): the specification, several pages, object streams and a
// cross-reference stream, link annotations, written by pdfTeX (LaTeX
// with hyperref).
const debianSample = "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"

// TestSignDebianSample signs Debian's sample PDF twice: pdfsig finds both
// signatures valid, qpdf the file well formed.
func TestSignDebianSample(t *testing.T) {
	pdf, err := os.ReadFile(debianSample)
	if err != nil {
		t.Fatalf("%v (install shared-mime-info: bash .ci/deps)", err)
	}
	alice, bob := newSigner(t, "Alice Signer"), newSigner(t, "Bob Signer")
	check(t, bob.Sign(t, alice.Sign(t, pdf)), "Alice Signer", "Bob Signer")
}

// TestSignAnnotated: a page with annotations (a text field's widget, a
// link) keeps them, the signature's widget added to its /Annots.
func TestSignAnnotated(t *testing.T) {
	alice := newSigner(t, "Alice Signer")
	for _, xs := range []bool{false, true} {
		pdf := pdfsigtest.MakePDFFrom(t, pdfsigtest.Annotated, xs)
		signed := alice.Sign(t, alice.Sign(t, pdf))
		check(t, signed, "Alice Signer", "Alice Signer")
		p := filepath.Join(t.TempDir(), "signed.pdf")
		if err := os.WriteFile(p, signed, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("qpdf", "--json", "--json-key=pages", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		var j struct {
			Pages []struct{ Object string } `json:"pages"`
		}
		if err := json.Unmarshal(out, &j); err != nil || len(j.Pages) != 1 {
			t.Fatalf("qpdf --json: %v\n%s", err, out)
		}
		num, _, _ := strings.Cut(j.Pages[0].Object, " ")
		page, err := exec.Command("qpdf", "--show-object="+num, p).Output()
		if err != nil {
			t.Fatal(err)
		}
		annots := regexp.MustCompile(`/Annots \[([^]]*)\]`).FindSubmatch(page)
		if annots == nil {
			t.Fatalf("qpdf shows no /Annots in the page:\n%s", page)
		}
		if n := bytes.Count(annots[1], []byte(" R")); n != 4 {
			t.Errorf("the page has %d annotations, want 4 (2 of its own, 2 signatures):\n%s", n, page)
		}
	}
}

// TestTampered: a byte changed in a signed file fails the digest.
func TestTampered(t *testing.T) {
	pdf := newSigner(t, "Alice Signer").Sign(t, pdfsigtest.MakePDF(t, false))
	// A digit of the creation date in ghostscript's /Info.
	i := bytes.Index(pdf, []byte("/CreationDate(D:"))
	if i < 0 {
		t.Fatalf("ghostscript wrote no /CreationDate:\n%s", pdf)
	}
	bad := bytes.Clone(pdf)
	bad[i+len("/CreationDate(D:")] ^= 1
	doc, err := pdfsig.Read(bytes.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := doc.Signatures()
	if err != nil || len(sigs) != 1 {
		t.Fatal(len(sigs), err)
	}
	sd, err := cms.Parse(sigs[0].Contents)
	if err != nil {
		t.Fatal(err)
	}
	d, err := sigs[0].Digest(bytes.NewReader(bad), sha256.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Signers[0].Verify(d); err == nil {
		t.Fatal("a changed file verifies")
	}
}

// TestNotPDF: what is no PDF gets ErrNotPDF.
func TestNotPDF(t *testing.T) {
	pdf := pdfsigtest.MakePDF(t, false)
	for name, b := range map[string][]byte{
		"empty": nil, "text": []byte("hello, world\n"), "truncated": pdf[:len(pdf)/2],
	} {
		if _, err := pdfsig.Read(bytes.NewReader(b)); !errors.Is(err, pdfsig.ErrNotPDF) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestEmbedTooLarge: a CMS larger than the room reserved is refused.
func TestEmbedTooLarge(t *testing.T) {
	doc, err := pdfsig.Read(bytes.NewReader(pdfsigtest.MakePDF(t, false)))
	if err != nil {
		t.Fatal(err)
	}
	u, err := doc.Prepare(pdfsig.Options{Reserve: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Embed(make([]byte, 101)); err == nil {
		t.Fatal("a CMS of 101 bytes fits in 100")
	}
}

// TestSignTransformed: PDFs as other tools rewrite them are signed twice,
// and pdfsig finds both signatures valid, qpdf the file well formed:
// qpdf's linearized files (hint streams; the last startxref points to
// the first page's cross-reference section near the start), with object
// streams and cross-reference streams or not, its QDF form, and cairo's
// rewrite (pdftocairo, poppler-utils), of a page with annotations.
func TestSignTransformed(t *testing.T) {
	alice, bob := newSigner(t, "Alice Signer"), newSigner(t, "Bob Signer")
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pdf")
	if err := os.WriteFile(in, pdfsigtest.MakePDFFrom(t, pdfsigtest.Annotated, false), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		{"qpdf linearize", []string{"qpdf", "--linearize", in}},
		{"qpdf linearize object streams", []string{"qpdf", "--linearize", "--object-streams=generate", in}},
		{"qpdf object streams", []string{"qpdf", "--object-streams=generate", "--compress-streams=y", in}},
		{"qpdf qdf", []string{"qpdf", "--qdf", in}},
		{"qpdf newline-before-endstream", []string{"qpdf", "--newline-before-endstream", "--object-streams=disable", in}},
		{"pdftocairo", []string{"pdftocairo", "-pdf", in}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.pdf")
			if b, err := exec.Command(tc.cmd[0], append(tc.cmd[1:], out)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(tc.cmd, " "), err, b)
			}
			pdf, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			twice := bob.Sign(t, alice.Sign(t, pdf))
			if !bytes.HasPrefix(twice, pdf) {
				t.Fatal("the signed file does not start with the original")
			}
			check(t, twice, "Alice Signer", "Bob Signer")
		})
	}
}
