package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
)

// TestDelegateCommands: pscs whoami and pscs sign against pscsd --demo,
// as the demo delegate; sign keeps the session ticket in the user's cache
// directory with mode 0600, and each signature verifies against the
// certificate of the card that made it.
func TestDelegateCommands(t *testing.T) {
	dir := t.TempDir()
	bin := func(name, pkg string) string {
		out := filepath.Join(dir, name)
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return out
	}
	defer func(old string) { pscs = old }(pscs) // cli runs pscs; the binary goes with dir
	pscs = bin("pscs", ".")
	pscsd := bin("pscsd", "github.com/pscs/pscs/server/cmd/pscsd")
	state := filepath.Join(dir, "state")
	cmd := exec.Command(pscsd, "--demo", "--state", state, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "pscsd demo serving on") {
				close(serving)
			}
		}
	}()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("pscsd did not stop after SIGINT")
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	select {
	case <-serving:
	case <-time.After(90 * time.Second):
		t.Fatal("pscsd --demo did not serve within 90 s")
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	cache := filepath.Join(dir, "cache")
	env := []string{"PSCS_CONFIG=" + filepath.Join(state, "demo", "client.conf"), "XDG_CACHE_HOME=" + cache,
		"PSCS_VPIN=" + strings.TrimSpace(string(vpin))}

	out, _, err := runPSCS(t, env, "whoami")
	if err != nil || !strings.Contains(out, "identity: demo-delegate") || !strings.Contains(out, "mayor") {
		t.Errorf("pscs whoami: %v\n%s", err, out)
	}
	doc := filepath.Join(dir, "doc.txt")
	os.WriteFile(doc, []byte("signed by a delegate\n"), 0o644)
	for _, tc := range []struct {
		key, mech, hash string
		pss             bool
	}{
		{"1", "ecdsa-sha256", "sha256", false},
		{"4", "rsa-sha384", "sha384", false},
		{"4", "rsa-pss-sha256", "sha256", true},
		{"10", "ecdsa-sha384", "sha384", false},
	} {
		sig, cert := filepath.Join(dir, "sig"), filepath.Join(dir, "cert.pem")
		if _, _, err := runPSCS(t, env, "sign", "-key", tc.key, "-m", tc.mech, "-in", doc, "-out", sig, "-cert", cert); err != nil {
			t.Fatalf("pscs sign -key %s -m %s: %v", tc.key, tc.mech, err)
		}
		verifyFile(t, doc, sig, cert, tc.hash, tc.pss)
	}
	tickets, _ := filepath.Glob(filepath.Join(cache, "pscs", "tickets-*"))
	if len(tickets) != 1 {
		t.Fatalf("ticket files %v, want one", tickets)
	}
	if fi, err := os.Stat(tickets[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ticket file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	if _, stderr, err := runPSCS(t, append(env, "PSCS_VPIN=0"), "sign", "-in", doc, "-out", filepath.Join(dir, "x")); err == nil || !strings.Contains(stderr, "wrong virtual PIN") {
		t.Errorf("a wrong vPIN: %v %s", err, stderr)
	}
	documentSignatures(t, dir, state, env, doc)
	pdfSignatures(t, dir, env)
}

// documentSignatures: pscs sign -cades and pscs verify against the demo,
// judged by openssl cms too; then the owner delegates the "ceo" card with
// warranty for one document (admin delegate -warranty -documents FILE),
// and the delegate's signature of it carries the notice (pscs verify says
// it in words), another document is refused (107), and a bare signature
// too (120).
func documentSignatures(t *testing.T, dir, state string, env []string, doc string) {
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, bytes.Repeat([]byte("0123456789abcdef"), 3<<16), 0o644); err != nil { // 3 MiB
		t.Fatal(err)
	}
	docBytes, _ := os.ReadFile(doc)
	bigBytes, _ := os.ReadFile(big)
	for _, tc := range []struct {
		args    []string
		in      string
		content []byte
	}{
		{[]string{"-key", "4"}, doc, nil},
		{[]string{"-key", "1", "-detached", "-hash", "sha384", "-progress", "1"}, big, bigBytes},
		{[]string{"-key", "4", "-detached", "-pss"}, doc, docBytes},
	} {
		p7m := filepath.Join(dir, "doc.p7m")
		args := append(append([]string{"sign", "-slot", "1", "-cades"}, tc.args...), "-in", tc.in, "-out", p7m)
		_, stderr, err := runPSCS(t, env, args...)
		if err != nil {
			t.Fatalf("pscs %v: %v", args, err)
		}
		if tc.in == big && !strings.Contains(stderr, "hashed "+big+": 2 of 3 MiB") {
			t.Errorf("no progress for a 3 MiB file:\n%s", stderr)
		}
		vargs := []string{"verify", "-in", p7m}
		if tc.content != nil {
			vargs = append(vargs, "-content", tc.in)
		}
		out, _, err := runPSCS(t, env, vargs...)
		if err != nil || !strings.Contains(out, "result:       valid") || !strings.Contains(out, "notice:       none") ||
			!strings.Contains(out, "signing time: ") {
			t.Errorf("pscs %v: %v\n%s", vargs, err, out)
		}
		der, _ := os.ReadFile(p7m)
		sd, err := cms.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		if out, ok := cmstest.Verify(t, der, tc.content, sd.Signers[0].Certificate); !ok {
			t.Errorf("openssl cms -verify refuses pscs %v:\n%s", args, out)
		}
		if tc.content != nil {
			if out, _, err := runPSCS(t, env, "verify", "-in", p7m, "-content", big+"x"); err == nil {
				t.Errorf("pscs verify without the document: %s", out)
			}
			other := filepath.Join(dir, "other")
			os.WriteFile(other, append(tc.content, '!'), 0o644)
			if out, _, err := runPSCS(t, env, "verify", "-in", p7m, "-content", other); err == nil || !strings.Contains(out, "INVALID") {
				t.Errorf("pscs verify with another document: %v\n%s", err, out)
			}
		}
	}

	// The owner delegates "ceo" with warranty, for doc alone.
	owner := []string{"PSCS_CONFIG=" + filepath.Join(state, "demo", "owner", "client.conf"), "PSCS_PIN=123456"}
	pass, _ := os.ReadFile(filepath.Join(state, "demo", "owner", "passphrase"))
	owner = append(owner, "PSCS_PASSPHRASE="+strings.TrimSpace(string(pass)))
	if _, _, err := runPSCS(t, owner, "admin", "register-pin", "-card", "ceo"); err != nil {
		t.Fatalf("register the ceo card's PIN: %v", err)
	}
	out, stderr, err := runPSCS(t, owner, "admin", "delegate", "-card", "ceo", "-to", "demo-delegate", "-for", "24h", "-warranty", "-documents", doc)
	sum := sha256.Sum256(docBytes)
	if err != nil || !strings.Contains(stderr, fmt.Sprintf("SHA-256 %x", sum)) {
		t.Fatalf("admin delegate -warranty -documents: %v\n%s", err, stderr)
	}
	vpin := ""
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "virtual PIN "); ok {
			vpin = v
		}
	}
	ceo := append(append([]string{}, env...), "PSCS_VPIN="+vpin)
	p7m := filepath.Join(dir, "ceo.p7m")
	if _, _, err := runPSCS(t, ceo, "sign", "-slot", "2", "-key", "1", "-cades", "-in", doc, "-out", p7m); err != nil {
		t.Fatalf("sign the allowed document under warranty: %v", err)
	}
	out, _, err = runPSCS(t, ceo, "verify", "-in", p7m)
	if err != nil || !strings.Contains(out, "made by a delegate, not by the owner: delegation") || !strings.Contains(out, `of owner "demo-owner"`) ||
		!strings.Contains(out, "delegate:    CN=demo-delegate") {
		t.Errorf("pscs verify of a signature under warranty: %v\n%s", err, out)
	}
	// Allowed by file, the document may be signed with another digest
	// algorithm than SHA-256.
	if _, stderr, err := runPSCS(t, ceo, "sign", "-slot", "2", "-key", "1", "-cades", "-hash", "sha384", "-in", doc, "-out", filepath.Join(dir, "ceo384.p7m")); err != nil {
		t.Errorf("sign the allowed document with SHA-384: %v\n%s", err, stderr)
	}
	if _, stderr, err := runPSCS(t, ceo, "sign", "-slot", "2", "-key", "1", "-cades", "-in", big, "-out", p7m); err == nil || !strings.Contains(stderr, "document not allowed") {
		t.Errorf("another document under a document-limited delegation: %v %s", err, stderr)
	}
	if _, stderr, err := runPSCS(t, ceo, "sign", "-slot", "2", "-key", "1", "-in", doc, "-out", p7m); err == nil || !strings.Contains(stderr, "(120)") {
		t.Errorf("a bare signature under warranty: %v %s", err, stderr)
	}
	// A document-limited delegation refuses PDF signatures, saying why.
	pdf := filepath.Join(dir, "ceo.pdf")
	os.WriteFile(pdf, pdfsigtest.MakePDF(t, false), 0o644)
	signedPDF := filepath.Join(dir, "ceo-signed.pdf")
	if _, stderr, err := runPSCS(t, ceo, "sign", "-slot", "2", "-key", "1", "-pades", "-in", pdf, "-out", signedPDF); err == nil ||
		!strings.Contains(stderr, "document not allowed") || !strings.Contains(stderr, "/ByteRange") {
		t.Errorf("a PDF under a document-limited delegation: %v %s", err, stderr)
	}
	if _, err := os.Stat(signedPDF); err == nil {
		t.Error("a refused PDF signature left a file")
	}
}

// pdfSignatures: pscs sign -pades on a ghostscript PDF with a cross-
// reference stream, twice (two keys); pdfsig finds both valid, by the
// certificates of the keys, and pscs verify lists and checks both; a
// changed byte makes pscs verify say INVALID.
func pdfSignatures(t *testing.T, dir string, env []string) {
	pdf := filepath.Join(dir, "doc.pdf")
	if err := os.WriteFile(pdf, pdfsigtest.MakePDF(t, true), 0o644); err != nil {
		t.Fatal(err)
	}
	once, twice := filepath.Join(dir, "doc-1.pdf"), filepath.Join(dir, "doc-2.pdf")
	if _, stderr, err := runPSCS(t, env, "sign", "-slot", "1", "-key", "4", "-pades", "-in", pdf, "-out", once); err != nil ||
		!strings.Contains(stderr, "as PAdES-B-B by") {
		t.Fatalf("pscs sign -pades: %v\n%s", err, stderr)
	}
	if _, stderr, err := runPSCS(t, env, "sign", "-slot", "1", "-key", "1", "-pades", "-hash", "sha384", "-in", once, "-out", twice); err != nil {
		t.Fatalf("pscs sign -pades of a signed PDF: %v\n%s", err, stderr)
	}
	if _, _, err := runPSCS(t, env, "sign", "-slot", "1", "-pades", "-detached", "-in", pdf, "-out", once); err == nil {
		t.Error("-pades -detached accepted")
	}
	out, _, err := runPSCS(t, env, "verify", "-in", twice)
	if err != nil || strings.Count(out, "result:       valid") != 2 || !strings.Contains(out, "signature 2:  field Signature2, ETSI.CAdES.detached") ||
		!strings.Contains(out, "covers:       an earlier revision") || !strings.Contains(out, "covers:       the whole file") {
		t.Fatalf("pscs verify of a twice-signed PDF: %v\n%s", err, out)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "signer:       "); ok {
			cn, _ := strings.CutPrefix(v, "CN=")
			cn, _, _ = strings.Cut(cn, ",")
			names = append(names, cn)
		}
	}
	b, _ := os.ReadFile(twice)
	pdfsigtest.Check(t, b, names...)
	// A byte of the first revision changed: both invalid.
	i := bytes.Index(b, []byte("/Type/Sig"))
	b[i+1] = 't'
	bad := filepath.Join(dir, "bad.pdf")
	os.WriteFile(bad, b, 0o644)
	if out, _, err := runPSCS(t, env, "verify", "-in", bad); err == nil || !strings.Contains(out, "INVALID") {
		t.Errorf("pscs verify of a changed PDF: %v\n%s", err, out)
	}
}
