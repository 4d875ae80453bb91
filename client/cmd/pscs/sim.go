package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/profiles/registry"
	"github.com/pscs/pscs/profiles/simkit"
)

// simNameList lists the profiles of profiles/registry that have a
// simulator, in the registry's order.
func simNameList() []string {
	var ns []string
	for _, e := range registry.All() {
		if _, ok := simulators[e.Name]; ok {
			ns = append(ns, e.Name)
		}
	}
	return ns
}

// simNames describes them for -profile's help.
func simNames() string {
	var b strings.Builder
	for i, n := range simNameList() {
		if i > 0 {
			b.WriteString(", ")
		}
		e, _ := registry.Lookup(n)
		fmt.Fprintf(&b, "%s (%s)", n, e.Description)
	}
	return b.String()
}

func (a *app) sim(ctx context.Context, fs *cli.Flags, args []string) error {
	addrs := fs.String("vpcd", "127.0.0.1:35963", "vpcd address(es) of the reader slots to plug cards into, comma-separated: one card each")
	profile := fs.String("profile", "piv", "card to simulate: "+simNames())
	seed := fs.String("seed", "", "derive keys and serial from this seed (reproducible cards; each card gets SEED/N)")
	latency := fs.String("latency", "real", "card timing: real (measured cards) or none")
	pin := fs.String("pin", "", "PIN, or OpenPGP PW1 (default 123456), or EstEID PIN1 (default 1234)")
	pin2 := fs.String("pin2", "", "EstEID PIN2, the signature PIN (default 12345)")
	puk := fs.String("puk", "", "PUK, or OpenPGP admin PIN PW3 (default 12345678)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sim, ok := simulators[*profile]
	if !ok {
		return fs.Usagef("-profile: unknown profile %q (known: %s)", *profile, strings.Join(simNameList(), ", "))
	}
	var lat simkit.Latency
	switch *latency {
	case "real":
		lat = sim.latency
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
		card, msg, attrs, err := sim.new(simConfig{PIN: *pin, PIN2: *pin2, PUK: *puk, Latency: lat, Seed: cardSeed})
		if err != nil {
			return err
		}
		a.log.Info(msg, append([]any{"vpcd", addr}, attrs...)...)
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
