package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/server/backup"
	"github.com/pscs/pscs/transport"
)

// smtpd is aiosmtpd on loopback (testdata/smtpd.py), delivering to a
// maildir.
type smtpd struct {
	addr    string
	maildir string
	ca      string // the CA file that verifies its certificate
}

// startSMTPD starts the mail server, with STARTTLS required (tls) or
// without TLS, and stops it at the test's end.
func startSMTPD(t *testing.T, tls bool) *smtpd {
	return startSMTPDWith(t, tls, "0", testpki.NewCA("smtp test CA"))
}

// startSMTPDWith is startSMTPD on a given port ("0": any), with a
// certificate from ca.
func startSMTPDWith(t *testing.T, tls bool, port string, ca *testpki.CA) *smtpd {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		t.Fatalf("python3-aiosmtpd is needed (bash .ci/deps): %v\n%s", err, out)
	}
	dir := t.TempDir()
	c := ca.Issue("127.0.0.1", testpki.Options{Server: true})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	s := &smtpd{maildir: filepath.Join(dir, "maildir"), ca: filepath.Join(dir, "ca.pem")}
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Leaf.Raw}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(s.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600)
	mode := "plain"
	if tls {
		mode = "starttls"
	}
	cmd := exec.Command(py, "testdata/smtpd.py", mode, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), s.maildir, port)
	var stderr logBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	got, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("smtpd did not start: %v\n%s", err, stderr.String())
	}
	s.addr = "127.0.0.1:" + strings.TrimSpace(got)
	return s
}

// mails returns the messages delivered so far.
func (s *smtpd) mails(t *testing.T) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(s.maildir, "new"))
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(s.maildir, "new", e.Name()))
	}
	return out
}

// waitMails waits for n delivered messages.
func (s *smtpd) waitMails(t *testing.T, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if m := s.mails(t); len(m) >= n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails after 2 minutes, want %d", len(s.mails(t)), n)
		}
	}
}

// backupConfig writes a backup configuration for the demo owner.
func (s *smtpd) backupConfig(t *testing.T, interval string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup.json")
	b, _ := json.Marshal(map[string]any{"interval": interval, "retry": "200ms", "smtp": s.addr, "ca": s.ca,
		"from": "pscsd@localhost", "owners": map[string]string{demoOwner: "owner@localhost"}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// signN has the demo delegate make n signatures.
func signN(t *testing.T, state string, n int) {
	t.Helper()
	cfg, err := client.LoadConfig(filepath.Join(state, "demo", "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, 1, bytes.TrimSpace(vpin)); err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := c.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 10, Mechanism: 0x1045, Data: []byte("backup test")}); err != nil {
			t.Fatal(err)
		}
	}
}

// stateDigest is a digest of every file of the state directory but the
// TPM's own state (swtpm rewrites it when started).
func stateDigest(t *testing.T, state string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(state, p)
		if rel == "tpm" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			fmt.Fprintf(h, "dir %s\n", rel)
			return nil
		}
		b, _ := os.ReadFile(p)
		fmt.Fprintf(h, "file %s %x\n", rel, sha256.Sum256(b))
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// buildPSCS builds the client command.
func buildPSCS(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pscs")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../client/cmd/pscs").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// delegationIn returns the state (active, revoked, locked) and use count
// pscs admin list shows for delegation id.
func delegationIn(t *testing.T, list, id string) (state string, used int) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + `\t.*\t(active|revoked|locked)\tused (\d+)`).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("no delegation %s in:\n%s", id, list)
	}
	fmt.Sscan(m[2], &used)
	return m[1], used
}

// TestBackupByMail: pscs admin backup mails the backup over STARTTLS to
// aiosmtpd; openssl cms -decrypt with the owner's key and openssl smime
// -verify with pscsd's CA accept it; tampered backups (a byte changed,
// re-signed by another, the wrong owner key) are refused by pscsd restore
// and change nothing; the genuine one restores on the same swtpm into a
// pscsd whose delegations list (with the uses made after the backup kept)
// and whose log exports and verifies.
func TestBackupByMail(t *testing.T) {
	bin, pscsBin := buildPSCSD(t), buildPSCS(t)
	mail := startSMTPD(t, true)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	r := startDemo(t, bin, state, "--backup", mail.backupConfig(t, ""))
	r.log.waitFor(t, serving, 1)
	owner := filepath.Join(state, "demo", "owner")
	ownerConf, ca := filepath.Join(owner, "client.conf"), filepath.Join(owner, "ca.pem")
	pscs := pscsAs(pscsBin, ownerConf)
	signN(t, state, 3)
	list, err := pscs("admin", "list")
	if err != nil {
		t.Fatal(err)
	}
	first := regexp.MustCompile(`(?m)^(\S+)\tmayor\tto demo-delegate`).FindStringSubmatch(list)
	if first == nil {
		t.Fatalf("no demo delegation in:\n%s", list)
	}
	demoID := first[1]
	// A second delegation (of the other card, so that the delegate's
	// login on the mayor stays unambiguous), revoked after the backup: it
	// must stay revoked.
	passphrase, _ := os.ReadFile(filepath.Join(owner, "passphrase"))
	ownerEnv := append(os.Environ(), "PSCS_CONFIG="+ownerConf, "PSCS_PASSPHRASE="+strings.TrimSpace(string(passphrase)), "PSCS_PIN="+demoPIN)
	cmd := exec.Command(pscsBin, "admin", "register-pin", "-card", "ceo")
	cmd.Env = ownerEnv
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pscs admin register-pin: %v\n%s", err, out)
	}
	cmd = exec.Command(pscsBin, "admin", "delegate", "-card", "ceo", "-to", demoDelegate, "-for", "1h")
	cmd.Env = ownerEnv
	dout, err := cmd.CombinedOutput()
	second := regexp.MustCompile(`delegation (\S+)`).FindSubmatch(dout)
	if err != nil || second == nil {
		t.Fatalf("pscs admin delegate: %v\n%s", err, dout)
	}
	secondID := string(second[1])
	out, err := pscs("admin", "backup")
	if err != nil || !strings.Contains(out, "sent to owner@localhost") {
		t.Fatalf("pscs admin backup: %v\n%s", err, out)
	}
	list, err = pscs("admin", "list")
	if err != nil {
		t.Fatal(err)
	}
	_, usedAtBackup := delegationIn(t, list, demoID)
	if usedAtBackup < 3 {
		t.Fatalf("used %d after 3 signatures", usedAtBackup)
	}
	mails := mail.waitMails(t, 1)
	if len(mails) != 1 {
		t.Fatalf("%d mails for one backup", len(mails))
	}
	msg, _ := os.ReadFile(mails[0])
	if !bytes.Contains(msg, []byte("smime-type=enveloped-data")) || !bytes.Contains(msg, []byte("To: owner@localhost")) {
		t.Fatalf("the mail is not S/MIME enveloped-data to the owner:\n%.600s", msg)
	}

	// openssl: decrypt with the owner's key, verify with pscsd's CA.
	inner := filepath.Join(dir, "inner.eml")
	cmd = exec.Command("openssl", "cms", "-decrypt", "-in", mails[0], "-inkey", filepath.Join(owner, "identity.key"),
		"-recip", filepath.Join(owner, "identity.pem"), "-out", inner)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, out)
	}
	archive := filepath.Join(dir, "archive")
	cmd = exec.Command("openssl", "smime", "-verify", "-in", inner, "-CAfile", ca, "-out", archive)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Verification successful") {
		t.Fatalf("openssl smime -verify: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(archive)
	a, err := backup.ParseArchive(raw)
	if err != nil {
		t.Fatalf("what openssl verified: %v", err)
	}
	if a.File("store") == nil || a.File("audit.log") == nil || bytes.Contains(raw, []byte(demoPIN)) {
		t.Fatalf("the archive: files %d, holds the PIN in clear: %v", len(a.Files), bytes.Contains(raw, []byte(demoPIN)))
	}
	t.Logf("backup of the demo after %d signatures: archive %d bytes, mail %d bytes", usedAtBackup, len(raw), len(msg))
	if out := r.log.String(); !strings.Contains(out, "backup sent") {
		t.Errorf("pscsd did not log the backup:\n%s", out)
	}

	// Uses after the backup: the restore must not give them back.
	signN(t, state, 2)
	if out, err := pscs("admin", "revoke", secondID); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	list, _ = pscs("admin", "list")
	_, usedBefore := delegationIn(t, list, demoID)
	r.stop(t)

	restore := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"restore", "--demo", "--state", state, "-ca", ca, "-reason", "test"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Tampered backups, each refused with its reason, the state untouched.
	before := stateDigest(t, state)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	otherKeyFile := filepath.Join(dir, "other.key")
	os.WriteFile(otherKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}), 0o600)

	// One byte of a file in the archive changed, re-signed by another CA's
	// certificate (the digests fixed up: a thorough forger).
	forged, err := backup.ParseArchive(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range forged.Files {
		if forged.Files[i].Name == "store" {
			forged.Files[i].Data[len(forged.Files[i].Data)/2] ^= 1
		}
	}
	forgedRaw, err := forged.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	otherCA := testpki.NewCA("not pscsd")
	oc := otherCA.Issue("pscsd backup", testpki.Options{})
	ownerPEM, _ := os.ReadFile(filepath.Join(owner, "identity.pem"))
	blk, _ := pem.Decode(ownerPEM)
	ownerCert, _ := x509.ParseCertificate(blk.Bytes)
	env, err := backup.Seal(forgedRaw, &backup.Signer{Key: oc.PrivateKey.(*ecdsa.PrivateKey), Certificate: oc.Leaf}, []*x509.Certificate{ownerCert})
	if err != nil {
		t.Fatal(err)
	}
	resigned := filepath.Join(dir, "resigned.eml")
	os.WriteFile(resigned, backup.Mail("pscsd@localhost", "owner@localhost", "forged", time.Now(), env), 0o600)

	// One byte of the archive changed inside pscsd's signature (what
	// openssl decrypted, base64 in a signed-data entity).
	signedEntity, _ := os.ReadFile(inner)
	flipped := flipInSigned(t, signedEntity)
	flippedFile := filepath.Join(dir, "flipped.eml")
	os.WriteFile(flippedFile, flipped, 0o600)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong owner key", []string{"-key", otherKeyFile, mails[0]}, "not one of the EnvelopedData's recipients"},
		{"no key", []string{mails[0]}, "give the owner's private key"},
		{"re-signed by another", []string{"-key", filepath.Join(owner, "identity.key"), resigned}, "is not pscsd's"},
		{"a byte changed", []string{flippedFile}, "signature does not verify"},
	} {
		out, err := restore(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: restore: %v, want %q in:\n%s", tc.name, err, tc.want, out)
		}
		if after := stateDigest(t, state); after != before {
			t.Errorf("%s: a refused restore changed the state directory", tc.name)
		}
	}

	// On another TPM (a new demo directory: a new swtpm) the backup is
	// refused: its keys are sealed to the TPM that made it.
	elsewhere := filepath.Join(dir, "elsewhere")
	cmd = exec.Command(bin, "restore", "--demo", "--state", elsewhere, "-ca", ca, "-reason", "test", "-key", filepath.Join(owner, "identity.key"), mails[0])
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "does not open on this TPM") {
		t.Errorf("restore on another TPM: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "store")); err == nil {
		t.Error("a refused restore on another TPM wrote a store")
	}

	// The genuine mail restores.
	out, err = restore("-key", filepath.Join(owner, "identity.key"), mails[0])
	if err != nil || !strings.Contains(out, "restored backup sha256") || !strings.Contains(out, "carried forward from the replaced log") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	// The revocation after the backup is in the restored store too (the
	// backup's store knew nothing of it).
	if a.File("store") != nil && bytes.Contains(a.File("store"), []byte("revoked:"+secondID)) {
		t.Fatal("the backup's store already holds the revocation made after it")
	}
	if st, _ := os.ReadFile(filepath.Join(state, "store")); !bytes.Contains(st, []byte("revoked:"+secondID)) {
		t.Error("the restored store does not keep the revocation made after the backup")
	}
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	list, err = pscs("admin", "list")
	if err != nil {
		t.Fatalf("list after the restore: %v\n%s", err, list)
	}
	if st, _ := delegationIn(t, list, secondID); st != "revoked" {
		t.Errorf("the delegation revoked after the backup is %s after the restore", st)
	}
	if _, used := delegationIn(t, list, demoID); used < usedBefore {
		t.Errorf("after the restore the delegation shows %d uses; %d were made (%d at the backup): the restore gave uses back", used, usedBefore, usedAtBackup)
	}
	signN(t, state, 1) // the delegate still signs with its vPIN: the sealed PIN restored on this TPM
	export := filepath.Join(dir, "export.jsonl")
	if out, err := pscs("admin", "export", "-out", export); err != nil {
		t.Fatalf("export after the restore: %v\n%s", err, out)
	}
	if out, err := pscs("audit", "verify", "-ca", ca, export); err != nil || !strings.Contains(out, "OK: export of") {
		t.Fatalf("verify the export after the restore: %v\n%s", err, out)
	}
	exp, _ := os.ReadFile(export)
	for _, op := range []string{`"op":"restore"`, `"op":"restore:policy"`} {
		if !bytes.Contains(exp, []byte(op)) {
			t.Errorf("the log after the restore has no %s record", op)
		}
	}
	r.stop(t)

	// What openssl cms -decrypt made of the mail restores too, without the
	// owner's key; the delegation revoked after the backup stays revoked
	// across this second rollback as well.
	out, err = restore(inner)
	if err != nil || !strings.Contains(out, "restored backup sha256") {
		t.Fatalf("restore of openssl's output: %v\n%s", err, out)
	}
	r = startDemo(t, bin, state)
	r.log.waitFor(t, serving, 1)
	list, err = pscs("admin", "list")
	if err != nil {
		t.Fatalf("list after the second restore: %v\n%s", err, list)
	}
	if st, _ := delegationIn(t, list, secondID); st != "revoked" {
		t.Errorf("after the second restore the revoked delegation is %s", st)
	}
	r.stop(t)
}

// flipInSigned changes one byte of the archive inside a signed-data
// entity.
func flipInSigned(t *testing.T, entity []byte) []byte {
	t.Helper()
	head, body, ok := bytes.Cut(entity, []byte("\r\n\r\n"))
	sep := "\r\n\r\n"
	if !ok {
		head, body, _ = bytes.Cut(entity, []byte("\n\n"))
		sep = "\n\n"
	}
	der, err := decodeB64(body)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := cms.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(der, sd.Content)
	der[i+len(sd.Content)/2] ^= 1
	return append(append(head, sep...), encodeB64(der)...)
}

func decodeB64(b []byte) ([]byte, error) {
	return io.ReadAll(base64Decoder(bytes.NewReader(b)))
}

// TestBackupPeriodic: with an interval, backups come by themselves, and
// the schedule is kept in the store.
func TestBackupPeriodic(t *testing.T) {
	bin := buildPSCSD(t)
	mail := startSMTPD(t, true)
	state := filepath.Join(t.TempDir(), "state")
	r := startDemo(t, bin, state, "--backup", mail.backupConfig(t, "2s"))
	r.log.waitFor(t, serving, 1)
	mails := mail.waitMails(t, 2)
	for _, m := range mails {
		b, _ := os.ReadFile(m)
		if !bytes.Contains(b, []byte("smime-type=enveloped-data")) {
			t.Errorf("%s is not an S/MIME backup", m)
		}
	}
	r.log.waitFor(t, regexp.MustCompile(`backup sent.*by="pscsd \(periodic\)"`), 2)
	r.stop(t)

	// Started again with an interval of an hour: the next backup is an
	// hour after the last one (kept in the store), not at start.
	cfg := mail.backupConfig(t, "1h")
	r = startDemo(t, bin, state, "--backup", cfg)
	r.log.waitFor(t, serving, 1)
	m := regexp.MustCompile(`periodic backups.*next=(\S+)`).FindStringSubmatch(r.log.String())
	if m == nil {
		t.Fatalf("no schedule in the log:\n%s", r.log.String())
	}
	next, err := time.Parse(time.RFC3339, m[1])
	if err != nil || next.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("after a restart the next backup is at %s (%v): not an hour after the last", m[1], err)
	}
	r.stop(t)
}

// TestBackupNoSTARTTLS: a mail server without STARTTLS gets nothing: the
// backup fails with code 128 naming the reason, is counted in the
// metrics, and /healthz fails.
func TestBackupNoSTARTTLS(t *testing.T) {
	bin, pscsBin := buildPSCSD(t), buildPSCS(t)
	mail := startSMTPD(t, false)
	state := filepath.Join(t.TempDir(), "state")
	r := startDemo(t, bin, state, "--backup", mail.backupConfig(t, ""))
	r.log.waitFor(t, serving, 1)
	cmd := exec.Command(pscsBin, "admin", "backup")
	cmd.Env = append(os.Environ(), "PSCS_CONFIG="+filepath.Join(state, "demo", "owner", "client.conf"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not offer STARTTLS") || !strings.Contains(string(out), "128") {
		t.Fatalf("pscs admin backup without STARTTLS: %v\n%s", err, out)
	}
	if m := mail.mails(t); len(m) != 0 {
		t.Fatalf("%d mails delivered without TLS", len(m))
	}
	// The failure is retried on the schedule (after 200 ms, then 400 ms...),
	// and fails again the same way.
	r.log.waitFor(t, regexp.MustCompile(`backup failed.*by="pscsd \(periodic\)".*does not offer STARTTLS`), 2)
	if m := mail.mails(t); len(m) != 0 {
		t.Fatalf("%d mails delivered without TLS", len(m))
	}
	met := regexp.MustCompile(`metrics and health: http://([^/]+)/metrics`).FindStringSubmatch(r.log.String())
	if met == nil {
		t.Fatalf("no metrics address in:\n%s", r.log.String())
	}
	resp, err := http.Get("http://" + met[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^pscs_backup_failures_total [1-9]`).Match(body) {
		t.Errorf("no failure in the metrics:\n%s", body)
	}
	resp, err = http.Get("http://" + met[1] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(hb), "backup") {
		t.Errorf("/healthz with a failed backup: %d %s", resp.StatusCode, hb)
	}
	r.stop(t)
}

func base64Decoder(r io.Reader) io.Reader {
	return base64.NewDecoder(base64.StdEncoding, newlineFilter{r})
}

func encodeB64(b []byte) []byte {
	s := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(s) > 76 {
		out.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	out.WriteString(s + "\n")
	return out.Bytes()
}

// newlineFilter drops line ends.
type newlineFilter struct{ r io.Reader }

func (f newlineFilter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	j := 0
	for _, c := range p[:n] {
		if c != '\r' && c != '\n' {
			p[j] = c
			j++
		}
	}
	return j, err
}

// metricsOf reads pscsd's /metrics and the status of /healthz.
func metricsOf(t *testing.T, log string) (metrics string, health int) {
	t.Helper()
	m := regexp.MustCompile(`metrics and health: http://([^/]+)/metrics`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no metrics address in:\n%s", log)
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp, err = http.Get("http://" + m[1] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return string(body), resp.StatusCode
}

// TestBackupRetry: with the mail server down, a backup on demand fails
// (code 128) and /healthz says so; pscsd retries on its schedule, and the
// backup reaches the owner once the server is up, without anyone asking
// again; then the metrics count the mail and /healthz is well.
func TestBackupRetry(t *testing.T) {
	bin, pscsBin := buildPSCSD(t), buildPSCS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	ca := testpki.NewCA("smtp test CA")
	down := &smtpd{addr: "127.0.0.1:" + port, ca: filepath.Join(t.TempDir(), "ca.pem")}
	os.WriteFile(down.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600)
	state := filepath.Join(t.TempDir(), "state")
	r := startDemo(t, bin, state, "--backup", down.backupConfig(t, ""))
	r.log.waitFor(t, serving, 1)
	cmd := exec.Command(pscsBin, "admin", "backup")
	cmd.Env = append(os.Environ(), "PSCS_CONFIG="+filepath.Join(state, "demo", "owner", "client.conf"))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "128") {
		t.Fatalf("pscs admin backup with the mail server down: %v\n%s", err, out)
	}
	r.log.waitFor(t, regexp.MustCompile(`backup failed.*by="pscsd \(periodic\)"`), 1)
	if _, health := metricsOf(t, r.log.String()); health == http.StatusOK {
		t.Error("/healthz is well while backups fail")
	}
	// The mail server comes up on that port, with a certificate of the
	// configured CA: a retry delivers.
	up := startSMTPDWith(t, true, port, ca)
	if up.addr != down.addr {
		t.Fatalf("smtpd on %s, want %s", up.addr, down.addr)
	}
	up.waitMails(t, 1)
	r.log.waitFor(t, regexp.MustCompile(`backup sent.*by="pscsd \(periodic\)"`), 1)
	met, health := metricsOf(t, r.log.String())
	if !regexp.MustCompile(`(?m)^pscs_backup_sent_total 1$`).MatchString(met) || health != http.StatusOK {
		t.Errorf("after the backup was sent: health %d, metrics:\n%s", health, met)
	}
	r.stop(t)
}

// pscsAs runs the pscs command pscsBin with the client configuration conf and
// returns what it printed.
func pscsAs(pscsBin, conf string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		cmd := exec.Command(pscsBin, args...)
		cmd.Env = append(os.Environ(), "PSCS_CONFIG="+conf)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}
