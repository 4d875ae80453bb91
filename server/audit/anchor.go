package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Operations of the records the Log writes itself.
const (
	// OpAnchor is an anchor record: the records before it are anchored in
	// the TPM's counter ([Record.Counter]).
	OpAnchor = "anchor"
	// OpCheckpoint is an anchor record that is also signed by the
	// checkpoint key ([Record.Checkpoint]).
	OpCheckpoint = "checkpoint"
)

// Identity is the Identity of the records the Log writes itself.
const Identity = "pscsd"

// CheckpointSubject is the common name of the certificate of the key that
// signs checkpoints. pscsd's CA gives it no extended key usage and the key
// usage content commitment; its other certificates (identities', whose
// names cannot contain spaces, and the server's) have client or server
// authentication. [CheckpointCertificate] accepts only such a certificate,
// so that no other certificate of the same CA can stand in for it.
const CheckpointSubject = "pscsd audit checkpoints"

// CheckpointCertificate checks that cert is a checkpoint key's certificate
// issued by one of roots (pscsd's CA), and returns its key.
func CheckpointCertificate(cert *x509.Certificate, roots *x509.CertPool) (*ecdsa.PublicKey, error) {
	switch {
	case cert.Subject.CommonName != CheckpointSubject:
		return nil, fmt.Errorf("the certificate is %q's, not the checkpoint key's", cert.Subject.CommonName)
	case len(cert.ExtKeyUsage) != 0 || len(cert.UnknownExtKeyUsage) != 0:
		return nil, errors.New("the certificate has extended key usages: not a checkpoint key's")
	case cert.KeyUsage&x509.KeyUsageContentCommitment == 0:
		return nil, errors.New("the certificate lacks the content commitment key usage: not a checkpoint key's")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the checkpoint certificate is not the server's: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the checkpoint certificate holds a %T, want an ECDSA key", cert.PublicKey)
	}
	return pub, nil
}

// Counter is a monotonic counter kept outside the log file, where whoever
// can write the disk cannot turn it back: in pscsd, an NV counter index of
// the TPM (server/anchor). The Log moves it forward by one for every anchor
// record, after the record is durable.
type Counter interface {
	// Read returns the counter's value; ok is false while the counter has
	// never been incremented (a TPM counter then has no value yet).
	Read(ctx context.Context) (v uint64, ok bool, err error)
	// Increment adds one.
	Increment(ctx context.Context) error
}

// Signer signs checkpoints: a SHA-256 digest in, an ASN.1 DER ECDSA
// signature out. In pscsd the key never leaves the TPM.
type Signer interface {
	SignDigest(ctx context.Context, digest []byte) ([]byte, error)
}

// checkpointLabel starts what a checkpoint signature covers.
const checkpointLabel = "pscs audit checkpoint v2\x00"

// CheckpointDigest is what a checkpoint's signature covers: SHA-256 of
// "pscs audit checkpoint v2\0" followed by the record's deterministic
// encoding without its MAC (key 11) and its signature (key 15): Seq, Time,
// Counter, Prev (the hash of every record before it) and every other field,
// so that nothing a reader relies on in a checkpoint can change. A record
// with keys this package does not know re-encodes differently, and its
// signature does not verify.
func CheckpointDigest(r *Record) ([]byte, error) {
	c := *r
	c.MAC, c.Checkpoint = nil, nil
	b, err := encMode.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("audit: encode checkpoint: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(checkpointLabel))
	h.Write(b)
	return h.Sum(nil), nil
}

// verifyCheckpoint checks r's signature with pub.
func verifyCheckpoint(pub *ecdsa.PublicKey, r *Record) bool {
	d, err := CheckpointDigest(r)
	return err == nil && ecdsa.VerifyASN1(pub, d, r.Checkpoint)
}

// ErrRollback is the kind of [RollbackError].
var ErrRollback = errors.New("audit log rolled back")

// RollbackError is Open's refusal of a log that does not reach its anchor
// in the TPM's counter: records were cut off its end, or it was deleted,
// emptied or replaced by an older copy (of itself, or of the whole state).
type RollbackError struct {
	// What says what was found, for people.
	What string
	// Records is how many good records the file holds; LastAnchor the
	// Counter of its last anchor record (0: none); Counter the TPM's.
	Records           uint64
	LastAnchor, Count uint64
}

func (e *RollbackError) Error() string {
	return fmt.Sprintf("audit: %s (%d records in the file, its last anchor %d, the TPM counter %d)", e.What, e.Records, e.LastAnchor, e.Count)
}

func (e *RollbackError) Unwrap() error { return ErrRollback }

// checkAnchor compares the log as loaded with the counter, at Open, and
// returns the counter's value the log continues from. existed tells
// whether the file was there before Open.
func (l *Log) checkAnchor(ctx context.Context, existed bool) error {
	c, ok, err := l.opts.Counter.Read(ctx)
	if err != nil {
		return fmt.Errorf("audit: reading the anchor counter: %w", err)
	}
	a := l.lastAnchor
	fail := func(what string) error {
		re := &RollbackError{What: what, Records: l.seq, LastAnchor: a, Count: c}
		if l.opts.Accept == nil || !l.opts.Accept(re) {
			return re
		}
		if !ok {
			// A counter with no value (undefined and defined again, or
			// another TPM's): start it.
			if err := l.opts.Counter.Increment(ctx); err != nil {
				return fmt.Errorf("audit: starting the anchor counter: %w", err)
			}
			if c, ok, err = l.opts.Counter.Read(ctx); err != nil || !ok {
				return fmt.Errorf("audit: starting the anchor counter: %v", err)
			}
		}
		l.accepted = re
		l.counter = c
		l.needAnchor = true
		return nil
	}
	switch {
	case !ok && a == 0:
		// A new log, or one from before anchors: start anchoring it.
		if err = l.opts.Counter.Increment(ctx); err == nil {
			c, ok, err = l.opts.Counter.Read(ctx)
		}
		if err == nil && !ok {
			err = errors.New("no value after an increment")
		}
		if err != nil {
			return fmt.Errorf("audit: starting the anchor counter: %w", err)
		}
		l.counter = c
		l.needAnchor = true // the log's first anchor names the counter's start
		return nil
	case !ok:
		return fail("the log is anchored but the TPM counter has no value: its NV index was deleted and defined again, or this is another TPM")
	case a == 0 && !existed:
		return fail("the audit log was deleted: the TPM counter says it was anchored")
	case a == 0 && l.seq == 0:
		return fail("the audit log is empty: the TPM counter says it held anchored records")
	case a == 0:
		return fail("the audit log holds no anchor: it was replaced by another log, or by a copy from before anchors")
	case a == c:
		l.counter = c
		return nil
	case a == c+1:
		// The last anchor was durable but the process stopped before the
		// counter moved: move it now.
		if err = l.opts.Counter.Increment(ctx); err == nil {
			c, _, err = l.opts.Counter.Read(ctx)
		}
		if err != nil {
			return fmt.Errorf("audit: catching the anchor counter up: %w", err)
		}
		if c != a {
			return fail(fmt.Sprintf("the TPM counter moved to %d while catching up to the log", c))
		}
		l.counter = c
		return nil
	case a < c:
		if l.lastAnchorSeq == l.seq {
			return fail(fmt.Sprintf("the log is older than its anchor: %d anchored batches missing (the log was cut by whole records, or replaced by an older copy)", c-a))
		}
		return fail(fmt.Sprintf("the log is older than its anchor: %d anchored batches missing after record %d (the log was cut by whole records, or replaced by an older copy)", c-a, l.lastAnchorSeq))
	default:
		return fail("the TPM counter is behind the log: another TPM's counter, or a log from another machine")
	}
}

// VerifyCheckpoints makes Verify check the signature of every checkpoint
// record with pub (the checkpoint key's certificate's public key), and
// require that the log end with a checkpoint: a log whose tail was cut
// ends with records no checkpoint covers, and fails with
// [ErrMissingTail]. A record edited, deleted or inserted with the hash
// chain recomputed fails at the next checkpoint, with [ErrTampered].
func VerifyCheckpoints(pub *ecdsa.PublicKey) VerifyOption {
	return func(c *verifyConfig) { c.checkpointKey = pub }
}

// CheckpointStats is what Verify saw of checkpoints (with
// [VerifyCheckpoints] and [CountCheckpoints]).
type CheckpointStats struct {
	Checkpoints int    // signed checkpoints verified
	Covered     uint64 // Seq of the last one
}

// CountCheckpoints makes Verify fill in st.
func CountCheckpoints(st *CheckpointStats) VerifyOption {
	return func(c *verifyConfig) { c.stats = st }
}

// noteLoaded follows anchors while Open reads the file.
func (l *Log) noteLoaded(r *Record) {
	if r.Identity != Identity || (r.Op != OpAnchor && r.Op != OpCheckpoint) {
		l.lastIsCheck = false
		l.uncovered++
		return
	}
	if r.Counter != 0 {
		l.lastAnchor, l.lastAnchorSeq = r.Counter, r.Seq
	}
	if r.Op == OpCheckpoint {
		l.uncovered = 0
		l.lastIsCheck = true
	}
}

// checkpointDueLocked reports whether the next batch must end with a
// signed checkpoint.
func (l *Log) checkpointDueLocked() bool {
	if l.opts.Signer == nil {
		return false
	}
	switch {
	case l.wantCheckpoint:
		return true
	case l.closed:
		return !l.lastIsCheck
	case l.uncovered == 0:
		return false
	}
	return l.uncovered >= l.opts.CheckpointRecords || l.opts.Now().Sub(l.uncoveredSince) >= l.opts.CheckpointInterval
}

// sealAnchorLocked appends an anchor record to b (a checkpoint when sign
// is true).
func (l *Log) sealAnchorLocked(b *batch, sign bool) error {
	rec := Record{Seq: l.seq + 1, Time: l.opts.Now().UnixMilli(), Identity: Identity, Op: OpAnchor,
		Prev: append([]byte(nil), l.hash[:]...)}
	if l.opts.Counter != nil {
		rec.Counter = l.counter + 1
	}
	if sign {
		rec.Op = OpCheckpoint
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		d, err := CheckpointDigest(&rec)
		var sig []byte
		if err == nil {
			sig, err = l.opts.Signer.SignDigest(ctx, d)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("audit: signing checkpoint %d, log unusable until reopened: %w", rec.Seq, err)
		}
		rec.Checkpoint = sig
	}
	data, err := seal(&rec, l.mac)
	if err != nil {
		return err
	}
	l.seq = rec.Seq
	l.hash = link(l.version, l.hash, data)
	b.buf = appendFrame(b.buf, data)
	b.n++
	b.last, b.hash = l.seq, l.hash
	if rec.Counter != 0 {
		b.counter = rec.Counter
		l.lastAnchor, l.lastAnchorSeq = rec.Counter, rec.Seq
	}
	l.needAnchor = false
	if sign {
		l.wantCheckpoint = false
		l.uncovered = 0
		l.lastIsCheck = true
	}
	return nil
}

// Checkpoint writes a signed checkpoint (an anchor, without a Signer) after
// the records appended so far and returns its sequence number once it is
// durable and anchored: what an export ends with, so that the whole export
// verifies offline.
func (l *Log) Checkpoint(ctx context.Context) (uint64, error) {
	l.mu.Lock()
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	if l.opts.Signer == nil && l.opts.Counter == nil {
		l.mu.Unlock()
		return 0, errors.New("audit: this log has neither a checkpoint key nor a counter")
	}
	if l.opts.Signer != nil {
		l.wantCheckpoint = true
	} else {
		l.needAnchor = true
	}
	b := l.cur
	l.mu.Unlock()
	if err := l.wait(ctx, b); err != nil {
		return 0, err
	}
	return b.last, nil
}

// Accepted returns the rollback that Options.Accept accepted at Open, or
// nil.
func (l *Log) Accepted() *RollbackError { return l.accepted }

// Build returns the bytes of a log file that holds recs, numbered from 1
// and hash-chained, each MACed with mac, as Append would have written
// them (Seq, Prev and MAC are set in recs). It is for tools and tests that
// need a log image: a log rebuilt with a key other than the server's is
// what an attacker with the disk can make, and must be refused.
func Build(recs []*Record, mac MACer) ([]byte, error) {
	out := header()
	var prev [HashSize]byte
	for i, r := range recs {
		r.Seq = uint64(i + 1)
		r.Prev = append([]byte(nil), prev[:]...)
		data, err := seal(r, mac)
		if err != nil {
			return nil, err
		}
		prev = link(formatVersion, prev, data)
		out = appendFrame(out, data)
	}
	return out, nil
}
