package client

import (
	"context"
	"crypto"
	_ "crypto/sha256" // the document hashes
	_ "crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/transport"
)

// SignDocument asks for a document signature (a detached CAdES-BES
// SignedData) of the digest in req. vpin is nil, or the virtual PIN for a
// key that needs it with every signature. SignCAdES does the whole job.
func (c *Client) SignDocument(ctx context.Context, req *transport.SignDocumentRequest, vpin []byte) (*transport.SignDocumentResponse, error) {
	var out transport.SignDocumentResponse
	if err := c.Do(ctx, transport.OpSignDocument, req, vpin, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CAdESOptions are the options of SignCAdES.
type CAdESOptions struct {
	Slot, Key uint64      // the remote card (logged in) and the private key's handle
	Hash      crypto.Hash // SHA-256 (zero), SHA-384 or SHA-512
	PSS       bool        // RSA keys: RSASSA-PSS instead of PKCS #1 v1.5
	// Enveloping puts the document inside the signature; else it is
	// detached (the signature is a file beside the document).
	Enveloping bool
	// VPIN is the virtual PIN for a key that wants it with every
	// signature; nil otherwise.
	VPIN []byte
	// Progress, if not nil, is called as the document is read, with the
	// bytes read so far.
	Progress func(read int64)
}

// SignedDocument is a document signature.
type SignedDocument struct {
	CMS         []byte            // DER ContentInfo SignedData (a .p7m file)
	Certificate *x509.Certificate // the signing card's
	Notice      bool              // it carries the delegation notice
}

var hashMechanisms = map[crypto.Hash]uint64{crypto.SHA256: p11.CKMSHA256, crypto.SHA384: p11.CKMSHA384, crypto.SHA512: p11.CKMSHA512}

// SignCAdES signs the document doc with a key of a remote card as a
// CAdES-BES signature: it hashes doc here, reading it once as a stream
// (only the digest travels), has the server sign, checks that the answer
// signs that digest under the certificate it carries, and, for an
// enveloping signature, reads doc again into the signature, from where it
// started: doc must then be an io.Seeker too (a file); a detached
// signature takes any stream. The session must be logged in to o.Slot.
func (c *Client) SignCAdES(ctx context.Context, doc io.Reader, o CAdESOptions) (*SignedDocument, error) {
	if o.Hash == 0 {
		o.Hash = crypto.SHA256
	}
	mech, ok := hashMechanisms[o.Hash]
	if !ok {
		return nil, fmt.Errorf("client: CAdES with %v: SHA-256, SHA-384 or SHA-512", o.Hash)
	}
	var start int64
	seeker, _ := doc.(io.Seeker)
	if o.Enveloping {
		if seeker == nil {
			return nil, errors.New("client: an enveloping signature reads the document twice: give an io.ReadSeeker (a file), or sign detached")
		}
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			return nil, err
		}
	}
	h := o.Hash.New()
	if _, err := io.Copy(h, &progressReader{r: doc, progress: o.Progress}); err != nil {
		return nil, fmt.Errorf("client: reading the document: %w", err)
	}
	digest := h.Sum(nil)
	resp, err := c.SignDocument(ctx, &transport.SignDocumentRequest{Slot: o.Slot, Key: o.Key, Hash: mech, Digest: digest,
		Enveloping: o.Enveloping, PSS: o.PSS, Format: transport.FormatCAdES}, o.VPIN)
	if err != nil {
		return nil, err
	}
	sd, err := cms.Parse(resp.CMS)
	if err != nil {
		return nil, fmt.Errorf("client: the server's signature: %w", err)
	}
	s := sd.Signers[0]
	if len(sd.Signers) != 1 || s.Hash != o.Hash || s.Certificate == nil || !sd.Detached() {
		return nil, errors.New("client: the server's signature is not the one asked for")
	}
	if err := s.Verify(digest); err != nil {
		return nil, fmt.Errorf("client: the server's signature: %w", err)
	}
	out := &SignedDocument{CMS: resp.CMS, Certificate: s.Certificate, Notice: s.Notice != nil}
	if o.Enveloping {
		if _, err := seeker.Seek(start, io.SeekStart); err != nil {
			return nil, err
		}
		content, err := io.ReadAll(doc)
		if err != nil {
			return nil, fmt.Errorf("client: reading the document again: %w", err)
		}
		// Envelop checks the content against the digest signed: a
		// document that changed while it was signed is refused.
		if out.CMS, err = cms.Envelop(resp.CMS, content); err != nil {
			return nil, fmt.Errorf("client: the document changed while it was signed: %w", err)
		}
	}
	return out, nil
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.progress != nil && n > 0 {
		p.progress(p.n)
	}
	return n, err
}
