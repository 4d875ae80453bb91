package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/backup"
	"github.com/pscs/pscs/server/metrics"
	"github.com/pscs/pscs/server/store"
)

// lastBackupKey (KindConfig) holds when the last backup reached every
// owner (Unix ms, decimal): the periodic schedule survives restarts.
const lastBackupKey = "backup:last"

// backups makes pscsd's backups and mails them, on demand (pscs admin
// backup) and every interval, retrying failures with a doubling wait.
type backups struct {
	cfg    *BackupConfig
	st     *state
	log    *slog.Logger
	smtp   *backup.SMTP
	signer *backup.Signer

	mu      sync.Mutex // one backup at a time
	askedMu sync.Mutex
	asked   time.Time     // the last backup on demand was asked for
	kick    chan struct{} // a failed backup on demand: retry on the schedule
	failing atomic.Bool   // the last attempt failed

	sent, failed prometheus.Counter
	last         prometheus.Gauge
}

// newBackups prepares backups of st; met, if not nil, gets its metrics and
// health check.
func newBackups(cfg *BackupConfig, st *state, log *slog.Logger, met *metrics.Metrics) (*backups, error) {
	cert, key, err := st.ca.IssueBackupSigner(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("backup: the signing certificate: %w", err)
	}
	b := &backups{cfg: cfg, st: st, log: log.With("part", "backup"),
		smtp:   &backup.SMTP{Addr: cfg.SMTP, RootCAs: cfg.roots, ServerName: cfg.SMTPName},
		signer: &backup.Signer{Key: key, Certificate: cert, Chain: []*x509.Certificate{st.ca.Cert}},
		kick:   make(chan struct{}, 1),
		sent:   prometheus.NewCounter(prometheus.CounterOpts{Name: "pscs_backup_sent_total", Help: "Backup mails the mail server accepted."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "pscs_backup_failures_total", Help: "Backups not made, or not accepted for some owner."}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pscs_backup_last_success_timestamp_seconds",
			Help: "When the last backup reached every owner (Unix seconds; 0: never)."}),
	}
	if t, ok := b.lastSuccess(); ok {
		b.last.Set(float64(t.Unix()))
	}
	if met != nil {
		met.Registry().MustRegister(b.sent, b.failed, b.last)
		met.AddCheck("backup", func(ctx context.Context) error {
			if b.failing.Load() {
				return errors.New("the last backup failed")
			}
			return nil
		})
	}
	return b, nil
}

func (b *backups) lastSuccess() (time.Time, bool) {
	v, err := b.st.store.Get(store.KindConfig, lastBackupKey)
	if err != nil {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// recipient is an owner who gets backups.
type recipient struct {
	name, addr string
	cert       *x509.Certificate
}

// recipients are the configured owners, with their certificates from the
// store and their addresses; an owner without either is a failure of that
// owner alone.
func (b *backups) recipients() (out []recipient, failures []string) {
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range b.cfg.Owners {
			if !yield(n) {
				return
			}
		}
	}) {
		r, err := b.recipient(name)
		if err != nil {
			b.log.Warn("backup not delivered", "owner", name, "err", err)
			failures = append(failures, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		out = append(out, r)
	}
	return out, failures
}

// recipient is the configured owner name.
func (b *backups) recipient(name string) (recipient, error) {
	der, err := b.st.store.Get(store.KindIdentity, name)
	if err != nil {
		return recipient{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return recipient{}, err
	}
	addr := b.cfg.Owners[name]
	if addr == "" {
		if len(cert.EmailAddresses) == 0 {
			return recipient{}, errors.New("no address configured and none in the certificate")
		}
		addr = cert.EmailAddresses[0]
		// The certificate is the owner's to choose (pscs admin enroll): its
		// address goes into a header and RCPT TO only if it is one.
		if a, err := mail.ParseAddress(addr); err != nil || a.Address != addr || strings.ContainsAny(addr, "\r\n<>") {
			return recipient{}, fmt.Errorf("the certificate's address %q is not a bare e-mail address", addr)
		}
	}
	return recipient{name: name, addr: addr, cert: cert}, nil
}

// snapshot makes the archive of the state as it is now: a checkpoint of
// the audit log first, then the log, then the store (a store newer than
// the log's last record of its head is what a running pscsd has anyway;
// an older one would be refused), then the other files.
func (b *backups) snapshot(ctx context.Context) (*backup.Archive, []byte, error) {
	seq, err := b.st.audit.Checkpoint(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint of the audit log: %w", err)
	}
	a := &backup.Archive{Created: time.Now().UnixMilli(), Server: b.st.ca.Cert.Subject.String(), LogSeq: seq}
	for _, name := range backup.Files {
		data, err := os.ReadFile(filepath.Join(b.st.dir, filepath.FromSlash(name)))
		if errors.Is(err, os.ErrNotExist) && !slices.Contains(backup.Required, name) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if name == "store" {
			a.StoreVersion = b.st.store.Version()
		}
		a.Files = append(a.Files, backup.File{Name: name, Data: data})
	}
	raw, err := a.Marshal()
	return a, raw, err
}

// run makes one backup and mails it to every owner; who asked is recorded.
func (b *backups) run(ctx context.Context, who string) (digest []byte, sentTo []string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer func() {
		b.failing.Store(err != nil)
		if err != nil {
			b.failed.Inc()
			b.log.Warn("backup failed", "by", who, "err", err)
		}
	}()
	rs, failures := b.recipients()
	if len(rs) == 0 {
		return nil, nil, fmt.Errorf("no owner to send to: %s", strings.Join(failures, "; "))
	}
	a, raw, err := b.snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	d := backup.Digest(raw)
	signed, err := b.signer.SignedEntity(raw)
	if err != nil {
		return nil, nil, err
	}
	subject := fmt.Sprintf("pscsd backup %s (log %d)", a.Time().UTC().Format(time.RFC3339), a.LogSeq)
	// Each owner gets their own envelope and mail, naming no other owner;
	// one owner's failure does not keep the others from theirs.
	for _, r := range rs {
		err := b.sendTo(ctx, r, signed, subject)
		if err != nil {
			b.log.Warn("backup not delivered", "by", who, "owner", r.name, "to", r.addr, "err", err)
			failures = append(failures, fmt.Sprintf("%s <%s>: %v", r.name, r.addr, err))
			continue
		}
		b.sent.Inc()
		sentTo = append(sentTo, r.addr)
	}
	what := fmt.Sprintf("sha256 %x, %d bytes, log %d, store %d, by %s; sent to %s", d, len(raw), a.LogSeq, a.StoreVersion, who, strings.Join(sentTo, ", "))
	if len(failures) > 0 {
		what += "; not sent: " + strings.Join(failures, "; ")
	}
	if _, aerr := b.st.audit.Append(ctx, &audit.Record{Identity: "pscsd", Op: "backup", Result: []byte(what)}); aerr != nil {
		return d[:], sentTo, fmt.Errorf("audit log: %w", aerr)
	}
	if len(failures) > 0 {
		return d[:], sentTo, fmt.Errorf("not sent to %s (sent to %d of %d owners: %s)", strings.Join(failures, "; "),
			len(sentTo), len(b.cfg.Owners), strings.Join(sentTo, ", "))
	}
	now := time.Now()
	if err := b.st.store.Put(store.KindConfig, lastBackupKey, []byte(strconv.FormatInt(now.UnixMilli(), 10))); err != nil {
		return d[:], sentTo, fmt.Errorf("store: %w", err)
	}
	b.last.Set(float64(now.Unix()))
	b.log.Info("backup sent", "by", who, "sha256", fmt.Sprintf("%x", d), "bytes", len(raw), "to", strings.Join(sentTo, ","))
	return d[:], sentTo, nil
}

// sendTo encrypts the signed entity to r alone and mails it to r.
func (b *backups) sendTo(ctx context.Context, r recipient, signed []byte, subject string) error {
	env, err := backup.SealEntity(signed, []*x509.Certificate{r.cert}, b.cfg.kt)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return b.smtp.Send(ctx, b.cfg.From, r.addr, backup.Mail(b.cfg.From, r.addr, subject, time.Now(), env))
}

// onDemandGap is the least time between two backups on demand: any owner
// may ask for one, and each copies the whole state, has the TPM sign a
// checkpoint, and mails every owner.
const onDemandGap = time.Minute

// errTooSoon refuses a backup on demand within onDemandGap of the last.
var errTooSoon = errors.New("a backup on demand was asked for less than a minute ago")

// now is server.Admin.Backup: a backup on demand, one per onDemandGap at
// most. A failure is answered, and retried on the schedule.
func (b *backups) now(ctx context.Context, who string) ([]byte, []string, error) {
	b.askedMu.Lock()
	t := time.Now()
	if !b.asked.IsZero() && t.Sub(b.asked) < onDemandGap {
		next := b.asked.Add(onDemandGap)
		b.askedMu.Unlock()
		b.log.Warn("backup on demand refused: too soon", "by", who, "next", next.UTC().Format(time.RFC3339))
		return nil, nil, fmt.Errorf("%w: ask again from %s", errTooSoon, next.UTC().Format(time.RFC3339))
	}
	b.asked = t
	b.askedMu.Unlock()
	d, sent, err := b.run(ctx, who)
	if err != nil {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return d, sent, err
}

// loop makes the periodic backups until ctx ends: the first when the
// interval since the last one that reached everyone (kept in the store)
// has passed, one only however long pscsd was stopped; after a failure,
// again after retry, doubling up to maxRetry.
func (b *backups) loop(ctx context.Context) {
	wait := b.cfg.retry
	next := time.Time{} // none planned
	if b.cfg.interval > 0 {
		next = time.Now()
		if t, ok := b.lastSuccess(); ok {
			next = t.Add(b.cfg.interval)
		}
		b.log.Info("periodic backups", "interval", b.cfg.interval.String(), "next", next.UTC().Format(time.RFC3339))
	}
	for {
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		fired := false
		select {
		case <-ctx.Done():
		case <-b.kick:
			next = time.Now().Add(wait)
			wait = min(2*wait, b.cfg.maxRetry())
		case <-timer:
			fired = true
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if !fired {
			continue
		}
		if _, _, err := b.run(ctx, "pscsd (periodic)"); err != nil {
			if ctx.Err() != nil {
				return
			}
			next = time.Now().Add(wait)
			wait = min(2*wait, b.cfg.maxRetry())
			continue
		}
		wait = b.cfg.retry
		next = time.Time{}
		if b.cfg.interval > 0 {
			next = time.Now().Add(b.cfg.interval)
		}
	}
}
