package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/transport"
)

// BenchmarkDemoServer is the whole pscsd on loopback, as delegates meet
// it: pscsd --demo with swtpm as its TPM (the vault, the audit log's MAC
// key, its anchor counter and checkpoint key), zero-latency simulated
// cards. "login" is a vPIN login on a warm connection (the vault's
// Argon2id and TPM work, the audit record); "sign" is a warm signature
// with the 9E key (no card PIN), its audit record fsynced.
func BenchmarkDemoServer(b *testing.B) {
	bin := buildPSCSD(b)
	state := filepath.Join(b.TempDir(), "state")
	r := startDemo(b, bin, state)
	r.log.waitFor(b, serving, 1)
	defer r.stop(b)
	cfg, err := client.LoadConfig(filepath.Join(state, "demo", "client.conf"))
	if err != nil {
		b.Fatal(err)
	}
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	vpin = bytes.TrimSpace(vpin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, 1, vpin); err != nil {
		b.Fatal(err)
	}
	b.Run("login", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Login(ctx, 1, vpin); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/login")
	})
	b.Run("sign", func(b *testing.B) {
		req := &transport.SignRequest{Slot: 1, Key: 10, Mechanism: 0x1045, Data: []byte("bench")}
		for b.Loop() {
			if _, err := c.Sign(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/sig")
	})
}
