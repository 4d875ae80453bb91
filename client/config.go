package client

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ConfigEnv names the environment variable that points at a delegate's
// configuration file, for the pscs command and the PKCS #11 module.
const ConfigEnv = "PSCS_CONFIG"

// File is a delegate's configuration file (JSON). Paths are relative to the
// file's directory. A field that is not one of these is refused, as
// pscsd's configuration refuses it: a misspelt field would otherwise be
// left out in silence.
//
//	{
//	  "server": "pscs.example:4433",
//	  "server_name": "pscs.example",
//	  "ca": "ca.pem",
//	  "server_spki_sha256": "hex, optional",
//	  "certificate": "delegate.pem",
//	  "key": "delegate.key"
//	}
type File struct {
	Server      string `json:"server"`
	ServerName  string `json:"server_name,omitempty"`
	CA          string `json:"ca,omitempty"`
	ServerSPKI  string `json:"server_spki_sha256,omitempty"`
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
}

// parseFile decodes a configuration file's bytes: one JSON object of
// File's fields and nothing else.
func parseFile(b []byte) (File, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return File{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return File{}, errors.New("data after the configuration's JSON object")
	}
	return f, nil
}

// LoadConfig reads a configuration file and returns the Config it
// describes: the server, how to authenticate it, and the delegate's
// certificate and key.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	f, err := parseFile(b)
	if err != nil {
		return Config{}, fmt.Errorf("client: %s: %w", path, err)
	}
	if f.Server == "" || f.Certificate == "" || f.Key == "" {
		return Config{}, fmt.Errorf("client: %s: server, certificate and key are required", path)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	cert, err := tls.LoadX509KeyPair(rel(f.Certificate), rel(f.Key))
	if err != nil {
		return Config{}, fmt.Errorf("client: %s: %w", path, err)
	}
	cfg := Config{Addr: f.Server, ServerName: f.ServerName, Certificate: cert}
	if f.CA != "" {
		pem, err := os.ReadFile(rel(f.CA))
		if err != nil {
			return Config{}, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return Config{}, fmt.Errorf("client: %s: no certificate in %s", path, f.CA)
		}
	}
	if f.ServerSPKI != "" {
		pin, err := hex.DecodeString(f.ServerSPKI)
		if err != nil || len(pin) != sha256.Size {
			return Config{}, fmt.Errorf("client: %s: server_spki_sha256 must be 64 hex digits", path)
		}
		cfg.ServerSPKI = pin
	}
	if cfg.RootCAs == nil && cfg.ServerSPKI == nil {
		return Config{}, errors.New("client: " + path + ": set ca or server_spki_sha256 to authenticate the server")
	}
	return cfg, nil
}
