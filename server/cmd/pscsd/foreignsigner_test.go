package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/backup"
)

// TestForeignSignerSameCA: pscsd restore refuses a backup signed by a
// certificate of pscsd's own CA that is not a backup signer's (an owner's
// client certificate, whose key the owner holds; a certificate without
// extended key usages, as the checkpoint key's), before it touches
// anything; the same archive signed by a backup signer of that CA (the
// control) passes the signature and is refused only on this TPM.
func TestForeignSignerSameCA(t *testing.T) {
	bin := buildPSCSD(t)
	dir := t.TempDir()
	ca, err := server.NewCA("pscsd CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600)
	ownerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ownerCert, err := ca.IssueClient("owner", ownerKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(ownerKey)
	keyFile := filepath.Join(dir, "owner.key")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	cpKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cpCert, err := ca.IssueCheckpoint(cpKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	bsCert, bsKey, err := ca.IssueBackupSigner("pscsd@localhost")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := (&backup.Archive{Created: time.Now().UnixMilli(), Server: ca.Cert.Subject.String(), LogSeq: 1, StoreVersion: 1,
		Files: []backup.File{{Name: "store", Data: []byte("store")}, {Name: "audit.log", Data: []byte("log")},
			{Name: "checkpoint.pem", Data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cpCert.Raw})},
			{Name: "vault/vault-key", Data: []byte("not this TPM's")}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{ca.Cert}
	for _, tc := range []struct {
		name   string
		signer *backup.Signer
		want   string
	}{
		{"an owner's client certificate", &backup.Signer{Key: ownerKey, Certificate: ownerCert, Chain: chain}, "is not pscsd's"},
		{"a certificate without extended key usages", &backup.Signer{Key: cpKey, Certificate: cpCert, Chain: chain}, "is not pscsd's"},
		{"pscsd's backup signer (control)", &backup.Signer{Key: bsKey, Certificate: bsCert, Chain: chain}, "does not open on this TPM"},
	} {
		env, err := backup.Seal(raw, tc.signer, []*x509.Certificate{ownerCert})
		if err != nil {
			t.Fatal(err)
		}
		msg := filepath.Join(dir, "mail.eml")
		os.WriteFile(msg, backup.Mail("pscsd@localhost", "owner@localhost", "pscsd backup", time.Now(), env), 0o600)
		state := filepath.Join(dir, "state-"+strings.ReplaceAll(tc.name, " ", "-"))
		out, err := exec.Command(bin, "restore", "--demo", "--state", state, "-ca", caFile, "-key", keyFile, "-reason", "test", msg).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: restore: %v, want %q in:\n%s", tc.name, err, tc.want, out)
		}
		if _, err := os.Stat(filepath.Join(state, "store")); err == nil {
			t.Errorf("%s: a refused restore wrote a store", tc.name)
		}
	}
}
