package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/transport"
)

// TestDecryptPkcs11Tool: the demo delegate decrypts through pscsd with
// OpenSC's pkcs11-tool and the mayor's RSA key management key (PIV 9D,
// CKA_ID 03): messages openssl encrypted to the key's certificate with
// PKCS #1 v1.5 and OAEP (SHA-1, SHA-256) come back as they were.
func TestDecryptPkcs11Tool(t *testing.T) {
	need(t, "pkcs11-tool", "openssl")
	d := startDemo(t)
	_, pub := d.certPEM(t, "03")
	// The mechanism list says which mechanisms decrypt; the hashing
	// signature mechanisms do not.
	mechs := run(t, d.env, "pkcs11-tool", "--module", d.so, "-M")
	for _, line := range strings.Split(mechs, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), ",")
		decrypts := strings.Contains(line, "decrypt")
		switch want := name == "RSA-PKCS" || name == "RSA-PKCS-OAEP"; {
		case want && !decrypts:
			t.Errorf("pkcs11-tool -M: %s without decrypt", line)
		case !want && decrypts:
			t.Errorf("pkcs11-tool -M: %s with decrypt", line)
		}
	}
	if !strings.Contains(mechs, "RSA-PKCS-OAEP") {
		t.Errorf("pkcs11-tool -M lists no RSA-PKCS-OAEP:\n%s", mechs)
	}
	msg := []byte("the mayor's encrypted mail, read by the secretary")
	in := d.file(t, "msg", msg)
	for _, tc := range []struct {
		name string
		enc  []string // openssl pkeyutl -encrypt options
		p11  []string // pkcs11-tool --decrypt options
	}{
		{"PKCS#1 v1.5", nil, []string{"-m", "RSA-PKCS"}},
		{"OAEP SHA-1", []string{"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha1", "-pkeyopt", "rsa_mgf1_md:sha1"},
			[]string{"-m", "RSA-PKCS-OAEP", "--hash-algorithm", "SHA-1", "--mgf", "MGF1-SHA1"}},
		{"OAEP SHA-256", []string{"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"},
			[]string{"-m", "RSA-PKCS-OAEP", "--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, out := filepath.Join(d.dir, "ct"), filepath.Join(d.dir, "pt")
			os.Remove(out)
			run(t, d.env, "openssl", append([]string{"pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", in, "-out", ct}, tc.enc...)...)
			run(t, d.env, "pkcs11-tool", append([]string{"--module", d.so, "--login", "--pin", d.vpin, "--decrypt",
				"--id", "03", "-i", ct, "-o", out}, tc.p11...)...)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Errorf("pkcs11-tool --decrypt gave %q, want %q", got, msg)
			}
		})
	}
	// A v1.5 ciphertext presented as OAEP: refused by pscsd with code 118,
	// one error for every padding failure (C_Decrypt answers
	// CKR_ENCRYPTED_DATA_INVALID; pkcs11-tool then tries the multi-part
	// functions, which the module does not offer, and fails).
	ct := filepath.Join(d.dir, "ct15")
	run(t, d.env, "openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", in, "-out", ct)
	out, err := runErr(t, d.env, "pkcs11-tool", "--module", d.so, "--login", "--pin", d.vpin, "--decrypt",
		"--id", "03", "-m", "RSA-PKCS-OAEP", "--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256", "-i", ct, "-o", filepath.Join(d.dir, "x"))
	if err == nil {
		t.Errorf("a v1.5 ciphertext decrypted as OAEP:\n%s", out)
	}
	if !strings.Contains(d.output(), `msg="request refused" op=decrypt identity=demo-delegate`) ||
		!strings.Contains(d.output(), `code="decryption error"`) {
		t.Errorf("pscsd logged no decryption refused with code 118")
	}
	if strings.Contains(d.output(), string(msg)) || strings.Contains(d.output(), fmt.Sprintf("%x", msg)) {
		t.Error("the plaintext is in pscsd's log")
	}
}

// TestOpenSSLCMSDecrypt: openssl cms -decrypt, through the OpenSSL pkcs11
// engine and the module, opens a message encrypted to the certificate of
// the mayor's key management key, as a mail client would.
func TestOpenSSLCMSDecrypt(t *testing.T) {
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
`))
	env := append(append([]string{}, d.env...), "OPENSSL_CONF="+cnf)
	der := filepath.Join(d.dir, "cert03.der")
	run(t, env, "pkcs11-tool", "--module", d.so, "--read-object", "--type", "cert", "--id", "03", "-o", der)
	cert := filepath.Join(d.dir, "cert03.pem")
	run(t, env, "openssl", "x509", "-inform", "der", "-in", der, "-out", cert)
	msg := []byte("To: the mayor\r\nSubject: budget\r\n\r\nThe council meets at noon.\r\n")
	in := d.file(t, "mail", msg)
	for _, tc := range []struct {
		name string
		opts []string
	}{
		{"RSA PKCS#1 v1.5 key transport", nil},
		{"RSA-OAEP key transport", []string{"-keyopt", "rsa_padding_mode:oaep"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p7, out := filepath.Join(d.dir, "mail.p7m"), filepath.Join(d.dir, "mail.out")
			os.Remove(out)
			// The sender's openssl, without the engine (which takes over
			// RSA and refuses OAEP padding for encryption).
			run(t, d.env, "openssl", append([]string{"cms", "-encrypt", "-binary", "-aes-256-cbc", "-in", in, "-out", p7, "-recip", cert}, tc.opts...)...)
			run(t, env, "openssl", "cms", "-decrypt", "-binary", "-in", p7, "-out", out, "-recip", cert,
				"-engine", "pkcs11", "-keyform", "engine", "-inkey", "pkcs11:token=mayor;id=%03;type=private;pin-value="+d.vpin)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Errorf("openssl cms -decrypt gave %q, want %q", got, msg)
			}
		})
	}
}

// TestDerivePkcs11Tool: the demo owner delegates the CEO's card (PIV 9D
// ECC P-256) to the demo delegate, first for signatures only: pkcs11-tool
// --derive is refused (code 100, denied: CKR_FUNCTION_REJECTED) and the
// refusal is in pscsd's log; then, with "decrypt" allowed, the key
// agreement gives the secret openssl derives from the other side.
func TestDerivePkcs11Tool(t *testing.T) {
	need(t, "pkcs11-tool", "openssl")
	d := startDemo(t)
	owner := d.owner(t)
	signOnly := owner.delegate(t, "ceo", "sign")

	peer := filepath.Join(d.dir, "peer.pem")
	run(t, d.env, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", peer)
	peerPub := filepath.Join(d.dir, "peer.der")
	run(t, d.env, "openssl", "pkey", "-in", peer, "-pubout", "-outform", "der", "-out", peerPub)
	der := filepath.Join(d.dir, "ceo03.der")
	run(t, d.env, "pkcs11-tool", "--module", d.so, "--token-label", "ceo", "--read-object", "--type", "cert", "--id", "03", "-o", der)
	cardPub := filepath.Join(d.dir, "ceo03.pem")
	run(t, d.env, "openssl", "x509", "-inform", "der", "-in", der, "-pubkey", "-noout", "-out", cardPub)
	want := filepath.Join(d.dir, "want")
	run(t, d.env, "openssl", "pkeyutl", "-derive", "-inkey", peer, "-peerkey", cardPub, "-out", want)

	derive := func(vpin string) (string, error) {
		return runErr(t, d.env, "pkcs11-tool", "--module", d.so, "--token-label", "ceo", "--login", "--pin", vpin,
			"--derive", "-m", "ECDH1-DERIVE", "--id", "03", "-i", peerPub, "-o", filepath.Join(d.dir, "got"))
	}
	out, err := derive(signOnly.VPIN)
	if err == nil || !strings.Contains(out, "(0x200)") { // CKR_FUNCTION_REJECTED, which pkcs11-tool does not name
		t.Fatalf("derive under a sign-only delegation: %v\n%s", err, out)
	}
	if log := d.output(); !strings.Contains(log, `msg="request refused" op=derive identity=demo-delegate delegation=`+signOnly.ID+" code=denied") {
		t.Errorf("pscsd logged no refusal of the key agreement with code 100:\n%s", log)
	}

	owner.revoke(t, signOnly.ID)
	both := owner.delegate(t, "ceo", "sign", "decrypt")
	if out, err := derive(both.VPIN); err != nil {
		t.Fatalf("pkcs11-tool --derive: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(d.dir, "got"))
	w, _ := os.ReadFile(want)
	if len(w) != 32 || !bytes.Equal(got, w) {
		t.Errorf("the card's shared secret %x, openssl's %x", got, w)
	}
}

// ownerClient is the demo owner's administration client.
type ownerClient struct {
	c          *client.Client
	passphrase []byte
}

// owner dials pscsd as the demo owner and registers the CEO card's PIN.
func (d *demo) owner(t *testing.T) *ownerClient {
	t.Helper()
	dir := filepath.Join(d.dir, "state", "demo", "owner")
	cfg, err := client.LoadConfig(filepath.Join(dir, "client.conf"))
	if err != nil {
		t.Fatal(err)
	}
	pass, err := os.ReadFile(filepath.Join(dir, "passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	o := &ownerClient{c: c, passphrase: bytes.TrimSpace(pass)}
	secret, _ := transport.Marshal(&transport.AdminSecret{PIN: []byte("123456"), Passphrase: o.passphrase})
	if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "ceo"}, secret, nil); err != nil {
		t.Fatalf("register the CEO card's PIN: %v", err)
	}
	return o
}

// delegate delegates card to the demo delegate for ops.
func (o *ownerClient) delegate(t *testing.T, card string, ops ...string) transport.AdminResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secret, _ := transport.Marshal(&transport.AdminSecret{Passphrase: o.passphrase})
	var resp transport.AdminResponse
	if err := o.c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminDelegate,
		Delegation: &transport.AdminDelegation{Delegate: "demo-delegate", Card: card, Ops: ops}}, secret, &resp); err != nil {
		t.Fatalf("delegate %s for %v: %v", card, ops, err)
	}
	return resp
}

func (o *ownerClient) revoke(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := o.c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRevoke, ID: id}, nil, nil); err != nil {
		t.Fatalf("revoke %s: %v", id, err)
	}
}
