package client

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/transport"
)

// PAdESOptions are the options of SignPAdES.
type PAdESOptions struct {
	Slot, Key uint64      // the remote card (logged in) and the private key's handle
	Hash      crypto.Hash // SHA-256 (zero), SHA-384 or SHA-512
	PSS       bool        // RSA keys: RSASSA-PSS instead of PKCS #1 v1.5
	// VPIN is the virtual PIN for a key that wants it with every
	// signature; nil otherwise.
	VPIN []byte
	// Time is the signing time written in the signature dictionary (/M);
	// zero: now.
	Time time.Time
	// Reserve is the room for the CMS in the file, in bytes; zero:
	// pdfsig.DefaultReserve.
	Reserve int
	// Progress, if not nil, is called as the document is hashed, with the
	// bytes read so far.
	Progress func(read int64)
}

// SignPAdES signs the PDF file pdf with a key of a remote card as a
// PAdES-B-B signature and writes the signed file to out: the original
// followed by an incremental update that adds a signature field and its
// signature dictionary, so earlier signatures in the file stay valid.
// It parses the file, prepares the update, hashes the signature's byte
// range here (only the digest travels), has the server make the CMS
// (FormatPAdES: no signing-time attribute; the delegation notice on a
// delegation with warranty), checks that the CMS signs that digest under
// the certificate it carries, and copies the file to out, checking that
// it did not change meanwhile. Nothing is written to out on an error
// before the copy. The session must be logged in to o.Slot.
func (c *Client) SignPAdES(ctx context.Context, pdf io.ReadSeeker, out io.Writer, o PAdESOptions) (*SignedDocument, error) {
	if o.Hash == 0 {
		o.Hash = crypto.SHA256
	}
	mech, ok := hashMechanisms[o.Hash]
	if !ok {
		return nil, fmt.Errorf("client: PAdES with %v: SHA-256, SHA-384 or SHA-512", o.Hash)
	}
	doc, err := pdfsig.Read(pdf)
	if err != nil {
		return nil, err
	}
	u, err := doc.Prepare(pdfsig.Options{Time: o.Time, Reserve: o.Reserve})
	if err != nil {
		return nil, err
	}
	if _, err := pdf.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	digest, err := u.Digest(o.Hash.New(), &progressReader{r: pdf, progress: o.Progress})
	if err != nil {
		return nil, fmt.Errorf("client: reading the document: %w", err)
	}
	resp, err := c.SignDocument(ctx, &transport.SignDocumentRequest{Slot: o.Slot, Key: o.Key, Hash: mech, Digest: digest,
		PSS: o.PSS, Format: transport.FormatPAdES}, o.VPIN)
	if err != nil {
		return nil, err
	}
	sd, err := cms.Parse(resp.CMS)
	if err != nil {
		return nil, fmt.Errorf("client: the server's signature: %w", err)
	}
	s := sd.Signers[0]
	if len(sd.Signers) != 1 || s.Hash != o.Hash || s.Certificate == nil || !sd.Detached() || !s.SigningTime.IsZero() {
		return nil, errors.New("client: the server's signature is not the one asked for")
	}
	if err := s.Verify(digest); err != nil {
		return nil, fmt.Errorf("client: the server's signature: %w", err)
	}
	if err := u.Embed(resp.CMS); err != nil {
		return nil, err
	}
	// Copy the original, hashing it again: a file changed since it was
	// hashed would make a signature that does not verify.
	if _, err := pdf.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h := o.Hash.New()
	if _, err := io.Copy(io.MultiWriter(out, h), pdf); err != nil {
		return nil, err
	}
	if _, err := out.Write(u.Tail); err != nil {
		return nil, err
	}
	if !bytes.Equal(u.Sum(h), digest) {
		return nil, errors.New("client: the document changed while it was signed: the signed file written does not verify")
	}
	return &SignedDocument{CMS: resp.CMS, Certificate: s.Certificate, Notice: s.Notice != nil}, nil
}
