package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"time"

	"github.com/pscs/pscs/internal/cms"
)

// BackupConfig is the configuration's "backup": pscsd mails signed and
// encrypted backups of its state to owners (server/backup).
//
//	"backup": {
//	  "interval": "24h",              // periodic backups; "" or absent: on demand only
//	  "retry": "1m",                  // first wait after a failure; doubles up to interval (or 1h)
//	  "smtp": "mail.example:587",     // the mail server: STARTTLS is required
//	  "smtp_name": "",                // the name its certificate must hold; default: smtp's host
//	  "ca": "smtp-ca.pem",            // CA certificates (PEM) that verify the mail server; default: the system's
//	  "from": "pscsd@example",        // the sender; also in the signing certificate
//	  "owners": {"alice": "alice@example", "bob": ""}
//	                                  // who gets backups, by identity; "": the e-mail
//	                                  // address in the owner's certificate
//	  "key_transport": "oaep"         // RSA owners: "oaep" (default) or "pkcs1v15" (openssl smime)
//	}
type BackupConfig struct {
	Interval string            `json:"interval"`
	Retry    string            `json:"retry"`
	SMTP     string            `json:"smtp"`
	SMTPName string            `json:"smtp_name"`
	CA       string            `json:"ca"`
	From     string            `json:"from"`
	Owners   map[string]string `json:"owners"`
	// KeyTransport is how an RSA owner's key receives the content key:
	// "oaep" (the default) or "pkcs1v15" (docs/backup.md).
	KeyTransport string `json:"key_transport"`

	interval, retry time.Duration
	kt              cms.KeyTransport
	roots           *x509.CertPool
}

// loadBackupConfig reads a JSON file holding a BackupConfig (pscsd --demo
// --backup FILE); relative paths are relative to the file.
func loadBackupConfig(path string) (*BackupConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c BackupConfig
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.prepare(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// prepare checks the configuration and reads its CA file (relative to
// dir).
func (c *BackupConfig) prepare(dir string) error {
	var err error
	if c.Interval != "" {
		if c.interval, err = time.ParseDuration(c.Interval); err != nil || c.interval < time.Second {
			return fmt.Errorf("backup.interval: %q is not a duration of 1s or more (24h, 90m)", c.Interval)
		}
	}
	c.retry = time.Minute
	if c.Retry != "" {
		if c.retry, err = time.ParseDuration(c.Retry); err != nil || c.retry < 100*time.Millisecond {
			return fmt.Errorf("backup.retry: %q is not a duration of 100ms or more", c.Retry)
		}
	}
	if _, _, err := net.SplitHostPort(c.SMTP); err != nil {
		return fmt.Errorf("backup.smtp: %q is not host:port", c.SMTP)
	}
	if _, err := mail.ParseAddress(c.From); err != nil || c.From == "" {
		return fmt.Errorf("backup.from: %q is not an e-mail address", c.From)
	}
	if len(c.Owners) == 0 {
		return fmt.Errorf("backup.owners: name at least one owner")
	}
	for name, addr := range c.Owners {
		if addr == "" {
			continue
		}
		if a, err := mail.ParseAddress(addr); err != nil || a.Address != addr {
			return fmt.Errorf("backup.owners.%s: %q is not a bare e-mail address", name, addr)
		}
	}
	if c.kt, err = cms.ParseKeyTransport(c.KeyTransport); err != nil {
		return fmt.Errorf("backup.key_transport: %q is neither \"oaep\" nor \"pkcs1v15\"", c.KeyTransport)
	}
	if c.CA != "" {
		if !filepath.IsAbs(c.CA) {
			c.CA = filepath.Join(dir, c.CA)
		}
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return fmt.Errorf("backup.ca: %w", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("backup.ca: %s holds no PEM certificate", c.CA)
		}
	}
	return nil
}

// maxRetry is the longest wait between attempts after failures.
func (c *BackupConfig) maxRetry() time.Duration {
	if c.interval > 0 {
		return max(c.interval, c.retry)
	}
	return max(time.Hour, c.retry)
}
