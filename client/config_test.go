package client

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/testpki"
)

// TestLoadConfigStrict: a configuration file holds File's fields and
// nothing else; a misspelt field is refused with its name and the file's,
// as pscsd refuses its own.
func TestLoadConfigStrict(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA("config CA")
	id := ca.Issue("alice", testpki.Options{})
	key, err := x509.MarshalPKCS8PrivateKey(id.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "alice.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Leaf.Raw}), 0o600)
	os.WriteFile(filepath.Join(dir, "alice.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600)
	const good = `{"server": "127.0.0.1:4433", "server_name": "localhost", "ca": "ca.pem", "certificate": "alice.pem", "key": "alice.key"}`
	for _, tc := range []struct {
		name, conf string
		want       string // in the error; "" for none
	}{
		{"good", good, ""},
		{"good with trailing space", good + "\n\n", ""},
		{"misspelt field", `{"server": "127.0.0.1:4433", "ca": "ca.pem", "certificate": "alice.pem", "key": "alice.key", "server_spki": "00"}`, `unknown field "server_spki"`},
		{"field of another file", `{"server": "127.0.0.1:4433", "ca": "ca.pem", "certificate": "alice.pem", "key": "alice.key", "state": "/var/lib/pscsd"}`, `unknown field "state"`},
		// encoding/json matches names regardless of case, in pscsd's
		// configuration too.
		{"case differs", `{"Server": "127.0.0.1:4433", "ca": "ca.pem", "certificate": "alice.pem", "key": "alice.key"}`, ""},
		{"two objects", good + good, "data after the configuration's JSON object"},
		{"trailing garbage", good + "x", "data after the configuration's JSON object"},
		{"not an object", `["server"]`, "cannot unmarshal array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".conf")
			if err := os.WriteFile(path, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("LoadConfig: %v", err)
				}
				if cfg.Addr != "127.0.0.1:4433" || cfg.RootCAs == nil || len(cfg.Certificate.Certificate) != 1 {
					t.Fatalf("LoadConfig: %+v", cfg)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadConfig accepted %s", tc.conf)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadConfig: %v; want the file %s and %q", err, path, tc.want)
			}
		})
	}
}
