//go:build cgo

package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/pscs/pscs/profiles/openpgp"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit"
)

// TestOpenPGPDelegate: pscsd serves an OpenPGP card (pgpsim in a reader
// of a private pcscd) whose owner registered PW1 for signing and PW1; a
// delegate signs with pkcs11-tool (the "sig" key, CKA_ID 01; verified by
// openssl under the card's public key), decrypts with the RSA "dec" key
// (CKA_ID 02) and derives with the P-256 one; a delegation for signatures
// only is refused both with code 100 (denied, CKR_FUNCTION_REJECTED).
func TestOpenPGPDelegate(t *testing.T) {
	need(t, "swtpm", "pkcs11-tool", "openssl")
	pcscd := privatePCSCD(t)
	so, pscsd := binaries(t)
	for _, tc := range []struct {
		name string
		alg  simkit.Alg
		mech string // pkcs11-tool's signature mechanism
	}{
		{"RSA2048", simkit.RSA2048, "SHA256-RSA-PKCS"},
		{"P256", simkit.ECCP256, "ECDSA-SHA256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sim, err := pgpsim.New(pgpsim.Config{Seed: []byte(t.Name()), Serial: 0x7300,
				Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: tc.alg, pgpsim.KeyDecrypt: tc.alg}})
			if err != nil {
				t.Fatal(err)
			}
			site := startSite(t, pscsd, dir, pcscd.Env(), siteCard{serial: "00007300", sim: sim, pcscd: pcscd, reader: readerOpenPGP,
				pins: map[string]string{openpgp.PINSign: "123456", openpgp.PIN: "123456"}})
			pemOf := func(k pgpsim.Key) string {
				der, err := x509.MarshalPKIXPublicKey(sim.PublicKey(k))
				if err != nil {
					t.Fatal(err)
				}
				f := filepath.Join(dir, k.String()+".pem")
				os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
				return f
			}
			envOf := func(conf delegateConf) []string {
				return append(os.Environ(), pcscd.Env(), "PSCS_CONFIG="+conf.path, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "PSCS_TIMEOUT=20s")
			}
			signOnly, both := site.delegate(t, "carol", "sign"), site.delegate(t, "bob", "sign", "decrypt")
			env := envOf(both)
			msg := filepath.Join(dir, "msg")
			os.WriteFile(msg, []byte("signed by the mayor's OpenPGP card, through pscsd"), 0o600)

			sig := filepath.Join(dir, "sig")
			run(t, env, "pkcs11-tool", "--module", so, "--login", "--pin", both.vpin, "--sign", "--id", "01",
				"-m", tc.mech, "--signature-format", "openssl", "-i", msg, "-o", sig)
			run(t, env, "openssl", "dgst", "-sha256", "-verify", pemOf(pgpsim.KeySign), "-signature", sig, msg)

			// Decryption (RSA) or key agreement (P-256) with the "dec" key.
			var args []string
			want := filepath.Join(dir, "want")
			switch tc.alg {
			case simkit.RSA2048:
				ct := filepath.Join(dir, "ct")
				run(t, env, "openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", pemOf(pgpsim.KeyDecrypt), "-in", msg, "-out", ct)
				args = []string{"--decrypt", "-m", "RSA-PKCS", "-i", ct}
				want = msg
			default:
				peer, peerPub := filepath.Join(dir, "peer.pem"), filepath.Join(dir, "peer.der")
				run(t, env, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", peer)
				run(t, env, "openssl", "pkey", "-in", peer, "-pubout", "-outform", "der", "-out", peerPub)
				run(t, env, "openssl", "pkeyutl", "-derive", "-inkey", peer, "-peerkey", pemOf(pgpsim.KeyDecrypt), "-out", want)
				args = []string{"--derive", "-m", "ECDH1-DERIVE", "-i", peerPub}
			}
			got := filepath.Join(dir, "got")
			p11 := func(conf delegateConf) (string, error) {
				return runErr(t, envOf(conf), "pkcs11-tool", append([]string{"--module", so, "--login", "--pin", conf.vpin,
					"--id", "02", "-o", got}, args...)...)
			}
			if out, err := p11(both); err != nil {
				t.Fatalf("pkcs11-tool %s: %v\n%s", args[0], err, out)
			}
			g, _ := os.ReadFile(got)
			w, _ := os.ReadFile(want)
			if len(w) == 0 || !bytes.Equal(g, w) {
				t.Errorf("pkcs11-tool %s gave %x, want %x", args[0], g, w)
			}
			// A delegation without "decrypt": refused with code 100 (denied;
			// the module's CKR_FUNCTION_REJECTED, after which pkcs11-tool
			// --decrypt tries C_DecryptUpdate, which the module lacks).
			out, err := p11(signOnly)
			if err == nil {
				t.Fatalf("%s under a sign-only delegation succeeded:\n%s", args[0], out)
			}
			op := map[string]string{"--decrypt": "decrypt", "--derive": "derive"}[args[0]]
			if !regexp.MustCompile(`msg="request refused" op=` + op + ` identity=carol delegation=\S+ code=denied`).MatchString(site.log.String()) {
				t.Errorf("pscsd logged no refusal of %s with code 100 (denied):\n%s", op, site.log.String())
			}
		})
	}
}
