// Package pdfsig reads the signatures of a PDF file and adds one as an
// incremental update: the PAdES-B-B signature (ETSI EN 319 142-1) that
// pscs sign -pades makes, whose CMS pscsd builds from a digest.
//
// # Adding a signature
//
// [Read] parses the file; [Document.Prepare] returns the bytes to append
// to it ([Update.Tail]): a signature dictionary (/Type /Sig, /Filter
// /Adobe.PPKLite, /SubFilter /ETSI.CAdES.detached, /M, /ByteRange, and
// /Contents, a hex string of zeros where the CMS will go), an invisible
// signature field that is also the widget annotation on the first page, a
// new version of that page (its /Annots list the widget), a new version of
// the interactive form (/AcroForm: its old /Fields and the new one,
// /SigFlags 3) and, where the form was not an object of its own, of the
// catalog; then a cross-reference section for these objects, a table or a
// stream as the file's last one was, whose trailer points back (/Prev) to
// the file's last one. Nothing before the end of the file changes, so
// the signatures already in it stay valid. Before answering, Prepare
// parses the file with the update appended and checks that it reads as
// before with the new signature and its /ByteRange: a damaged file that
// the parser repaired on the fly (an offset pointing elsewhere, an object
// that does not end where it should) could read otherwise once updated,
// and is refused (repair it first, e.g. with qpdf).
//
// # Files refused
//
// Read refuses files of more than [MaxSize] bytes before reading them
// ([ErrTooLarge]) and encrypted files ([ErrEncrypted]: /Encrypt in the
// trailer; the message says to run qpdf --decrypt first). Prepare refuses
// a file certified with DocMDP permission 1 ([ErrCertified]: a signature
// added would invalidate the certification; permissions 2 and 3 allow
// signatures), and a file whose signatures already in it have a
// /ByteRange that [Signature.Check] refuses ([ErrByteRange]).
//
// The signature covers the whole new file but the /Contents string
// (/ByteRange): [Update.Digest] hashes the original file (a stream) and
// the tail around the placeholder; the CMS of that digest, signed
// attributes and all, is made elsewhere, and [Update.Embed] writes it into
// the placeholder. The original followed by the tail is the signed file.
//
// # Reading signatures
//
// [Document.Signatures] lists the signature fields of the form that hold a
// signature dictionary (fields nested under /Kids too), with their
// /ByteRange and the DER of /Contents (its zero padding cut off);
// [Signature.Digest] hashes the bytes a signature covers after
// [Signature.Check] has checked that its /ByteRange is two ranges from the
// start of the file, in order, within it, and that what it leaves out is
// exactly its own /Contents hex string ('<', hex digits, '>');
// [Signature.Unsigned] counts the bytes appended after it (later
// incremental updates). Judging the CMS is package cms's.
//
// # The PDF library
//
// Parsing is github.com/pdfcpu/pdfcpu's (v0.15.0; Apache-2.0): a
// maintained PDF processor in pure Go whose reader handles classic
// cross-reference tables, cross-reference streams and object streams
// (PDF 1.5 and later, as ghostscript, qpdf and office suites write
// them), incremental updates (/Prev chains) and hybrid files, builds
// with Go 1.26 (its go.mod says 1.25) and needs no cgo. The other
// candidate, github.com/digitorus/pdf (the reader under
// digitorus/pdfsign), is not served by the module proxy here (pdfsign
// only as an untagged pseudo-version); github.com/klippa-app/go-pdfium
// wraps PDFium (C++) through cgo or WebAssembly. pdfcpu's own writer
// rewrites a whole file, which would break the signatures in it, so the
// incremental update is written here: a few objects and one cross-reference section, in the syntax of
// ISO 32000-1, 7.5.6 and 7.5.8. pdfcpu's configuration directory is
// disabled (no files under the user's home). Its panics on malformed
// input are caught and returned as errors; FuzzRead feeds it.
package pdfsig

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/model"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/types"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

func init() {
	// Read nothing from, and write nothing to, a configuration directory.
	model.ConfigPath = "disable"
}

// The errors of this package: every error it returns about a file wraps
// one of them.
var (
	// ErrNotPDF wraps the reasons a file cannot be read or updated.
	ErrNotPDF = errors.New("pdfsig: not a PDF file that can be signed")
	// ErrEncrypted: the file is encrypted (/Encrypt in its trailer).
	ErrEncrypted = errors.New("pdfsig: the PDF file is encrypted")
	// ErrTooLarge: the file has more than MaxSize bytes.
	ErrTooLarge = errors.New("pdfsig: the PDF file is too large")
	// ErrCertified: the file is certified (DocMDP) with permission 1,
	// which allows no change, not even a signature.
	ErrCertified = errors.New("pdfsig: the PDF file is certified and allows no change")
	// ErrByteRange: a signature's /ByteRange is not the file around its
	// /Contents hex string.
	ErrByteRange = errors.New("pdfsig: a signature's /ByteRange is not the file around its /Contents")
	// ErrReserve: the CMS is larger than the room reserved for it.
	ErrReserve = errors.New("pdfsig: the signature does not fit in the room reserved for it")
)

// MaxSize is the size of the largest PDF file read or signed, 256 MiB:
// the PDF parser holds the file's objects in memory. The size is read
// (Seek) before anything else.
const MaxSize = 256 << 20

// MaxDecode is the most bytes one stream of a PDF file inflates to when
// it is read (object streams and cross-reference streams: the page
// contents are not read): 32 MiB, far more than the object streams that
// office suites, pdfTeX and qpdf write hold (qpdf puts 100 objects in
// each), while 32 KB of Flate data inflate to that much. A stream
// beyond it refuses the file (ErrNotPDF).
const MaxDecode = 32 << 20

// Document is a parsed PDF file. It is not safe for concurrent use: its
// methods read the file through its one io.ReadSeeker.
type Document struct {
	r          io.ReadSeeker
	ctx        *model.Context
	size       int64 // of the file
	startxref  int64 // offset of its last cross-reference section
	xrefStream bool  // that section is a stream
	endsInEOL  bool  // the file ends with an end-of-line
}

// Read parses the PDF file r. The Document keeps r: Prepare reads it
// again.
func Read(r io.ReadSeeker) (doc *Document, err error) {
	defer func() {
		if p := recover(); p != nil {
			doc, err = nil, fmt.Errorf("%w: the PDF parser failed: %v", ErrNotPDF, p)
		}
	}()
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if size > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d MiB that pscs reads", ErrTooLarge, size, MaxSize>>20)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	conf := model.NewDefaultConfiguration()
	conf.ValidationMode = model.ValidationRelaxed
	// A stream inflates to MaxDecode bytes at most (pdfcpu's default:
	// 512 MiB, which a 500 KB file reaches).
	conf.Limits.MaxDecodeBytes = MaxDecode
	// pdfcpu refuses an encrypted file for this command before it tries
	// a password (pdfcpu.ErrEncrypted) rather than decrypt its objects.
	conf.Cmd = model.ADDSIGNATURE
	ctx, err := pdfcpu.Read(r, conf)
	if errors.Is(err, pdfcpu.ErrEncrypted) {
		return nil, errEncrypted
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotPDF, err)
	}
	if ctx.XRefTable.Encrypt != nil {
		return nil, errEncrypted
	}
	d := &Document{r: r, ctx: ctx, size: size}
	if ctx.Read.RepairOffset != 0 {
		return nil, fmt.Errorf("%w: its objects are not where its cross-reference table says", ErrNotPDF)
	}
	if ctx.XRefTable.Root == nil {
		return nil, fmt.Errorf("%w: no catalog (/Root)", ErrNotPDF)
	}
	// The tail: where the last cross-reference section starts.
	n := min(size, 2048)
	tail := make([]byte, n)
	if _, err := r.Seek(size-n, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, tail); err != nil {
		return nil, err
	}
	i := bytes.LastIndex(tail, []byte("startxref"))
	if i < 0 {
		return nil, fmt.Errorf("%w: no startxref at its end", ErrNotPDF)
	}
	f := strings.Fields(string(tail[i+len("startxref"):]))
	if len(f) == 0 {
		return nil, fmt.Errorf("%w: no offset after startxref", ErrNotPDF)
	}
	if d.startxref, err = strconv.ParseInt(f[0], 10, 64); err != nil || d.startxref <= 0 || d.startxref >= size {
		return nil, fmt.Errorf("%w: startxref %q is not an offset in the file", ErrNotPDF, f[0])
	}
	head := make([]byte, 16)
	if _, err := r.Seek(d.startxref, io.SeekStart); err != nil {
		return nil, err
	}
	m, _ := io.ReadFull(r, head)
	head = bytes.TrimLeft(head[:m], " \t\r\n\f\x00")
	d.xrefStream = !bytes.HasPrefix(head, []byte("xref"))
	if d.xrefStream && !xrefObject.Match(head) {
		return nil, fmt.Errorf("%w: startxref %d points to no cross-reference section", ErrNotPDF, d.startxref)
	}
	d.endsInEOL = tail[n-1] == '\n' || tail[n-1] == '\r'
	// An /Encrypt that pdfcpu does not take (a direct dictionary rather
	// than a reference) in the last trailer, or in the dictionary of the
	// last cross-reference stream.
	trailer := tail[i:]
	if j := bytes.LastIndex(tail[:i], []byte("trailer")); j >= 0 && !d.xrefStream {
		trailer = tail[j:i]
	}
	if d.xrefStream {
		dict := make([]byte, 4096)
		m, _ := io.ReadFull(io.NewSectionReader(readerAt{r}, d.startxref, size-d.startxref), dict)
		trailer, _, _ = bytes.Cut(dict[:m], []byte("stream"))
	}
	if encryptKey.Match(trailer) {
		return nil, errEncrypted
	}
	return d, nil
}

// encryptKey is the /Encrypt key of a trailer, not /EncryptMetadata.
var encryptKey = regexp.MustCompile(`/Encrypt[\s/<\[(0-9]`)

// errEncrypted says how to sign an encrypted file.
var errEncrypted = fmt.Errorf("%w (/Encrypt in its trailer): pscs neither signs nor reads encrypted PDFs; "+
	"decrypt it first: qpdf --decrypt in.pdf out.pdf (--password=PASSWORD if it has one; the signatures already in it do not survive)", ErrEncrypted)

// readerAt reads r with Seek and Read; it is not safe for concurrent use.
type readerAt struct{ r io.ReadSeeker }

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if _, err := r.r.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := io.ReadFull(r.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// xrefObject is the start of an indirect object (a cross-reference
// stream).
var xrefObject = regexp.MustCompile(`^\d+\s+\d+\s+obj\b`)

// Encrypted reports whether the file is encrypted; Read refuses such
// files, so it is false for a Document it returned.
func (d *Document) Encrypted() bool { return d.ctx.XRefTable.Encrypt != nil }

// Signature is a signature field's signature dictionary.
type Signature struct {
	Field     string  // the field's full name
	SubFilter string  // e.g. ETSI.CAdES.detached, adbe.pkcs7.detached
	ByteRange []int64 // pairs of offset and length
	Contents  []byte  // the CMS (DER, padding cut off)
	Time      string  // /M as written, "" if absent
	Name      string  // /Name, "" if absent
	Reason    string  // /Reason, "" if absent
	// DocMDP is the permission (/P) of a certification signature (ISO
	// 32000-1, 12.8.2.2): 1 no change, 2 form filling and signatures, 3
	// also annotations; 0 for an approval signature.
	DocMDP int
	size   int64  // of the file
	raw    []byte // /Contents decoded, padding and all
	hex    bool   // /Contents is a hex string
}

// Unsigned returns how many bytes of the file follow the bytes s
// covers: those of the incremental updates appended after it, which it
// does not sign (0 for a signature of the whole file). It is -1 when the
// /ByteRange is not two ranges in the file ([Signature.Check] says why).
func (s *Signature) Unsigned() int64 {
	br := s.ByteRange
	if len(br) != 4 || br[2] < 0 || br[3] < 0 || br[2] > s.size || br[3] > s.size-br[2] {
		return -1
	}
	return s.size - (br[2] + br[3])
}

// Whole reports whether the signature covers the whole file but its
// /Contents; a signature of an earlier revision covers less (the bytes
// appended since are not under it).
func (s *Signature) Whole() bool {
	return len(s.ByteRange) == 4 && s.ByteRange[0] == 0 && s.Unsigned() == 0
}

// Check checks the /ByteRange of s against r, the file: four
// non-negative integers, two ranges, the first from the start of the
// file, the second after it and ending within the file; and the gap
// between them exactly the /Contents hex string, '<', the hex digits of
// /Contents, '>', and nothing else. Errors wrap [ErrByteRange].
func (s *Signature) Check(r io.ReaderAt) error {
	br := s.ByteRange
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: field %s: /ByteRange %v: %s", ErrByteRange, s.Field, br, fmt.Sprintf(format, a...))
	}
	switch {
	case len(br) != 4:
		return bad("%d numbers, not 4 (two ranges)", len(br))
	case slices.ContainsFunc(br, func(v int64) bool { return v < 0 }):
		return bad("a negative number")
	case br[0] != 0:
		return bad("the first range starts at %d, not at the start of the file", br[0])
	case br[1] > s.size || br[2] > s.size || br[3] > s.size-br[2]:
		return bad("beyond the end of the file (%d bytes)", s.size)
	case br[2] < br[1]+2:
		return bad("the second range does not start after the first and a gap for the /Contents string")
	case !s.hex:
		return bad("/Contents is not a hex string")
	case br[2]-br[1] != int64(2*len(s.raw))+2:
		return bad("the gap between the ranges has %d bytes, and the /Contents string %d", br[2]-br[1], 2*len(s.raw)+2)
	}
	// The gap, read in pieces: '<', the digits of s.raw, '>'.
	gap := io.NewSectionReader(r, br[1], br[2]-br[1])
	buf := make([]byte, 32<<10)
	var at int64
	for at < gap.Size() {
		n, err := gap.ReadAt(buf[:min(int64(len(buf)), gap.Size()-at)], at)
		if n == 0 && err != nil {
			return fmt.Errorf("%w: field %s: reading the gap: %v", ErrByteRange, s.Field, err)
		}
		for i, c := range buf[:n] {
			off := at + int64(i) // in the gap
			switch {
			case off == 0:
				if c != '<' {
					return bad("the gap does not start with '<'")
				}
			case off == gap.Size()-1:
				if c != '>' {
					return bad("the gap does not end with '>'")
				}
			default:
				v, ok := unhex(c)
				d := s.raw[(off-1)/2]
				if off%2 == 1 {
					d >>= 4
				}
				if !ok || v != d&15 {
					return bad("byte %d of the gap (offset %d) is %q, not the /Contents hex string's", off, br[1]+off, c)
				}
			}
		}
		at += int64(n)
	}
	return nil
}

// unhex is the value of a hex digit.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Digest hashes the bytes of r (the file) that s covers, after checking
// its /ByteRange ([Signature.Check]).
func (s *Signature) Digest(r io.ReaderAt, h hash.Hash) ([]byte, error) {
	if err := s.Check(r); err != nil {
		return nil, err
	}
	br := s.ByteRange
	h.Reset()
	for i := 0; i < 4; i += 2 {
		if _, err := io.Copy(h, io.NewSectionReader(r, br[i], br[i+1])); err != nil {
			return nil, err
		}
	}
	return h.Sum(nil), nil
}

// Signatures returns the signatures in the form, in the order of its
// fields.
func (d *Document) Signatures() (sigs []Signature, err error) {
	defer func() {
		if p := recover(); p != nil {
			sigs, err = nil, fmt.Errorf("%w: the PDF parser failed: %v", ErrNotPDF, p)
		}
	}()
	x := d.ctx.XRefTable
	_, form, err := d.form()
	if err != nil || form == nil {
		return nil, err
	}
	fields, err := x.DereferenceArray(form["Fields"])
	if err != nil {
		return nil, fmt.Errorf("%w: /AcroForm /Fields: %v", ErrNotPDF, err)
	}
	seen := map[int]bool{}
	var walk func(fields types.Array, parent, ft string, depth int) error
	walk = func(fields types.Array, parent, ft string, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%w: fields nested too deep", ErrNotPDF)
		}
		for _, o := range fields {
			if ref, ok := o.(types.IndirectRef); ok {
				if seen[ref.ObjectNumber.Value()] {
					continue
				}
				seen[ref.ObjectNumber.Value()] = true
			}
			f, err := x.DereferenceDict(o)
			if err != nil || f == nil {
				continue
			}
			name := parent
			if t, err := x.DereferenceStringOrHexLiteral(f["T"], model.V10, nil); err == nil && t != "" {
				if name != "" {
					name += "."
				}
				name += t
			}
			fft := ft
			if n := f.NameEntry("FT"); n != nil {
				fft = *n
			}
			if kids, err := x.DereferenceArray(f["Kids"]); err == nil && len(kids) > 0 {
				if err := walk(kids, name, fft, depth+1); err != nil {
					return err
				}
			}
			if fft != "Sig" {
				continue
			}
			v, err := x.DereferenceDict(f["V"])
			if err != nil || v == nil {
				continue // an empty signature field
			}
			s, err := d.signature(v, name)
			if err != nil {
				return err
			}
			sigs = append(sigs, s)
		}
		return nil
	}
	if err := walk(fields, "", "", 0); err != nil {
		return nil, err
	}
	return sigs, nil
}

// signature reads a signature dictionary.
func (d *Document) signature(v types.Dict, field string) (Signature, error) {
	x := d.ctx.XRefTable
	s := Signature{Field: field, size: d.size}
	if n := v.NameEntry("SubFilter"); n != nil {
		s.SubFilter = *n
	}
	br, err := x.DereferenceArray(v["ByteRange"])
	if err != nil || len(br) == 0 {
		return s, fmt.Errorf("%w: field %s: the signature has no /ByteRange", ErrNotPDF, field)
	}
	for _, o := range br {
		i, err := x.DereferenceInteger(o)
		if err != nil || i == nil {
			return s, fmt.Errorf("%w: field %s: /ByteRange holds %v", ErrNotPDF, field, o)
		}
		s.ByteRange = append(s.ByteRange, int64(i.Value()))
	}
	c, err := x.Dereference(v["Contents"])
	if err != nil {
		return s, fmt.Errorf("%w: field %s: /Contents: %v", ErrNotPDF, field, err)
	}
	switch c := c.(type) {
	case types.HexLiteral:
		s.hex = true
		s.raw, err = c.Bytes()
	case types.StringLiteral:
		s.raw, err = types.Unescape(c.Value())
	default:
		err = errors.New("not a string")
	}
	if err != nil {
		return s, fmt.Errorf("%w: field %s: /Contents: %v", ErrNotPDF, field, err)
	}
	s.Contents = s.raw
	// The CMS is followed by the placeholder's zeros: keep its DER.
	in := cryptobyte.String(s.Contents)
	var el cryptobyte.String
	if in.ReadASN1Element(&el, asn1.SEQUENCE) {
		s.Contents = el
	}
	str := func(k string) string {
		t, err := x.DereferenceStringOrHexLiteral(v[k], model.V10, nil)
		if err != nil {
			return ""
		}
		return t
	}
	s.Time, s.Name, s.Reason = str("M"), str("Name"), str("Reason")
	s.DocMDP, _ = docMDP(x, v)
	return s, nil
}

// docMDP returns the permission of the DocMDP transform in the
// signature dictionary v's /Reference (2 if /P is absent), and whether
// it has one.
func docMDP(x *model.XRefTable, v types.Dict) (int, bool) {
	refs, err := x.DereferenceArray(v["Reference"])
	if err != nil {
		return 0, false
	}
	for _, o := range refs {
		r, err := x.DereferenceDict(o)
		if err != nil || r == nil {
			continue
		}
		if m := r.NameEntry("TransformMethod"); m == nil || *m != "DocMDP" {
			continue
		}
		params, err := x.DereferenceDict(r["TransformParams"])
		if err != nil || params == nil || params["P"] == nil {
			return 2, true
		}
		p, err := x.DereferenceInteger(params["P"])
		if err != nil || p == nil || p.Value() < 1 || p.Value() > 3 {
			return -1, true // not a permission: as strict as 1
		}
		return p.Value(), true
	}
	return 0, false
}

// certification returns the DocMDP permission the file is certified
// with, from the signature that the catalog's /Perms /DocMDP names or a
// signature of the form with a DocMDP transform; 0 if it is not
// certified.
func (d *Document) certification(sigs []Signature) int {
	x := d.ctx.XRefTable
	if cat, err := x.Catalog(); err == nil {
		if perms, err := x.DereferenceDict(cat["Perms"]); err == nil && perms != nil {
			if v, err := x.DereferenceDict(perms["DocMDP"]); err == nil && v != nil {
				if p, ok := docMDP(x, v); ok {
					return p
				}
			}
		}
	}
	for _, s := range sigs {
		if s.DocMDP != 0 {
			return s.DocMDP
		}
	}
	return 0
}

// form returns the interactive form and its reference (nil if it is in
// the catalog itself); nil if there is none.
func (d *Document) form() (*types.IndirectRef, types.Dict, error) {
	x := d.ctx.XRefTable
	cat, err := x.Catalog()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: catalog: %v", ErrNotPDF, err)
	}
	o, ok := cat.Find("AcroForm")
	if !ok || o == nil {
		return nil, nil, nil
	}
	var ref *types.IndirectRef
	if r, ok := o.(types.IndirectRef); ok {
		ref = &r
	}
	form, err := x.DereferenceDict(o)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: /AcroForm: %v", ErrNotPDF, err)
	}
	return ref, form, nil
}

// Options are the options of Prepare.
type Options struct {
	// Time is the signing time for /M; zero: now.
	Time time.Time
	// Reserve is the room for the CMS in bytes; zero: DefaultReserve.
	Reserve int
}

// DefaultReserve is the room for the CMS, in bytes of DER (the
// /Contents hex string has twice as many digits): the largest CMS pscsd
// makes, an RSA-4096 signature (RSASSA-PSS, SHA-512) with the delegation
// notice and a chain of three intermediate CAs whose certificates are as
// long as qualified CAs write them, has about 12.4 KB (TestReserveFits),
// and fits with half the room to spare.
const DefaultReserve = 24576

// Update is an incremental update with a signature to be embedded.
type Update struct {
	// Tail is what to append to the file (placeholder until Embed).
	Tail []byte
	// Field is the name of the new signature field.
	Field string
	// ByteRange is the new signature's.
	ByteRange [4]int64
	base      int64 // the original file's size
	contents  int   // offset in Tail of the /Contents hex digits
	reserve   int
}

// Prepare returns the incremental update that adds a signature field and
// its signature dictionary, with room for the CMS.
func (d *Document) Prepare(o Options) (u *Update, err error) {
	defer func() {
		if p := recover(); p != nil {
			u, err = nil, fmt.Errorf("%w: the PDF parser failed: %v", ErrNotPDF, p)
		}
	}()
	if d.Encrypted() {
		return nil, errEncrypted
	}
	// The signatures already in the file: a certification that allows no
	// change, and byte ranges that are not what they should be, refuse
	// the file.
	sigs, err := d.Signatures()
	if err != nil {
		return nil, err
	}
	if p := d.certification(sigs); p == 1 || p < 0 {
		return nil, fmt.Errorf("%w: its certification signature (DocMDP, permission %s) forbids any change, "+
			"and a signature added would invalidate it", ErrCertified, permission(p))
	}
	for _, s := range sigs {
		if err := s.Check(readerAt{d.r}); err != nil {
			return nil, fmt.Errorf("the signature already in the file is malformed, and the file is not signed: %w", err)
		}
	}
	if o.Time.IsZero() {
		o.Time = time.Now()
	}
	if o.Reserve <= 0 {
		o.Reserve = DefaultReserve
	}
	x := d.ctx.XRefTable
	cat, err := x.Catalog()
	if err != nil {
		return nil, fmt.Errorf("%w: catalog: %v", ErrNotPDF, err)
	}
	pageRef, err := x.PageDictIndRef(1)
	if err != nil || pageRef == nil {
		return nil, fmt.Errorf("%w: no first page: %v", ErrNotPDF, err)
	}
	page, err := x.DereferenceDict(*pageRef)
	if err != nil || page == nil {
		return nil, fmt.Errorf("%w: the first page: %v", ErrNotPDF, err)
	}
	formRef, form, err := d.form()
	if err != nil {
		return nil, err
	}
	var fields types.Array
	if form != nil {
		if fields, err = x.DereferenceArray(form["Fields"]); err != nil {
			return nil, fmt.Errorf("%w: /AcroForm /Fields: %v", ErrNotPDF, err)
		}
	}
	// A field name the form does not have yet.
	names := map[string]bool{}
	for _, f := range fields {
		if fd, err := x.DereferenceDict(f); err == nil && fd != nil {
			if t, err := x.DereferenceStringOrHexLiteral(fd["T"], model.V10, nil); err == nil {
				names[t] = true
			}
		}
	}
	field := ""
	for i := 1; ; i++ {
		if field = "Signature" + strconv.Itoa(i); !names[field] {
			break
		}
	}

	next := *x.Size
	newObj := func() types.IndirectRef {
		r := *types.NewIndirectRef(next, 0)
		next++
		return r
	}
	sigRef, fieldRef := newObj(), newObj()

	u = &Update{Field: field, base: d.size, reserve: o.Reserve}
	var buf bytes.Buffer
	if !d.endsInEOL {
		buf.WriteByte('\n')
	}
	type entry struct {
		num, gen int
		off      int64
	}
	var entries []entry
	written := map[int]bool{}
	begin := func(r types.IndirectRef) {
		if written[r.ObjectNumber.Value()] {
			err = fmt.Errorf("%w: object %d is both %s", ErrNotPDF, r.ObjectNumber.Value(), "the first page and the catalog or the form")
		}
		written[r.ObjectNumber.Value()] = true
		entries = append(entries, entry{r.ObjectNumber.Value(), r.GenerationNumber.Value(), d.size + int64(buf.Len())})
		fmt.Fprintf(&buf, "%d %d obj\n", r.ObjectNumber.Value(), r.GenerationNumber.Value())
	}
	end := func() { buf.WriteString("\nendobj\n") }

	// The signature dictionary; /ByteRange is filled in below, in its
	// fixed width.
	begin(sigRef)
	fmt.Fprintf(&buf, "<</Type/Sig/Filter/Adobe.PPKLite/SubFilter/ETSI.CAdES.detached/M%s/ByteRange[0 ", pdfDate(o.Time))
	brAt := buf.Len()
	buf.WriteString(strings.Repeat(" ", 3*21))
	buf.WriteString("]/Contents<")
	u.contents = buf.Len()
	buf.WriteString(strings.Repeat("0", 2*o.Reserve))
	buf.WriteString(">>>")
	end()

	// The field, merged with its widget: invisible, printed, locked.
	begin(fieldRef)
	fmt.Fprintf(&buf, "<</Type/Annot/Subtype/Widget/FT/Sig/T(%s)/V %s/F 132/Rect[0 0 0 0]/P %s>>", field, sigRef.PDFString(), pageRef.PDFString())
	end()

	// The page lists the widget.
	switch a := page["Annots"].(type) {
	case types.IndirectRef:
		arr, err := x.DereferenceArray(a)
		if err != nil {
			return nil, fmt.Errorf("%w: the first page's /Annots: %v", ErrNotPDF, err)
		}
		begin(a)
		buf.WriteString(append(slices.Clone(arr), fieldRef).PDFString())
		end()
	default:
		arr, err := x.DereferenceArray(a)
		if err != nil {
			return nil, fmt.Errorf("%w: the first page's /Annots: %v", ErrNotPDF, err)
		}
		p := page.Clone().(types.Dict)
		p["Annots"] = append(slices.Clone(arr), fieldRef)
		begin(*pageRef)
		buf.WriteString(p.PDFString())
		end()
	}

	// The form lists the field; it says that the file has signatures
	// and must be updated incrementally (SigFlags 3).
	nf := types.Dict{}
	if form != nil {
		nf = form.Clone().(types.Dict)
	}
	nf["Fields"] = append(slices.Clone(fields), fieldRef)
	nf["SigFlags"] = types.Integer(3)
	if formRef != nil {
		begin(*formRef)
		buf.WriteString(nf.PDFString())
		end()
	} else {
		r := newObj()
		begin(r)
		buf.WriteString(nf.PDFString())
		end()
		c := cat.Clone().(types.Dict)
		c["AcroForm"] = r
		begin(*x.Root)
		buf.WriteString(c.PDFString())
		end()
	}

	// The cross-reference section and trailer.
	trailer := types.Dict{"Root": *x.Root, "Prev": types.Integer(d.startxref)}
	if x.Info != nil {
		trailer["Info"] = *x.Info
	}
	if len(x.ID) > 0 {
		trailer["ID"] = x.ID
	}
	if d.xrefStream {
		r := newObj()
		off := d.size + int64(buf.Len())
		entries = append(entries, entry{r.ObjectNumber.Value(), 0, off})
		w := 1
		for ; w < 8 && off>>(8*w) > 0; w++ {
		}
		slices.SortFunc(entries, func(a, b entry) int { return a.num - b.num })
		var data []byte
		for _, e := range entries {
			data = append(data, 1)
			for i := w - 1; i >= 0; i-- {
				data = append(data, byte(e.off>>(8*i)))
			}
			data = append(data, byte(e.gen>>8), byte(e.gen))
		}
		trailer["Type"] = types.Name("XRef")
		trailer["Size"] = types.Integer(next)
		trailer["W"] = types.Array{types.Integer(1), types.Integer(w), types.Integer(2)}
		trailer["Index"] = subsections(entries, func(e entry) int { return e.num })
		trailer["Length"] = types.Integer(len(data))
		begin(r)
		buf.WriteString(trailer.PDFString())
		buf.WriteString("\nstream\r\n")
		buf.Write(data)
		buf.WriteString("\r\nendstream")
		end()
		fmt.Fprintf(&buf, "startxref\n%d\n%%%%EOF\n", off)
	} else {
		off := d.size + int64(buf.Len())
		slices.SortFunc(entries, func(a, b entry) int { return a.num - b.num })
		buf.WriteString("xref\n")
		for i := 0; i < len(entries); {
			j := i + 1
			for j < len(entries) && entries[j].num == entries[j-1].num+1 {
				j++
			}
			fmt.Fprintf(&buf, "%d %d\n", entries[i].num, j-i)
			for _, e := range entries[i:j] {
				fmt.Fprintf(&buf, "%010d %05d n\r\n", e.off, e.gen)
			}
			i = j
		}
		trailer["Size"] = types.Integer(next)
		fmt.Fprintf(&buf, "trailer\n%s\nstartxref\n%d\n%%%%EOF\n", trailer.PDFString(), off)
	}
	if err != nil {
		return nil, err
	}
	u.Tail = buf.Bytes()
	// Around the string: '<' is at contents-1, '>' at contents+2*Reserve.
	after := d.size + int64(u.contents+2*o.Reserve+1)
	u.ByteRange = [4]int64{0, d.size + int64(u.contents-1), after, d.size + int64(len(u.Tail)) - after}
	br := fmt.Sprintf("%d %d %d", u.ByteRange[1], u.ByteRange[2], u.ByteRange[3])
	copy(u.Tail[brAt:], br)
	if err := d.readBack(u, sigs); err != nil {
		return nil, err
	}
	return u, nil
}

// permission names a DocMDP permission.
func permission(p int) string {
	if p < 0 {
		return "not 1, 2 or 3"
	}
	return "P=" + strconv.Itoa(p)
}

// readBack parses the file with the update appended and checks that it
// reads as the file did, with the new signature: the signatures that
// were there (field and byte range), no other but the new one with its
// byte range, and the same certification. A file whose structure the
// parser had to repair (an offset that points elsewhere, an object that
// does not end where it should, say) may read differently once updated,
// and show a signature or a certification that Prepare did not see: it
// is refused rather than signed.
func (d *Document) readBack(u *Update, before []Signature) error {
	updated := &concat{a: d.r, size: d.size, b: u.Tail}
	again, err := Read(updated)
	if err != nil {
		return fmt.Errorf("%w: the file as updated does not parse (%v): repair it first (qpdf in.pdf out.pdf)", ErrNotPDF, err)
	}
	after, err := again.Signatures()
	if err != nil {
		return fmt.Errorf("%w: the file as updated: %v", ErrNotPDF, err)
	}
	same := func(a, b Signature) bool { return a.Field == b.Field && slices.Equal(a.ByteRange, b.ByteRange) }
	differs := len(after) != len(before)+1 || again.certification(after) != d.certification(before)
	for _, s := range before {
		differs = differs || !slices.ContainsFunc(after, func(t Signature) bool { return same(s, t) })
	}
	if differs {
		return fmt.Errorf("%w: the file as updated reads differently (%d signatures before, %d after, the new one included): "+
			"repair it first (qpdf in.pdf out.pdf)", ErrNotPDF, len(before), len(after))
	}
	for _, s := range after {
		if s.Field == u.Field && slices.Equal(s.ByteRange, u.ByteRange[:]) {
			if err := s.Check(readerAt{updated}); err != nil {
				return fmt.Errorf("%w: the file as updated: %v", ErrNotPDF, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: the file as updated does not show the new signature: repair it first (qpdf in.pdf out.pdf)", ErrNotPDF)
}

// concat reads a (size bytes) followed by b.
type concat struct {
	a    io.ReadSeeker
	size int64
	b    []byte
	off  int64
}

func (c *concat) Read(p []byte) (int, error) {
	if c.off < c.size {
		if _, err := c.a.Seek(c.off, io.SeekStart); err != nil {
			return 0, err
		}
		n, err := c.a.Read(p[:min(int64(len(p)), c.size-c.off)])
		c.off += int64(n)
		if err == io.EOF && c.off < c.size {
			err = io.ErrUnexpectedEOF
		} else if err == io.EOF {
			err = nil
		}
		return n, err
	}
	i := c.off - c.size
	if i >= int64(len(c.b)) {
		return 0, io.EOF
	}
	n := copy(p, c.b[i:])
	c.off += int64(n)
	return n, nil
}

func (c *concat) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += c.off
	case io.SeekEnd:
		off += c.size + int64(len(c.b))
	}
	if off < 0 {
		return 0, errors.New("pdfsig: seek before the start")
	}
	c.off = off
	return off, nil
}

// subsections returns the /Index of sorted entries: first number and
// count of each run of consecutive numbers.
func subsections[E any](entries []E, num func(E) int) types.Array {
	var idx types.Array
	for i := 0; i < len(entries); {
		j := i + 1
		for j < len(entries) && num(entries[j]) == num(entries[j-1])+1 {
			j++
		}
		idx = append(idx, types.Integer(num(entries[i])), types.Integer(j-i))
		i = j
	}
	return idx
}

// pdfDate is t as a PDF date string (ISO 32000-1, 7.9.4), in UTC.
func pdfDate(t time.Time) string {
	return "(D:" + t.UTC().Format("20060102150405") + "+00'00')"
}

// Digest hashes what the signature will cover: original (the file the
// update was prepared for, as a stream) and the tail around the
// placeholder.
func (u *Update) Digest(h hash.Hash, original io.Reader) ([]byte, error) {
	h.Reset()
	n, err := io.Copy(h, original)
	if err != nil {
		return nil, err
	}
	if n != u.base {
		return nil, fmt.Errorf("pdfsig: the file has %d bytes, not the %d it had when read", n, u.base)
	}
	return u.Sum(h), nil
}

// Sum returns the digest of what the signature covers from h, which has
// hashed the original file and nothing else: it adds the tail around the
// placeholder.
func (u *Update) Sum(h hash.Hash) []byte {
	h.Write(u.Tail[:u.contents-1])
	h.Write(u.Tail[u.contents+2*u.reserve+1:])
	return h.Sum(nil)
}

// Embed writes the CMS into the placeholder.
func (u *Update) Embed(cms []byte) error {
	if len(cms) > u.reserve {
		return fmt.Errorf("%w: the CMS has %d bytes, the room reserved for it in the file %d: "+
			"sign again with a larger reserve (Options.Reserve)", ErrReserve, len(cms), u.reserve)
	}
	const hexdigits = "0123456789ABCDEF"
	p := u.Tail[u.contents:]
	for i, c := range cms {
		p[2*i], p[2*i+1] = hexdigits[c>>4], hexdigits[c&15]
	}
	for i := 2 * len(cms); i < 2*u.reserve; i++ {
		p[i] = '0'
	}
	return nil
}
