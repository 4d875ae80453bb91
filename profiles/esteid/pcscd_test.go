//go:build cgo

package esteid_test

// The driver through a real pcscd: the simulator plugged in with vpcd,
// the driver on cards/pcsc, as pscsd runs it.

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/profiletest"
)

var daemon *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 2}, func(p *pcscdtest.PCSCD) { daemon = p })
}

var (
	pcOnce sync.Once
	pc     *pcsc.Context
	pcErr  error
)

// TestConformanceThroughPCSCD runs the profile suite with the driver on
// PC/SC and the simulator behind pcscd and vpcd, alternating readers so
// that a card pulled is never mistaken for the next.
func TestConformanceThroughPCSCD(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	pcOnce.Do(func() { pc, pcErr = pcsc.Open() })
	if pcErr != nil {
		t.Fatal(pcErr)
	}
	next := 0
	env := conformance(func(t *testing.T) profiles.Transmitter {
		reader := next % len(daemon.Readers)
		next++
		daemon.Plug(t, reader, newSim(t, t.Name()), pcscdtest.PlugOptions{Logger: slog.New(slog.DiscardHandler),
			Probe: func(ctx context.Context, i int) ([]byte, error) {
				rs, err := pc.Readers(ctx)
				for _, r := range rs {
					if r.Name == daemon.Readers[i] && r.Present {
						return r.ATR, nil
					}
				}
				return nil, err
			}})
		k, err := pc.Connect(context.Background(), daemon.Readers[reader])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		return k
	})
	profiletest.Run(t, env)
}
