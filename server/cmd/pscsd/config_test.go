package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/server/vault"
	"github.com/pscs/pscs/transport"
)

// TestConfigTPMDA: tpm_da's defaults, its fields, and its refusals.
func TestConfigTPMDA(t *testing.T) {
	load := func(t *testing.T, da string) (*Config, error) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "pscsd.conf")
		body := `{"state": "s"` + da + `}`
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(path)
	}
	def := vault.DefaultDA
	def.DiscardLockoutAuth = true
	for _, tc := range []struct {
		name, json string
		want       vault.DA
	}{
		{"defaults", ``, def},
		{"all fields", `, "tpm_da": {"max_tries": 100, "recovery_seconds": 7, "lockout_recovery_seconds": 9, "reserve": 10, "keep_lockout_auth": true}`,
			vault.DA{MaxTries: 100, Recovery: 7 * time.Second, LockoutRecovery: 9 * time.Second, Reserve: 10}},
		{"some fields", `, "tpm_da": {"recovery_seconds": 600}`,
			vault.DA{MaxTries: def.MaxTries, Recovery: 10 * time.Minute, LockoutRecovery: def.LockoutRecovery, Reserve: def.Reserve, DiscardLockoutAuth: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.json)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.TPMDA.vaultDA(); got != tc.want {
				t.Errorf("vaultDA() = %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{
		`, "tpm_da": {"max_tries": 4}`, // not above the default reserve
		`, "tpm_da": {"max_tries": 8, "reserve": 8}`,
		`, "tpm_da": {"max_tries": 8, "recovery_seconds": 0, "reserve": 9}`,
	} {
		if _, err := load(t, bad); err == nil || !strings.Contains(err.Error(), "tpm_da") {
			t.Errorf("config %s: %v, want an error naming tpm_da", bad, err)
		}
	}
	if _, err := load(t, `, "tpm_da": {"tries": 8}`); err == nil || !strings.Contains(err.Error(), `unknown field "tries"`) {
		t.Errorf("unknown tpm_da field: %v, want an error", err)
	}
}

// TestLimitsConfig: the limits of the configuration reach transport.Limits
// field by field; absent ones stay zero (the transport's defaults).
func TestLimitsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pscsd.json")
	os.WriteFile(path, []byte(`{"state": "s", "limits": {"connections_per_identity": 2, "streams_per_identity": 3,
	  "request_rate": 4.5, "request_burst": 5, "nonces_per_identity": 6, "request_bytes_per_identity": 7,
	  "request_bytes": 8, "retry_handshakes": -1}}`), 0o600)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := transport.Limits{ConnectionsPerIdentity: 2, StreamsPerIdentity: 3, RequestRate: 4.5, RequestBurst: 5,
		NoncesPerIdentity: 6, RequestBytesPerIdentity: 7, RequestBytes: 8, RetryHandshakes: -1}
	if got := cfg.Limits.transport(); got != want {
		t.Errorf("limits %+v, want %+v", got, want)
	}
	os.WriteFile(path, []byte(`{"state": "s", "limits": {"connections": 2}}`), 0o600)
	if _, err := LoadConfig(path); err == nil {
		t.Error("an unknown limit was accepted")
	}
}

// TestConfigConsole: "console" is off when absent, listens on loopback by
// default, and refuses long-lived links and negative durations.
func TestConfigConsole(t *testing.T) {
	load := func(t *testing.T, extra string) (*Config, error) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "pscsd.conf")
		if err := os.WriteFile(path, []byte(`{"state": "s"`+extra+`}`), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(path)
	}
	if c, err := load(t, ``); err != nil || c.Console != nil {
		t.Errorf("no console key: %+v, %v", c.Console, err)
	}
	if c, err := load(t, `, "console": {}`); err != nil || c.Console.Listen != "127.0.0.1:9443" {
		t.Errorf("an empty console: %+v, %v", c.Console, err)
	}
	c, err := load(t, `, "console": {"listen": "127.0.0.1:0", "host": "pscs.example", "link_seconds": 60, "idle_minutes": 5, "session_hours": 1}`)
	if err != nil || *c.Console != (ConsoleConfig{Listen: "127.0.0.1:0", Host: "pscs.example", LinkSeconds: 60, IdleMinutes: 5, SessionHours: 1}) {
		t.Errorf("console fields: %+v, %v", c.Console, err)
	}
	for _, bad := range []string{`{"link_seconds": 7200}`, `{"idle_minutes": -1}`, `{"port": 1}`} {
		if _, err := load(t, `, "console": `+bad); err == nil {
			t.Errorf("console %s accepted", bad)
		}
	}
}
