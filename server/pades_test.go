package server_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// padesSign signs pdf through c as PAdES and returns the signed file.
func padesSign(t *testing.T, c *client.Client, pdf []byte, o client.PAdESOptions) ([]byte, *client.SignedDocument, error) {
	t.Helper()
	var out bytes.Buffer
	sd, err := c.SignPAdES(ctx(t), bytes.NewReader(pdf), &out, o)
	return out.Bytes(), sd, err
}

// TestPAdES: PDF signatures by the ECDSA and RSA keys of a simulated PIV
// card served by pscsd, on ghostscript's PDF and on qpdf's rewrite with a
// cross-reference stream, then a second signature on the signed file:
// pdfsig finds them all valid, by the card's certificate; the CMS has no
// signing-time and no delegation notice (no warranty).
func TestPAdES(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	for _, xs := range []bool{false, true} {
		pdf := pdfsigtest.MakePDF(t, xs)
		once, sd1, err := padesSign(t, c, pdf, client.PAdESOptions{Slot: 7, Key: 1, VPIN: []byte("2718")})
		if err != nil {
			t.Fatal(err)
		}
		if sd1.Notice {
			t.Error("a notice without warranty")
		}
		pdfsigtest.Check(t, once, sd1.Certificate.Subject.CommonName)
		twice, sd2, err := padesSign(t, c, once, client.PAdESOptions{Slot: 7, Key: 4, Hash: crypto.SHA384, PSS: true, VPIN: []byte("2718")})
		if err != nil {
			t.Fatal(err)
		}
		pdfsigtest.Check(t, twice, sd1.Certificate.Subject.CommonName, sd2.Certificate.Subject.CommonName)
		parsed, err := cms.Parse(sd2.CMS)
		if err != nil {
			t.Fatal(err)
		}
		if s := parsed.Signers[0]; !s.SigningTime.IsZero() || s.Notice != nil {
			t.Errorf("PAdES CMS: signing-time %v, notice %v", s.SigningTime, s.Notice)
		}
	}
}

// TestPAdESWarranty: on a delegation with warranty the PDF signature
// carries the delegation notice (openssl shows the attribute) and pdfsig
// still finds it valid.
func TestPAdESWarranty(t *testing.T) {
	r := newRig(t, 1)
	from := time.Now().Add(-time.Hour).Truncate(time.Second)
	r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5,
		Warranty: true, NotBefore: from, NotAfter: from.Add(24 * time.Hour)})
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	signed, sd, err := padesSign(t, c, pdfsigtest.MakePDF(t, true), client.PAdESOptions{Slot: 7, Key: 1, VPIN: []byte("2718")})
	if err != nil {
		t.Fatal(err)
	}
	pdfsigtest.Check(t, signed, sd.Certificate.Subject.CommonName)
	// The CMS in the file is the one answered, with the notice.
	doc, err := pdfsig.Read(bytes.NewReader(signed))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := doc.Signatures()
	if err != nil || len(sigs) != 1 || !bytes.Equal(sigs[0].Contents, sd.CMS) {
		t.Fatalf("signatures in the file: %d, %v", len(sigs), err)
	}
	if printed := cmstest.Print(t, sigs[0].Contents); !strings.Contains(printed, "object: undefined ("+cms.Arc+".1)") {
		t.Errorf("openssl does not show the notice attribute %s.1:\n%s", cms.Arc, printed)
	}
	parsed, _ := cms.Parse(sigs[0].Contents)
	if n := parsed.Signers[0].Notice; n == nil || n.Delegation != "d-alice" || n.Owner != "mayor" {
		t.Errorf("notice %+v", n)
	}
}

// TestPAdESDocumentLimited: a delegation limited to documents refuses a
// PDF signature of a listed file (CodeDocumentRefused, audited with the
// byte range's digest, the message saying why): the digest signed is the
// new revision's, which no list of file digests holds, and a file digest
// sent beside it would prove nothing. CAdES of the same file is allowed.
func TestPAdESDocumentLimited(t *testing.T) {
	r := newRig(t, 1)
	pdf := pdfsigtest.MakePDF(t, false)
	sum := sha256.Sum256(pdf)
	r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5, Documents: [][]byte{sum[:]}})
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	out, _, err := padesSign(t, c, pdf, client.PAdESOptions{Slot: 7, Key: 1})
	if transport.CodeOf(err) != transport.CodeDocumentRefused || !strings.Contains(err.Error(), "/ByteRange") {
		t.Fatalf("PAdES of a listed file: %v, want code 107 with the reason", err)
	}
	if len(out) != 0 {
		t.Errorf("%d bytes written on a refusal", len(out))
	}
	rec := r.audit.last()
	if rec.Code != transport.CodeDocumentRefused || len(rec.Result) != 32 || bytes.Equal(rec.Result, sum[:]) {
		t.Errorf("audit record of the refusal: code %v, result %x (the byte range's digest, not the file's)", rec.Code, rec.Result)
	}
	// A PAdES request naming the listed digest itself gets a CMS over
	// that digest: a detached CAdES of the allowed file, which the
	// delegation allows anyway; it fits no PDF.
	if _, err := c.SignDocument(ctx(t), &transport.SignDocumentRequest{Slot: 7, Key: 1, Hash: 0x250, Digest: sum[:], Format: transport.FormatPAdES}, nil); err != nil {
		t.Errorf("the listed digest: %v", err)
	}
	if _, err := c.SignCAdES(ctx(t), bytes.NewReader(pdf), client.CAdESOptions{Slot: 7, Key: 1}); err != nil {
		t.Errorf("CAdES of the listed file: %v", err)
	}
}

// TestPAdESFormatUnknown: a format this server does not know is refused
// with CodeMechanism.
func TestPAdESFormatUnknown(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("x"))
	_, err := c.SignDocument(ctx(t), &transport.SignDocumentRequest{Slot: 7, Key: 1, Hash: 0x250, Digest: sum[:], Format: 3}, nil)
	if transport.CodeOf(err) != transport.CodeMechanism {
		t.Errorf("format 3: %v, want CodeMechanism", err)
	}
}

// BenchmarkSignPAdES is a whole PDF signature through pscsd (ghostscript's
// one-page PDF: parsed, the update prepared and read back, hashed, the CMS
// made by a zero-latency simulated card and checked, the file written),
// against the CAdES signature of the same file: the difference is the
// client's PDF work.
func BenchmarkSignPAdES(b *testing.B) {
	r := newRig(b, 1)
	c := r.dial(b, r.alice)
	if _, err := c.Login(ctx(b), 7, []byte("2718")); err != nil {
		b.Fatal(err)
	}
	pdf := pdfsigtest.MakePDF(b, true)
	b.Run("cades", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.SignCAdES(ctx(b), bytes.NewReader(pdf), client.CAdESOptions{Slot: 7, Key: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pades", func(b *testing.B) {
		var grown int
		for b.Loop() {
			var out bytes.Buffer
			if _, err := c.SignPAdES(ctx(b), bytes.NewReader(pdf), &out, client.PAdESOptions{Slot: 7, Key: 1}); err != nil {
				b.Fatal(err)
			}
			grown = out.Len() - len(pdf)
		}
		b.ReportMetric(float64(grown), "bytes-added")
	})
}
