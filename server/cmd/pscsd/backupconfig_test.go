package main

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/testpki"
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
