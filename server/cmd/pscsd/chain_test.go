package main

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/testpki"
)

// TestConfigChain: cards[].chain reads the CA certificates of PEM files
// (relative to the configuration's directory, several to a file) into
// the remote card's chain; a missing file, a key instead of a
// certificate, a broken certificate or text after the last block fail
// the configuration, naming the card.
func TestConfigChain(t *testing.T) {
	root := testpki.NewCA("root")
	mid := root.Intermediate("mid")
	certPEM := func(der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	load := func(chain string) (*Config, error) {
		write("pscsd.json", `{"state": "s", "cards": [{"name": "mayor", "slot": 1, "owner": "alice", "serials": ["1"], "same_keys": false, "chain": `+chain+`}]}`)
		return LoadConfig(filepath.Join(dir, "pscsd.json"))
	}
	write("both.pem", "issued by the city\n"+certPEM(mid.Cert.Raw)+certPEM(root.Cert.Raw))
	write("mid.pem", certPEM(mid.Cert.Raw))
	c, err := load(`["both.pem", "mid.pem"]`)
	if err != nil {
		t.Fatal(err)
	}
	got := c.Cards[0].chain
	if len(got) != 3 || !got[0].Equal(mid.Cert) || !got[1].Equal(root.Cert) || !got[2].Equal(mid.Cert) {
		t.Errorf("chain of %d certificates, want mid, root, mid", len(got))
	}
	write("key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}})))
	write("broken.pem", certPEM(mid.Cert.Raw[:40]))
	write("trailing.pem", certPEM(mid.Cert.Raw)+"-----BEGIN CERT")
	write("empty.pem", "\n")
	for _, bad := range []struct{ chain, want string }{
		{`["absent.pem"]`, "absent.pem"},
		{`["key.pem"]`, `"PRIVATE KEY", not CERTIFICATE`},
		{`["broken.pem"]`, "certificate 1"},
		{`["trailing.pem"]`, "after certificate 1: not PEM"},
		{`["empty.pem"]`, "no certificate"},
	} {
		_, err := load(bad.chain)
		if err == nil || !strings.Contains(err.Error(), "cards[0] mayor: chain") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("chain %s: %v, want an error naming the card and %q", bad.chain, err, bad.want)
		}
	}
}

// FuzzParseCertificates: any file content gives certificates or an
// error, never a panic, and at most maxChain certificates.
func FuzzParseCertificates(f *testing.F) {
	root := testpki.NewCA("root")
	mid := root.Intermediate("mid")
	one := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mid.Cert.Raw})
	f.Add(one)
	f.Add(append(append([]byte("text\n"), one...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Cert.Raw})...))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mid.Cert.Raw[:50]}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := parseCertificates(b)
		if err == nil && (len(certs) == 0 || len(certs) > maxChain) {
			t.Fatalf("%d certificates without an error", len(certs))
		}
	})
}
