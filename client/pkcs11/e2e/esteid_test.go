//go:build cgo

package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/transport"
)

// TestEstEIDThroughPSCSD: pscsd serves a simulated EstEID 2018 card
// (eidsim, behind a private pcscd) whose owner registered PIN1 and PIN2.
// A delegate with pkcs11-tool and the module signs with key 81
// (authentication, PIN1) and key 9f (qualified signature, PIN2 before
// every signature: pkcs11-tool's context-specific login, as with OpenSC,
// for CKA_ALWAYS_AUTHENTICATE), each verified by openssl under the
// certificate read from the token, and derives with key 81 the ECDH P-384
// secret openssl derives on the other side. A delegation limited to 9f
// (AdminDelegation.Keys) shows that key alone and is refused key 81 with
// code 119.
func TestEstEIDThroughPSCSD(t *testing.T) {
	need(t, "swtpm", "pkcs11-tool", "openssl")
	pcscd := privatePCSCD(t)
	so, pscsd := binaries(t)
	dir := t.TempDir()
	sim, err := eidsim.New(eidsim.Config{Seed: []byte(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	plugCard(t, pcscd, readerEstEID, sim)

	site := startSite(t, pscsd, dir, pcscd.Env(), siteCard{serial: sim.Person().DocumentNumber,
		pins: map[string]string{"pin1": "1234", "pin2": "12345"}})
	bob := site.delegateAs(t, "bob", transport.AdminDelegation{Ops: []string{"sign", "decrypt"}})
	carol := site.delegateAs(t, "carol", transport.AdminDelegation{Keys: []string{"9f"}})
	envOf := func(conf delegateConf) []string {
		return append(os.Environ(), "PSCS_CONFIG="+conf.path, "XDG_CACHE_HOME="+filepath.Join(dir, "cache-"+filepath.Base(conf.path)), "PSCS_TIMEOUT=20s")
	}
	p11tool := func(conf delegateConf, args ...string) (string, error) {
		return runErr(t, envOf(conf), "pkcs11-tool", append([]string{"--module", so, "--token-label", "mayor"}, args...)...)
	}

	out, err := p11tool(bob, "--login", "--pin", bob.vpin, "-O")
	if err != nil || !strings.Contains(out, "(81)") || !strings.Contains(out, "(9f)") {
		t.Fatalf("bob's objects (want keys 81 and 9f): %v\n%s", err, out)
	}
	// The certificates' public keys, for openssl.
	doc := filepath.Join(dir, "doc")
	os.WriteFile(doc, []byte("a document signed with an Estonian ID card through pscsd"), 0o600)
	pubOf := func(id string) string {
		der, pem := filepath.Join(dir, id+".der"), filepath.Join(dir, id+".pem")
		if out, err := p11tool(bob, "--read-object", "--type", "cert", "--id", id, "-o", der); err != nil {
			t.Fatalf("read certificate %s: %v\n%s", id, err, out)
		}
		run(t, os.Environ(), "openssl", "x509", "-inform", "der", "-in", der, "-pubkey", "-noout", "-out", pem)
		return pem
	}
	sign := func(conf delegateConf, id string) error {
		sig := filepath.Join(dir, "sig-"+id)
		out, err := p11tool(conf, "--login", "--pin", conf.vpin, "--sign", "-m", "ECDSA-SHA384", "--id", id,
			"--signature-format", "openssl", "-i", doc, "-o", sig)
		if err != nil {
			t.Logf("pkcs11-tool --sign --id %s: %s", id, out)
			return err
		}
		run(t, os.Environ(), "openssl", "dgst", "-sha384", "-verify", pubOf(id), "-signature", sig, doc)
		return nil
	}
	// Key numbers: 81 is CKA_ID 01, 9f is 02 (the order the card lists them).
	for _, id := range []string{"01", "02", "02"} { // 9f twice: PIN2 again for each signature
		if err := sign(bob, id); err != nil {
			t.Fatalf("bob signs with %s: %v\npscsd said:\n%s", id, err, site.log.String())
		}
	}
	if sim.Retries(eidsim.PIN1) != 3 || sim.Retries(eidsim.PIN2) != 3 {
		t.Errorf("card tries PIN1 %d PIN2 %d, want 3 and 3", sim.Retries(eidsim.PIN1), sim.Retries(eidsim.PIN2))
	}

	// ECDH P-384 with key 81.
	peer, peerPub, want := filepath.Join(dir, "peer.pem"), filepath.Join(dir, "peer.der"), filepath.Join(dir, "want")
	run(t, os.Environ(), "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", peer)
	run(t, os.Environ(), "openssl", "pkey", "-in", peer, "-pubout", "-outform", "der", "-out", peerPub)
	run(t, os.Environ(), "openssl", "pkeyutl", "-derive", "-inkey", peer, "-peerkey", pubOf("01"), "-out", want)
	if out, err := p11tool(bob, "--login", "--pin", bob.vpin, "--derive", "-m", "ECDH1-DERIVE", "--id", "01",
		"-i", peerPub, "-o", filepath.Join(dir, "got")); err != nil {
		t.Fatalf("pkcs11-tool --derive: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "got"))
	w, _ := os.ReadFile(want)
	if len(w) != 48 || !bytes.Equal(got, w) {
		t.Errorf("the card's shared secret %x, openssl's %x", got, w)
	}

	// carol's delegation names 9f alone.
	out, err = p11tool(carol, "--login", "--pin", carol.vpin, "-O")
	if err != nil || strings.Contains(out, "(81)") || !strings.Contains(out, "(9f)") {
		t.Fatalf("carol's objects (want key 9f alone): %v\n%s", err, out)
	}
	if err := sign(carol, "02"); err != nil {
		t.Fatalf("carol signs with 9f: %v", err)
	}
	if _, err := p11tool(carol, "--login", "--pin", carol.vpin, "--sign", "-m", "ECDSA-SHA384", "--id", "01", "-i", doc, "-o", filepath.Join(dir, "x")); err == nil {
		t.Error("carol's pkcs11-tool signed with key 81")
	}
	// Asking for key 81 by its handle (bob's catalogue shows it): 119.
	handle81 := keyHandle(t, bob, "(81)")
	cctx, c := dialAs(t, carol)
	if _, err := c.Login(cctx, 1, []byte(carol.vpin)); err != nil {
		t.Fatal(err)
	}
	digest := sha512.Sum384([]byte("not delegated"))
	_, err = c.Sign(cctx, &transport.SignRequest{Slot: 1, Key: handle81, Mechanism: p11.CKMECDSA, Data: digest[:]})
	if transport.CodeOf(err) != transport.CodeKeyNotDelegated {
		t.Errorf("carol signs with 81: %v, want code %d", err, transport.CodeKeyNotDelegated)
	}
	if !strings.Contains(site.log.String(), `msg="request refused" op=sign identity=carol`) || !strings.Contains(site.log.String(), `code="key not delegated"`) {
		t.Errorf("pscsd logged no refusal with code 119:\n%s", site.log.String())
	}
}

// keyHandle is the handle of the private key whose label contains label
// in the catalogue conf's delegate sees.
func keyHandle(t *testing.T, conf delegateConf, label string) uint64 {
	t.Helper()
	ctx, c := dialAs(t, conf)
	hello, err := c.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range hello.Catalogue.Slots[0].Objects {
		if l, _ := o.Attributes[p11.CKALabel].(string); strings.Contains(l, label) && o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) {
			return o.Handle
		}
	}
	t.Fatalf("no private key %s in %s's catalogue", label, conf.path)
	return 0
}

// dialAs dials pscsd as conf's delegate, until the test ends; the context
// bounds the test's requests.
func dialAs(t *testing.T, conf delegateConf) (context.Context, *client.Client) {
	t.Helper()
	cfg, err := client.LoadConfig(conf.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, c
}
