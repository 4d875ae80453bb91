package piv_test

import (
	"testing"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/profiletest"
)

// TestConformanceInProcess runs the profile suite against the simulator
// called directly.
func TestConformanceInProcess(t *testing.T) {
	profiletest.Run(t, profiletest.Env{
		Profile: piv.Profile{},
		New: func(t *testing.T) profiles.Transmitter {
			card, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name())})
			if err != nil {
				t.Fatal(err)
			}
			return card
		},
		PIN: []byte("123456"),
	})
}
