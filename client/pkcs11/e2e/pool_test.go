//go:build cgo

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// TestPoolOfDifferentKeysThroughPCSCD: pscsd as a site serves a parallel
// remote card of three simulated PIV cards (serials 7401-7403, each with
// keys of its own in 9A and 9C) in readers of a private pcscd, with
// same_keys false. pkcs11-tool, through the module, lists every card's
// keys and certificates as objects of their own, labelled with the card
// ("piv:7401: …"); a signature with each card's key (pkcs11-tool) verifies in
// openssl under the certificate of the same CKA_ID. Then the delegate
// signs 30 documents (CAdES, the Go client) with 9A: the cards sign in
// turn, exactly 10 each, and each SignedData verifies in openssl cms
// against the certificate it carries, that of the card that signed, and
// trusting the root CA alone: yubico-piv-tool imported into each card's
// 9A a certificate that an intermediate CA issued, which pscsd's
// cards[].chain lists and the SignedData carries.
func TestPoolOfDifferentKeysThroughPCSCD(t *testing.T) {
	need(t, "swtpm", "openssl", "pkcs11-tool", "yubico-piv-tool")
	pcscd := privatePCSCD(t)
	so, pscsd := binaries(t)
	dir := t.TempDir()
	serials := []string{"7401", "7402", "7403"}
	root := testpki.NewCA("city root CA")
	issuing := root.Intermediate("city issuing CA")
	chain := filepath.Join(dir, "chain.pem")
	if err := os.WriteFile(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuing.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	var sims []*pivsim.Card
	for i := range serials {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name() + serials[i]), Serial: uint32(7401 + i), Slots: map[pivsim.Slot]pivsim.SlotConfig{
			pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256},
			pivsim.SlotSignature:      {Algorithm: pivsim.ECCP256},
		}})
		if err != nil {
			t.Fatal(err)
		}
		plugCard(t, pcscd, readerPool+i, sim)
		sims = append(sims, sim)
	}
	site := startSite(t, pscsd, dir, pcscd.Env(), siteCard{serial: serials[0], others: serials[1:], differentKeys: true,
		pins: map[string]string{"": "123456"}, chain: []string{chain}})
	for i, sim := range sims {
		// 9A's certificate from the issuing CA, as an administrator
		// imports it while pscsd serves the card; pscsd reads it.
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(100 + i)), Subject: pkix.Name{CommonName: "signer on " + serials[i]},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, issuing.Cert, sim.PublicKey(pivsim.SlotAuthentication), issuing.Key)
		if err != nil {
			t.Fatal(err)
		}
		certFile := filepath.Join(dir, serials[i]+".pem")
		if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, append(os.Environ(), pcscd.Env()), "yubico-piv-tool", "-r", pcscd.Readers[readerPool+i],
			"--key=010203040506070801020304050607080102030405060708", "-a", "import-certificate", "-s", "9a", "-i", certFile)
		site.log.waitFor(t, `read again" rsc=mayor card=piv:`+serials[i]+" ")
	}
	conf := site.delegate(t, "dora")
	env := append(os.Environ(), "PSCS_CONFIG="+conf.path, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "HOME="+dir, "PSCS_TIMEOUT=20s")
	p11tool := func(args ...string) string {
		return run(t, env, "pkcs11-tool", append([]string{"--module", so}, args...)...)
	}

	// Every card's objects, each key under a CKA_ID of its own.
	out := p11tool("--login", "--pin", conf.vpin, "-O")
	type key struct{ label, id string }
	var keys []key
	re := regexp.MustCompile(`(?m)^Private Key Object.*\n(?:\s+.*\n)*?\s+label:\s+(.*)\n(?:\s+.*\n)*?\s+ID:\s+([0-9a-f]+)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		keys = append(keys, key{strings.TrimSpace(m[1]), m[2]})
	}
	if len(keys) != 6 {
		t.Fatalf("pkcs11-tool -O: %d private keys, want 6 (9A and 9C of 3 cards):\n%s", len(keys), out)
	}
	if n := strings.Count(out, "Certificate Object"); n != 6 {
		t.Errorf("pkcs11-tool -O: %d certificates, want 6", n)
	}
	for _, s := range serials {
		if n := strings.Count(out, "label:      piv:"+s+": "); n != 3*2 {
			t.Errorf("pkcs11-tool -O: %d objects labelled for card %s, want 6 (2 keys: private, public, certificate)\n%s", n, s, out)
		}
	}

	// A raw signature with each card's key verifies under its certificate.
	data := filepath.Join(dir, "raw.txt")
	if err := os.WriteFile(data, []byte("signed with one card's key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	certs := map[string]string{} // DER certificate -> the card holding its key
	for _, k := range keys {
		if ids[k.id] {
			t.Fatalf("CKA_ID %s used twice", k.id)
		}
		ids[k.id] = true
		der := filepath.Join(dir, "cert"+k.id+".der")
		pub := filepath.Join(dir, "pub"+k.id+".pem")
		sig := filepath.Join(dir, "sig"+k.id)
		p11tool("--read-object", "--type", "cert", "--id", k.id, "-o", der)
		run(t, env, "openssl", "x509", "-inform", "der", "-in", der, "-pubkey", "-noout", "-out", pub)
		p11tool("--login", "--pin", conf.vpin, "-s", "-m", "ECDSA-SHA256", "--id", k.id, "--signature-format", "openssl", "-i", data, "-o", sig)
		if out, err := runErr(t, env, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, data); err != nil {
			t.Errorf("key %q (CKA_ID %s): openssl does not verify its signature under its certificate: %v\n%s", k.label, k.id, err, out)
		}
		b, err := os.ReadFile(der)
		if err != nil {
			t.Fatal(err)
		}
		card, _, _ := strings.Cut(k.label, ": ")
		certs[string(b)] = strings.TrimPrefix(card, "piv:")
	}
	if len(certs) != 6 {
		t.Errorf("%d distinct certificates, want 6", len(certs))
	}

	// 30 documents: the cards sign in turn.
	cfg, err := client.LoadConfig(conf.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	login, err := c.Login(ctx, 1, []byte(conf.vpin))
	if err != nil {
		t.Fatal(err)
	}
	var nineA uint64
	for _, o := range login.Catalogue.Slots[0].Objects {
		if l, _ := o.Attributes[p11.CKALabel].(string); o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) && strings.HasSuffix(l, "(9a)") {
			nineA = o.Handle // one card's 9A: a document takes the next card's
			break
		}
	}
	if nineA == 0 {
		t.Fatal("no 9A key in the catalogue")
	}
	by := map[string]int{}
	for i := range 30 {
		doc := []byte(fmt.Sprintf("Order %d of the mayor.\n", i))
		sd, err := c.SignCAdES(ctx, bytes.NewReader(doc), client.CAdESOptions{Slot: 1, Key: nineA})
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if out, ok := cmstest.Verify(t, sd.CMS, doc, sd.Certificate); !ok {
			t.Errorf("document %d: openssl cms -verify against the certificate it carries:\n%s", i, out)
		}
		if out, ok := cmstest.VerifyChain(t, sd.CMS, doc, root.Cert); !ok {
			t.Errorf("document %d: openssl cms -verify trusting the root CA alone:\n%s", i, out)
		}
		card, ok := certs[string(sd.Certificate.Raw)]
		if !ok {
			t.Fatalf("document %d: signed under a certificate no card shows (%s)", i, subject(sd.Certificate))
		}
		by[card]++
	}
	t.Logf("documents by card: %v", by)
	for _, s := range serials {
		if by[s] != 10 {
			t.Errorf("documents by card %v, want 10 each", by)
			break
		}
	}
}

func subject(c *x509.Certificate) string { return c.Subject.String() }
