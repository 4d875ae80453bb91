// Command pscsd is the Proxy Smart Card System server.
//
// Usage:
//
//	pscsd -config FILE
//	pscsd init -config FILE -owner NAME -out DIR [-server HOST:PORT]
//	pscsd --demo --state DIR [--listen ADDR] [--admin ADDR] [--card-latency real|none] [--limits FILE] [-trace] [-json]
//	pscsd inventory [-trace] [-json]
//	pscsd recover (-config FILE | --demo --state DIR) -accept log[,store] -reason TEXT
//
// With -config, pscsd serves the remote cards the configuration file
// describes (see Config: the state directory, addresses, the TPM, and
// which cards, by serial, form which remote card and who owns it) from the
// PC/SC readers: cards join their remote card when inserted, leave when
// pulled, and rejoin while it runs. Its state (the authenticated store,
// the vault of sealed PINs, the audit log, its CA) lives in the state
// directory, authenticated or sealed with keys of the TPM.
//
// init enrolls an owner on the server's machine, before the server runs:
// it makes a key, has pscsd's CA certify it, and writes the owner's key,
// certificate, the CA certificate and a client.conf to DIR. The owner then
// administers with pscs admin (enroll delegates, register a card's PIN,
// delegate, revoke, unlock, list, export the audit records).
//
// With --demo it runs the whole system on simulated parts in DIR: four
// simulated PIV cards (a parallel remote card "mayor" of three cards with
// one key pair, and "ceo"), swtpm as the TPM, a demo owner who registers
// the PIN and delegates "mayor" to a demo delegate, whose configuration
// goes to DIR/demo/client.conf and virtual PIN to DIR/demo/vpin; it serves
// on ADDR (default 127.0.0.1:0) until stopped, with Prometheus metrics and
// a health check at http://ADMIN/metrics and /healthz:
//
//	PSCS_CONFIG=DIR/demo/client.conf pscs slots
//
// pscsd refuses to start on state that an attacker with the disk could
// have rolled back: an audit log that does not reach its anchor in the TPM
// (records cut off its end, the log deleted, emptied or replaced by an
// older copy, alone or with the store), or a store older than the log
// says. recover is the owner's way on when such a loss is known and
// accepted (a restored backup, a damaged disk): it names the losses it
// accepts, records each in the audit log with the reason, re-anchors the
// state, and exits; pscsd then starts.
//
// --limits FILE sets the demo's resource limits from a JSON file holding
// what a configuration's "limits" holds (see Config); without it, the
// defaults.
//
// inventory watches the readers and logs every card's profile, keys and
// PIN state, until it is interrupted.
//
// -trace logs every APDU (secrets redacted); -json logs in JSON.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/server/store"
)

var knownProfiles = []profiles.Profile{piv.Profile{}}

func main() {
	args := os.Args[1:]
	cmd := ""
	if len(args) > 0 && (args[0] == "init" || args[0] == "inventory" || args[0] == "recover") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("pscsd", flag.ExitOnError)
	trace := fs.Bool("trace", false, "log every APDU, secrets redacted")
	jsonLog := fs.Bool("json", false, "log in JSON")
	config := fs.String("config", "", "configuration file")
	demo := fs.Bool("demo", false, "run the demo on simulated cards and a simulated TPM (not for production)")
	state := fs.String("state", "", "state directory (required with --demo)")
	listen := fs.String("listen", "127.0.0.1:0", "UDP address to serve on (--demo)")
	admin := fs.String("admin", "127.0.0.1:0", "TCP address of the metrics and health endpoints (--demo)")
	limitsFile := fs.String("limits", "", "--demo: a JSON file of resource limits, as a configuration's \"limits\"")
	cardLatency := fs.String("card-latency", "real", "--demo: the simulated cards' speed: real (ECDSA P-256 76 ms, RSA-2048 300 ms) or none")
	owner := fs.String("owner", "", "init: the owner's identity name")
	out := fs.String("out", "", "init: where the owner's credentials and client.conf go")
	serverAddr := fs.String("server", "", "init: the server's address for the owner's client.conf (default: the configured listen address)")
	accept := fs.String("accept", "", "recover: the losses to accept, comma-separated: log (the audit log does not reach its TPM anchor), store (the store is older than the log)")
	reason := fs.String("reason", "", "recover: why (recorded in the audit log)")
	fs.Parse(args)

	var cfg *Config
	if *config != "" {
		var err error
		if cfg, err = LoadConfig(*config); err != nil {
			fmt.Fprintln(os.Stderr, "pscsd:", err)
			os.Exit(2)
		}
	}
	level := slog.LevelInfo
	if *trace || cfg != nil && cfg.Log.Level == "debug" {
		level = slog.LevelDebug
	} else if cfg != nil && cfg.Log.Level != "" {
		level.UnmarshalText([]byte(cfg.Log.Level))
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if *jsonLog || cfg != nil && cfg.Log.JSON {
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(h)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case cmd == "init":
		if cfg == nil || *owner == "" || *out == "" {
			fmt.Fprintln(os.Stderr, "pscsd init: -config, -owner and -out are required")
			os.Exit(2)
		}
		err = initOwner(log, cfg, *owner, *out, *serverAddr)
	case cmd == "recover":
		var rec *recovery
		if rec, err = parseRecovery(*accept, *reason); err != nil {
			fmt.Fprintln(os.Stderr, "pscsd", err)
			os.Exit(2)
		}
		if cfg == nil && (!*demo || *state == "") {
			fmt.Fprintln(os.Stderr, "pscsd recover: -config FILE, or --demo --state DIR")
			os.Exit(2)
		}
		err = recoverState(log, cfg, *state, rec)
	case *demo:
		if *state == "" {
			fmt.Fprintln(os.Stderr, "pscsd: --demo needs --state DIR")
			os.Exit(2)
		}
		if *cardLatency != "real" && *cardLatency != "none" {
			fmt.Fprintln(os.Stderr, "pscsd: --card-latency is real or none")
			os.Exit(2)
		}
		var limits LimitsConfig
		if *limitsFile != "" {
			if limits, err = loadLimits(*limitsFile); err != nil {
				fmt.Fprintln(os.Stderr, "pscsd:", err)
				os.Exit(2)
			}
		}
		if err = runDemo(ctx, log, *state, *listen, *admin, *cardLatency == "real", limits.transport()); ctx.Err() != nil {
			err = nil
		}
	case cfg != nil:
		err = runConfigured(ctx, log, cfg)
	default:
		err = run(ctx, log)
	}
	if err != nil {
		log.Error("pscsd stopped", "err", err)
		os.Exit(1)
	}
}

// initOwner enrolls an owner on the server's machine (see the package
// documentation).
func initOwner(log *slog.Logger, cfg *Config, owner, out, addr string) error {
	st, err := openConfigured(cfg, log, nil)
	if err != nil {
		return err
	}
	defer st.close()
	if _, err := st.store.Get(store.KindIdentity, owner); err == nil {
		return fmt.Errorf("%s is enrolled already", owner)
	}
	if err := enrollLocal(st, owner, out); err != nil {
		return err
	}
	if addr == "" {
		addr = strings.Replace(cfg.Listen, "0.0.0.0", "127.0.0.1", 1)
	}
	if err := writeClientConf(filepath.Join(out, "client.conf"), addr, cfg.ServerNames[0]); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pscsd: %s enrolled; credentials and client.conf in %s\n", owner, out)
	return nil
}

// recoverState opens the state with the owner's recovery, which records
// every loss it accepts in the audit log, and closes it again.
func recoverState(log *slog.Logger, cfg *Config, demoState string, rec *recovery) error {
	var st *state
	var err error
	if cfg != nil {
		st, err = openConfigured(cfg, log, rec)
	} else {
		var stop func()
		st, stop, err = openDemoState(demoState, log, rec)
		if err == nil {
			defer stop()
		}
	}
	if err != nil {
		return err
	}
	if err := st.close(); err != nil {
		return err
	}
	if len(rec.done) == 0 {
		fmt.Fprintln(os.Stderr, "pscsd recover: nothing was lost; nothing recorded")
	}
	for _, d := range rec.done {
		fmt.Fprintln(os.Stderr, "pscsd recover: recorded in the audit log:", d)
	}
	return nil
}

func run(ctx context.Context, log *slog.Logger) error {
	pc, err := pcsc.Open()
	if err != nil {
		return err
	}
	defer pc.Close()
	events := make(chan pcsc.Event, 16)
	watchErr := make(chan error, 1)
	go func() { watchErr <- pc.Watch(ctx, events) }()

	workers := map[string]*cards.Worker{}
	defer func() {
		for _, w := range workers {
			w.Close()
		}
	}()
	log.Info("pscsd watching readers")
	for {
		select {
		case <-ctx.Done():
			log.Info("pscsd stopping")
			return nil
		case err := <-watchErr:
			return fmt.Errorf("watching readers: %w", err)
		case ev := <-events:
			rlog := log.With("reader", ev.Reader)
			switch ev.Kind {
			case pcsc.Inserted:
				if w := workers[ev.Reader]; w != nil {
					go w.Close() // never block the event loop on a busy card
				}
				reader := ev.Reader
				w := cards.NewWorker(func(ctx context.Context) (cards.Conn, error) {
					return pc.Connect(ctx, reader)
				}, rlog)
				workers[reader] = w
				rlog.Info("card inserted", "atr", fmt.Sprintf("%X", ev.ATR))
				go inventory(ctx, w, rlog)
			case pcsc.Removed:
				if w := workers[ev.Reader]; w != nil {
					go w.Close()
					delete(workers, ev.Reader)
				}
				rlog.Info("card removed")
			default:
				rlog.Info("reader event", "kind", ev.Kind.String())
			}
		}
	}
}

// inventory detects the card's profile and logs its keys and PIN state.
func inventory(ctx context.Context, w *cards.Worker, log *slog.Logger) {
	err := w.Do(ctx, func(ctx context.Context, t cards.Transmitter) error {
		p, c, err := profiles.Detect(ctx, cards.Trace(t, log), knownProfiles...)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		keys, err := c.Keys(ctx)
		if err != nil {
			return err
		}
		st, err := c.PINStatus(ctx)
		if err != nil {
			return err
		}
		log.Info("card ready", "profile", p.Name(), "serial", info.Serial, "version", info.Version,
			"keys", len(keys), "pin_tries", st.Retries, "pin_blocked", st.Blocked)
		for _, k := range keys {
			subject := ""
			if k.Certificate != nil {
				subject = k.Certificate.Subject.CommonName
			}
			log.Info("key", "id", k.ID, "algorithm", k.Algorithm, "pin", k.PINPolicy.String(), "certificate", subject)
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("card not usable", "err", err)
	}
}
