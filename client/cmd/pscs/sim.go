package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

func (a *app) sim(ctx context.Context, fs *cli.Flags, args []string) error {
	addrs := fs.String("vpcd", "127.0.0.1:35963", "vpcd address(es) of the reader slots to plug cards into, comma-separated: one card each")
	profile := fs.String("profile", "piv", "card to simulate: piv")
	seed := fs.String("seed", "", "derive keys and serial from this seed (reproducible cards; each card gets SEED/N)")
	latency := fs.String("latency", "real", "card timing: real (measured cards) or none")
	pin := fs.String("pin", "", "PIN (default 123456)")
	puk := fs.String("puk", "", "PUK (default 12345678)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile != "piv" {
		return fs.Usagef("-profile: unknown profile %q (known: piv)", *profile)
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
		card, err := pivsim.New(cfg)
		if err != nil {
			return err
		}
		a.log.Info("simulated PIV card", "vpcd", addr, "serial", card.Serial(),
			"9a", card.Fingerprint(pivsim.SlotAuthentication), "9c", card.Fingerprint(pivsim.SlotSignature))
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
