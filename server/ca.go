package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/pscs/pscs/server/audit"
)

// CA is pscsd's own certificate authority, for sites without a PKI: it
// certifies the server's TLS key and the keys of owners and delegates.
// Its key is kept sealed to the TPM (see pscsd).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Validity of the certificates it issues; zero: one year.
	Validity time.Duration
}

// NewCA makes a CA with a new P-256 key, valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

func serial() *big.Int {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return s
}

func (ca *CA) validity() time.Duration {
	if ca.Validity > 0 {
		return ca.Validity
	}
	return 365 * 24 * time.Hour
}

// IssueClient certifies pub as the client identity name.
func (ca *CA) IssueClient(name string, pub crypto.PublicKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(ca.validity()),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	return ca.create(tmpl, pub)
}

// IssueCheckpoint certifies pub as the key that signs the audit log's
// checkpoints (server/audit, server/anchor), so that owners can check an
// export against pscsd's CA.
func (ca *CA) IssueCheckpoint(pub crypto.PublicKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: audit.CheckpointSubject},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: ca.Cert.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment}
	return ca.create(tmpl, pub)
}

// IssueBackupSigner makes the certificate, with a new key, that signs
// pscsd's backups (server/backup): S/MIME signing (e-mail protection) for
// the address the backups come from.
func (ca *CA) IssueBackupSigner(from string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "pscsd backup"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(ca.validity()),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	if from != "" {
		tmpl.EmailAddresses = []string{from}
	}
	cert, err := ca.create(tmpl, key.Public())
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// IssueServer makes the server's TLS certificate, with a new key, for the
// given host names and addresses.
func (ca *CA) IssueServer(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "pscsd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(ca.validity()),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := ca.create(tmpl, key.Public())
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func (ca *CA) create(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("server: CA: unsupported curve %s", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.Size() < 256 {
			return nil, fmt.Errorf("server: CA: RSA keys need at least 2048 bits")
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("server: CA: unsupported key %T", pub)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
