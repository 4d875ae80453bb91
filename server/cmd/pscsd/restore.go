package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
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
	restored, current, currentSeq, err := checkStaged(log, open, staging, dir, da, a, req.roots)
	if err != nil {
		return err
	}

	// Replace: the files the backup holds move aside, the restored ones in.
	aside := filepath.Join(dir, "replaced-"+time.Now().UTC().Format("20060102T150405Z"))
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
	if current == nil {
		fmt.Fprintln(os.Stderr, "pscsd restore: the replaced audit log was missing or unreadable: use counts, lockouts and "+
			"revocations after the backup are lost; revoke delegations you are unsure of (pscs admin revoke)")
	}
	return nil
}

// checkStaged verifies the staged state with the TPM: the vault key is this
// TPM's, the audit log's MACs, chain and checkpoints (certified by roots)
// hold, and the store's MACs hold and it is not older than the log says.
// It reads the current state's log too, for what it knows that the backup
// does not (nil if it has none or it is unreadable), and returns the policy
// marks of both and where the current log ends.
func checkStaged(log *slog.Logger, open func() (transport.TPMCloser, error), staging, dir string, da vault.DA,
	a *backup.Archive, roots *x509.CertPool) (restored, current marks, currentSeq uint64, err error) {
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
