package backup

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/pscs/pscs/internal/cms"
)

// Signer is pscsd's backup signing key and its certificate (issued by
// pscsd's CA for e-mail protection), with the CA's certificate.
type Signer struct {
	Key         crypto.Signer
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
}

// Sign returns the archive as an enveloping SignedData (DER) by s.
func (s *Signer) Sign(archive []byte) ([]byte, error) {
	d := sha256.Sum256(archive)
	attrs, err := cms.SignedAttributes(cms.Params{Hash: crypto.SHA256, Digest: d[:], SigningTime: time.Now(), Certificate: s.Certificate})
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(attrs)
	sig, err := s.Key.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("backup: signing: %w", err)
	}
	det, err := cms.Assemble(s.Certificate, s.Chain, cms.Algorithm{Hash: crypto.SHA256}, attrs, sig)
	if err != nil {
		return nil, err
	}
	return cms.Envelop(det, archive)
}

// S/MIME types (RFC 8551): the smime-type parameter of
// application/pkcs7-mime.
const (
	typeSigned    = "signed-data"
	typeEnveloped = "enveloped-data"
)

// entity is a MIME entity of type application/pkcs7-mime holding der,
// base64 in lines of 76 characters, with CRLF line ends.
func entity(smimeType string, der []byte, extra string) []byte {
	var b bytes.Buffer
	b.WriteString(extra)
	fmt.Fprintf(&b, "Content-Type: application/pkcs7-mime; smime-type=%s; name=\"smime.p7m\"\r\n", smimeType)
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	b.WriteString("Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.Bytes()
}

// Seal signs the archive with s and encrypts the signed entity to the
// recipients' certificates (RSA keys by RSA-OAEP): the enveloped-data the
// mail carries (DER).
func Seal(archive []byte, s *Signer, recipients []*x509.Certificate) ([]byte, error) {
	signed, err := s.SignedEntity(archive)
	if err != nil {
		return nil, err
	}
	return SealEntity(signed, recipients, cms.KeyTransportOAEP)
}

// SignedEntity is the archive signed by s, as the MIME entity
// (application/pkcs7-mime, signed-data) that the encryption carries: what
// openssl smime -decrypt and openssl cms -decrypt write.
func (s *Signer) SignedEntity(archive []byte) ([]byte, error) {
	sd, err := s.Sign(archive)
	if err != nil {
		return nil, err
	}
	return entity(typeSigned, sd, ""), nil
}

// SealEntity encrypts a signed entity (SignedEntity) to the recipients'
// certificates, RSA keys by kt: the enveloped-data the mail carries (DER).
// pscsd seals for each owner on their own, so that no owner's mail names
// the others.
func SealEntity(signed []byte, recipients []*x509.Certificate, kt cms.KeyTransport) ([]byte, error) {
	return cms.EncryptWith(signed, recipients, kt)
}

// Mail is the S/MIME message (RFC 5322, CRLF line ends) carrying the
// enveloped-data env from from to to.
func Mail(from, to, subject string, when time.Time, env []byte) []byte {
	var id [12]byte
	rand.Read(id[:])
	host := "pscsd"
	if _, h, ok := strings.Cut(from, "@"); ok {
		host = h
	}
	headers := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%x@%s>\r\nMIME-Version: 1.0\r\n",
		from, to, mime.QEncoding.Encode("utf-8", subject), when.Format(time.RFC1123Z), id, host)
	return entity(typeEnveloped, env, headers)
}

// Errors of Open.
var (
	// ErrNeedKey: the input is encrypted and no key was given.
	ErrNeedKey = errors.New("backup: the backup is encrypted: give the owner's private key")
	// ErrSignature: the signature is missing, does not verify, or its
	// signer's certificate is not pscsd's CA's backup certificate.
	ErrSignature = errors.New("backup: the signature does not verify")
)

// MaxInput bounds what Open reads.
const MaxInput = 2 * MaxArchive

// Opened is a verified backup.
type Opened struct {
	Archive *Archive
	Raw     []byte            // the archive's encoding
	Signer  *x509.Certificate // who signed it
	Signed  time.Time         // the signature's signing-time
}

// Open reads a backup: a mail as delivered (application/pkcs7-mime,
// enveloped-data), which key (the owner's *rsa.PrivateKey or
// *ecdsa.PrivateKey) decrypts, or the signed entity that openssl cms
// -decrypt writes from it (signed-data; no key needed). It verifies the
// signature, with a certificate for e-mail protection that chains to
// roots (pscsd's CA), and the archive's digests.
func Open(input []byte, key crypto.PrivateKey, roots *x509.CertPool) (*Opened, error) {
	if len(input) > MaxInput {
		return nil, fmt.Errorf("backup: %d bytes is too large for a backup", len(input))
	}
	smimeType, der, err := readEntity(input)
	if err != nil {
		return nil, err
	}
	if smimeType == typeEnveloped {
		if key == nil {
			return nil, ErrNeedKey
		}
		inner, err := cms.Decrypt(der, key)
		if err != nil {
			return nil, fmt.Errorf("backup: decrypting with the owner's key: %w", err)
		}
		if smimeType, der, err = readEntity(inner); err != nil {
			return nil, fmt.Errorf("backup: inside the encryption: %w", err)
		}
		if smimeType != typeSigned {
			return nil, fmt.Errorf("backup: inside the encryption, %s, not signed-data", smimeType)
		}
	}
	sd, err := cms.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if len(sd.Signers) != 1 || sd.Detached() || !sd.ContentType.Equal(cms.OIDData) {
		return nil, fmt.Errorf("%w: not one signer over enclosed data", ErrSignature)
	}
	s := sd.Signers[0]
	if err := s.Verify(s.ContentDigest(sd.Content)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	inter := x509.NewCertPool()
	for _, c := range sd.Certificates {
		inter.AddCert(c)
	}
	// Go takes a certificate without extended key usages as good for any
	// (the checkpoint key's has none): pscsd's backup signer names
	// e-mail protection, and is no CA.
	if !slices.Contains(s.Certificate.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) || s.Certificate.IsCA {
		return nil, fmt.Errorf("%w: the signer %s is not pscsd's: not a certificate for e-mail protection", ErrSignature, s.Certificate.Subject)
	}
	if _, err := s.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: s.SigningTime,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
		return nil, fmt.Errorf("%w: the signer %s is not pscsd's: %v", ErrSignature, s.Certificate.Subject, err)
	}
	a, err := ParseArchive(sd.Content)
	if err != nil {
		return nil, err
	}
	return &Opened{Archive: a, Raw: sd.Content, Signer: s.Certificate, Signed: s.SigningTime}, nil
}

// readEntity reads a MIME entity of type application/pkcs7-mime (or
// application/x-pkcs7-mime), base64: its smime-type and DER.
func readEntity(p []byte) (string, []byte, error) {
	m, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(p)))
	if err != nil {
		return "", nil, fmt.Errorf("backup: not a MIME message: %w", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		return "", nil, fmt.Errorf("backup: Content-Type: %w", err)
	}
	if mt != "application/pkcs7-mime" && mt != "application/x-pkcs7-mime" {
		return "", nil, fmt.Errorf("backup: a %s message, not application/pkcs7-mime", mt)
	}
	st := params["smime-type"]
	if st != typeSigned && st != typeEnveloped {
		return "", nil, fmt.Errorf("backup: smime-type %q, not %s or %s", st, typeSigned, typeEnveloped)
	}
	if enc := m.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(enc, "base64") {
		return "", nil, fmt.Errorf("backup: Content-Transfer-Encoding %q, not base64", enc)
	}
	body, err := io.ReadAll(io.LimitReader(m.Body, MaxInput))
	if err != nil {
		return "", nil, err
	}
	der, err := base64.StdEncoding.DecodeString(strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, string(body)))
	if err != nil {
		return "", nil, fmt.Errorf("backup: the base64 body: %w", err)
	}
	return st, der, nil
}
