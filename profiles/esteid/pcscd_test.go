//go:build cgo

package esteid_test

// The driver through a real pcscd: the simulator plugged in with vpcd,
// the driver on cards/pcsc, as pscsd runs it.

import (
	"context"
	"log/slog"
	"testing"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/profiletest"
)

var daemon *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 2}, func(p *pcscdtest.PCSCD) { daemon = p })
}

// TestConformanceThroughPCSCD runs the profile suite with the driver on
// PC/SC and the simulator behind pcscd and vpcd, alternating readers so
// that a card pulled is never mistaken for the next.
func TestConformanceThroughPCSCD(t *testing.T) {
	pc := daemon.Context(t)
	next := 0
	env := conformance(func(t *testing.T) profiles.Transmitter {
		reader := next % len(daemon.Readers)
		next++
		daemon.Plug(t, reader, newSim(t, t.Name()), pcscdtest.PlugOptions{Logger: slog.New(slog.DiscardHandler),
			Probe: daemon.ContextProbe(pc)})
		k, err := pc.Connect(context.Background(), daemon.Readers[reader])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		return k
	})
	profiletest.Run(t, env)
}
