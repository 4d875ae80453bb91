package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// Document signatures
//
// SignDocument makes a CAdES-BES signature (internal/cms) of a document
// whose digest the delegate sends: pscsd builds the signed attributes on
// the certificate of the card's key that takes the request (for a pool,
// whichever card is next), the card signs the hash of their DER, and the
// answer is the detached SignedData with that certificate. It takes the
// path of every signature (signWith): the policy sees the document's
// digest (the message-digest attribute), so a delegation limited to
// certain documents refuses others with CodeDocumentRefused, and the
// refusal's audit record keeps the digest as its result; the signature
// counts against the limits; a key that wants the PIN every time wants
// the vPIN beside the request. A delegation with warranty adds the
// delegation notice (cms.Notice: the delegate's certificate subject and
// hash, the delegation's ID, window and owner) to every signature, and
// refuses raw signatures (OpSign) with CodeWarrantyRaw, since they cannot
// carry it. The audit record of a document signature keeps the SignedData
// as its result.
//
// The SignedData carries the signing card's certificate and, after it,
// its chain as far as pscsd has it: the certificates of [Card].Chain
// (pscsd's cards[].chain) that issued it, each the issuer of the one
// before, up to a self-signed root, which is left out (a verifier must
// trust the root on its own). Cards keep no chain pscsd reads: PIV has no
// standard place for intermediate certificates, nor has EstEID.

// documentHashes are the digest algorithms of SignDocumentRequest.Hash.
var documentHashes = map[uint64]crypto.Hash{p11.CKMSHA256: crypto.SHA256, p11.CKMSHA384: crypto.SHA384, p11.CKMSHA512: crypto.SHA512}

// documentAlgorithm checks a request's format, hash and digest.
func documentAlgorithm(req *transport.SignDocumentRequest) (cms.Algorithm, error) {
	if req.Format != 0 && req.Format != transport.FormatCAdES && req.Format != transport.FormatPAdES {
		return cms.Algorithm{}, transport.Errorf(transport.CodeMechanism, "signature format %d not served", req.Format)
	}
	h, ok := documentHashes[req.Hash]
	if !ok {
		return cms.Algorithm{}, transport.Errorf(transport.CodeMechanism, "digest algorithm %#x: CKM_SHA256, CKM_SHA384 or CKM_SHA512", req.Hash)
	}
	if len(req.Digest) != h.Size() {
		return cms.Algorithm{}, transport.Errorf(transport.CodeMalformed, "a %v digest has %d bytes", h, h.Size())
	}
	return cms.Algorithm{Hash: h, PSS: req.PSS}, nil
}

func (s *Server) signDocument(ctx context.Context, call *transport.Call) (any, error) {
	var req transport.SignDocumentRequest
	if err := call.Decode(&req); err != nil {
		return nil, err
	}
	alg, perr := documentAlgorithm(&req)
	card, _ := s.card(req.Slot) // none: signWith refuses
	var attrs []byte            // the signed attributes of the card that signs
	var refusal string
	if req.Format == transport.FormatPAdES {
		refusal = pdfRefusal
	}
	out, err := s.signWith(ctx, call, signJob{slot: req.Slot, key: req.Key, perr: perr, docDigest: req.Digest, namesCert: true, refusal: refusal,
		fits: func(k profiles.Key) error {
			if k.NoSign {
				return transport.Errorf(transport.CodeMechanism, "key %s does not sign", k.ID)
			}
			if err := alg.Fits(k.Public); err != nil {
				return transport.Errorf(transport.CodeMechanism, "%v", err)
			}
			return nil
		},
		input: func(d policy.Delegation, k profiles.Key) ([]byte, crypto.SignerOpts, error) {
			if k.Certificate == nil {
				return nil, nil, transport.Errorf(transport.CodeNoCertificate, "key %s has no certificate", k.ID)
			}
			p := cms.Params{Hash: alg.Hash, Digest: req.Digest, SigningTime: time.Now(), Certificate: k.Certificate}
			if req.Format == transport.FormatPAdES {
				p.SigningTime = time.Time{} // PAdES-B-B: the time is the signature dictionary's /M
			}
			if d.Warranty {
				a, err := s.notice(call, d)
				if err != nil {
					return nil, nil, err
				}
				p.Extra = append(p.Extra, a)
			}
			var err error
			if attrs, err = cms.SignedAttributes(p); err != nil {
				return nil, nil, s.documentFailed("signed attributes", err)
			}
			msg, opts := alg.ToSign(k.Public, attrs)
			return msg, opts, nil
		},
		output: func(k profiles.Key, sig []byte) ([]byte, error) {
			der, err := cms.Assemble(k.Certificate, chainOf(k.Certificate, card.Chain), alg, attrs, sig)
			if err != nil {
				return nil, s.documentFailed("SignedData", err)
			}
			return der, nil
		},
	})
	if err != nil {
		return nil, err
	}
	return &transport.SignDocumentResponse{CMS: out.answer, Certificate: out.cert}, nil
}

// pdfRefusal explains the refusal of a PDF signature on a
// document-limited delegation. The policy checks the digest the CMS signs
// (message-digest); for PAdES it is the digest of the new revision's
// /ByteRange, which holds the signing time and the new objects, so no
// list of file digests holds it. A digest of the original file that the
// client sent beside it would prove nothing: the server never sees the
// PDF, so it cannot tell that the byte range extends that file.
const pdfRefusal = " (a PDF signature signs the digest of the signed revision's /ByteRange, not of the file listed: a delegation limited to documents signs them as CAdES)"

// chainOf returns the certificates of pool that lead from cert towards
// its root: cert's issuer, then that one's, as long as pool holds the next
// one and its signature checks, leaving out a self-signed root.
func chainOf(cert *x509.Certificate, pool []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for cur := cert; len(out) < len(pool); {
		i := slices.IndexFunc(pool, func(c *x509.Certificate) bool {
			return bytes.Equal(c.RawSubject, cur.RawIssuer) && cur.CheckSignatureFrom(c) == nil
		})
		if i < 0 {
			break
		}
		next := pool[i]
		if bytes.Equal(next.RawSubject, next.RawIssuer) && next.CheckSignatureFrom(next) == nil {
			break // the root
		}
		if slices.Contains(out, next) || next.Equal(cert) {
			break // a loop
		}
		out = append(out, next)
		cur = next
	}
	return out
}

// notice is the delegation notice of a signature by call's delegate
// under d.
func (s *Server) notice(call *transport.Call, d policy.Delegation) (cms.Attribute, error) {
	cert := call.Conn.Identity.Certificate
	if cert == nil {
		return cms.Attribute{}, s.documentFailed("delegation notice", errNoDelegateCertificate)
	}
	a, err := cms.NoticeFor(cert, d.ID, d.Owner, d.NotBefore, d.NotAfter).Attribute()
	if err != nil {
		return cms.Attribute{}, s.documentFailed("delegation notice", err)
	}
	return a, nil
}

var errNoDelegateCertificate = errors.New("the connection has no client certificate")

// documentFailed logs what failed in making a document signature and
// gives the wire CodeInternal.
func (s *Server) documentFailed(what string, err error) error {
	s.log.Error("document signature failed", "in", what, "err", err)
	return transport.Errorf(transport.CodeInternal, "")
}

// refuseDocument records the refusal of a document outside a delegation's
// allowed ones, with the document's digest as the record's result and in
// the log.
func (s *Server) refuseDocument(ctx context.Context, call *transport.Call, delegation string, digest []byte, err error, start time.Time) error {
	code := transport.CodeOf(err)
	s.log.Info("request refused", "op", call.Op.String(), "identity", call.Conn.Identity.ID, "delegation", delegation,
		"code", code, "digest", hex.EncodeToString(digest))
	if aerr := s.auditAs(ctx, call, call.Op.String(), delegation, code, "", digest, start, note{}); aerr != nil {
		return aerr
	}
	return err
}
