package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pscs/pscs/server/vault"
	ptransport "github.com/pscs/pscs/transport"
)

// Config is pscsd's configuration file (JSON). Every field but state and
// cards has a default; relative paths are relative to the file.
//
//	{
//	  "state": "/var/lib/pscsd",          // required: store, vault, audit log
//	  "listen": "0.0.0.0:4433",           // UDP address of the protocol (QUIC)
//	  "metrics": "127.0.0.1:9433",        // HTTP /metrics and /healthz; "off": none
//	  "tpm": "/dev/tpmrm0",               // or "unix:PATH", a swtpm socket (tests)
//	  "server_names": ["pscs.example"],   // names and addresses in the server's
//	                                      // certificate from its own CA;
//	                                      // default: localhost, 127.0.0.1, ::1
//	  "certificate": "", "key": "",       // a server certificate from your PKI
//	                                      // instead of one from pscsd's CA
//	  "tpm_da": {                         // the TPM's limit on vPIN guesses
//	    "max_tries": 32,                  // failures before TPM lockout
//	    "recovery_seconds": 60,           // one failure forgotten per
//	    "lockout_recovery_seconds": 86400,// after a wrong lockout auth
//	    "reserve": 4,                     // failures pscsd never spends
//	    "keep_lockout_auth": false},      // false: discard an empty lockout
//	                                      // auth (see TPMDAConfig)
//	  "pin_tries": 3,                     // a full card PIN retry counter
//	  "require_proof": false,             // refuse cards that cannot prove
//	                                      // their keys without a PIN
//	  "log": {"json": false, "level": "info"},
//	  "limits": {                         // what each identity may hold (see
//	                                      // transport.Limits); 0 or absent:
//	                                      // the default; negative: no limit
//	    "connections_per_identity": 16,   // more: closed with code 21
//	    "streams_per_identity": 256,      // unfinished requests, all its
//	                                      // connections; more: code 22
//	    "request_rate": 1000,             // requests/s of one identity,
//	    "request_burst": 2000,            // at once; more: code 23
//	    "nonces_per_identity": 65536,     // its own replay memory; full: code 24
//	    "request_bytes_per_identity": 4194304, // buffers of its unfinished
//	                                      // requests; more: code 25
//	    "request_bytes": 67108864,        // the same, all identities: code 26
//	    "retry_handshakes": 64,           // unvalidated handshakes in progress
//	                                      // before QUIC Retry (-1: never)
//	    "handshakes": 1024                // all handshakes in progress; more:
//	                                      // QUIC CONNECTION_REFUSED
//	  },
//	  "cards": [                          // the remote cards
//	    {"name": "mayor", "slot": 1, "owner": "alice",
//	     "serials": ["4242000", "4242001"],  // the cards that serve it: one
//	                                         // card, or several (parallel)
//	     "queue": 256,                       // requests waiting for a card,
//	                                         // all delegates; more: code 18
//	     "queue_per_delegate": 64,           // of one delegate (default
//	                                         // queue/4); more: code 18
//	     "same_keys": true,                  // members must hold the same keys
//	                                         // (false: each card its own,
//	                                         // see docs/protocol.md)
//	     "chain": ["issuing-ca.pem"]}        // CA certificates (PEM) that
//	                                         // document signatures carry
//	  ]
//	}
type Config struct {
	State        string       `json:"state"`
	Listen       string       `json:"listen"`
	Metrics      string       `json:"metrics"`
	TPM          string       `json:"tpm"`
	ServerNames  []string     `json:"server_names"`
	Certificate  string       `json:"certificate"`
	Key          string       `json:"key"`
	TPMDA        TPMDAConfig  `json:"tpm_da"`
	PINTries     int          `json:"pin_tries"`
	RequireProof bool         `json:"require_proof"`
	Log          LogConfig    `json:"log"`
	Limits       LimitsConfig `json:"limits"`
	// Backup: signed and encrypted backups by mail (backupconfig.go).
	Backup *BackupConfig `json:"backup"`
	Cards  []CardConfig  `json:"cards"`
	// Console is the owners' web console; nil (absent): none.
	Console *ConsoleConfig `json:"console"`
}

// ConsoleConfig configures the owners' web console (server/console),
// served over HTTPS with pscsd's server certificate:
//
//	"console": {"listen": "127.0.0.1:9443", "host": "pscs.example",
//	            "link_seconds": 120, "idle_minutes": 15, "session_hours": 8}
type ConsoleConfig struct {
	// Listen is the TCP address; default 127.0.0.1:9443 (loopback only).
	Listen string `json:"listen"`
	// Host is the name one-time links use, one the server certificate
	// carries; default the listen address's host.
	Host string `json:"host"`
	// LinkSeconds is how long a one-time link works; default 120.
	LinkSeconds int `json:"link_seconds"`
	// IdleMinutes ends a session without requests; default 15.
	IdleMinutes int `json:"idle_minutes"`
	// SessionHours ends any session; default 8.
	SessionHours int `json:"session_hours"`
}

const defaultConsoleListen = "127.0.0.1:9443"

func (cc *ConsoleConfig) check() error {
	if cc.LinkSeconds < 0 || cc.IdleMinutes < 0 || cc.SessionHours < 0 {
		return fmt.Errorf("console: durations are positive")
	}
	if cc.LinkSeconds > 3600 {
		return fmt.Errorf("console: link_seconds: at most 3600 (a one-time link is short-lived)")
	}
	return nil
}

// TPMDAConfig configures the TPM's dictionary-attack protection, which
// limits how many virtual PINs anyone can test with this TPM: pscsd's
// delegates, or a thief holding the whole appliance (docs/security.md).
// pscsd sets the parameters at start while the TPM's lockout
// authorization is empty; they are TPM-wide. A zero field takes its
// default.
type TPMDAConfig struct {
	// MaxTries: failed vPIN tests after which the TPM refuses every
	// DA-protected key (lockout). Default 32.
	MaxTries uint32 `json:"max_tries"`
	// RecoverySeconds: the TPM forgets one failure per this many seconds;
	// at lockout, 3600/RecoverySeconds guesses per hour remain. Default 60.
	RecoverySeconds uint32 `json:"recovery_seconds"`
	// LockoutRecoverySeconds: how long the lockout hierarchy stays locked
	// after a wrong lockout authorization. Default 86400.
	LockoutRecoverySeconds uint32 `json:"lockout_recovery_seconds"`
	// Reserve: pscsd refuses vPINs (code 116, "try later") when only this
	// many failures are left before lockout, so its delegates' wrong vPINs
	// never lock the TPM. Default 4.
	Reserve uint32 `json:"reserve"`
	// KeepLockoutAuth, when true, leaves an empty lockout authorization as
	// it is. By default (false) pscsd replaces an empty one by 32 random
	// bytes that it does not keep, so that nobody, a thief included, can
	// reset the TPM's counter or raise its limit; nor can anyone clear the
	// TPM from the operating system (tpm2_clear) afterwards, only from the
	// platform firmware, which destroys the vault too.
	KeepLockoutAuth bool `json:"keep_lockout_auth"`
}

// vaultDA is the vault's DA configuration from c, defaults filled in.
func (c TPMDAConfig) vaultDA() vault.DA {
	d := vault.DefaultDA
	if c.MaxTries != 0 {
		d.MaxTries = c.MaxTries
	}
	if c.RecoverySeconds != 0 {
		d.Recovery = time.Duration(c.RecoverySeconds) * time.Second
	}
	if c.LockoutRecoverySeconds != 0 {
		d.LockoutRecovery = time.Duration(c.LockoutRecoverySeconds) * time.Second
	}
	if c.Reserve != 0 {
		d.Reserve = c.Reserve
	}
	d.DiscardLockoutAuth = !c.KeepLockoutAuth
	return d
}

// LogConfig configures pscsd's structured log.
type LogConfig struct {
	JSON  bool   `json:"json"`
	Level string `json:"level"` // debug (APDU trace, secrets redacted), info, warn, error
}

// LimitsConfig bounds what each identity, and all clients together, may
// hold of pscsd: the fields of transport.Limits, whose documentation gives
// each default and refusal code. Zero (or absent) means the default,
// negative no limit.
type LimitsConfig struct {
	ConnectionsPerIdentity  int     `json:"connections_per_identity"`
	StreamsPerIdentity      int     `json:"streams_per_identity"`
	RequestRate             float64 `json:"request_rate"`
	RequestBurst            int     `json:"request_burst"`
	NoncesPerIdentity       int     `json:"nonces_per_identity"`
	RequestBytesPerIdentity int     `json:"request_bytes_per_identity"`
	RequestBytes            int     `json:"request_bytes"`
	RetryHandshakes         int     `json:"retry_handshakes"`
	Handshakes              int     `json:"handshakes"`
}

// loadLimits reads a JSON file holding a LimitsConfig (pscsd --demo
// --limits FILE).
func loadLimits(path string) (LimitsConfig, error) {
	var l LimitsConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return l, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return l, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// transport is the configuration as transport.Limits.
func (l LimitsConfig) transport() ptransport.Limits {
	return ptransport.Limits(l)
}

// CardConfig is one remote card.
type CardConfig struct {
	Name    string   `json:"name"`
	Slot    uint64   `json:"slot"`
	Owner   string   `json:"owner"`
	Serials []string `json:"serials"`
	Queue   int      `json:"queue"`
	// QueuePerDelegate is rsc.Options.PerPrincipal.
	QueuePerDelegate int   `json:"queue_per_delegate"`
	SameKeys         *bool `json:"same_keys"`
	// Chain names PEM files of the certificates of the CAs that issued
	// the cards' certificates (server.Card.Chain); relative to the
	// configuration file's directory. LoadConfig reads them into chain.
	Chain []string `json:"chain"`
	chain []*x509.Certificate
}

// Defaults.
const (
	defaultListen  = "0.0.0.0:4433"
	defaultMetrics = "127.0.0.1:9433"
	defaultTPM     = "/dev/tpmrm0"
)

// LoadConfig reads and checks a configuration file, filling in defaults.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && !strings.HasPrefix(*p, "unix:") {
			*p = filepath.Join(dir, *p)
		}
	}
	rel(&c.State)
	rel(&c.Certificate)
	rel(&c.Key)
	if s, ok := strings.CutPrefix(c.TPM, "unix:"); ok && !filepath.IsAbs(s) {
		c.TPM = "unix:" + filepath.Join(dir, s)
	}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.Metrics == "" {
		c.Metrics = defaultMetrics
	}
	if c.TPM == "" {
		c.TPM = defaultTPM
	}
	if len(c.ServerNames) == 0 {
		c.ServerNames = []string{"localhost", "127.0.0.1", "::1"}
	}
	if c.PINTries == 0 {
		c.PINTries = 3
	}
	if c.Console != nil && c.Console.Listen == "" {
		c.Console.Listen = defaultConsoleListen
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Backup != nil {
		if err := c.Backup.prepare(dir); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	for i := range c.Cards {
		cc := &c.Cards[i]
		for _, p := range cc.Chain {
			rel(&p)
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("%s: cards[%d] %s: chain: %w", path, i, cc.Name, err)
			}
			certs, err := parseCertificates(b)
			if err != nil {
				return nil, fmt.Errorf("%s: cards[%d] %s: chain: %s: %w", path, i, cc.Name, p, err)
			}
			cc.chain = append(cc.chain, certs...)
		}
	}
	return &c, nil
}

// maxChain bounds the certificates of one PEM file of cards[].chain.
const maxChain = 64

// parseCertificates reads the CERTIFICATE blocks of a PEM file: at least
// one, at most maxChain, every block a certificate, nothing else but
// whitespace (and text before a block, as openssl writes) in the file.
func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for n := 1; ; n++ {
		block, rest := pem.Decode(b)
		if block == nil {
			if len(bytes.TrimSpace(b)) != 0 {
				return nil, fmt.Errorf("after certificate %d: not PEM", n-1)
			}
			break
		}
		b = rest
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is %q, not CERTIFICATE", n, block.Type)
		}
		if len(out) == maxChain {
			return nil, fmt.Errorf("more than %d certificates", maxChain)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

func (c *Config) check() error {
	if c.State == "" {
		return fmt.Errorf("state: a directory is required")
	}
	if (c.Certificate == "") != (c.Key == "") {
		return fmt.Errorf("certificate and key go together")
	}
	if err := c.TPMDA.vaultDA().Validate(); err != nil {
		return fmt.Errorf("tpm_da: %w", err)
	}
	if c.Console != nil {
		if err := c.Console.check(); err != nil {
			return err
		}
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	names, slots, serials := map[string]bool{}, map[uint64]bool{}, map[string]string{}
	for i, cc := range c.Cards {
		switch {
		case cc.Name == "":
			return fmt.Errorf("cards[%d]: a name is required", i)
		case names[cc.Name]:
			return fmt.Errorf("cards[%d]: name %q used twice", i, cc.Name)
		case cc.Slot == 0:
			return fmt.Errorf("cards[%d] %s: slot must be 1 or more", i, cc.Name)
		case slots[cc.Slot]:
			return fmt.Errorf("cards[%d] %s: slot %d used twice", i, cc.Name, cc.Slot)
		case cc.Owner == "":
			return fmt.Errorf("cards[%d] %s: an owner is required", i, cc.Name)
		case len(cc.Serials) == 0:
			return fmt.Errorf("cards[%d] %s: serials: at least one card", i, cc.Name)
		}
		for _, s := range cc.Serials {
			if other, ok := serials[s]; ok {
				return fmt.Errorf("cards[%d] %s: card %s serves %s already", i, cc.Name, s, other)
			}
			serials[s] = cc.Name
		}
		names[cc.Name], slots[cc.Slot] = true, true
	}
	return nil
}

// sameKeys is the card's same_keys, true by default.
func (cc CardConfig) sameKeys() bool { return cc.SameKeys == nil || *cc.SameKeys }
