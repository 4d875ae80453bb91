package pdfsig_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
)

// certify returns pdf (a cross-reference table) certified by hand with
// DocMDP transform parameters params ("/P 1"; "" for none): an
// incremental update adds a signature dictionary with the transform in
// its /Reference and, in the catalog, /Perms /DocMDP naming it (ISO
// 32000-1, 12.8.2.2 and 12.8.4); inField also makes it the value of a
// signature field of the form (and leaves /Perms out). The signature
// itself is not one: the refusal does not depend on it.
func certify(t *testing.T, pdf []byte, params string, inField bool) []byte {
	t.Helper()
	root, size := pdfsigtest.Trailer(t, pdf)
	catalog := strings.TrimSpace(strings.TrimSuffix(pdfsigtest.Show(t, pdf, strconv.Itoa(root)), ">>"))
	sig := fmt.Sprintf("<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /adbe.pkcs7.detached /ByteRange [0 0 0 0] /Contents <00> "+
		"/Reference [ << /Type /SigRef /TransformMethod /DocMDP /TransformParams << /Type /TransformParams %s /V /1.2 >> >> ] >>", params)
	objects := map[int]string{size: sig}
	if inField {
		objects[size+1] = fmt.Sprintf("<< /FT /Sig /T (Certification) /V %d 0 R /Type /Annot /Subtype /Widget /Rect [0 0 0 0] /F 132 >>", size)
		objects[root] = fmt.Sprintf("%s /AcroForm << /Fields [ %d 0 R ] /SigFlags 3 >> >>", catalog, size+1)
	} else {
		objects[root] = fmt.Sprintf("%s /Perms << /DocMDP %d 0 R >> >>", catalog, size)
	}
	out := pdfsigtest.AppendUpdate(t, pdf, objects)
	p := filepath.Join(t.TempDir(), "certified.pdf")
	os.WriteFile(p, out, 0o600)
	if b, err := exec.Command("qpdf", "--check", p).CombinedOutput(); err != nil {
		t.Fatalf("qpdf --check of the certified file: %v\n%s", err, b)
	}
	return out
}

// TestCertified: a file certified with DocMDP permission 1 (no change at
// all) is not signed (ErrCertified, the message saying why), nor one
// whose permission is not 1, 2 or 3; permissions 2 (form filling and
// signatures) and 3, and a transform without /P (2), are signed, and
// pdfsig finds the new signature valid.
func TestCertified(t *testing.T) {
	alice := newSigner(t, "Alice Signer")
	pdf := pdfsigtest.MakePDF(t, false)
	for _, tc := range []struct {
		name    string
		params  string
		inField bool
		refused bool
	}{
		{"P=1", "/P 1", false, true},
		{"P=1 in a field", "/P 1", true, true},
		{"P=7", "/P 7", false, true},
		{"P=(1)", "/P (1)", false, true},
		{"P=2", "/P 2", false, false},
		{"P=3", "/P 3", false, false},
		{"no P", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certified := certify(t, pdf, tc.params, tc.inField)
			doc, err := pdfsig.Read(bytes.NewReader(certified))
			if err != nil {
				t.Fatal(err)
			}
			_, err = doc.Prepare(pdfsig.Options{})
			if !tc.refused {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				pdfsigtest.Check(t, alice.Sign(t, certified), "Alice Signer")
				return
			}
			if !errors.Is(err, pdfsig.ErrCertified) || !strings.Contains(err.Error(), "would invalidate") {
				t.Fatalf("Prepare: %v, want ErrCertified saying why", err)
			}
			t.Log(err)
		})
	}
}

// zeros reads as zero bytes.
type zeros struct{}

func (zeros) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

// TestTooLarge: a file of more than MaxSize bytes is refused before it
// is read (ErrTooLarge): the reader is a section of MaxSize+1 zero bytes
// that allocates none of them.
func TestTooLarge(t *testing.T) {
	_, err := pdfsig.Read(io.NewSectionReader(zeros{}, 0, pdfsig.MaxSize+1))
	if !errors.Is(err, pdfsig.ErrTooLarge) || !strings.Contains(err.Error(), "256 MiB") {
		t.Fatalf("Read of MaxSize+1 bytes: %v, want ErrTooLarge", err)
	}
	t.Log(err)
}

// TestEncryptedMessage: encrypted PDFs (qpdf --encrypt: AES-256 and
// RC4-128, with and without a user password, a cross-reference table or
// stream; and an /Encrypt dictionary written directly in a trailer, which
// pdfcpu does not take) are neither read nor signed (ErrEncrypted), and
// the message says how to decrypt them.
func TestEncryptedMessage(t *testing.T) {
	dir := t.TempDir()
	plain := pdfsigtest.MakePDF(t, false)
	in := filepath.Join(dir, "in.pdf")
	if err := os.WriteFile(in, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"AES-256", []string{"--encrypt", "", "owner", "256", "--"}},
		{"AES-256 user password", []string{"--encrypt", "user", "owner", "256", "--"}},
		{"RC4-128 user password", []string{"--allow-weak-crypto", "--encrypt", "user", "owner", "128", "--use-aes=n", "--"}},
		{"AES-256 xref stream", []string{"--object-streams=generate", "--encrypt", "", "owner", "256", "--"}},
	} {
		out := filepath.Join(dir, "enc.pdf")
		if b, err := exec.Command("qpdf", append(tc.args, in, out)...).CombinedOutput(); err != nil {
			t.Fatalf("qpdf %s: %v\n%s", strings.Join(tc.args, " "), err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		files[tc.name] = b
	}
	direct := pdfsigtest.AppendUpdate(t, plain, map[int]string{})
	i := bytes.LastIndex(direct, []byte("/Prev"))
	files["direct /Encrypt"] = slices.Concat(direct[:i], []byte("/Encrypt << /Filter /Standard /V 2 /R 3 >> "), direct[i:])
	for name, b := range files {
		t.Run(name, func(t *testing.T) {
			doc, err := pdfsig.Read(bytes.NewReader(b))
			if err == nil {
				_, err = doc.Prepare(pdfsig.Options{})
			}
			if !errors.Is(err, pdfsig.ErrEncrypted) || !strings.Contains(err.Error(), "qpdf --decrypt in.pdf out.pdf") {
				t.Fatalf("an encrypted PDF: %v, want ErrEncrypted saying qpdf --decrypt in.pdf out.pdf", err)
			}
		})
	}
}

// TestHiddenCertification: a certification that pdfcpu does not see
// before the update but sees after it (FuzzRead found it: the field
// object's endobj is damaged, so the parser skips the field until the
// update brings an endobj after it) is refused all the same: the file
// reads differently once updated.
func TestHiddenCertification(t *testing.T) {
	certified := certify(t, pdfsigtest.MakePDF(t, false), "/P 1", true)
	i := bytes.LastIndex(certified, []byte("endobj\nxref"))
	damaged := replaceAt(certified, i+3, `\`)
	doc, err := pdfsig.Read(bytes.NewReader(damaged))
	if err != nil {
		t.Fatal(err)
	}
	if sigs, err := doc.Signatures(); err != nil || len(sigs) != 0 {
		t.Fatalf("the damaged field is read: %d signatures, %v", len(sigs), err)
	}
	if _, err := doc.Prepare(pdfsig.Options{}); !errors.Is(err, pdfsig.ErrNotPDF) && !errors.Is(err, pdfsig.ErrCertified) {
		t.Fatalf("Prepare: %v, want a refusal", err)
	} else {
		t.Log(err)
	}
}
