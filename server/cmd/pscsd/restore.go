package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/internal/durable"
	"github.com/pscs/pscs/internal/swtpm"
	"github.com/pscs/pscs/server"
	tpmanchor "github.com/pscs/pscs/server/anchor"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/backup"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/server/vault"
)

// restoreRequest is what pscsd restore was given.
type restoreRequest struct {
	input  []byte            // the mail, or openssl's decrypted signed entity
	key    crypto.PrivateKey // the owner's key; nil: input is not encrypted
	roots  *x509.CertPool    // pscsd's CA
	reason string
}

// readPrivateKey reads a PEM private key (PKCS #8, SEC 1 or PKCS #1).
func readPrivateKey(path string) (crypto.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM private key", path)
	}
	defer clear(blk.Bytes)
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s: not a PKCS #8, EC or RSA private key", path)
}

// tpmOpener opens links to the TPM of a configuration, or of the demo's
// state directory (starting its swtpm; stop stops it).
func tpmOpener(cfg *Config, demoState string) (open func() (transport.TPMCloser, error), stop func(), err error) {
	if cfg != nil {
		return func() (transport.TPMCloser, error) { return openTPM(cfg.TPM) }, func() {}, nil
	}
	sw, err := swtpm.New(filepath.Join(demoState, "tpm"))
	if err != nil {
		return nil, nil, fmt.Errorf("demo TPM (swtpm): %w", err)
	}
	return sw.Open, func() { sw.Stop() }, nil
}

// marks are the newest policy state of each delegation (and card) an audit
// log holds, by delegation and card.
type marks map[string]*audit.Record

func (m marks) add(r *audit.Record) {
	if r.Policy == nil {
		return
	}
	k := r.Delegation + "\x00" + r.Policy.Card
	if old := m[k]; old == nil || old.Policy.Serial < r.Policy.Serial {
		m[k] = r
	}
}

// newest returns the newest state of delegation (if not "") or, with
// delegation "", of card (any record naming it carries the card's state):
// nil if the marks have none.
func (m marks) newest(delegation, card string) *audit.Policy {
	var p *audit.Policy
	for _, r := range m {
		if (delegation != "" && r.Delegation == delegation || delegation == "" && r.Policy.Card == card) &&
			(p == nil || r.Policy.Serial > p.Serial) {
			p = r.Policy
		}
	}
	return p
}

// newer is the newer of two states (nil: none).
func newer(a, b *audit.Policy) *audit.Policy {
	if a == nil || b != nil && b.Serial > a.Serial {
		return b
	}
	return a
}

// maxSerial is the highest policy serial the marks hold.
func (m marks) maxSerial() uint64 {
	var n uint64
	for _, r := range m {
		n = max(n, r.Policy.Serial)
	}
	return n
}

// restoreState restores a backup into the state directory of cfg (or the
// demo's): see docs/backup.md. Nothing in the state directory changes
// until the backup has been decrypted, its signature, its digests, and
// (with the TPM) its store's and log's MACs, chain and checkpoints
// verified; then the files it replaces move to DIR/replaced-TIME, the
// restored ones take their place, and the state is opened as pscsd recover
// would, accepting the rollback: the log records the restore and carries
// forward what the replaced log knew of use counts, lockouts and
// revocations that the backup does not.
func restoreState(log *slog.Logger, cfg *Config, demoState string, req restoreRequest) error {
	opened, err := backup.Open(req.input, req.key, req.roots)
	if err != nil {
		return err
	}
	a := opened.Archive
	digest := backup.Digest(opened.Raw)
	dir, da := demoState, TPMDAConfig{}.vaultDA()
	if cfg != nil {
		dir, da = cfg.State, cfg.TPMDA.vaultDA()
	}
	// pscsd must not be running on the state.
	for _, name := range []string{"store", "audit.log"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		unlock, err := durable.Lock(f)
		if err == nil {
			unlock()
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("%s is in use (stop pscsd before restoring): %w", filepath.Join(dir, name), err)
		}
	}
	open, stop, err := tpmOpener(cfg, demoState)
	if err != nil {
		return err
	}
	defer stop()

	// Stage the backup beside the state directory and check it there.
	staging := filepath.Clean(dir) + ".restoring"
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	for _, f := range a.Files {
		p := filepath.Join(staging, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, 0o600); err != nil {
			return err
		}
	}
	sc, err := checkStaged(log, open, staging, dir, da, a, req.roots)
	if err != nil {
		return err
	}
	restored, current, currentSeq := sc.restored, sc.current, sc.currentSeq

	// Replace: the files the backup holds move aside, the restored ones in.
	aside, err := asideDir(dir, time.Now())
	if err != nil {
		return err
	}
	var moved []string
	for _, name := range backup.Files {
		from := filepath.Join(dir, filepath.FromSlash(name))
		if _, err := os.Stat(from); err != nil {
			continue
		}
		to := filepath.Join(aside, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return err
		}
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("moving %s aside: %w", name, err)
		}
		moved = append(moved, name)
	}
	for _, f := range a.Files {
		to := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(staging, filepath.FromSlash(f.Name)), to); err != nil {
			return fmt.Errorf("putting the restored %s in place: %w (the replaced files are in %s)", f.Name, err, aside)
		}
	}

	// Open it as pscsd recover does: the log is behind the TPM's counter
	// (a restore is a rollback), and that is accepted and recorded.
	why := fmt.Sprintf("restore of backup sha256 %x made %s (log %d), signed by %s: %s",
		digest, a.Time().UTC().Format(time.RFC3339), a.LogSeq, opened.Signer.Subject, req.reason)
	rec := &recovery{accept: []string{lossLog, lossStore}, reason: why}
	tpm, err := open()
	if err != nil {
		return err
	}
	st, err := openState(dir, tpm, log, da, rec)
	if err != nil {
		return fmt.Errorf("opening the restored state: %w (the replaced files are in %s)", err, aside)
	}
	ctx := context.Background()
	what := fmt.Sprintf("%s; replaced files (%s) kept in %s; the replaced log ended at record %d",
		why, strings.Join(moved, ", "), aside, currentSeq)
	_, err = st.audit.Append(ctx, &audit.Record{Identity: audit.Identity, Op: "restore", Result: []byte(what), Anchor: true})
	// What the replaced log knew that the backup does not: newer use
	// counts, lockouts, revocations. Carried forward, newest wins.
	var notes []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range current {
			if !yield(k) {
				return
			}
		}
	}) {
		if err != nil {
			break
		}
		cur := current[k]
		if old := restored[k]; old != nil && old.Policy.Serial >= cur.Policy.Serial {
			continue
		}
		p := *cur.Policy
		_, err = st.audit.Append(ctx, &audit.Record{Identity: audit.Identity, Op: "restore:policy", Delegation: cur.Delegation,
			Card: cur.Card, Policy: &p, Anchor: true})
		name := cur.Delegation
		if name == "" {
			name = "card " + p.Card
		}
		notes = append(notes, fmt.Sprintf("%s: used %d, wrong vPINs %d, locked %v, revoked %v (newer than the backup: kept)",
			name, p.Used, p.WrongVPIN, p.Locked, p.Revoked))
	}
	// Revocations after the backup are kept in the restored store too
	// (its sealed PIN copies of them destroyed). When the TPM's counter
	// says that anchored events (revocations, uses against a limit, wrong
	// vPINs, locks) happened after everything the logs at hand hold, they
	// are unknown: every delegation not revoked is then revoked, for an
	// old copy of the files must not resurrect one (docs/backup.md).
	if err == nil {
		err = keepRevocations(st.store, current)
	}
	var forced []string
	if err == nil && sc.unknown() {
		both := func(delegation, card string) *audit.Policy {
			return newer(restored.newest(delegation, card), current.newest(delegation, card))
		}
		forced, err = revokeAll(ctx, st.audit, st.store, max(restored.maxSerial(), current.maxSerial()), both,
			"restore:policy", "revoked by the restore: what happened after the backup is unknown", nil)
	}
	if cerr := st.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pscsd restore: restored backup sha256 %x of %s (audit log %d records, store version %d)\n",
		digest, a.Time().UTC().Format(time.RFC3339), a.LogSeq, a.StoreVersion)
	fmt.Fprintf(os.Stderr, "pscsd restore: the replaced files are in %s\n", aside)
	for _, d := range rec.done {
		fmt.Fprintln(os.Stderr, "pscsd restore: recorded in the audit log:", d)
	}
	for _, n := range notes {
		fmt.Fprintln(os.Stderr, "pscsd restore: carried forward from the replaced log:", n)
	}
	if sc.unknown() {
		fmt.Fprintf(os.Stderr, "pscsd restore: the TPM's counter (%d) is ahead of every audit log at hand (anchored up to %d): "+
			"what happened after the backup (uses, revocations, locks) is unknown, so every delegation was revoked: %s; "+
			"the owners delegate again (pscs admin delegate)\n", sc.counter, sc.anchored, strings.Join(forced, ", "))
	} else if current == nil {
		fmt.Fprintln(os.Stderr, "pscsd restore: the replaced audit log was missing or unreadable; the TPM's counter says nothing happened after the backup")
	}
	return nil
}

// staged is what checkStaged found.
type staged struct {
	restored, current marks  // the policy states in the backup's log and in the replaced one (nil: none)
	currentSeq        uint64 // where the replaced log ends
	// anchored is the highest TPM counter value an anchor record of
	// either log holds; counter the TPM counter's value.
	anchored, counter uint64
}

// unknown reports whether anchored events happened after both logs: the
// replaced log is missing, cut, or an older copy, and the backup older
// still.
func (s *staged) unknown() bool { return s.counter > s.anchored }

// checkStaged verifies the staged state with the TPM: the vault key is this
// TPM's, the audit log's MACs, chain and checkpoints (certified by roots)
// hold, and the store's MACs hold and it is not older than the log says.
// It reads the current state's log too, for what it knows that the backup
// does not (nil if it has none or it is unreadable), and returns the policy
// marks of both, where the current log ends, and how far the logs and the
// TPM's counter reach.
func checkStaged(log *slog.Logger, open func() (transport.TPMCloser, error), staging, dir string, da vault.DA,
	a *backup.Archive, roots *x509.CertPool) (*staged, error) {
	sc := &staged{}
	restored, current, currentSeq, err := checkStagedLogs(log, open, staging, dir, da, a, roots, sc)
	if err != nil {
		return nil, err
	}
	sc.restored, sc.current, sc.currentSeq = restored, current, currentSeq
	return sc, nil
}

func checkStagedLogs(log *slog.Logger, open func() (transport.TPMCloser, error), staging, dir string, da vault.DA,
	a *backup.Archive, roots *x509.CertPool, sc *staged) (restored, current marks, currentSeq uint64, err error) {
	tpm, err := open()
	if err != nil {
		return nil, nil, 0, err
	}
	defer tpm.Close()
	v, err := vault.Open(tpm, filepath.Join(staging, "vault"), vault.WithDA(da))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("the backup's vault key does not open on this TPM (a backup restores only on the TPM that made it; docs/backup.md): %w", err)
	}
	defer v.Close()
	counter, err := tpmanchor.OpenCounter(v.WithTPM, tpmanchor.CounterHandle(v.KeyID()))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("the TPM's anchor counter: %w", err)
	}
	if sc.counter, _, err = counter.Read(context.Background()); err != nil {
		return nil, nil, 0, fmt.Errorf("the TPM's anchor counter: %w", err)
	}
	mac, err := server.NewTPMKeyedMAC(v)
	if err != nil {
		return nil, nil, 0, err
	}
	cpem := a.File("checkpoint.pem")
	blk, _ := pem.Decode(cpem)
	if blk == nil {
		return nil, nil, 0, errors.New("the backup holds no checkpoint certificate")
	}
	cc, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("the backup's checkpoint certificate: %w", err)
	}
	pub, err := audit.CheckpointCertificate(cc, roots)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("the backup's checkpoint certificate: %w", err)
	}
	restored = marks{}
	var anchor store.Anchor
	found := false
	var stats audit.CheckpointStats
	_, err = audit.Verify(bytes.NewReader(a.File("audit.log")), mac, func(r *audit.Record) error {
		restored.add(r)
		sc.anchored = max(sc.anchored, r.Counter)
		if storeHead(r) && anchor.UnmarshalBinary(r.Result) == nil {
			found = true
		}
		return nil
	}, audit.VerifyCheckpoints(pub), audit.CountCheckpoints(&stats))
	// Records after the last checkpoint (appended while the backup was
	// copied) are covered by pscsd's signature of the whole backup.
	if err != nil && !errors.Is(err, audit.ErrMissingTail) && !errors.Is(err, audit.ErrTorn) || stats.Covered < a.LogSeq {
		return nil, nil, 0, fmt.Errorf("the backup's audit log does not verify: %v (checkpoints cover %d of %d records)", err, stats.Covered, a.LogSeq)
	}
	var opts []store.Option
	if found {
		opts = append(opts, store.WithAnchor(anchor))
	}
	s, err := store.Open(filepath.Join(staging, "store"), mac, opts...)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("the backup's store does not verify: %w", err)
	}
	s.Close()

	// The state being replaced, if its log reads with this TPM's key.
	f, err := os.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		log.Warn("no audit log to replace", "err", err)
		return restored, nil, 0, nil
	}
	defer f.Close()
	current = marks{}
	n, err := audit.Verify(f, mac, func(r *audit.Record) error {
		current.add(r)
		sc.anchored = max(sc.anchored, r.Counter)
		currentSeq = r.Seq
		return nil
	})
	if err != nil && n == 0 {
		log.Warn("the audit log being replaced does not read", "err", err)
		return restored, nil, 0, nil
	}
	if err != nil {
		log.Warn("the audit log being replaced reads only in part", "records", n, "err", err)
	}
	return restored, current, currentSeq, nil
}

// asideDir makes the directory the files a restore replaces move to,
// DIR/replaced-TIME, or DIR/replaced-TIME-N when one of that second is
// there already: a second restore never overwrites the files the first
// one kept.
func asideDir(dir string, now time.Time) (string, error) {
	stamp := filepath.Join(dir, "replaced-"+now.UTC().Format("20060102T150405Z"))
	aside := stamp
	for n := 2; ; n++ {
		err := os.Mkdir(aside, 0o700)
		if err == nil {
			return aside, nil
		}
		if !errors.Is(err, fs.ErrExist) || n > 1000 {
			return "", fmt.Errorf("restore: a directory for the replaced files: %w", err)
		}
		aside = fmt.Sprintf("%s-%d", stamp, n)
	}
}
