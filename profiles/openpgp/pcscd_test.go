//go:build cgo

package openpgp_test

// The driver through a real pcscd: the simulator plugged in with vpcd, the
// driver on cards/pcsc, as pscsd runs it.

import (
	"context"
	"log/slog"
	"testing"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/profiletest"
)

var daemon *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 3}, func(p *pcscdtest.PCSCD) { daemon = p })
}

// TestConformanceThroughPCSCD runs the profile suite on three layouts with
// the driver on PC/SC and the simulator behind pcscd and vpcd, cycling
// through the daemon's readers.
func TestConformanceThroughPCSCD(t *testing.T) {
	c := daemon.Context(t)
	next := 0
	plugged := func(t *testing.T, cfg pgpsim.Config) profiles.Transmitter {
		reader := next % len(daemon.Readers)
		next++
		daemon.Plug(t, reader, newSim(t, cfg), pcscdtest.PlugOptions{Logger: slog.New(slog.DiscardHandler), Probe: daemon.ContextProbe(c)})
		k, err := c.Connect(context.Background(), daemon.Readers[reader])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		return k
	}
	// Three layouts cover RSA, ECDSA, EdDSA/X25519 and PW1 for one
	// signature; the others run in process (TestConformance): each
	// layout costs some 25 s of pcscd polling for the cards it plugs.
	for _, name := range []string{"RSA2048", "Ed25519", "PW1Single"} {
		t.Run(name, func(t *testing.T) { profiletest.Run(t, env(configs[name], plugged)) })
	}
}
