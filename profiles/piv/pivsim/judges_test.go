package pivsim_test

// These tests plug the simulator into a real pcscd through vpcd and let
// software nobody on this project wrote judge it: OpenSC (pkcs11-tool,
// opensc-tool), OpenSSL and yubico-piv-tool.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/simkit/simkittest"
)

var env *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 4}, func(p *pcscdtest.PCSCD) { env = p })
}

const openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// OpenSC ids of the PIV key slots.
var openscID = map[pivsim.Slot]string{
	pivsim.SlotAuthentication:     "01",
	pivsim.SlotSignature:          "02",
	pivsim.SlotKeyManagement:      "03",
	pivsim.SlotCardAuthentication: "04",
}

// judge is a card plugged into one reader of the private pcscd, and the
// environment for the tools that look at it.
type judge struct {
	t      *testing.T
	card   *pivsim.Card
	reader int
	dir    string
	env    []string
}

func plug(t *testing.T, reader int) *judge {
	t.Helper()
	if env == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	for _, tool := range []string{"pkcs11-tool", "opensc-tool", "openssl", "yubico-piv-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	card, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "opensc.conf")
	// No file caching: every simulated card would share the cache. Enough
	// virtual slots for every reader (the default, 16 at 4 per card, covers
	// only the first four).
	os.WriteFile(conf, []byte("app default {\n framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"+
		"app opensc-pkcs11 {\n pkcs11 {\n  max_virtual_slots = 64;\n }\n}\n"), 0o644)
	j := &judge{t: t, card: card, reader: reader, dir: dir,
		env: append(os.Environ(), "OPENSC_CONF="+conf)}

	simkittest.Plug(t, env, reader, card)
	return j
}

// run runs a tool and returns its combined output; a failure is fatal unless
// wantFail.
func (j *judge) run(wantFail bool, name string, args ...string) string {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = j.env
	cmd.Dir = j.dir
	out, err := cmd.CombinedOutput()
	j.t.Logf("$ %s %s\n%s", name, strings.Join(args, " "), out)
	if err != nil && !wantFail {
		j.t.Fatalf("%s: %v", name, err)
	}
	if err == nil && wantFail {
		j.t.Fatalf("%s succeeded, want failure", name)
	}
	return string(out)
}

func (j *judge) p11(args ...string) string {
	return j.run(false, "pkcs11-tool", append([]string{"--module", openscModule}, args...)...)
}

func (j *judge) p11Fail(args ...string) string {
	return j.run(true, "pkcs11-tool", append([]string{"--module", openscModule}, args...)...)
}

func (j *judge) path(name string) string { return filepath.Join(j.dir, name) }

func TestOpenSCReadsObjects(t *testing.T) {
	j := plug(t, 0)
	out := j.p11("-L")
	if !strings.Contains(out, "token initialized") && !strings.Contains(out, "PIN initialized") {
		t.Errorf("pkcs11-tool -L shows no initialised token")
	}
	objs := j.p11("-O")
	for slot, id := range openscID {
		if !strings.Contains(objs, "ID:         "+id) {
			t.Errorf("object list lacks ID %s (slot %02X)", id, byte(slot))
		}
	}
	if n := strings.Count(objs, "Certificate Object"); n != 4 {
		t.Errorf("object list has %d certificates, want 4", n)
	}
	for slot, id := range openscID {
		f := j.path("cert" + id + ".der")
		j.p11("--read-object", "--type", "cert", "--id", id, "--output-file", f)
		der, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if want := j.card.Certificate(slot).Raw; !bytes.Equal(der, want) {
			t.Errorf("certificate %s read by OpenSC differs from the card's (%d vs %d bytes)", id, len(der), len(want))
		}
	}
}

// pubPEM writes the public key of the certificate in slot as PEM, through
// openssl from the certificate OpenSC read.
func (j *judge) pubPEM(id string) string {
	j.t.Helper()
	cert := j.path("cert" + id + ".der")
	j.p11("--read-object", "--type", "cert", "--id", id, "--output-file", cert)
	pub := j.path("pub" + id + ".pem")
	j.run(false, "openssl", "x509", "-inform", "DER", "-in", cert, "-pubkey", "-noout", "-out", pub)
	return pub
}

func TestOpenSCSignaturesVerifyWithOpenSSL(t *testing.T) {
	j := plug(t, 1)
	data := j.path("data.txt")
	os.WriteFile(data, []byte("A document the mayor would sign.\n"), 0o644)
	cases := []struct {
		name, id, mech, dgst string
		extra                []string
	}{
		{"ECDSA-P256", "01", "ECDSA-SHA256", "-sha256", []string{"--signature-format", "openssl"}},
		{"ECDSA-P384", "04", "ECDSA-SHA384", "-sha384", []string{"--signature-format", "openssl"}},
		{"RSA2048-PKCS1", "02", "SHA256-RSA-PKCS", "-sha256", nil},
		{"RSA2048-PSS", "02", "SHA256-RSA-PKCS-PSS", "-sha256", []string{"--mgf", "MGF1-SHA256", "--salt-len", "32"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j.t = t
			sig := j.path("sig-" + c.name)
			args := append([]string{"--login", "--pin", "123456", "--sign", "--id", c.id, "-m", c.mech,
				"--input-file", data, "--output-file", sig}, c.extra...)
			j.p11(args...)
			pub := j.pubPEM(c.id)
			verify := []string{"dgst", c.dgst, "-verify", pub, "-signature", sig}
			if strings.HasSuffix(c.name, "PSS") {
				verify = append(verify, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32")
			}
			out := j.run(false, "openssl", append(verify, data)...)
			if !strings.Contains(out, "Verified OK") {
				t.Errorf("openssl did not verify the %s signature", c.name)
			}
		})
	}
}

func TestOpenSCWrongPINAndBlock(t *testing.T) {
	j := plug(t, 2)
	out := j.p11Fail("--login", "--pin", "000000", "-O")
	if !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Errorf("wrong PIN: pkcs11-tool did not report CKR_PIN_INCORRECT")
	}
	if got := j.card.PINRetries(); got != 2 {
		t.Errorf("card PIN retries after one wrong PIN = %d, want 2", got)
	}
	// The card itself says 63 C2 to an empty VERIFY.
	st := j.run(false, "opensc-tool", "-r", strconv.Itoa(j.reader), "-s", "00A4040005A000000308", "-s", "00200080")
	if !strings.Contains(st, "SW1=0x63, SW2=0xC2") {
		t.Errorf("empty VERIFY after one wrong PIN does not answer 63 C2")
	}
	j.p11Fail("--login", "--pin", "000000", "-O")
	out = j.p11Fail("--login", "--pin", "000000", "-O")
	if !strings.Contains(out, "CKR_PIN_LOCKED") && !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Errorf("third wrong PIN: no PIN error reported")
	}
	if got := j.card.PINRetries(); got != 0 {
		t.Errorf("card PIN retries after three wrong PINs = %d, want 0", got)
	}
	out = j.p11Fail("--login", "--pin", "123456", "-O")
	if !strings.Contains(out, "CKR_PIN_LOCKED") {
		t.Errorf("right PIN on a blocked card: pkcs11-tool did not report CKR_PIN_LOCKED")
	}
	st = j.run(false, "opensc-tool", "-r", strconv.Itoa(j.reader), "-s", "00A4040005A000000308", "-s", "00200080")
	if !strings.Contains(st, "SW1=0x69, SW2=0x83") {
		t.Errorf("empty VERIFY on a blocked card does not answer 69 83")
	}
}

func TestYubicoPIVTool(t *testing.T) {
	j := plug(t, 3)
	reader := env.Readers[3]
	out := j.run(false, "yubico-piv-tool", "-r", reader, "-a", "status")
	for _, want := range []string{"Version:", "Serial Number:", "PIN tries left:"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q", want)
		}
	}
	for _, slot := range []string{"9a", "9c", "9d", "9e"} {
		if !strings.Contains(strings.ToLower(out), "slot "+slot) {
			t.Errorf("status output lacks slot %s", slot)
		}
	}
	j.run(false, "yubico-piv-tool", "-r", reader, "-a", "verify-pin", "-P", "123456")
	// test-signature signs with the card and checks the signature against
	// the certificate it is given, here the one the tool read itself.
	for _, slot := range []string{"9a", "9c", "9d", "9e"} {
		cert := j.path("cert-" + slot + ".pem")
		j.run(false, "yubico-piv-tool", "-r", reader, "-a", "read-certificate", "-s", slot, "-o", cert)
		out := j.run(false, "yubico-piv-tool", "-r", reader, "-a", "verify-pin", "-P", "123456",
			"-a", "test-signature", "-s", slot, "-i", cert)
		if !strings.Contains(out, "Successful") && !strings.Contains(out, "successful") {
			t.Errorf("test-signature %s: no success reported", slot)
		}
	}
	// PIN management: change the PIN, block it, unblock it with the PUK.
	j.run(false, "yubico-piv-tool", "-r", reader, "-a", "change-pin", "-P", "123456", "-N", "654321")
	j.run(false, "yubico-piv-tool", "-r", reader, "-a", "verify-pin", "-P", "654321")
	for range 3 {
		j.run(true, "yubico-piv-tool", "-r", reader, "-a", "verify-pin", "-P", "000000")
	}
	if got := j.card.PINRetries(); got != 0 {
		t.Errorf("PIN retries after three wrong PINs from yubico-piv-tool: %d", got)
	}
	j.run(false, "yubico-piv-tool", "-r", reader, "-a", "unblock-pin", "-P", "12345678", "-N", "123456")
	j.run(false, "yubico-piv-tool", "-r", reader, "-a", "verify-pin", "-P", "123456")
	// The tool's view of the certificate matches the card's.
	pemOut := j.run(false, "yubico-piv-tool", "-r", reader, "-a", "read-certificate", "-s", "9c")
	block, _ := pem.Decode([]byte(pemOut[strings.Index(pemOut, "-----BEGIN"):]))
	if block == nil {
		t.Fatal("read-certificate printed no PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.Equal(j.card.Certificate(pivsim.SlotSignature)) {
		t.Errorf("read-certificate 9c differs from the card's certificate (%v)", err)
	}
}
