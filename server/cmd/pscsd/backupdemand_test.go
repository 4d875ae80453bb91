package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestBackupOnDemandGap: any owner may ask for a backup, each of which
// copies the whole state, checkpoints the log and mails every owner: a
// second one within onDemandGap is refused before anything is done.
func TestBackupOnDemandGap(t *testing.T) {
	b := &backups{cfg: &BackupConfig{}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), kick: make(chan struct{}, 1),
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "s"}), failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "f"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "l"})}
	// The first fails (no owner configured), and counts as asked.
	if _, _, err := b.now(context.Background(), "alice"); err == nil || errors.Is(err, errTooSoon) {
		t.Fatalf("the first backup on demand: %v, want it made (and failing: no owner)", err)
	}
	for _, who := range []string{"alice", "mallory"} {
		if _, _, err := b.now(context.Background(), who); !errors.Is(err, errTooSoon) {
			t.Errorf("%s's backup on demand right after: %v, want %v", who, err, errTooSoon)
		}
	}
	b.asked = b.asked.Add(-onDemandGap)
	if _, _, err := b.now(context.Background(), "alice"); errors.Is(err, errTooSoon) {
		t.Errorf("a backup on demand after the gap: %v", err)
	}
}
