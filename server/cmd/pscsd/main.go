// Command pscsd is the Proxy Smart Card System server.
//
// Usage:
//
//	pscsd -config FILE [-trace] [-json]
//	pscsd --demo --state DIR [--listen ADDR] [--admin ADDR] [--console ADDR] [--card-latency real|none] [--limits FILE] [--backup FILE] [-trace] [-json]
//	pscsd init -config FILE -owner NAME -out DIR [-server HOST:PORT] [-trace] [-json]
//	pscsd recover (-config FILE | --demo --state DIR) -accept log[,store] -reason TEXT [-trace] [-json]
//	pscsd restore (-config FILE | --demo --state DIR) -ca FILE [-key FILE] -reason TEXT [-trace] [-json] BACKUP
//	pscsd inventory [-trace] [-json]
//	pscsd config-help
//	pscsd version (or pscsd --version)
//
// Every mode prints its usage and flags with -h (to standard output, exit
// 0); an unknown command, a stray argument, a flag of another mode or a
// missing flag is refused with the usage (exit 2); see internal/cli.
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
// restore puts a backup back (see docs/backup.md): the mail as delivered,
// decrypted with an owner's -key, or the signed entity openssl cms
// -decrypt writes. It verifies pscsd's signature (chained to -ca), the
// archive's digests and, with the TPM, the store's and log's MACs and the
// log's checkpoints, before it changes anything; then it moves the files it
// replaces to DIR/replaced-TIME, accepts the rollback as recover does,
// records the restore, carries forward the policy state the replaced log
// knew that the backup does not, and exits. It must run on the TPM that
// made the backup, with pscsd stopped.
//
// With "backup" in the configuration (--demo: --backup FILE holding that
// object), pscsd mails signed and encrypted backups to the owners it names,
// every interval and on pscs admin backup.
//
// --limits FILE sets the demo's resource limits from a JSON file holding
// what a configuration's "limits" holds (see Config); without it, the
// defaults.
//
// inventory watches the readers and logs every card's profile, keys and
// PIN state, until it is interrupted; it serves nothing.
//
// config-help lists the configuration file's fields, with their defaults
// and meaning.
//
// -trace logs every APDU (secrets redacted); -json logs in JSON.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/registry"
	"github.com/pscs/pscs/server/store"
)

var knownProfiles = registry.Profiles()

func main() { cli.Main(program()) }

// program is pscsd's command line.
func program() *cli.Program {
	return &cli.Program{Name: "pscsd", Summary: "the Proxy Smart Card System server",
		Default: &cli.Command{
			Args: "-config FILE [-trace] [-json]\n" +
				"--demo --state DIR [--listen ADDR] [--admin ADDR] [--card-latency real|none] [--limits FILE] [--backup FILE] [-trace] [-json]",
			Summary: "serve the remote cards a configuration describes from the PC/SC readers; " +
				"or, with --demo, the whole system on simulated cards and a simulated TPM (not for production)",
			Run: serveCmd},
		Commands: []*cli.Command{
			{Name: "init", Args: "-config FILE -owner NAME -out DIR [-server HOST:PORT] [-trace] [-json]",
				Summary: "enroll an owner on the server's machine, before the server runs: key, certificate, CA and client.conf to DIR",
				Run:     initCmd},
			{Name: "recover", Args: "(-config FILE | --demo --state DIR) -accept log[,store] -reason TEXT [-trace] [-json]",
				Summary: "accept a known loss of state (a restored backup), record it in the audit log, re-anchor, and exit; a lost log revokes every delegation",
				Run:     recoverCmd},
			{Name: "restore", Args: "(-config FILE | --demo --state DIR) -ca FILE [-key FILE] -reason TEXT [-trace] [-json] BACKUP",
				Summary: "restore a backup (the mail as delivered, with the owner's -key; or what openssl cms -decrypt made of it) on this TPM, record it in the audit log, re-anchor, and exit",
				Run:     restoreCmd},
			{Name: "inventory", Args: "[-trace] [-json]",
				Summary: "watch the readers and log every card's profile, keys and PIN state until interrupted (serves nothing)",
				Run:     inventoryCmd},
			{Name: "config-help", Summary: "list the configuration file's fields, their defaults and meaning",
				Run: configHelpCmd},
		},
		Doc: `The configuration file (JSON; unknown fields are refused): pscsd config-help lists every
field; an example is in the README, "Running pscsd on real readers".
`}
}

// logFlags are -trace and -json, which every mode takes.
type logFlags struct{ trace, json *bool }

func declareLogFlags(fs *cli.Flags) logFlags {
	return logFlags{fs.Bool("trace", false, "log every APDU, secrets redacted"), fs.Bool("json", false, "log in JSON")}
}

// logger is the log of lf and the configuration's "log" (cfg may be nil).
func (lf logFlags) logger(cfg *Config) *slog.Logger {
	level := slog.LevelInfo
	if *lf.trace || cfg != nil && cfg.Log.Level == "debug" {
		level = slog.LevelDebug
	} else if cfg != nil && cfg.Log.Level != "" {
		level.UnmarshalText([]byte(cfg.Log.Level))
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if *lf.json || cfg != nil && cfg.Log.JSON {
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	}
	return slog.New(h)
}

// stopped logs why pscsd stops, and says so to cli (exit 1).
func stopped(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, cards.ErrServiceUnavailable) {
		err = cli.NoPCSC(err)
	}
	log.Error("pscsd stopped", "err", err)
	return cli.ErrFailed
}

// demoFlags are the flags of --demo; serve refuses them without it.
var demoFlags = []string{"state", "listen", "admin", "limits", "card-latency", "console", "backup"}

// serveCmd is pscsd -config FILE, and pscsd --demo.
func serveCmd(ctx context.Context, fs *cli.Flags, args []string) error {
	lf := declareLogFlags(fs)
	config := fs.String("config", "", "the configuration `FILE` (JSON; pscsd config-help lists its fields)")
	demo := fs.Bool("demo", false, "run the demo on simulated cards and a simulated TPM (not for production)")
	state := fs.String("state", "", "--demo: the state directory `DIR` (required)")
	listen := fs.String("listen", "127.0.0.1:0", "--demo: the UDP address `ADDR` to serve on")
	admin := fs.String("admin", "127.0.0.1:0", "--demo: the TCP address `ADDR` of the metrics and health endpoints")
	limitsFile := fs.String("limits", "", "--demo: a JSON `FILE` of resource limits, as a configuration's \"limits\"")
	consoleAddr := fs.String("console", "127.0.0.1:0", "--demo: the TCP address `ADDR` of the owners' web console (HTTPS); \"off\": none")
	cardLatency := fs.String("card-latency", "real", "--demo: the simulated cards' speed: real (ECDSA P-256 76 ms, RSA-2048 300 ms) or none")
	backupFile := fs.String("backup", "", "--demo: a JSON `FILE` of backup settings, as a configuration's \"backup\"")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *config != "" && *demo:
		return fs.Usagef("-config or --demo: not both")
	case *config == "" && !*demo:
		return fs.Usagef("give -config FILE to serve the cards of a configuration, or --demo --state DIR for the demo " +
			"(pscsd inventory only watches the readers)")
	case *config != "":
		for _, n := range demoFlags {
			if fs.Given(n) {
				return fs.Usagef("-%s goes with --demo, not with -config (the configuration says where pscsd keeps its state and serves)", n)
			}
		}
		cfg, err := LoadConfig(*config)
		if err != nil {
			return err
		}
		log := lf.logger(cfg)
		return stopped(log, runConfigured(ctx, log, cfg))
	}
	if err := fs.Require("state"); err != nil {
		return err
	}
	if *cardLatency != "real" && *cardLatency != "none" {
		return fs.Usagef("--card-latency: %q is not real or none", *cardLatency)
	}
	var limits LimitsConfig
	if *limitsFile != "" {
		var err error
		if limits, err = loadLimits(*limitsFile); err != nil {
			return err
		}
	}
	var bk *BackupConfig
	if *backupFile != "" {
		var err error
		if bk, err = loadBackupConfig(*backupFile); err != nil {
			return err
		}
	}
	log := lf.logger(nil)
	if *consoleAddr == "off" {
		*consoleAddr = ""
	}
	err := runDemo(ctx, log, *state, *listen, *admin, *consoleAddr, *cardLatency == "real", limits.transport(), bk)
	if ctx.Err() != nil {
		err = nil
	}
	return stopped(log, err)
}

// initCmd is pscsd init.
func initCmd(ctx context.Context, fs *cli.Flags, args []string) error {
	lf := declareLogFlags(fs)
	config := fs.String("config", "", "the configuration `FILE`")
	owner := fs.String("owner", "", "the owner's identity `NAME`")
	out := fs.String("out", "", "the directory `DIR` for the owner's credentials and client.conf")
	serverAddr := fs.String("server", "", "the server's address for the owner's client.conf (default: the configured listen address)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("config", "owner", "out"); err != nil {
		return err
	}
	cfg, err := LoadConfig(*config)
	if err != nil {
		return err
	}
	log := lf.logger(cfg)
	return stopped(log, initOwner(log, cfg, *owner, *out, *serverAddr))
}

// recoverCmd is pscsd recover.
func recoverCmd(ctx context.Context, fs *cli.Flags, args []string) error {
	lf := declareLogFlags(fs)
	config := fs.String("config", "", "the configuration `FILE`")
	demo := fs.Bool("demo", false, "recover the demo's state (with --state)")
	state := fs.String("state", "", "--demo: the state directory `DIR`")
	accept := fs.String("accept", "", "the losses to accept, comma-separated: log (the audit log does not reach its TPM anchor), store (the store is older than the log)")
	reason := fs.String("reason", "", "why (recorded in the audit log)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*config != "") == (*demo || *state != "") || *demo != (*state != "") {
		return fs.Usagef("give -config FILE, or --demo --state DIR")
	}
	rec, err := parseRecovery(*accept, *reason)
	if err != nil {
		return fs.Usagef("%s", strings.TrimPrefix(err.Error(), "recover: "))
	}
	var cfg *Config
	if *config != "" {
		if cfg, err = LoadConfig(*config); err != nil {
			return err
		}
	}
	log := lf.logger(cfg)
	return stopped(log, recoverState(log, cfg, *state, rec))
}

// restoreCmd is pscsd restore.
func restoreCmd(ctx context.Context, fs *cli.Flags, args []string) error {
	lf := declareLogFlags(fs)
	config := fs.String("config", "", "the configuration `FILE`")
	demo := fs.Bool("demo", false, "restore the demo's state (with --state)")
	state := fs.String("state", "", "--demo: the state directory `DIR`")
	caFile := fs.String("ca", "", "pscsd's CA certificate (PEM `FILE`, the ca.pem of an owner's credentials): the backup's signer must chain to it")
	keyFile := fs.String("key", "", "the owner's private key (PEM `FILE`) that decrypts the mail; not needed for what openssl cms -decrypt wrote")
	reason := fs.String("reason", "", "why (recorded in the audit log)")
	pos, err := fs.ParseArgs(args, "BACKUP")
	if err != nil {
		return err
	}
	if (*config != "") == (*demo || *state != "") || *demo != (*state != "") {
		return fs.Usagef("give -config FILE, or --demo --state DIR")
	}
	if err := fs.Require("ca", "reason"); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fs.Usagef("say why with -reason (it goes into the audit log)")
	}
	req := restoreRequest{reason: *reason}
	if req.input, err = os.ReadFile(pos[0]); err != nil {
		return err
	}
	if *keyFile != "" {
		if req.key, err = readPrivateKey(*keyFile); err != nil {
			return err
		}
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	req.roots = x509.NewCertPool()
	if !req.roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no PEM certificate", *caFile)
	}
	var cfg *Config
	if *config != "" {
		if cfg, err = LoadConfig(*config); err != nil {
			return err
		}
	}
	log := lf.logger(cfg)
	return stopped(log, restoreState(log, cfg, *state, req))
}

// inventoryCmd is pscsd inventory.
func inventoryCmd(ctx context.Context, fs *cli.Flags, args []string) error {
	lf := declareLogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := lf.logger(nil)
	return stopped(log, run(ctx, log))
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
		p, c, err := profiles.Detect(ctx, cards.Trace(t, log, registry.Redactor()), knownProfiles...)
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
		st, err := c.PINStatus(ctx, profiles.DefaultPIN(c.PINs()))
		if err != nil {
			return err
		}
		log.Info("card ready", "profile", p.Name(), "serial", info.Serial, "version", info.Version,
			"keys", len(keys), "pin_tries", st.Retries, "pin_blocked", st.Blocked)
		for _, pin := range c.PINs()[min(1, len(c.PINs())):] {
			if st, err := c.PINStatus(ctx, pin.ID); err == nil {
				log.Info("card PIN", "pin", pin.ID, "pin_tries", st.Retries, "pin_blocked", st.Blocked)
			}
		}
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
