package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/pdfsig"
)

// Document signatures: pscs sign -cades, pscs sign -pades and pscs verify.

// documentHashes are the -hash values of pscs sign -cades.
var documentHashes = map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

// progress returns a function that reports on a's stderr, every step
// bytes, how much of a file of size bytes has been read; nil if the file
// is not larger than one step.
func (a *app) progress(what string, size, step int64) func(int64) {
	if step <= 0 || size <= step {
		return nil
	}
	next := step
	return func(n int64) {
		if n >= next {
			fmt.Fprintf(a.stderr, "%s: %d of %d MiB\n", what, n>>20, size>>20)
			for next <= n {
				next += step
			}
		}
	}
}

// signCAdES signs the file in with key of remote card slot as a CAdES-BES
// signature (enveloping, or detached), written to out: the file is hashed
// here, as a stream, and only its digest travels.
func (a *app) signCAdES(ctx context.Context, c *client.Client, slot, key uint64, vpin []byte, hash crypto.Hash, pss, detached bool, stepMiB int64, in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := c.Login(ctx, slot, vpin); err != nil {
		return err
	}
	sd, err := c.SignCAdES(ctx, f, client.CAdESOptions{Slot: slot, Key: key, Hash: hash, PSS: pss, Enveloping: !detached, VPIN: vpin,
		Progress: a.progress("hashed "+in, st.Size(), stepMiB<<20)})
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, sd.CMS, 0o644); err != nil {
		return err
	}
	kind := "enveloping"
	if detached {
		kind = "detached"
	}
	notice := ""
	if sd.Notice {
		notice = ", with the delegation notice"
	}
	fmt.Fprintf(a.stderr, "signed %s on remote card %d as CAdES-BES (%s%s) by %s: %d bytes to %s\n", in, slot, kind, notice,
		sd.Certificate.Subject, len(sd.CMS), out)
	return c.Logout(ctx, slot)
}

// signPAdES signs the PDF file in with key of remote card slot as a
// PAdES-B-B signature; the signed PDF goes to out, written beside it
// under a temporary name and renamed when complete, so that a failure
// leaves out (even when it is in) as it was.
func (a *app) signPAdES(ctx context.Context, c *client.Client, slot, key uint64, vpin []byte, hash crypto.Hash, pss bool, stepMiB int64, in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".pscs-pades-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing
	defer tmp.Close()
	if _, err := c.Login(ctx, slot, vpin); err != nil {
		return err
	}
	sd, err := c.SignPAdES(ctx, f, tmp, client.PAdESOptions{Slot: slot, Key: key, Hash: hash, PSS: pss, VPIN: vpin,
		Progress: a.progress("hashed "+in, st.Size(), stepMiB<<20)})
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	notice := ""
	if sd.Notice {
		notice = ", with the delegation notice"
	}
	fmt.Fprintf(a.stderr, "signed %s on remote card %d as PAdES-B-B%s by %s: %s\n", in, slot, notice, sd.Certificate.Subject, out)
	return c.Logout(ctx, slot)
}

// verify checks a CMS signature (.p7m): its signers' signatures under the
// certificates it encloses, and the content's digest; with -CAfile, each
// signer's certificate chain to those trust anchors. It shows signer,
// signing time and the delegation notice, the notice only once what
// vouches for it has been checked.
func (a *app) verify(ctx context.Context, fs *cli.Flags, args []string) error {
	in := fs.String("in", "", "the signature (.p7m: DER, or PEM)")
	content := fs.String("content", "", "the document, for a detached signature")
	out := fs.String("out", "", "write the enveloped document here")
	caFile := fs.String("CAfile", "", "trust anchors (PEM, one or more certificates): each signer's certificate must chain to one of them, "+
		"through the certificates the signature carries, for any extended key usage, checked at the signing time if the "+
		"signature has one within the certificate's validity and not in the future, else now (a PDF's: now); revocation is not checked. "+
		"Without it the signer is NOT verified against a trust anchor: the signature proves only that the enclosed certificate's key signed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("in"); err != nil {
		return err
	}
	var roots *x509.CertPool
	if *caFile != "" {
		var err error
		if roots, err = loadAnchors(*caFile); err != nil {
			return err
		}
	}
	der, err := readSignature(*in)
	if err != nil {
		return err
	}
	if bytes.HasPrefix(der, []byte("%PDF-")) {
		if *content != "" || *out != "" {
			return fs.Usagef("%s is a PDF file: its signatures are in it (no -content, no -out)", *in)
		}
		return a.verifyPDF(*in, der, roots)
	}
	if b, _ := pem.Decode(der); b != nil {
		der = b.Bytes
	}
	sd, err := cms.Parse(der)
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	kind := "enveloping"
	switch {
	case sd.Detached() && *content == "":
		return fs.Usagef("%s is a detached signature: give the document with -content FILE", *in)
	case sd.Detached():
		kind = "detached, document " + *content
	case *content != "":
		return fs.Usagef("%s holds its document: -content is for detached signatures", *in)
	}
	w := a.stdout
	fmt.Fprintf(w, "signature:    %s (%s)\n", *in, kind)
	var tally verdicts
	for i, s := range sd.Signers {
		if len(sd.Signers) > 1 {
			fmt.Fprintf(w, "signer %d:\n", i+1)
		}
		digest := s.ContentDigest(sd.Content)
		if sd.Detached() {
			if digest, err = fileDigest(*content, s.Hash); err != nil {
				return err
			}
		}
		tally.add(a.showSigner(s, s.Verify(digest), roots))
	}
	a.notChecked(roots, "openssl cms -verify -CAfile CA.pem")
	if err := tally.err(*in, len(sd.Signers)); err != nil {
		return err
	}
	if *out != "" && !sd.Detached() {
		return os.WriteFile(*out, sd.Content, 0o644)
	}
	return nil
}

// loadAnchors reads a PEM bundle of trust anchors (-CAfile).
func loadAnchors(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate (-CAfile wants trust anchors in PEM)", path)
	}
	return pool, nil
}

// verdict is what showSigner made of a signer.
type verdict int

const (
	verdictValid     verdict = iota // the signature verifies (and, with anchors, the chain)
	verdictInvalid                  // the signature does not verify
	verdictUntrusted                // the signature verifies, the chain to the anchors does not
)

// verdicts counts the verdicts of a file's signers.
type verdicts struct{ invalid, untrusted int }

func (v *verdicts) add(x verdict) {
	switch x {
	case verdictInvalid:
		v.invalid++
	case verdictUntrusted:
		v.untrusted++
	}
}

// err is the command's error for a file of n signatures: invalid ones
// first (wrapping cms.ErrBadSignature), then untrusted ones
// (cms.ErrUntrusted); nil if every one is valid.
func (v verdicts) err(in string, n int) error {
	switch {
	case v.invalid > 0 && v.untrusted > 0:
		return fmt.Errorf("%s: %d of %d signatures invalid, %d untrusted: %w", in, v.invalid, n, v.untrusted, cms.ErrBadSignature)
	case v.invalid > 0:
		return fmt.Errorf("%s: %d of %d signatures invalid: %w", in, v.invalid, n, cms.ErrBadSignature)
	case v.untrusted > 0:
		return fmt.Errorf("%s: %d of %d signatures UNTRUSTED: %w", in, v.untrusted, n, cms.ErrUntrusted)
	}
	return nil
}

// notChecked writes what verify did not check: the signer's identity
// without anchors, revocation always.
func (a *app) notChecked(roots *x509.CertPool, judge string) {
	if roots == nil {
		fmt.Fprintf(a.stdout, "not checked:  the signer's identity: NOT verified against a trust anchor (give -CAfile FILE, or %s), nor revocation\n", judge)
		return
	}
	fmt.Fprintln(a.stdout, "not checked:  revocation (CRL, OCSP)")
}

// showSigner writes what a signer is and the result of its check verr
// and, with roots, of its certificate's chain to them. The delegation
// notice is shown as what the signature says only when the signature
// verifies and, with roots, the chain does; otherwise it is withheld.
func (a *app) showSigner(s *cms.Signer, verr error, roots *x509.CertPool) verdict {
	w := a.stdout
	v := verdictValid
	if verr != nil {
		v = verdictInvalid
		fmt.Fprintf(w, "result:       INVALID: %v\n", strings.TrimPrefix(verr.Error(), "cms: "))
	} else {
		fmt.Fprintf(w, "result:       valid: the document is the one signed, and the signature verifies under the signer's certificate\n")
	}
	switch {
	case roots == nil:
		fmt.Fprintf(w, "trust:        NOT verified against a trust anchor (no -CAfile): the signature alone proves nothing about who the signer is\n")
	case v == verdictInvalid:
		fmt.Fprintf(w, "trust:        not checked: the signature is invalid\n")
	default:
		at, chains, err := s.VerifyChain(roots, time.Now())
		when := "now"
		if at.Equal(s.SigningTime) {
			when = "the signing time"
		}
		if err != nil {
			v = verdictUntrusted
			fmt.Fprintf(w, "trust:        UNTRUSTED: %v (checked at %s, %s)\n", strings.TrimPrefix(err.Error(), "cms: "), when, at.UTC().Format(time.RFC3339))
		} else {
			chain := chains[0]
			fmt.Fprintf(w, "trust:        trusted: chain of %d to the anchor %s (checked at %s, %s)\n", len(chain), chain[len(chain)-1].Subject,
				when, at.UTC().Format(time.RFC3339))
		}
	}
	fmt.Fprintf(w, "algorithm:    %v, %s\n", s.Hash, algorithmName(s.SignatureAlgorithm))
	if c := s.Certificate; c != nil {
		claimed := ""
		if v != verdictValid || roots == nil {
			claimed = " (as its certificate says: not verified)"
		}
		fmt.Fprintf(w, "signer:       %s%s\n", c.Subject, claimed)
		fmt.Fprintf(w, "issuer:       %s (serial %s)\n", c.Issuer, c.SerialNumber.Text(16))
		sum := sha256.Sum256(c.Raw)
		fmt.Fprintf(w, "certificate:  SHA-256 %x, valid %s to %s\n", sum, c.NotBefore.UTC().Format(time.DateOnly), c.NotAfter.UTC().Format(time.DateOnly))
	}
	if !s.SigningTime.IsZero() {
		claim := "as the signer says: no time-stamp"
		if s.SigningTime.After(time.Now()) {
			claim = "IN THE FUTURE: " + claim
		}
		fmt.Fprintf(w, "signing time: %s (%s)\n", s.SigningTime.UTC().Format(time.RFC3339), claim)
	}
	switch {
	case s.Notice == nil:
		fmt.Fprintf(w, "notice:       none (no delegation notice)\n")
	case v == verdictInvalid:
		fmt.Fprintf(w, "notice:       withheld: the signature is invalid, so nothing vouches for the delegation notice it holds\n")
	case v == verdictUntrusted:
		fmt.Fprintf(w, "notice:       withheld: the signer is untrusted, so nothing vouches for the delegation notice it holds\n")
	default:
		fmt.Fprintf(w, "notice:       %s\n", s.Notice)
	}
	return v
}

// verifyPDF lists the signatures of the PDF file in (its bytes b) and
// checks each: its CMS against the digest of the bytes its /ByteRange
// covers, and with roots its signer's chain (cms.Signer.VerifyChain).
func (a *app) verifyPDF(in string, b []byte, roots *x509.CertPool) error {
	doc, err := pdfsig.Read(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	sigs, err := doc.Signatures()
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%s: the PDF has no signatures", in)
	}
	w := a.stdout
	fmt.Fprintf(w, "document:     %s (PDF, %d signatures)\n", in, len(sigs))
	var tally verdicts
	for i, ps := range sigs {
		fmt.Fprintf(w, "signature %d:  field %s, %s\n", i+1, ps.Field, ps.SubFilter)
		if ps.Time != "" {
			fmt.Fprintf(w, "time (/M):    %s (as the signer's computer said)\n", ps.Time)
		}
		cover := "the whole file"
		if !ps.Whole() {
			cover = "an earlier revision (what was added after it is not under this signature)"
		}
		if len(ps.ByteRange) == 4 {
			cover = fmt.Sprintf("%s: bytes 0 to %d and %d to %d", cover, ps.ByteRange[1], ps.ByteRange[2], ps.ByteRange[2]+ps.ByteRange[3])
		}
		fmt.Fprintf(w, "covers:       %s\n", cover)
		fmt.Fprintf(w, "changed:      %s\n", changed(ps.Unsigned()))
		sd, err := cms.Parse(ps.Contents)
		if err == nil && len(sd.Signers) != 1 {
			err = fmt.Errorf("%d signers, not one", len(sd.Signers))
		}
		if err != nil {
			tally.add(verdictInvalid)
			fmt.Fprintf(w, "result:       INVALID: %v\n", strings.TrimPrefix(err.Error(), "cms: "))
			continue
		}
		s := sd.Signers[0]
		digest, verr := ps.Digest(bytes.NewReader(b), s.Hash.New())
		if verr == nil {
			verr = s.Verify(digest)
		}
		tally.add(a.showSigner(s, verr, roots))
	}
	a.notChecked(roots, "pdfsig with an NSS database")
	return tally.err(in, len(sigs))
}

// changed says whether a PDF was changed after a signature that leaves
// out its n last bytes (Signature.Unsigned).
func changed(n int64) string {
	switch {
	case n < 0:
		return "unknown (the /ByteRange is not the file around the signature)"
	case n == 0:
		return "no"
	}
	return fmt.Sprintf("YES: %d bytes were appended after this signature (incremental updates that it does not cover)", n)
}

// readSignature reads the file that pscs verify checks: a PDF larger
// than pdfsig.MaxSize is refused before it is read.
func readSignature(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	head := make([]byte, 5)
	n, _ := io.ReadFull(f, head)
	if string(head[:n]) == "%PDF-" && st.Size() > pdfsig.MaxSize {
		return nil, fmt.Errorf("%s: %w: %d bytes, more than the %d MiB that pscs reads", path, pdfsig.ErrTooLarge, st.Size(), pdfsig.MaxSize>>20)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func algorithmName(o cms.OID) string {
	names := map[string]string{
		"1.2.840.113549.1.1.1": "RSA PKCS #1 v1.5", "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
		"1.2.840.113549.1.1.12": "sha384WithRSAEncryption", "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
		"1.2.840.113549.1.1.10": "RSASSA-PSS", "1.2.840.10045.2.1": "ECDSA", "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
		"1.2.840.10045.4.3.3": "ecdsa-with-SHA384", "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
	}
	if n, ok := names[o.String()]; ok {
		return n
	}
	return o.String()
}

// fileDigest hashes a file as a stream.
func fileDigest(path string, h crypto.Hash) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := h.New()
	if _, err := io.Copy(w, f); err != nil {
		return nil, err
	}
	return w.Sum(nil), nil
}
