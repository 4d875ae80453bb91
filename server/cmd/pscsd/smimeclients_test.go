package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/server/backup"
)

// readMail reads a delivered backup mail: its To header and the
// EnvelopedData it carries.
func readMail(t *testing.T, path string) (to string, raw []byte, env *cms.Enveloped) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	body, _ := io.ReadAll(m.Body)
	der, err := decodeB64(body)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if env, err = cms.ParseEnveloped(der); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m.Header.Get("To"), raw, env
}

// TestMailForSMIMEClients: with backup.key_transport "pkcs1v15", an owner
// with an RSA key reads the backup that aiosmtpd (STARTTLS, a maildir)
// received with openssl smime alone: -decrypt with the owner's key, -verify
// against pscsd's CA. Each owner gets their own mail and envelope, naming
// no other owner; an owner whose address the mail server refuses gets an
// error of their own (answered, logged, audited) while the others get
// theirs. The archive holds no vPIN, passphrase or PIN. pscsd restore of
// that mail is refused while pscsd runs on the state (nothing touched),
// and once pscsd is stopped restores on the same swtpm a pscsd whose
// delegations serve and whose audit log exports and verifies.
func TestMailForSMIMEClients(t *testing.T) {
	bin, pscsBin := buildPSCSD(t), buildPSCS(t)
	smtp := startSMTPD(t, true)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfgFile := filepath.Join(dir, "backup.json")
	b, _ := json.Marshal(map[string]any{"retry": "1h", "smtp": smtp.addr, "ca": smtp.ca, "from": "pscsd@localhost",
		"key_transport": "pkcs1v15",
		"owners":        map[string]string{demoOwner: "owner@localhost", "rsa-owner": "rsa@localhost", "lost-owner": "lost@refused.invalid"}})
	os.WriteFile(cfgFile, b, 0o600)
	r := startDemo(t, bin, state, "--backup", cfgFile)
	r.log.waitFor(t, serving, 1)
	owner := filepath.Join(state, "demo", "owner")
	ca := filepath.Join(owner, "ca.pem")
	pscs := pscsAs(pscsBin, filepath.Join(owner, "client.conf"))
	// The RSA owner: their key, certified by pscsd's CA; the lost owner.
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(rk)
	rsaDir := filepath.Join(dir, "rsa-owner")
	os.MkdirAll(rsaDir, 0o700)
	rsaKey, rsaPub := filepath.Join(rsaDir, "rsa.key"), filepath.Join(dir, "rsa.pub")
	os.WriteFile(rsaKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(rsaPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)
	if out, err := pscs("admin", "issue", "-name", "rsa-owner", "-pubkey", rsaPub, "-out", rsaDir); err != nil {
		t.Fatalf("pscs admin issue rsa-owner: %v\n%s", err, out)
	}
	if out, err := pscs("admin", "issue", "-name", "lost-owner", "-out", filepath.Join(dir, "lost-owner")); err != nil {
		t.Fatalf("pscs admin issue lost-owner: %v\n%s", err, out)
	}
	signN(t, state, 2)

	// One backup: two mails delivered, the third owner's refusal answered.
	out, err := pscs("admin", "backup")
	if err == nil || !strings.Contains(out, "128") || !strings.Contains(out, "lost-owner <lost@refused.invalid>") ||
		!strings.Contains(out, "550") || !strings.Contains(out, "sent to 2 of 3 owners") {
		t.Fatalf("pscs admin backup with one address refused: %v\n%s", err, out)
	}
	mails := smtp.waitMails(t, 2)
	if len(mails) != 2 {
		t.Fatalf("%d mails, want 2 (one per accepted owner)", len(mails))
	}
	r.log.waitFor(t, regexp.MustCompile(`backup not delivered.*owner=lost-owner.*to=lost@refused.invalid`), 1)
	var rsaMail string
	addrs := []string{"owner@localhost", "rsa@localhost", "lost@refused.invalid"}
	for _, m := range mails {
		to, raw, env := readMail(t, m)
		if len(env.Recipients) != 1 {
			t.Errorf("the mail to %s names %d recipients, want 1", to, len(env.Recipients))
		}
		for _, a := range addrs {
			if a != to && bytes.Contains(raw, []byte(a)) {
				t.Errorf("the mail to %s names %s", to, a)
			}
		}
		switch to {
		case "rsa@localhost":
			rsaMail = m
			if env.Recipients[0].Agree || env.Recipients[0].Transport != cms.KeyTransportPKCS1v15 {
				t.Errorf("the RSA owner's mail: %+v, want PKCS #1 v1.5 key transport", env.Recipients[0])
			}
		case "owner@localhost":
			if !env.Recipients[0].Agree {
				t.Errorf("the EC owner's mail: not key agreement")
			}
		default:
			t.Errorf("a mail to %q", to)
		}
	}
	if rsaMail == "" {
		t.Fatal("no mail to the RSA owner")
	}

	// openssl smime alone: decrypt with the owner's key, verify against
	// pscsd's CA; the signer is pscsd's backup certificate.
	inner, archive, signer := filepath.Join(dir, "inner.eml"), filepath.Join(dir, "archive"), filepath.Join(dir, "signer.pem")
	cmd := exec.Command("openssl", "smime", "-decrypt", "-in", rsaMail, "-inkey", rsaKey, "-recip", filepath.Join(rsaDir, "identity.pem"), "-out", inner)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl smime -decrypt: %v\n%s", err, out)
	}
	cmd = exec.Command("openssl", "smime", "-verify", "-in", inner, "-CAfile", ca, "-purpose", "smimesign", "-signer", signer, "-out", archive)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Verification successful") {
		t.Fatalf("openssl smime -verify: %v\n%s", err, out)
	}
	if out, err := exec.Command("openssl", "x509", "-in", signer, "-noout", "-subject").CombinedOutput(); err != nil || !strings.Contains(string(out), "pscsd backup") {
		t.Errorf("the signer: %v %s", err, out)
	}
	// The wrong key (the EC owner's) opens nothing with openssl smime.
	if out, err := exec.Command("openssl", "smime", "-decrypt", "-in", rsaMail, "-inkey", filepath.Join(owner, "identity.key")).CombinedOutput(); err == nil {
		t.Errorf("openssl smime -decrypt with another owner's key succeeded:\n%.300s", out)
	}
	raw, _ := os.ReadFile(archive)
	if _, err := backup.ParseArchive(raw); err != nil {
		t.Fatalf("what openssl verified: %v", err)
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	passphrase, _ := os.ReadFile(filepath.Join(owner, "passphrase"))
	secrets := map[string][]byte{"the vPIN": bytes.TrimSpace(vpin), "the passphrase": bytes.TrimSpace(passphrase), "the PIN": []byte(demoPIN)}
	for what, s := range secrets {
		if len(s) < 6 {
			t.Fatalf("%s is %q", what, s)
		}
		if bytes.Contains(raw, s) {
			t.Errorf("the archive holds %s in clear", what)
		}
		for _, line := range strings.Split(r.log.String(), "\n") {
			if strings.Contains(line, "backup") && strings.Contains(line, string(s)) {
				t.Errorf("pscsd's log of the backup holds %s: %s", what, line)
			}
		}
	}

	restore := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"restore", "--demo", "--state", state, "-ca", ca, "-reason", "test"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// While pscsd runs on the state: refused, nothing moved, pscsd serves.
	if out, err := restore("-key", rsaKey, rsaMail); err == nil || !strings.Contains(out, "stop pscsd before restoring") {
		t.Errorf("restore while pscsd runs: %v\n%s", err, out)
	}
	if m, _ := filepath.Glob(filepath.Join(state, "replaced-*")); len(m) != 0 {
		t.Errorf("a refused restore moved files aside: %v", m)
	}
	if _, err := os.Stat(state + ".restoring"); err == nil {
		t.Error("a refused restore left its staging directory")
	}
	signN(t, state, 1)
	list, err := pscs("admin", "list")
	if err != nil {
		t.Fatal(err)
	}
	first := regexp.MustCompile(`(?m)^(\S+)\tmayor\tto demo-delegate`).FindStringSubmatch(list)
	if first == nil {
		t.Fatalf("no demo delegation in:\n%s", list)
	}
	_, usedBefore := delegationIn(t, list, first[1])
	r.stop(t)
	// The backup's record names the owner not reached and why.
	if log, _ := os.ReadFile(filepath.Join(state, "audit.log")); !regexp.MustCompile(`not sent: lost-owner <lost@refused.invalid>: [^;]*550`).Match(log) {
		t.Error("the audit log has no record of the backup not sent to lost-owner")
	}

	// Stopped: the RSA owner's mail restores with their key.
	if out, err := restore("-key", rsaKey, rsaMail); err != nil || !strings.Contains(out, "restored backup sha256") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	list, err = pscs("admin", "list")
	if err != nil {
		t.Fatalf("list after the restore: %v\n%s", err, list)
	}
	if st, used := delegationIn(t, list, first[1]); st != "active" || used < usedBefore {
		t.Errorf("after the restore the delegation is %s, used %d (%d before)", st, used, usedBefore)
	}
	signN(t, state, 1)
	export := filepath.Join(dir, "export.jsonl")
	if out, err := pscs("admin", "export", "-out", export); err != nil {
		t.Fatalf("export after the restore: %v\n%s", err, out)
	}
	if out, err := pscs("audit", "verify", "-ca", ca, export); err != nil || !strings.Contains(out, "OK: export of") {
		t.Fatalf("verify the export after the restore: %v\n%s", err, out)
	}
	if exp, _ := os.ReadFile(export); !bytes.Contains(exp, []byte(`"op":"restore"`)) {
		t.Error("the log after the restore has no restore record")
	}
	r.stop(t)
}
