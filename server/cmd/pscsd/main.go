// Command pscsd is the Proxy Smart Card System server.
//
// Usage:
//
//	pscsd [-trace] [-json]
//	pscsd --demo --state DIR [--listen ADDR] [--admin ADDR] [-trace] [-json]
//
// Without --demo, pscsd is (for now) the server's card inventory: it
// watches the PC/SC readers, gives every card that is inserted its own owner
// goroutine (cards.Worker), detects the card's profile, reads its keys and
// PIN state, and logs what it finds, until it is interrupted. It survives
// cards being pulled and reinserted and pcscd being restarted.
//
// With --demo it runs the whole system on simulated parts in DIR: four
// simulated PIV cards (a parallel remote card "mayor" of three cards with
// one key pair, and "ceo"), swtpm as the TPM, a throw-away CA, a delegation
// of "mayor" to a demo delegate with a fresh virtual PIN; it writes the
// delegate's configuration to DIR/demo/client.conf and the virtual PIN to
// DIR/demo/vpin, and serves on ADDR (default 127.0.0.1:0) until stopped,
// with Prometheus metrics and a health check at http://ADMIN/metrics and
// /healthz (default 127.0.0.1:0, printed at start):
//
//	PSCS_CONFIG=DIR/demo/client.conf pscs slots
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
	"syscall"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
)

var knownProfiles = []profiles.Profile{piv.Profile{}}

func main() {
	trace := flag.Bool("trace", false, "log every APDU, secrets redacted")
	jsonLog := flag.Bool("json", false, "log in JSON")
	demo := flag.Bool("demo", false, "run the demo on simulated cards and a simulated TPM (not for production)")
	state := flag.String("state", "", "state directory (required with --demo)")
	listen := flag.String("listen", "127.0.0.1:0", "UDP address to serve on (--demo)")
	admin := flag.String("admin", "127.0.0.1:0", "TCP address of the metrics and health endpoints (--demo)")
	flag.Parse()
	level := slog.LevelInfo
	if *trace {
		level = slog.LevelDebug
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if *jsonLog {
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(h)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *demo {
		if *state == "" {
			fmt.Fprintln(os.Stderr, "pscsd: --demo needs --state DIR")
			os.Exit(2)
		}
		if err := runDemo(ctx, log, *state, *listen, *admin); err != nil && ctx.Err() == nil {
			log.Error("pscsd demo stopped", "err", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, log); err != nil {
		log.Error("pscsd stopped", "err", err)
		os.Exit(1)
	}
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
