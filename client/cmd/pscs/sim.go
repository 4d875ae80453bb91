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
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/simkit"
)

func (a *app) sim(ctx context.Context, fs *cli.Flags, args []string) error {
	addrs := fs.String("vpcd", "127.0.0.1:35963", "vpcd address(es) of the reader slots to plug cards into, comma-separated: one card each")
	profile := fs.String("profile", "piv", "card to simulate: piv, openpgp (OpenPGP card 3.4 as a YubiKey 5.4.3) or esteid (EstEID 2018)")
	seed := fs.String("seed", "", "derive keys and serial from this seed (reproducible cards; each card gets SEED/N)")
	latency := fs.String("latency", "real", "card timing: real (measured cards) or none")
	pin := fs.String("pin", "", "PIN, or OpenPGP PW1 (default 123456), or EstEID PIN1 (default 1234)")
	pin2 := fs.String("pin2", "", "EstEID PIN2, the signature PIN (default 12345)")
	puk := fs.String("puk", "", "PUK, or OpenPGP admin PIN PW3 (default 12345678)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile != "piv" && *profile != "openpgp" && *profile != "esteid" {
		return fs.Usagef("-profile: unknown profile %q (known: piv, openpgp, esteid)", *profile)
	}
	var lat simkit.Latency
	switch *latency {
	case "real":
		lat = pivsim.RealLatency
		if *profile == "openpgp" {
			lat = simkit.YubiKey5
		}
		if *profile == "esteid" {
			lat = eidsim.RealLatency
		}
	case "none":
	default:
		return fs.Usagef("-latency: %q is not real or none", *latency)
	}
	srv := vpcd.Server{Logger: a.log}
	var wg sync.WaitGroup
	for i, addr := range strings.Split(*addrs, ",") {
		var cardSeed []byte
		if *seed != "" {
			cardSeed = fmt.Appendf(nil, "%s/%d", *seed, i)
		}
		var card vpcd.Card
		if *profile == "esteid" {
			c, err := eidsim.New(eidsim.Config{PIN1: *pin, PIN2: *pin2, PUK: *puk, Latency: lat, Seed: cardSeed})
			if err != nil {
				return err
			}
			p := c.Person()
			a.log.Info("simulated EstEID card", "vpcd", addr, "document", p.DocumentNumber,
				"holder", p.Surname+","+p.GivenName+","+p.PersonalCode)
			card = c
		} else if *profile == "openpgp" {
			c, err := pgpsim.New(pgpsim.Config{PW1: *pin, PW3: *puk, Latency: lat, Seed: cardSeed})
			if err != nil {
				return err
			}
			sig := c.KeyFingerprint(pgpsim.KeySign)
			a.log.Info("simulated OpenPGP card", "vpcd", addr, "serial", fmt.Sprintf("%08X", c.Serial()), "signature key", fmt.Sprintf("%X", sig[:]))
			card = c
		} else {
			c, err := pivsim.New(pivsim.Config{PIN: *pin, PUK: *puk, Latency: lat, Seed: cardSeed})
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
