package pivsim_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/simkit/simkittest"
)

// plugCard is plug with a card of the test's making.
func plugCard(t *testing.T, reader int, card *pivsim.Card) *judge {
	t.Helper()
	if env == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	for _, tool := range []string{"pkcs11-tool", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "opensc.conf")
	os.WriteFile(conf, []byte("app default {\n framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"+
		"app opensc-pkcs11 {\n pkcs11 {\n  max_virtual_slots = 64;\n }\n}\n"), 0o644)
	j := &judge{t: t, card: card, reader: reader, dir: dir, env: append(os.Environ(), "OPENSC_CONF="+conf)}
	simkittest.Plug(t, env, reader, card)
	return j
}

// TestOpenSCDecrypts: OpenSC's PIV driver decrypts with the simulator's
// 9D RSA key (GENERAL AUTHENTICATE with the ciphertext; OpenSC removes
// the padding) what openssl encrypted to the key's certificate, with
// PKCS #1 v1.5 and OAEP.
func TestOpenSCDecrypts(t *testing.T) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name()), Slots: map[pivsim.Slot]pivsim.SlotConfig{
		pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256},
		pivsim.SlotKeyManagement:  {Algorithm: pivsim.RSA2048},
	}})
	if err != nil {
		t.Fatal(err)
	}
	j := plugCard(t, 6, card)
	pub := j.pubPEM("03")
	msg := []byte("for the key management key only")
	in := j.path("msg")
	os.WriteFile(in, msg, 0o600)
	for _, c := range []struct {
		name     string
		enc, p11 []string
	}{
		{"PKCS1v15", nil, []string{"-m", "RSA-PKCS"}},
		{"OAEP-SHA256", []string{"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"},
			[]string{"-m", "RSA-PKCS-OAEP", "--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			j.t = t
			ct, out := j.path("ct-"+c.name), j.path("pt-"+c.name)
			j.run(false, "openssl", append([]string{"pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", in, "-out", ct}, c.enc...)...)
			j.p11(append([]string{"--login", "--pin", "123456", "--decrypt", "--id", "03", "-i", ct, "-o", out}, c.p11...)...)
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, msg) {
				t.Errorf("OpenSC decrypted %q, want %q", got, msg)
			}
		})
	}
}

// TestOpenSCDerives: OpenSC's PIV driver agrees a key with the
// simulator's 9D ECC P-256 key (GENERAL AUTHENTICATE with the peer's
// point in 85), and gets the secret openssl derives from the other side.
func TestOpenSCDerives(t *testing.T) {
	j := plug(t, 7)
	pub := j.pubPEM("03")
	peer, peerDER, want := j.path("peer.pem"), j.path("peer.der"), j.path("want")
	j.run(false, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", peer)
	j.run(false, "openssl", "pkey", "-in", peer, "-pubout", "-outform", "der", "-out", peerDER)
	j.run(false, "openssl", "pkeyutl", "-derive", "-inkey", peer, "-peerkey", pub, "-out", want)
	got := j.path("got")
	j.p11("--login", "--pin", "123456", "--derive", "-m", "ECDH1-DERIVE", "--id", "03", "-i", peerDER, "-o", got)
	g, _ := os.ReadFile(got)
	w, _ := os.ReadFile(want)
	if len(w) != 32 || !bytes.Equal(g, w) {
		t.Errorf("OpenSC derived %x, openssl %x", g, w)
	}
}
