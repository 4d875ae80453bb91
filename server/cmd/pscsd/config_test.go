package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pscs/pscs/transport"
)

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
