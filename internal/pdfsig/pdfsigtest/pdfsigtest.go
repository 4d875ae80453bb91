// Package pdfsigtest makes PDF files with tools nobody here wrote
// (ghostscript, qpdf) and judges signed ones with them (qpdf --check,
// poppler's pdfsig), for tests; it also signs them with a key of its own
// as pscs does (Signer) and appends incremental updates written by hand
// (AppendUpdate).
package pdfsigtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/pdfsig"
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

// Signer signs PDF files as pscs sign -pades does, with an ECDSA P-256
// key and a self-signed certificate of its own instead of a remote card.
type Signer struct {
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate
}

// NewSigner returns a Signer whose certificate's common name is name.
func NewSigner(t testing.TB, name string) Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Signer{key, cert}
}

// Sign adds a PAdES signature by s to pdf as pscs does it: the update,
// its digest, signed attributes without signing-time, the CMS. It
// returns the signed file.
func (s Signer) Sign(t testing.TB, pdf []byte) []byte {
	t.Helper()
	doc, err := pdfsig.Read(bytes.NewReader(pdf))
	if err != nil {
		t.Fatal(err)
	}
	u, err := doc.Prepare(pdfsig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	digest, err := u.Digest(sha256.New(), bytes.NewReader(pdf))
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA256, Digest: digest, Certificate: s.Cert})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(attrs)
	sig, err := s.Key.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der, err := cms.Assemble(s.Cert, nil, cms.Algorithm{Hash: crypto.SHA256}, attrs, sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Embed(der); err != nil {
		t.Fatal(err)
	}
	return append(bytes.Clone(pdf), u.Tail...)
}

// Show returns what qpdf --show-object=what prints of pdf: an object
// ("12") or the trailer ("trailer").
func Show(t testing.TB, pdf []byte, what string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "show.pdf")
	if err := os.WriteFile(p, pdf, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qpdf", "--show-object="+what, p).Output()
	if err != nil {
		t.Fatalf("qpdf --show-object=%s: %v\n%s", what, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Trailer returns the number of the catalog object of pdf (qpdf reads
// its trailer) and its /Size.
func Trailer(t testing.TB, pdf []byte) (root, size int) {
	t.Helper()
	tr := Show(t, pdf, "trailer")
	r := regexp.MustCompile(`/Root (\d+) 0 R`).FindStringSubmatch(tr)
	n := regexp.MustCompile(`/Size (\d+)`).FindStringSubmatch(tr)
	if r == nil || n == nil {
		t.Fatalf("qpdf shows no /Root or /Size in the trailer: %s", tr)
	}
	root, _ = strconv.Atoi(r[1])
	size, _ = strconv.Atoi(n[1])
	return root, size
}

// AppendUpdate appends to pdf, whose last cross-reference section is a
// table, an incremental update written by hand: the objects (number to
// body, generation 0), a cross-reference table for them and a trailer
// that points back to pdf's last one, as ISO 32000-1, 7.5.6 has it. It
// returns the updated file.
func AppendUpdate(t testing.TB, pdf []byte, objects map[int]string) []byte {
	t.Helper()
	root, size := Trailer(t, pdf)
	var keep string // /Info and /ID of the trailer
	for _, k := range regexp.MustCompile(`/Info \d+ \d+ R|/ID \[[^]]*\]`).FindAllString(Show(t, pdf, "trailer"), -1) {
		keep += " " + k
	}
	m := regexp.MustCompile(`startxref\s+(\d+)\s+%%EOF\s*$`).FindSubmatch(pdf)
	if m == nil {
		t.Fatal("pdf does not end with startxref and its offset")
	}
	out := bytes.Clone(pdf)
	if !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	nums := slices.Sorted(maps.Keys(objects))
	offsets := map[int]int{}
	for _, n := range nums {
		offsets[n] = len(out)
		out = fmt.Appendf(out, "%d 0 obj\n%s\nendobj\n", n, objects[n])
		size = max(size, n+1)
	}
	xref := len(out)
	out = append(out, "xref\n"...)
	for _, n := range nums {
		out = fmt.Appendf(out, "%d 1\n%010d 00000 n\r\n", n, offsets[n])
	}
	out = fmt.Appendf(out, "trailer\n<< /Size %d /Root %d 0 R%s /Prev %s >>\nstartxref\n%d\n%%%%EOF\n", size, root, keep, m[1], xref)
	return out
}
