package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

func (a *app) sim(ctx context.Context, fs *cli.Flags, args []string) error {
	addrs := fs.String("vpcd", "127.0.0.1:35963", "vpcd address(es) of the reader slots to plug cards into, comma-separated: one card each")
	profile := fs.String("profile", "piv", "card to simulate: piv or esteid")
	seed := fs.String("seed", "", "derive keys and serial from this seed (reproducible cards; each card gets SEED/N)")
	latency := fs.String("latency", "real", "card timing: real (measured cards) or none")
	pin := fs.String("pin", "", "PIN (default 123456; esteid: PIN1, default 1234)")
	pin2 := fs.String("pin2", "", "esteid: PIN2, the signature PIN (default 12345)")
	puk := fs.String("puk", "", "PUK (default 12345678)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile != "piv" && *profile != "esteid" {
		return fs.Usagef("-profile: unknown profile %q (known: piv, esteid)", *profile)
	}
	var lat pivsim.Latency
	switch *latency {
	case "real":
		lat = pivsim.RealLatency
	case "none":
	default:
		return fs.Usagef("-latency: %q is not real or none", *latency)
	}
	srv := vpcd.Server{Logger: a.log}
	var wg sync.WaitGroup
	for i, addr := range strings.Split(*addrs, ",") {
		cfg := pivsim.Config{PIN: *pin, PUK: *puk, Latency: lat}
		if *seed != "" {
			cfg.Seed = fmt.Appendf(nil, "%s/%d", *seed, i)
		}
		var card vpcd.Card
		if *profile == "esteid" {
			c, err := simEstEID(a, addr, eidsim.Config{Seed: cfg.Seed, PIN1: *pin, PIN2: *pin2, PUK: *puk}, *latency == "real")
			if err != nil {
				return err
			}
			card = c
		} else {
			c, err := pivsim.New(cfg)
			if err != nil {
				return err
			}
			a.log.Info("simulated PIV card", "vpcd", addr, "serial", c.Serial(),
				"9a", c.Fingerprint(pivsim.SlotAuthentication), "9c", c.Fingerprint(pivsim.SlotSignature))
			card = c
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Plug(ctx, addr, card)
		}()
	}
	fmt.Fprintln(a.stdout, "cards plugged in; interrupt to remove them")
	wg.Wait()
	a.log.Log(context.Background(), slog.LevelInfo, "cards removed")
	return nil
}

// simEstEID makes a simulated EstEID 2018 card for pscs sim.
func simEstEID(a *app, addr string, cfg eidsim.Config, real bool) (*eidsim.Card, error) {
	if real {
		cfg.Latency = eidsim.RealLatency
	}
	c, err := eidsim.New(cfg)
	if err != nil {
		return nil, err
	}
	p := c.Person()
	a.log.Info("simulated EstEID card", "vpcd", addr, "document", p.DocumentNumber,
		"holder", p.Surname+","+p.GivenName+","+p.PersonalCode)
	return c, nil
}
