package backup_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/backup"
)

func sampleArchive() *backup.Archive {
	return &backup.Archive{Created: time.Now().UnixMilli(), Server: "CN=pscsd CA", LogSeq: 7, StoreVersion: 3,
		Files: []backup.File{{Name: "store", Data: []byte("pscs-store v1\n\x00\x00...")}, {Name: "audit.log", Data: []byte("log")},
			{Name: "vault/vault-key", Data: []byte("wrapped")}, {Name: "checkpoint.pem", Data: []byte("pem")}}}
}

// TestArchive: an archive reads back as written; a changed byte, an
// unknown, repeated or missing file and another format are refused.
func TestArchive(t *testing.T) {
	raw, err := sampleArchive().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	a, err := backup.ParseArchive(raw)
	if err != nil {
		t.Fatal(err)
	}
	if a.LogSeq != 7 || string(a.File("audit.log")) != "log" || a.File("vault/checkpoint.key") != nil {
		t.Fatalf("read back %+v", a)
	}
	i := bytes.Index(raw, []byte("wrapped"))
	bad := bytes.Clone(raw)
	bad[i] ^= 1
	if _, err := backup.ParseArchive(bad); !errors.Is(err, backup.ErrArchive) || !strings.Contains(err.Error(), "vault/vault-key does not match its digest") {
		t.Errorf("a changed byte: %v", err)
	}
	for name, mutate := range map[string]func(*backup.Archive){
		"unknown file":  func(a *backup.Archive) { a.Files = append(a.Files, backup.File{Name: "../etc/passwd"}) },
		"repeated file": func(a *backup.Archive) { a.Files = append(a.Files, a.Files[0]) },
		"missing store": func(a *backup.Archive) { a.Files = a.Files[1:] },
	} {
		a := sampleArchive()
		mutate(a)
		if _, err := a.Marshal(); !errors.Is(err, backup.ErrArchive) {
			t.Errorf("%s: Marshal: %v", name, err)
		}
	}
	if _, err := backup.ParseArchive([]byte("PK\x03\x04")); !errors.Is(err, backup.ErrArchive) {
		t.Errorf("a zip: %v", err)
	}
}

type owner struct {
	key  crypto.Signer
	cert *x509.Certificate
}

func pki(t testing.TB) (*server.CA, *backup.Signer, []owner) {
	ca, err := server.NewCA("pscsd CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueBackupSigner("pscsd@example")
	if err != nil {
		t.Fatal(err)
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var owners []owner
	for i, k := range []crypto.Signer{rk, ek} {
		c, err := ca.IssueClient([]string{"rsa-owner", "ec-owner"}[i], k.Public())
		if err != nil {
			t.Fatal(err)
		}
		owners = append(owners, owner{k, c})
	}
	return ca, &backup.Signer{Key: key, Certificate: cert, Chain: []*x509.Certificate{ca.Cert}}, owners
}

// TestSealOpen: a sealed backup mailed to an RSA and an EC owner opens
// with either key against pscsd's CA, and is refused with another key,
// without a key, against another CA, or signed by a certificate of
// pscsd's CA that is not for e-mail protection.
func TestSealOpen(t *testing.T) {
	ca, signer, owners := pki(t)
	raw, _ := sampleArchive().Marshal()
	env, err := backup.Seal(raw, signer, []*x509.Certificate{owners[0].cert, owners[1].cert})
	if err != nil {
		t.Fatal(err)
	}
	msg := backup.Mail("pscsd@example", "owner@example", "pscsd backup", time.Now(), env)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, o := range owners {
		got, err := backup.Open(msg, o.key, roots)
		if err != nil {
			t.Fatalf("%s: %v", o.cert.Subject, err)
		}
		if !bytes.Equal(got.Raw, raw) || !got.Signer.Equal(signer.Certificate) {
			t.Errorf("%s: opened something else", o.cert.Subject)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := backup.Open(msg, other, roots); !errors.Is(err, cms.ErrNotRecipient) {
		t.Errorf("another key: %v", err)
	}
	if _, err := backup.Open(msg, nil, roots); !errors.Is(err, backup.ErrNeedKey) {
		t.Errorf("no key: %v", err)
	}
	otherCA, _ := server.NewCA("pscsd CA")
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherCA.Cert)
	if _, err := backup.Open(msg, owners[1].key, otherRoots); !errors.Is(err, backup.ErrSignature) {
		t.Errorf("another CA: %v", err)
	}
	tlsCert, err := ca.IssueServer([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	serverSigner := &backup.Signer{Key: tlsCert.PrivateKey.(crypto.Signer), Certificate: tlsCert.Leaf}
	env, _ = backup.Seal(raw, serverSigner, []*x509.Certificate{owners[1].cert})
	if _, err := backup.Open(backup.Mail("a@b", "c@d", "x", time.Now(), env), owners[1].key, roots); !errors.Is(err, backup.ErrSignature) {
		t.Errorf("a TLS server certificate as signer: %v", err)
	}
	for name, in := range map[string][]byte{
		"plain text":  []byte("Subject: hi\r\n\r\nhello\r\n"),
		"not base64":  []byte("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n"),
		"other smime": []byte("Content-Type: application/pkcs7-mime; smime-type=certs-only\r\nContent-Transfer-Encoding: base64\r\n\r\nAA==\r\n"),
	} {
		if _, err := backup.Open(in, owners[1].key, roots); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
}

// FuzzParseArchive: ParseArchive never panics; what it accepts encodes
// again and reads back the same.
func FuzzParseArchive(f *testing.F) {
	raw, _ := sampleArchive().Marshal()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, p []byte) {
		a, err := backup.ParseArchive(p)
		if err != nil {
			return
		}
		again, err := a.Marshal()
		if err != nil {
			t.Fatalf("accepted, then Marshal: %v", err)
		}
		if _, err := backup.ParseArchive(again); err != nil {
			t.Fatalf("re-encoded, refused: %v", err)
		}
	})
}

// FuzzOpen: Open never panics on a mail, with or without a key, and what
// it accepts was signed by a backup signer of pscsd's CA (e-mail
// protection, no CA) over an archive that reads back.
func FuzzOpen(f *testing.F) {
	ca, signer, owners := pki(f)
	raw, _ := sampleArchive().Marshal()
	env, err := backup.Seal(raw, signer, []*x509.Certificate{owners[1].cert})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(backup.Mail("pscsd@example", "owner@example", "pscsd backup", time.Now(), env))
	sd, _ := signer.Sign(raw)
	f.Add([]byte("Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		encode(sd)))
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, key := range []crypto.PrivateKey{owners[1].key, nil} {
			got, err := backup.Open(msg, key, roots)
			if err != nil {
				continue
			}
			if !slices.Contains(got.Signer.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) || got.Signer.IsCA {
				t.Fatalf("accepted a signer %s without e-mail protection", got.Signer.Subject)
			}
			if _, err := backup.ParseArchive(got.Raw); err != nil {
				t.Fatalf("accepted an archive that does not read: %v", err)
			}
		}
	})
}

func encode(b []byte) string { return base64.StdEncoding.EncodeToString(b) + "\r\n" }

// TestForeignSignerSameCA: a backup signed by another certificate of
// pscsd's CA than a backup signer (an owner's client certificate, whose
// key the owner holds; the checkpoint certificate, which names no extended
// key usage, which Go otherwise takes as any; the TLS server's) is
// refused, while pscsd's own signer (the control) is accepted.
func TestForeignSignerSameCA(t *testing.T) {
	ca, signer, owners := pki(t)
	raw, _ := sampleArchive().Marshal()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	seal := func(s *backup.Signer) []byte {
		t.Helper()
		env, err := backup.Seal(raw, s, []*x509.Certificate{owners[1].cert})
		if err != nil {
			t.Fatal(err)
		}
		return backup.Mail("pscsd@example", "owner@example", "pscsd backup", time.Now(), env)
	}
	if _, err := backup.Open(seal(signer), owners[1].key, roots); err != nil {
		t.Fatalf("pscsd's own signer: %v", err)
	}
	cpKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cp, err := ca.IssueCheckpoint(cpKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	tlsCert, err := ca.IssueServer([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{ca.Cert}
	for name, s := range map[string]*backup.Signer{
		"an owner's client certificate": {Key: owners[1].key, Certificate: owners[1].cert, Chain: chain},
		"the checkpoint certificate":    {Key: cpKey, Certificate: cp, Chain: chain},
		"the TLS server certificate":    {Key: tlsCert.PrivateKey.(crypto.Signer), Certificate: tlsCert.Leaf, Chain: chain},
		"the CA itself":                 {Key: ca.Key, Certificate: ca.Cert},
	} {
		if _, err := backup.Open(seal(s), owners[1].key, roots); !errors.Is(err, backup.ErrSignature) || !strings.Contains(err.Error(), "is not pscsd's") {
			t.Errorf("signed with %s: %v", name, err)
		}
	}
}
