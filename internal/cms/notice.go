package cms

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The pscs arc: 2.25.193147800637209802916633251657325533202, the OID of
// UUID 914ee9cd-a245-461a-80bf-f7211460d812 (ITU-T X.667, RFC 4122 §4.3
// name space 2.25), generated once for pscs on 2026-12-05; pscs has no
// private enterprise number. Under it: 0 the ASN.1 module
// (docs/protocol.md, "Delegation notice"), 1 the notice attribute.
const Arc = "2.25.193147800637209802916633251657325533202"

// OIDNotice is the signed attribute of the delegation notice.
var OIDNotice = MustOID(Arc + ".1")

// Notice is the delegation notice: a signature made by a delegate under
// an owner's delegation with warranty carries it as a signed attribute,
// so that whoever reads the signature knows the owner did not make it
// themselves.
//
//	DelegationNotice ::= SEQUENCE {
//	  version      INTEGER { v1(1) },
//	  delegate     SEQUENCE { subject Name, certHash OCTET STRING (SIZE(32)) },
//	  delegationId UTF8String,
//	  window       SEQUENCE { notBefore GeneralizedTime, notAfter GeneralizedTime OPTIONAL },
//	  owner        UTF8String }
type Notice struct {
	// DelegateSubject is the DER Name of the delegate's certificate
	// subject; DelegateCertHash the SHA-256 of that certificate.
	DelegateSubject  []byte
	DelegateCertHash [32]byte
	Delegation       string
	// NotBefore and NotAfter are the delegation's window; NotAfter zero:
	// open-ended.
	NotBefore, NotAfter time.Time
	Owner               string
}

// NoticeFor returns the notice of a delegation with delegate's certificate.
func NoticeFor(delegate *x509.Certificate, delegation, owner string, notBefore, notAfter time.Time) *Notice {
	return &Notice{DelegateSubject: delegate.RawSubject, DelegateCertHash: sha256.Sum256(delegate.Raw),
		Delegation: delegation, Owner: owner, NotBefore: notBefore, NotAfter: notAfter}
}

// Attribute returns the notice as a signed attribute.
func (n *Notice) Attribute() (Attribute, error) {
	if !utf8.ValidString(n.Delegation) || !utf8.ValidString(n.Owner) {
		return Attribute{}, errors.New("cms: notice: names are not UTF-8")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(n.DelegateSubject)
			b.AddASN1OctetString(n.DelegateCertHash[:])
		})
		b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(n.Delegation)) })
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1GeneralizedTime(n.NotBefore.UTC().Truncate(time.Second))
			if !n.NotAfter.IsZero() {
				b.AddASN1GeneralizedTime(n.NotAfter.UTC().Truncate(time.Second))
			}
		})
		b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(n.Owner)) })
	})
	der, err := b.Bytes()
	return Attribute{Type: OIDNotice, Value: der}, err
}

// ParseNotice reads a notice attribute's value (DER).
func ParseNotice(der []byte) (*Notice, error) {
	in := cryptobyte.String(der)
	var seq, del, subject, hash, win, id, owner cryptobyte.String
	var v int64
	bad := fmt.Errorf("%w delegation notice", ErrMalformed)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(&v) {
		return nil, bad
	}
	if v != 1 {
		return nil, fmt.Errorf("%w: delegation notice version %d (this reader knows 1)", ErrUnsupported, v)
	}
	n := &Notice{}
	if !seq.ReadASN1(&del, cbasn1.SEQUENCE) || !del.ReadASN1Element(&subject, cbasn1.SEQUENCE) ||
		!del.ReadASN1(&hash, cbasn1.OCTET_STRING) || !del.Empty() || len(hash) != 32 ||
		!seq.ReadASN1(&id, cbasn1.UTF8String) || !seq.ReadASN1(&win, cbasn1.SEQUENCE) ||
		!win.ReadASN1GeneralizedTime(&n.NotBefore) ||
		!seq.ReadASN1(&owner, cbasn1.UTF8String) || !seq.Empty() {
		return nil, bad
	}
	if !win.Empty() && (!win.ReadASN1GeneralizedTime(&n.NotAfter) || !win.Empty()) {
		return nil, bad
	}
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(subject, &rdn); err != nil || len(rest) != 0 {
		return nil, bad
	}
	if !utf8.Valid(id) || !utf8.Valid(owner) {
		return nil, bad
	}
	n.DelegateSubject = append([]byte{}, subject...)
	copy(n.DelegateCertHash[:], hash)
	n.Delegation, n.Owner = string(id), string(owner)
	return n, nil
}

// Subject returns the delegate's subject as text (RFC 2253 style).
func (n *Notice) Subject() string {
	var rdn pkix.RDNSequence
	if _, err := asn1.Unmarshal(n.DelegateSubject, &rdn); err != nil {
		return "(unreadable subject)"
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdn)
	return name.String()
}

// String says the notice in words, on several lines.
func (n *Notice) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "made by a delegate, not by the owner: delegation %q of owner %q\n", n.Delegation, n.Owner)
	fmt.Fprintf(&b, "  delegate:    %s\n", n.Subject())
	fmt.Fprintf(&b, "  certificate: SHA-256 %x\n", n.DelegateCertHash)
	until := "open-ended"
	if !n.NotAfter.IsZero() {
		until = "until " + n.NotAfter.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "  valid:       from %s, %s", n.NotBefore.UTC().Format(time.RFC3339), until)
	return b.String()
}
