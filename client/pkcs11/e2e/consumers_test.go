package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestPkcs11Tool: OpenSC's pkcs11-tool lists the remote card, its objects,
// reads its certificates and signs with every key and mechanism kind;
// openssl verifies each signature against the certificate read from the
// token.
func TestPkcs11Tool(t *testing.T) {
	need(t, "pkcs11-tool", "openssl")
	d := startDemo(t)
	p11 := func(args ...string) string {
		return run(t, d.env, "pkcs11-tool", append([]string{"--module", d.so}, args...)...)
	}
	out := p11("-L")
	for _, want := range []string{"pscs remote card mayor", "token label        : mayor", "login required", "token initialized"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -L: no %q in\n%s", want, out)
		}
	}
	out = p11("-O")
	if c, k, p := strings.Count(out, "Certificate Object"), strings.Count(out, "Public Key Object"), strings.Count(out, "Private Key Object"); c != 4 || k != 4 || p != 0 {
		t.Errorf("pkcs11-tool -O without login: %d certificates, %d public keys, %d private keys; want 4, 4, 0\n%s", c, k, p, out)
	}
	out = p11("--login", "--pin", d.vpin, "-O")
	if p := strings.Count(out, "Private Key Object"); p != 4 {
		t.Errorf("pkcs11-tool -O with login: %d private keys, want 4\n%s", p, out)
	}
	for _, want := range []string{"EC_PARAMS:  06082a8648ce3d030107", "EC_PARAMS:  06052b81040022", "RSA 2048 bits"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -O: no %q", want)
		}
	}

	data := d.file(t, "doc.txt", []byte("a document for the remote card\n"))
	sum := sha256.Sum256([]byte("a document for the remote card\n"))
	hash := d.file(t, "doc.sha256", sum[:])
	digestInfo := d.file(t, "doc.digestinfo", append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
		0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, sum[:]...))
	_, pubP256 := d.certPEM(t, "01")
	_, pubRSA := d.certPEM(t, "02")
	certP384, pubP384 := d.certPEM(t, "04")
	if bits := certP384.PublicKey; bits == nil {
		t.Fatal("no P-384 key")
	}
	pss := []string{"-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"}
	for _, tc := range []struct {
		name   string
		sign   []string // pkcs11-tool arguments
		in     string
		verify []string // openssl arguments, then -signature SIG FILE
	}{
		{"ECDSA P-256 SHA-256", []string{"-m", "ECDSA-SHA256", "--id", "01", "--signature-format", "openssl"}, data,
			[]string{"dgst", "-sha256", "-verify", pubP256}},
		{"ECDSA P-256 over a digest", []string{"-m", "ECDSA", "--id", "01", "--signature-format", "openssl"}, hash,
			[]string{"dgst", "-sha256", "-verify", pubP256}},
		{"ECDSA P-384 SHA-384", []string{"-m", "ECDSA-SHA384", "--id", "04", "--signature-format", "openssl"}, data,
			[]string{"dgst", "-sha384", "-verify", pubP384}},
		{"RSA PKCS#1 v1.5 SHA-256", []string{"-m", "SHA256-RSA-PKCS", "--id", "02"}, data,
			[]string{"dgst", "-sha256", "-verify", pubRSA}},
		{"RSA PKCS#1 v1.5 over a DigestInfo", []string{"-m", "RSA-PKCS", "--id", "02"}, digestInfo,
			[]string{"dgst", "-sha256", "-verify", pubRSA}},
		{"RSA PSS SHA-256", []string{"-m", "SHA256-RSA-PKCS-PSS", "--id", "02"}, data,
			append([]string{"dgst", "-sha256", "-verify", pubRSA}, pss...)},
		{"RSA PSS over a digest", []string{"-m", "RSA-PKCS-PSS", "--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256", "--id", "02"}, hash,
			append([]string{"dgst", "-sha256", "-verify", pubRSA}, pss...)},
		{"RSA PSS SHA-384", []string{"-m", "SHA384-RSA-PKCS-PSS", "--id", "02"}, data,
			append([]string{"dgst", "-sha384", "-verify", pubRSA}, pss...)},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			sig := filepath.Join(d.dir, "sig")
			os.Remove(sig)
			p11(append([]string{"--login", "--pin", d.vpin, "--sign", "-i", tc.in, "-o", sig}, tc.sign...)...)
			out := run(t, d.env, "openssl", append(tc.verify, "-signature", sig, data)...)
			if !strings.Contains(out, "Verified OK") {
				t.Errorf("openssl: %s", out)
			}
		})
	}

	// A wrong virtual PIN is CKR_PIN_INCORRECT; enough of them lock the
	// delegation: CKR_PIN_LOCKED, also for the right one then.
	out, err := runErr(t, d.env, "pkcs11-tool", "--module", d.so, "--login", "--pin", "00000000", "--sign", "-m", "ECDSA-SHA256", "--id", "01", "-i", data, "-o", filepath.Join(d.dir, "x"))
	if err == nil || !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Errorf("wrong vPIN: %v\n%s", err, out)
	}
	locked := false
	for range 10 {
		out, _ = runErr(t, d.env, "pkcs11-tool", "--module", d.so, "--login", "--pin", "00000000", "-O")
		if strings.Contains(out, "CKR_PIN_LOCKED") {
			locked = true
			break
		}
	}
	if !locked {
		t.Fatalf("ten wrong vPINs did not lock the delegation:\n%s", out)
	}
	if out, err := runErr(t, d.env, "pkcs11-tool", "--module", d.so, "--login", "--pin", d.vpin, "-O"); err == nil || !strings.Contains(out, "CKR_PIN_LOCKED") {
		t.Errorf("right vPIN on a locked delegation: %v\n%s", err, out)
	}
}

// TestServerGone: with pscsd stopped, the module answers from its cached
// catalogue and a login fails with CKR_DEVICE_ERROR after PSCS_TIMEOUT,
// not a hang.
func TestServerGone(t *testing.T) {
	need(t, "pkcs11-tool")
	d := startDemo(t)
	run(t, d.env, "pkcs11-tool", "--module", d.so, "-L") // caches the catalogue
	d.stop(t)
	env := append(append([]string{}, d.env...), "PSCS_TIMEOUT=2s")
	out := run(t, env, "pkcs11-tool", "--module", d.so, "-L")
	if !strings.Contains(out, "token label        : mayor") {
		t.Errorf("-L from the cached catalogue:\n%s", out)
	}
	out, err := runErr(t, env, "pkcs11-tool", "--module", d.so, "--login", "--pin", d.vpin, "-O")
	if err == nil || !strings.Contains(out, "CKR_DEVICE_ERROR") {
		t.Errorf("login with the server gone: %v\n%s", err, out)
	}
}

// TestP11tool: GnuTLS's p11tool lists the token and its certificates and
// test-signs with an ECDSA and an RSA key.
func TestP11tool(t *testing.T) {
	need(t, "p11tool")
	d := startDemo(t)
	out := run(t, d.env, "p11tool", "--provider", d.so, "--list-tokens")
	if !strings.Contains(out, "token=mayor") || !strings.Contains(out, "Label: mayor") {
		t.Errorf("p11tool --list-tokens:\n%s", out)
	}
	out = run(t, d.env, "p11tool", "--provider", d.so, "--list-all-certs", "pkcs11:token=mayor")
	if n := strings.Count(out, "Type: X.509 Certificate"); n != 4 {
		t.Errorf("p11tool --list-all-certs: %d certificates, want 4\n%s", n, out)
	}
	env := append(append([]string{}, d.env...), "GNUTLS_PIN="+d.vpin)
	for _, id := range []string{"%01", "%02", "%04"} {
		out := run(t, env, "p11tool", "--provider", d.so, "--login", "--test-sign", "pkcs11:token=mayor;id="+id+";type=private")
		if !strings.Contains(out, "Verifying against public key in the token... ok") {
			t.Errorf("p11tool --test-sign id=%s:\n%s", id, out)
		}
	}
}

// TestOpenSSLEngine: OpenSSL signs through libengine-pkcs11-openssl with a
// pkcs11: URI, and makes a self-signed certificate with the remote key.
func TestOpenSSLEngine(t *testing.T) {
	need(t, "openssl", "pkcs11-tool")
	engine := "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"
	if m, _ := filepath.Glob("/usr/lib/*/engines-3/pkcs11.so"); len(m) > 0 {
		engine = m[0]
	}
	if _, err := os.Stat(engine); err != nil {
		t.Fatalf("no OpenSSL pkcs11 engine: %s", debianPackagesNeeded)
	}
	d := startDemo(t)
	cnf := d.file(t, "openssl.cnf", []byte(`openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = `+engine+`
MODULE_PATH = `+d.so+`
init = 0
[req]
distinguished_name = dn
[dn]
`))
	env := append(append([]string{}, d.env...), "OPENSSL_CONF="+cnf)
	sum := sha256.Sum256([]byte("engine"))
	hash := d.file(t, "hash", sum[:])
	_, pubP256 := d.certPEM(t, "01")
	_, pubRSA := d.certPEM(t, "02")
	sig := filepath.Join(d.dir, "sig")
	run(t, env, "openssl", "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign",
		"-inkey", "pkcs11:token=mayor;id=%01;type=private;pin-value="+d.vpin, "-in", hash, "-out", sig)
	if out := run(t, env, "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pubP256, "-in", hash, "-sigfile", sig); !strings.Contains(out, "Signature Verified Successfully") {
		t.Errorf("openssl pkeyutl -verify: %s", out)
	}
	// The RSA key is PIV 9C, which wants its PIN before every signature
	// (CKA_ALWAYS_AUTHENTICATE): the engine asks for it, as it would for
	// the card in a local reader, and gets the vPIN on its input.
	pinInput := d.file(t, "pin-input", []byte(d.vpin+"\n"))
	for _, k := range []struct{ id, pub string }{{"%02", pubRSA}, {"%01", pubP256}} {
		self := filepath.Join(d.dir, "self.pem")
		runIn(t, env, pinInput, "openssl", "req", "-new", "-x509", "-engine", "pkcs11", "-keyform", "engine",
			"-key", "pkcs11:token=mayor;id="+k.id+";type=private;pin-value="+d.vpin, "-subj", "/CN=pscs delegate", "-days", "1", "-out", self)
		if out := run(t, env, "openssl", "verify", "-CAfile", self, self); !strings.Contains(out, ": OK") {
			t.Errorf("the self-signed certificate of key %s does not verify: %s", k.id, out)
		}
		got := run(t, env, "openssl", "x509", "-in", self, "-pubkey", "-noout")
		want, _ := os.ReadFile(k.pub)
		if got != string(want) {
			t.Errorf("key %s: the certificate's public key is not the token's", k.id)
		}
	}
}

// TestOpenSSH: ssh-keygen -D lists the card's public keys; ssh-agent
// loads the module (ssh-add -s, vPIN through SSH_ASKPASS) and signs files
// with ssh-keygen -Y sign, which ssh-keygen -Y verify accepts, with the
// keys that need no PIN per signature.
func TestOpenSSH(t *testing.T) {
	need(t, "ssh-keygen", "ssh-agent", "ssh-add", "pkcs11-tool", "openssl")
	d := startDemo(t)
	out := run(t, d.env, "ssh-keygen", "-D", d.so)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("ssh-keygen -D: %d keys, want 4\n%s", len(lines), out)
	}
	for i, id := range []string{"01", "02", "03", "04"} {
		cert, _ := d.certPEM(t, id)
		pub, err := ssh.NewPublicKey(cert.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		want := pub.Type() + " " + base64.StdEncoding.EncodeToString(pub.Marshal())
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("ssh-keygen -D key %d: %.60s…, want the certificate's key %.60s…", i, lines[i], want)
		}
	}

	sock := filepath.Join(d.dir, "agent.sock")
	agent := background(t, d.env, "ssh-agent", "-D", "-a", sock, "-P", d.so)
	defer agent()
	askpass := d.file(t, "askpass", []byte("#!/bin/sh\necho "+d.vpin+"\n"))
	os.Chmod(askpass, 0o700)
	env := append(append([]string{}, d.env...), "SSH_AUTH_SOCK="+sock, "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	waitFor(t, sock)
	run(t, env, "ssh-add", "-s", d.so)
	doc := d.file(t, "doc", []byte("signed over ssh\n"))
	// The RSA key (PIV 9C) wants the PIN with every signature, which an
	// agent cannot ask for: OpenSSH's PKCS #11 helper makes a
	// context-specific login for such a key unless it has just logged in
	// for this very signature (ssh -I does, see TestSSHLoginPINAlways;
	// ssh-add -s logged in long before), and the helper cannot prompt, so
	// it refuses before C_Sign, as with the card in a local reader.
	pub := d.file(t, "key.pub", []byte(lines[1]+"\n"))
	if out, err := runErr(t, env, "ssh-keygen", "-Y", "sign", "-f", pub, "-n", "file", doc); err == nil {
		t.Errorf("the agent signed with the PIN-always key without its PIN:\n%s", out)
	}
	for i, line := range []string{lines[0], lines[3]} { // ECDSA P-256 (9A) and P-384 (9E)
		pub := d.file(t, "key.pub", []byte(line+"\n"))
		os.Remove(doc + ".sig")
		run(t, env, "ssh-keygen", "-Y", "sign", "-f", pub, "-n", "file", doc)
		allowed := d.file(t, "allowed", []byte("delegate "+line+"\n"))
		out := runIn(t, env, doc, "ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "delegate", "-n", "file", "-s", doc+".sig")
		if !strings.Contains(out, `Good "file" signature for delegate`) {
			t.Errorf("key %d: ssh-keygen -Y verify: %s", i, out)
		}
	}
}
