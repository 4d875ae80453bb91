package main

import (
	"fmt"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/simkit"
)

// simConfig is what `pscs sim` hands a simulator's constructor; empty
// secrets take the simulator's defaults.
type simConfig struct {
	PIN, PIN2, PUK string
	Latency        simkit.Latency
	Seed           []byte
}

// simulator is one card family `pscs sim -profile NAME` plugs in. The
// names are those of profiles/registry; the simulators are registered
// here, in pscs, so that pscsd does not link them.
type simulator struct {
	// latency is the measured timing of -latency real.
	latency simkit.Latency
	// new makes a card and the attributes that identify it in the log.
	new func(simConfig) (vpcd.Card, string, []any, error)
}

var simulators = map[string]simulator{
	"piv": {latency: pivsim.RealLatency, new: func(c simConfig) (vpcd.Card, string, []any, error) {
		s, err := pivsim.New(pivsim.Config{PIN: c.PIN, PUK: c.PUK, Latency: c.Latency, Seed: c.Seed})
		if err != nil {
			return nil, "", nil, err
		}
		return s, "simulated PIV card", []any{"serial", s.Serial(),
			"9a", s.Fingerprint(pivsim.SlotAuthentication), "9c", s.Fingerprint(pivsim.SlotSignature)}, nil
	}},
	"openpgp": {latency: simkit.YubiKey5, new: func(c simConfig) (vpcd.Card, string, []any, error) {
		s, err := pgpsim.New(pgpsim.Config{PW1: c.PIN, PW3: c.PUK, Latency: c.Latency, Seed: c.Seed})
		if err != nil {
			return nil, "", nil, err
		}
		sig := s.KeyFingerprint(pgpsim.KeySign)
		return s, "simulated OpenPGP card", []any{"serial", fmt.Sprintf("%08X", s.Serial()), "signature key", fmt.Sprintf("%X", sig[:])}, nil
	}},
	"esteid": {latency: eidsim.RealLatency, new: func(c simConfig) (vpcd.Card, string, []any, error) {
		s, err := eidsim.New(eidsim.Config{PIN1: c.PIN, PIN2: c.PIN2, PUK: c.PUK, Latency: c.Latency, Seed: c.Seed})
		if err != nil {
			return nil, "", nil, err
		}
		p := s.Person()
		return s, "simulated EstEID card", []any{"document", p.DocumentNumber,
			"holder", p.Surname + "," + p.GivenName + "," + p.PersonalCode}, nil
	}},
}
