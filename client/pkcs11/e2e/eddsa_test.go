//go:build cgo

package e2e

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit"
)

// TestEdDSAThroughPscsd: an OpenPGP card (the simulator in a reader of a
// private pcscd) with Ed25519 signature and authentication keys and an
// X25519 decryption key, served by pscsd through the OpenPGP driver with
// both PW1s registered, used by a delegate through the module:
//
//   - pkcs11-tool --mechanism EDDSA signs with the authentication key
//     (CKA_ID 03) and with the signature key (01, whose PIN the card wants
//     before every signature: pkcs11-tool logs in again for it); each
//     signature verifies with crypto/ed25519 and with `openssl pkeyutl
//     -verify -rawin`;
//   - C_DeriveKey (CKM_ECDH1_DERIVE, the peer's 32-byte u-coordinate)
//     with the X25519 key (02), through miekg/pkcs11, gives the secret
//     crypto/ecdh computes, and a small-order peer is refused. Not through
//     pkcs11-tool: OpenSC 0.23's --derive parses the peer's key file as an
//     EC key only ("Failed to parse other EC key" for an X25519
//     SubjectPublicKeyInfo, checked by hand), before the module is asked.
func TestEdDSAThroughPscsd(t *testing.T) {
	need(t, "swtpm", "pkcs11-tool", "openssl")
	pcscd := privatePCSCD(t)
	so, pscsd := binaries(t)
	dir := t.TempDir()

	sim, err := pgpsim.New(pgpsim.Config{Seed: []byte(t.Name()), Serial: 0xED25519,
		Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.Ed25519, pgpsim.KeyDecrypt: simkit.X25519, pgpsim.KeyAuth: simkit.Ed25519}})
	if err != nil {
		t.Fatal(err)
	}
	site := startSite(t, pscsd, dir, pcscd.Env(), siteCard{serial: "0ED25519",
		pins: map[string]string{"pw1-sign": "123456", "pw1": "123456"}, sim: sim, pcscd: pcscd, reader: readerEdDSA})
	conf := site.delegate(t, "bob", "sign", "decrypt")
	env := append(os.Environ(), "PSCS_CONFIG="+conf.path, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "PSCS_TIMEOUT=20s")

	// The token shows the keys with the types of PKCS #11 3.0.
	objs := run(t, env, "pkcs11-tool", "--module", so, "--login", "--pin", conf.vpin, "-O")
	for _, want := range []string{"EC_EDWARDS", "EC_MONTGOMERY"} {
		if !strings.Contains(objs, want) {
			t.Errorf("pkcs11-tool -O shows no %s key:\n%s", want, objs)
		}
	}
	mechs := run(t, env, "pkcs11-tool", "--module", so, "-M")
	if !strings.Contains(mechs, "EDDSA") {
		t.Errorf("pkcs11-tool -M lists no EDDSA:\n%s", mechs)
	}

	msg := []byte("signed by the mayor's OpenPGP card, through pscsd")
	in := filepath.Join(dir, "msg")
	if err := os.WriteFile(in, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		id  string
		key pgpsim.Key
	}{{"03", pgpsim.KeyAuth}, {"01", pgpsim.KeySign}} {
		pub := sim.PublicKey(k.key).(ed25519.PublicKey)
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		pubPEM := filepath.Join(dir, "pub"+k.id+".pem")
		if err := os.WriteFile(pubPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		sigFile := filepath.Join(dir, "sig"+k.id)
		run(t, env, "pkcs11-tool", "--module", so, "--login", "--pin", conf.vpin, "--sign", "--mechanism", "EDDSA",
			"--id", k.id, "-i", in, "-o", sigFile)
		sig, err := os.ReadFile(sigFile)
		if err != nil {
			t.Fatal(err)
		}
		if !ed25519.Verify(pub, msg, sig) {
			t.Errorf("key %s: the signature (%d bytes) does not verify with crypto/ed25519", k.id, len(sig))
		}
		out := run(t, env, "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pubPEM, "-rawin", "-in", in, "-sigfile", sigFile)
		if !strings.Contains(out, "Signature Verified Successfully") {
			t.Errorf("key %s: openssl pkeyutl -verify -rawin: %s", k.id, out)
		}
	}

	// X25519 through miekg/pkcs11 in this process.
	p, slot := loadModule(t, so, conf, dir)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)
	if err := p.Login(s, pkcs11.CKU_USER, conf.vpin); err != nil {
		t.Fatalf("C_Login: %v", err)
	}
	dec := findOne(t, p, s, pkcs11.CKO_PRIVATE_KEY, 2)
	attrs, err := p.GetAttributeValue(s, dec, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if kt := attrs[0].Value; len(kt) == 0 || kt[0] != p11.CKKECMontgomery || !bytes.Equal(attrs[1].Value, p11.ECParamsX25519) {
		t.Errorf("the decryption key: CKA_KEY_TYPE %x, CKA_EC_PARAMS %x; want CKK_EC_MONTGOMERY and id-X25519", kt, attrs[1].Value)
	}
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	want, _ := peer.ECDH(sim.PublicKey(pgpsim.KeyDecrypt).(*ecdh.PublicKey))
	derive := func(public []byte) ([]byte, error) {
		mech := pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, public))
		oh, err := p.DeriveKey(s, []*pkcs11.Mechanism{mech}, dec, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)})
		if err != nil {
			return nil, err
		}
		v, err := p.GetAttributeValue(s, oh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, err
		}
		return v[0].Value, nil
	}
	got, err := derive(peer.PublicKey().Bytes())
	if err != nil {
		t.Fatalf("C_DeriveKey: %v\npscsd said:\n%s", err, site.log.String())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("X25519 secret %x, want %x", got, want)
	}
	if _, err := derive(make([]byte, 32)); err == nil {
		t.Error("C_DeriveKey with a small-order peer (u = 0) succeeded")
	}
	if !strings.Contains(site.log.String(), `op=derive identity=bob`) {
		t.Errorf("pscsd logged no refused derive of bob's:\n%s", site.log.String())
	}
}
