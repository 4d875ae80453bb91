package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/registry"
	"github.com/pscs/pscs/server"
	tpmanchor "github.com/pscs/pscs/server/anchor"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/console"
	"github.com/pscs/pscs/server/metrics"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/server/vault"
	ptransport "github.com/pscs/pscs/transport"
)

// state is what pscsd keeps in its state directory, opened: the vault on
// the TPM, the authenticated store, the audit log, and the CA.
type state struct {
	dir           string
	tpm           transport.TPMCloser
	vault         *vault.Vault
	store         *store.Store
	audit         *audit.Log
	ca            *server.CA
	checkpoint    *x509.Certificate // certifies the key that signs the log's checkpoints
	checkpointKey *tpmanchor.Key
	// policy is the policy state the audit log keeps, read as Open
	// checked it, for the Book once the store's delegations are granted.
	policy *policy.Rebuild
}

// openConfigured opens the state a configuration names, on its TPM.
func openConfigured(cfg *Config, log *slog.Logger, rec *recovery) (*state, error) {
	tpm, err := openTPM(cfg.TPM)
	if err != nil {
		return nil, fmt.Errorf("TPM %s: %w", cfg.TPM, err)
	}
	return openState(cfg.State, tpm, log, cfg.TPMDA.vaultDA(), rec)
}

// openTPM opens the TPM a configuration names: a character device
// (/dev/tpmrm0) or "unix:PATH", a swtpm socket.
func openTPM(spec string) (transport.TPMCloser, error) {
	if p, ok := strings.CutPrefix(spec, "unix:"); ok {
		return linuxudstpm.Open(p)
	}
	return linuxtpm.Open(spec)
}

// openState opens (creating on the first start) the state in dir on tpm,
// with da the TPM's dictionary-attack configuration. It takes ownership of
// tpm. rec, if not nil, is an owner's recovery (pscsd recover): the losses
// it names are accepted and recorded in the log instead of refused.
//
// The audit log is anchored in a TPM NV counter (server/anchor): a log
// cut, deleted, emptied or older than the counter is refused, and so,
// through the store head the log records, is a store older than the log.
// Its checkpoints are signed by a TPM-held key certified by pscsd's CA.
func openState(dir string, tpm transport.TPMCloser, log *slog.Logger, da vault.DA, rec *recovery) (*state, error) {
	s := &state{dir: dir, tpm: tpm}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	var err error
	if s.vault, err = vault.Open(tpm, filepath.Join(dir, "vault"), vault.WithDA(da)); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	logDA(log, s.vault, da)
	// Records of the store and the audit log are authenticated with a key
	// only this TPM can derive.
	mac, err := server.NewTPMKeyedMAC(s.vault)
	if err != nil {
		return nil, err
	}
	// The audit log first: it holds the store's last anchored head (read
	// as Open checks the log), and a store older than that (an old copy of
	// the whole file) is refused.
	var anchor store.Anchor
	found := false
	// The policy state (use counts, lockouts, locks) is rebuilt from the
	// same read: each record keeps the state its request left.
	s.policy = &policy.Rebuild{Since: time.Now().Add(-time.Hour)}
	var known marks // for a recovery: the policy states the log holds
	if rec != nil {
		known = marks{}
	}
	scan := func(r *audit.Record) {
		if storeHead(r) && anchor.UnmarshalBinary(r.Result) == nil {
			found = true
		}
		if m, ok := server.PolicyMark(r); ok {
			s.policy.Add(m)
			if known != nil {
				known.add(r)
			}
		}
	}
	counter, err := tpmanchor.OpenCounter(s.vault.WithTPM, tpmanchor.CounterHandle(s.vault.KeyID()))
	if err != nil {
		return nil, err
	}
	key, err := tpmanchor.OpenKey(s.vault.WithTPM, filepath.Join(dir, "vault"))
	if err != nil {
		return nil, err
	}
	s.checkpointKey = key
	opts := audit.Options{Scan: scan, Counter: counter, Signer: key}
	if rec != nil {
		opts.Accept = rec.acceptLog
	}
	if s.audit, err = audit.Open(filepath.Join(dir, "audit.log"), mac, opts); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if r := s.audit.Recovered(); r != nil {
		log.Warn("audit log: a record cut by a crash was dropped", "seq", r.Seq)
	}
	if rec != nil {
		if err := rec.record(s.audit, s.audit.Accepted()); err != nil {
			return nil, err
		}
	}
	var sopts []store.Option
	if found {
		sopts = append(sopts, store.WithAnchor(anchor))
	}
	s.store, err = store.Open(filepath.Join(dir, "store"), mac, sopts...)
	storeLost := false
	if err != nil && found && rec != nil && rec.accepts(lossStore) {
		// The owner accepts the store as it is: its head goes into the
		// log below, after the loss is recorded.
		if s.store != nil {
			// Open answers a rolled-back store with the store and the
			// error: it holds the store's lock, which the new Open takes.
			s.store.Close()
			s.store = nil
		}
		if err = rec.recordStore(s.audit, err); err == nil {
			s.store, err = store.Open(filepath.Join(dir, "store"), mac)
			storeLost = true
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err) // an altered or rolled-back store is reported, not used
	}
	if storeLost {
		if err := keepRevocations(s.store, known); err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
	}
	if rec != nil && rec.revoke && s.audit.Accepted() != nil {
		// What happened after the log's end is unknown: no revocation
		// made then may come back to life.
		if err := rec.revokeUnknown(s.audit, s.store, known, s.policy.Add); err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
	}
	if s.ca, err = loadOrMakeCA(s.store, s.vault); err != nil {
		return nil, err
	}
	if s.checkpoint, err = checkpointCertificate(s.store, s.ca, key); err != nil {
		return nil, err
	}
	// Beside the log, for pscs audit verify -checkpoint-cert.
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.checkpoint.Raw})
	if err := os.WriteFile(filepath.Join(dir, "checkpoint.pem"), cp, 0o644); err != nil {
		return nil, err
	}
	// The store's head goes into the audit log at every start, so that an
	// old copy of the whole store shows against the log.
	head := s.store.Head()
	hb, _ := head.MarshalBinary()
	if _, err := s.audit.Append(context.Background(), &audit.Record{Op: "store-head", Identity: "pscsd", Result: hb, Anchor: true}); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	ok = true
	return s, nil
}

// checkpointCertificate is the CA's certificate of the checkpoint key,
// issued on the first start (and again if the key changed).
func checkpointCertificate(st *store.Store, ca *server.CA, key *tpmanchor.Key) (*x509.Certificate, error) {
	der, err := st.Get(store.KindConfig, "checkpoint-certificate")
	if err == nil {
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		if c, err := x509.ParseCertificate(der); err == nil && key.Public().Equal(c.PublicKey) {
			if _, err := audit.CheckpointCertificate(c, roots); err == nil {
				return c, nil
			}
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	c, err := ca.IssueCheckpoint(key.Public())
	if err != nil {
		return nil, err
	}
	if err := st.Put(store.KindConfig, "checkpoint-certificate", c.Raw); err != nil {
		return nil, err
	}
	return c, nil
}

// storeHead reports whether r records the store's head: pscsd's record at
// start ("store-head") or an administration change's.
func storeHead(r *audit.Record) bool {
	return r.Decision == 0 && len(r.Result) == 40 && (r.Op == "store-head" || strings.HasPrefix(r.Op, "admin:"))
}

func (s *state) close() error {
	var err error
	if s.audit != nil {
		err = s.audit.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.vault != nil {
		s.vault.Close()
	}
	if s.tpm != nil {
		s.tpm.Close()
	}
	return err
}

// logDA reports the TPM's dictionary-attack state at start, and warns when
// the TPM keeps parameters other than the configured ones (its lockout
// authorization was set before).
func logDA(log *slog.Logger, v *vault.Vault, want vault.DA) {
	st, err := v.DAStatus()
	if err != nil {
		log.Warn("TPM dictionary-attack state unreadable", "err", err)
		return
	}
	log.Info("TPM dictionary-attack protection", "max_tries", st.MaxTries, "recovery", st.Recovery,
		"lockout_recovery", st.LockoutRecovery, "counter", st.Counter, "reserve", st.Reserve,
		"in_lockout", st.InLockout, "lockout_auth_set", st.LockoutAuthSet)
	if st.MaxTries != want.MaxTries || st.Recovery != want.Recovery || st.LockoutRecovery != want.LockoutRecovery {
		log.Warn("the TPM keeps other dictionary-attack parameters than configured (its lockout authorization is set)",
			"max_tries", want.MaxTries, "recovery", want.Recovery, "lockout_recovery", want.LockoutRecovery)
	}
	if !st.LockoutAuthSet {
		log.Warn("the TPM's lockout authorization is empty: whoever holds the TPM can reset its vPIN guess counter (tpm_da.keep_lockout_auth)")
	}
}

// caKeyContext is the vault context of the CA's sealed key; its "vPIN" is
// a fixed label: the CA key is sealed to the TPM alone.
var (
	caKeyVPIN    = []byte("pscs CA")
	caKeyContext = []byte("pscs CA key")
)

// loadOrMakeCA returns pscsd's CA, making it on the first start: its key
// is kept sealed to the TPM.
func loadOrMakeCA(st *store.Store, v *vault.Vault) (*server.CA, error) {
	der, err := st.Get(store.KindConfig, "ca-certificate")
	if errors.Is(err, store.ErrNotFound) {
		ca, err := server.NewCA("pscsd CA")
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
		if err != nil {
			return nil, err
		}
		// The CA key's "vPIN" is a constant, nobody's secret: a version 1
		// entry, which opens even while the TPM is in dictionary-attack
		// lockout, so pscsd always starts.
		sealed, err := v.SealNoDA(caKeyVPIN, keyDER, caKeyContext)
		clear(keyDER)
		if err != nil {
			return nil, err
		}
		sb, err := sealed.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if err := st.Put(store.KindVault, "ca-key", sb); err != nil {
			return nil, err
		}
		if err := st.Put(store.KindConfig, "ca-certificate", ca.Cert.Raw); err != nil {
			return nil, err
		}
		return ca, nil
	}
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	sb, err := st.Get(store.KindVault, "ca-key")
	if err != nil {
		return nil, fmt.Errorf("the CA key: %w", err)
	}
	var e vault.Entry
	if err := e.UnmarshalBinary(sb); err != nil {
		return nil, err
	}
	keyDER, err := v.Unseal(&e, caKeyVPIN, caKeyContext)
	if err != nil {
		return nil, fmt.Errorf("the CA key: %w", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	clear(keyDER)
	if err != nil {
		return nil, err
	}
	return &server.CA{Cert: cert, Key: key.(crypto.Signer)}, nil
}

// changes passes pools' membership changes to the server once it exists,
// which tells the delegates of the remote card.
type changes struct{ srv atomic.Pointer[server.Server] }

func (c *changes) hook(name string) func(int) {
	return func(int) {
		if s := c.srv.Load(); s != nil {
			s.CardChanged(name)
		}
	}
}

// serveOptions is what differs between the demo and a configured pscsd.
type serveOptions struct {
	changes     *changes // nil: none
	name        string   // server software, for Hello
	cards       []server.Card
	listen      string
	metrics     string // "" or "off": none
	certificate tls.Certificate
	pinTries    int
	limits      ptransport.Limits
	console     *ConsoleConfig                             // nil: no console
	backup      *BackupConfig                              // nil: no backups
	ready       func(udp net.Addr, metrics net.Addr) error // called once serving
	// consoleReady, if set, gets the console once it listens.
	consoleReady func(*console.Console)
}

// notifying is an Auditor that tells the console of each record written.
type notifying struct {
	server.Auditor
	after func()
}

func (n notifying) Record(ctx context.Context, r *server.AuditRecord) error {
	err := n.Auditor.Record(ctx, r)
	if err == nil {
		n.after()
	}
	return err
}

// serve runs the server on st until ctx ends.
func serve(ctx context.Context, log *slog.Logger, st *state, o serveOptions) error {
	pins := &server.VaultPINs{Vault: st.vault}
	book := policy.NewBook(nil)
	enroll := ptransport.NewStaticEnrollment()
	if err := server.LoadState(st.store, book, enroll, pins); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// What refusals depend on, as the audit log kept it: never less than
	// what any answer told.
	book.Restore(st.policy)
	met := metrics.New()
	met.AddCheck("tpm", func(ctx context.Context) error { _, err := st.vault.MAC("health", nil); return err })
	for _, c := range o.cards {
		met.AddCheck("card "+c.Name, func(ctx context.Context) error {
			if c.Pool.Len() == 0 {
				return fmt.Errorf("no card serves %s", c.Name)
			}
			return nil
		})
	}
	var metricsAddr net.Addr
	if o.metrics != "" && o.metrics != "off" {
		ln, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		metricsAddr = ln.Addr()
		hs := &http.Server{Handler: met.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(ln)
		defer hs.Close()
	}
	var auditor server.Auditor = server.AuditLog{Log: st.audit}
	adm := &server.Admin{Store: st.store, Enrollment: enroll, Pins: pins, CA: st.ca,
		Head:      func() []byte { b, _ := st.store.Head().MarshalBinary(); return b },
		AuditFile: filepath.Join(st.dir, "audit.log"), PINTries: o.pinTries,
		Checkpoint: st.audit.Checkpoint, CheckpointCertificate: st.checkpoint.Raw, SignManifest: st.checkpointKey.SignDigest}
	var bk *backups
	if o.backup != nil {
		var err error
		if bk, err = newBackups(o.backup, st, log, met); err != nil {
			return err
		}
		adm.Backup = bk.now
	}
	var con *console.Console
	if o.console != nil {
		cc := o.console
		con = console.New(console.Config{AuditFile: adm.AuditFile, CA: st.ca.Cert, Enrollment: enroll, Logger: log.With("part", "console"),
			TokenTTL: time.Duration(cc.LinkSeconds) * time.Second, IdleTimeout: time.Duration(cc.IdleMinutes) * time.Minute,
			MaxSession: time.Duration(cc.SessionHours) * time.Hour})
		auditor = notifying{Auditor: auditor, after: con.Appended}
		adm.Console = con.Link
	}
	srv := server.New(server.Config{Book: book, Vault: pins, Logger: log, Name: o.name,
		Audit: auditor, Metrics: met, Cards: o.cards, Admin: adm})
	if con != nil {
		con.SetServer(srv)
		ln, err := con.Listen(o.console.Listen, o.console.Host, o.certificate)
		if err != nil {
			return err
		}
		cctx, stopConsole := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := con.Serve(cctx, ln); err != nil {
				log.Error("console stopped", "err", err)
			}
		}()
		defer func() { stopConsole(); <-done }()
		log.Info("owners' console serving", "url", con.URL())
		if o.consoleReady != nil {
			o.consoleReady(con)
		}
	}
	if o.changes != nil {
		o.changes.srv.Store(srv)
	}
	if bk != nil {
		bctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); bk.loop(bctx) }()
		defer func() { stop(); <-done }()
	}
	pc, err := net.ListenPacket("udp", o.listen)
	if err != nil {
		return err
	}
	defer pc.Close()
	ts := &ptransport.Server{Handler: srv, Enrollment: enroll, Logger: log, Limits: o.limits,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{o.certificate}}}
	met.AddLimits(func() []metrics.Limit {
		stats := ts.LimitStats()
		out := make([]metrics.Limit, len(stats))
		for i, l := range stats {
			out[i] = metrics.Limit{Name: l.Name, Code: uint32(l.Code), Limit: l.Limit, InUse: l.InUse, Refused: l.Refused}
		}
		return out
	})
	go releaseMemory(ctx, log)
	if o.ready != nil {
		if err := o.ready(pc.LocalAddr(), metricsAddr); err != nil {
			return err
		}
	}
	return ts.Serve(ctx, pc)
}

// cardCheckEvery is how often pscsd asks PC/SC whether another program
// reset a card while it was idle (and then reads the card's keys again, and
// tells the delegates if they changed): a transaction begun and ended,
// nothing sent to the card unless it was reset.
const cardCheckEvery = 5 * time.Second

// runConfigured serves the remote cards of a configuration from the PC/SC
// readers, on the TPM it names.
func runConfigured(ctx context.Context, log *slog.Logger, cfg *Config) error {
	st, err := openConfigured(cfg, log, nil)
	if err != nil {
		return err
	}
	defer st.close()
	cert, err := serverCertificate(cfg, st.ca)
	if err != nil {
		return err
	}

	// Remote cards: one pool each; the manager puts the cards the readers
	// hold into their pools, and follows insertions and removals.
	pools := map[string]*rsc.Pool{}
	bySerial := map[string]string{}
	var cardsOut []server.Card
	ch := &changes{}
	for _, cc := range cfg.Cards {
		p := rsc.NewPool(cc.Name, rsc.Options{QueueSize: cc.Queue, PerPrincipal: cc.QueuePerDelegate, SameKeys: cc.sameKeys(), Logger: log, OnChange: ch.hook(cc.Name),
			CheckEvery: cardCheckEvery})
		defer p.Close()
		pools[cc.Name] = p
		for _, s := range cc.Serials {
			bySerial[s] = cc.Name
		}
		cardsOut = append(cardsOut, server.Card{Name: cc.Name, Slot: cc.Slot, Owner: cc.Owner, Pool: p, Chain: cc.chain})
	}
	pc, err := pcsc.Open()
	if err != nil {
		return err
	}
	defer pc.Close()
	mgr := &rsc.Manager{Pools: pools, Profiles: knownProfiles, Logger: log, RequireProof: cfg.RequireProof,
		Assign: func(profile string, info profiles.Info, keys []profiles.Key) (string, bool) {
			name, ok := bySerial[info.Serial]
			if !ok {
				log.Info("card in no remote card: not served", "profile", profile, "serial", info.Serial)
			}
			return name, ok
		},
		Open: func(reader string) cards.Opener {
			return traced(func(ctx context.Context) (cards.Conn, error) { return pc.Connect(ctx, reader) }, log.With("reader", reader))
		},
	}
	mctx, stopMgr := context.WithCancel(context.WithoutCancel(ctx))
	raw := make(chan pcsc.Event, 16)
	events := make(chan rsc.Event, 16)
	go func() {
		if err := pc.Watch(mctx, raw); err != nil && mctx.Err() == nil {
			log.Error("watching readers", "err", err)
		}
	}()
	go func() {
		for {
			select {
			case <-mctx.Done():
				return
			case ev := <-raw:
				switch ev.Kind {
				case pcsc.Inserted:
					events <- rsc.Event{Reader: ev.Reader, Present: true}
				case pcsc.Removed, pcsc.ReaderRemoved:
					events <- rsc.Event{Reader: ev.Reader}
				}
			}
		}
	}()
	mgrDone := make(chan struct{})
	go func() { defer close(mgrDone); mgr.Run(mctx, events) }()
	defer func() { stopMgr(); <-mgrDone }()

	return serve(ctx, log, st, serveOptions{name: "pscsd", cards: cardsOut, changes: ch, listen: cfg.Listen, metrics: cfg.Metrics,
		certificate: cert, pinTries: cfg.PINTries, limits: cfg.Limits.transport(), console: cfg.Console, backup: cfg.Backup,
		ready: func(udp, met net.Addr) error {
			log.Info("pscsd serving", "addr", udp.String(), "metrics", fmt.Sprint(met), "cards", len(cardsOut))
			return nil
		}})
}

// traced is open with the APDUs of every connection it makes logged at
// debug level (pscsd -trace, or "log": {"level": "debug"}), secrets
// redacted (see cards.Trace).
func traced(open cards.Opener, log *slog.Logger) cards.Opener {
	return func(ctx context.Context) (cards.Conn, error) {
		c, err := open(ctx)
		if err != nil {
			return nil, err
		}
		return cards.TraceConn(c, log, registry.Redactor()), nil
	}
}

// serverCertificate is the configured certificate, or one from pscsd's CA.
func serverCertificate(cfg *Config, ca *server.CA) (tls.Certificate, error) {
	if cfg.Certificate != "" {
		return tls.LoadX509KeyPair(cfg.Certificate, cfg.Key)
	}
	return ca.IssueServer(cfg.ServerNames)
}
