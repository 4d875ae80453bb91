package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/server/store"
)

// TestConfigBackup: "backup" in the configuration file: its fields, the CA
// file relative to the file, and each refusal naming its field.
func TestConfigBackup(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA("mail CA")
	os.WriteFile(filepath.Join(dir, "mail-ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600)
	os.WriteFile(filepath.Join(dir, "empty.pem"), []byte("nothing"), 0o600)
	load := func(backup string) (*Config, error) {
		path := filepath.Join(dir, "pscsd.conf")
		if err := os.WriteFile(path, []byte(`{"state": "s", "backup": `+backup+`}`), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(path)
	}
	c, err := load(`{"interval": "24h", "smtp": "mail.example:587", "ca": "mail-ca.pem", "from": "pscsd@example",
		"owners": {"alice": "alice@example", "bob": ""}}`)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Backup
	if b.interval != 24*time.Hour || b.retry != time.Minute || b.roots == nil || b.CA != filepath.Join(dir, "mail-ca.pem") || b.maxRetry() != 24*time.Hour {
		t.Errorf("read as %+v", b)
	}
	if c, err := load(`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}}`); err != nil || c.Backup.interval != 0 || c.Backup.maxRetry() != time.Hour {
		t.Errorf("on demand only: %v", err)
	}
	if b.kt != cms.KeyTransportOAEP {
		t.Errorf("key transport by default %v, want oaep", b.kt)
	}
	if c, err := load(`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}, "key_transport": "pkcs1v15"}`); err != nil || c.Backup.kt != cms.KeyTransportPKCS1v15 {
		t.Errorf("key_transport pkcs1v15: %v", err)
	}
	if c, err := load(`null`); err != nil || c.Backup != nil {
		t.Errorf("no backup: %v", err)
	}
	for _, tc := range []struct{ json, want string }{
		{`{"interval": "daily", "smtp": "m:25", "from": "a@b", "owners": {"a": ""}}`, "backup.interval"},
		{`{"interval": "10ms", "smtp": "m:25", "from": "a@b", "owners": {"a": ""}}`, "backup.interval"},
		{`{"retry": "x", "smtp": "m:25", "from": "a@b", "owners": {"a": ""}}`, "backup.retry"},
		{`{"from": "a@b", "owners": {"a": ""}}`, "backup.smtp"},
		{`{"smtp": "m:25", "owners": {"a": ""}}`, "backup.from"},
		{`{"smtp": "m:25", "from": "a@b"}`, "backup.owners"},
		{`{"smtp": "m:25", "from": "a@b", "owners": {"a": "Alice <a@b>"}}`, "backup.owners.a"},
		{`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}, "ca": "missing.pem"}`, "backup.ca"},
		{`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}, "ca": "empty.pem"}`, "backup.ca"},
		{`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}, "cc": "x"}`, "unknown field"},
		{`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}, "key_transport": "rsa"}`, `backup.key_transport: "rsa" is neither "oaep" nor "pkcs1v15"`},
		{`{"smtp": "m:25", "from": "a@b", "owners": {"a": ""}, "key_transport": "PKCS1v15"}`, "backup.key_transport"},
	} {
		if _, err := load(tc.json); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.json, err, tc.want)
		}
	}
}

// hmacMAC is a MAC for a store in tests.
type hmacMAC []byte

func (k hmacMAC) MAC(label string, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(label))
	m.Write(data)
	return m.Sum(nil), nil
}

// TestBackupRecipients: an owner's address comes from the configuration
// or the certificate, which the owner chooses: a certificate address that
// would inject a header or a recipient is refused for that owner alone;
// an owner not enrolled too; the others are kept.
func TestBackupRecipients(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store"), hmacMAC("k"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for i, name := range []string{"good", "evil", "angle", "configured"} {
		email := map[string]string{"good": "good@example", "evil": "x@example\r\nBcc: spy@evil.example", "angle": "<a@example>"}[name]
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		if email != "" {
			tmpl.EmailAddresses = []string{email}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(store.KindIdentity, name, der); err != nil {
			t.Fatal(err)
		}
	}
	b := &backups{cfg: &BackupConfig{Owners: map[string]string{"good": "", "evil": "", "angle": "", "configured": "c@example", "absent": ""}},
		st: &state{store: st}, log: slog.New(slog.DiscardHandler)}
	rs, failures := b.recipients()
	var got []string
	for _, r := range rs {
		got = append(got, r.name+" "+r.addr)
	}
	if strings.Join(got, ",") != "configured c@example,good good@example" {
		t.Errorf("recipients %v", got)
	}
	if len(failures) != 3 || !strings.Contains(strings.Join(failures, ";"), `evil: the certificate's address "x@example\r\nBcc: spy@evil.example" is not a bare e-mail address`) {
		t.Errorf("failures %q", failures)
	}
}
