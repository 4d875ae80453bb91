//go:build cgo

package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

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
			if tc.alg == simkit.RSA2048 {
				cmsDecrypt(t, env, dir, so, both.vpin, sim.PublicKey(pgpsim.KeyDecrypt))
			}
			// A delegation without "decrypt": refused with code 100 (denied;
			// the module's CKR_FUNCTION_REJECTED, after which pkcs11-tool
			// --decrypt tries C_DecryptUpdate, which the module lacks).
			out, err := p11(signOnly)
			if err == nil {
				t.Fatalf("%s under a sign-only delegation succeeded:\n%s", args[0], out)
			}
			op := map[string]string{"--decrypt": "decrypt", "--derive": "derive"}[args[0]]
			site.log.waitFor(t, `msg="request refused" op=`+op+` identity=carol`) // logged after the answer
			if !regexp.MustCompile(`msg="request refused" op=` + op + ` identity=carol delegation=\S+ code=denied`).MatchString(site.log.String()) {
				t.Errorf("pscsd logged no refusal of %s with code 100 (denied):\n%s", op, site.log.String())
			}
		})
	}
}

// cmsDecrypt: openssl cms -decrypt, through the OpenSSL pkcs11 engine and
// the module, opens a message encrypted (RSA PKCS #1 v1.5 key transport,
// what an OpenPGP card decrypts) to a certificate of the card's "dec"
// key, as a mail client would. The certificate, from a throwaway CA, stays
// on the recipient's disk: the card holds none.
func cmsDecrypt(t *testing.T, env []string, dir, so, vpin string, pub crypto.PublicKey) {
	t.Helper()
	engines, _ := filepath.Glob("/usr/lib/*/engines-3/pkcs11.so")
	if len(engines) == 0 {
		t.Fatalf("no OpenSSL pkcs11 engine: %s", debianPackagesNeeded)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "the mayor"}, NotBefore: ca.NotBefore,
		NotAfter: ca.NotAfter, KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, cnf := filepath.Join(dir, "dec.crt"), filepath.Join(dir, "openssl.cnf")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(cnf, []byte("openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n[engine_section]\n"+
		"pkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = "+engines[0]+"\nMODULE_PATH = "+so+"\ninit = 0\n"), 0o600)
	msg := []byte("To: the mayor\r\nSubject: budget\r\n\r\nThe council meets at noon.\r\n")
	in, p7, out := filepath.Join(dir, "mail"), filepath.Join(dir, "mail.p7m"), filepath.Join(dir, "mail.out")
	os.WriteFile(in, msg, 0o600)
	run(t, env, "openssl", "cms", "-encrypt", "-binary", "-aes-256-cbc", "-in", in, "-out", p7, "-recip", cert)
	run(t, append(env, "OPENSSL_CONF="+cnf), "openssl", "cms", "-decrypt", "-binary", "-in", p7, "-out", out, "-recip", cert,
		"-engine", "pkcs11", "-keyform", "engine", "-inkey", "pkcs11:token=mayor;id=%02;type=private;pin-value="+vpin)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, msg) {
		t.Errorf("openssl cms -decrypt gave %q, want %q", got, msg)
	}
}
