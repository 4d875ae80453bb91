package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/simkit"
)

func (a *app) sim(ctx context.Context, fs *cli.Flags, args []string) error {
	addrs := fs.String("vpcd", "127.0.0.1:35963", "vpcd address(es) of the reader slots to plug cards into, comma-separated: one card each")
	profile := fs.String("profile", "piv", "card to simulate: piv or openpgp (OpenPGP card 3.4 as a YubiKey 5.4.3)")
	seed := fs.String("seed", "", "derive keys and serial from this seed (reproducible cards; each card gets SEED/N)")
	latency := fs.String("latency", "real", "card timing: real (measured cards) or none")
	pin := fs.String("pin", "", "PIN, or OpenPGP PW1 (default 123456)")
	puk := fs.String("puk", "", "PUK, or OpenPGP admin PIN PW3 (default 12345678)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile != "piv" && *profile != "openpgp" {
		return fs.Usagef("-profile: unknown profile %q (known: piv, openpgp)", *profile)
	}
	var lat simkit.Latency
	switch *latency {
	case "real":
		lat = pivsim.RealLatency
		if *profile == "openpgp" {
			lat = simkit.YubiKey5
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
		if *profile == "openpgp" {
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
