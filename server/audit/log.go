package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pscs/pscs/internal/durable"
)

// Errors of Open and Append. Verification failures are *VerifyError.
var (
	ErrClosed        = errors.New("audit: log closed")
	ErrLocked        = errors.New("audit: log file is in use by another Log")
	ErrTooLarge      = fmt.Errorf("audit: record larger than %d bytes", MaxRecordSize)
	ErrInvalidRecord = errors.New("audit: invalid record")
)

// Options configure a Log. The zero value is the production setting.
type Options struct {
	// GroupCommitWindow is the longest the log waits, after the first
	// record of a batch arrives, for more records to share its fsync.
	// The default, 0, waits for nothing: a batch is whatever queued up
	// while the previous write and fsync ran, which is already enough
	// to keep the fsync rate far below the append rate under load.
	GroupCommitWindow time.Duration
	// Now gives the time stamped on records whose Time is zero.
	// Default: time.Now.
	Now func() time.Time
	// Anchor, if set, is a head saved outside the file (see [Log.Head]);
	// Open refuses a log that does not reach it, as [ExpectHead] does for
	// Verify. Default: no anchor.
	Anchor Anchor
	// NoSync skips fsync: records survive a crash of the process but not
	// of the machine. For tests only.
	NoSync bool
	// Scan, if set, is called by Open with every record of the file, in
	// order, as Open checks them (a torn last record excepted): what a
	// caller needs from the whole log at start, without reading it twice.
	Scan func(*Record)

	// Counter, if set, anchors the log outside the file (see
	// [Counter]): Open refuses, with a *[RollbackError], a log that does
	// not reach the counter's value (cut by whole records, deleted,
	// emptied, or an older copy), and the Log writes an anchor record and
	// moves the counter, after the fsync and before the Appends it covers
	// return, for every batch that holds a record with [Record.Anchor],
	// for every checkpoint, and at Close. Default: none.
	Counter Counter
	// Signer, if set, signs checkpoints: anchor records that carry a
	// signature of the hash of the whole log before them, verifiable
	// offline with the key's certificate ([VerifyCheckpoints]). The Log
	// writes one after CheckpointRecords records, CheckpointInterval after
	// the first record not yet covered, at Close, and on
	// [Log.Checkpoint]. Default: none.
	Signer Signer
	// CheckpointRecords is the most records between two checkpoints.
	// Default: 1000.
	CheckpointRecords int
	// CheckpointInterval is the longest a record waits for a checkpoint.
	// Default: 10 s.
	CheckpointInterval time.Duration
	// Accept, if set, is asked about a rollback Open found; if it returns
	// true, Open goes on with the log as it is, anchored from the
	// counter's present value, and [Log.Accepted] returns what was
	// accepted: the caller records it in the log. For recovery by the
	// owner (pscsd recover) only.
	Accept func(*RollbackError) bool
}

// Stats counts what a Log has done since Open.
type Stats struct {
	Appends uint64 // records appended
	Batches uint64 // writes, each of one or more records
	Syncs   uint64 // fsyncs (0 with NoSync)
	Bytes   uint64 // bytes written
}

// TornTail describes the torn final frame that Open removed.
type TornTail struct {
	Seq    uint64 // the sequence number the torn record would have had
	Offset int64  // where the torn frame began; the file now ends here
	Bytes  int64  // how many bytes were cut
	Reason string
}

// Log is an open audit log file. It is safe for concurrent use by multiple
// goroutines. Create one with [Open] and release it with [Log.Close].
//
// Records are encoded and MACed one at a time, in sequence order, under the
// Log's lock (each MAC covers the previous record's hash, MAC included);
// writing and fsyncing happen outside it, in one goroutine per Log, a batch
// at a time.
type Log struct {
	mac       MACer
	opts      Options
	f         *os.File
	recovered *TornTail
	sync      func(*os.File) error // fsync; replaced by tests

	kick chan struct{} // cap 1: a batch is waiting
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the writer goroutine exits

	mu     sync.Mutex // guards the fields below; records are sealed in Seq order under it
	closed bool
	err    error // sticky: a write or fsync failed
	seq    uint64
	hash   [HashSize]byte
	cur    *batch // records not yet handed to the writer
	dseq   uint64 // durable head
	dhash  [HashSize]byte
	stats  Stats

	size    int64  // end of the file; owned by the writer goroutine after Open
	version uint16 // the file's format version: appended records keep it

	// Anchors and checkpoints, guarded by mu.
	counter        uint64    // the Counter's value: anchored up to here
	lastAnchor     uint64    // Counter of the newest anchor record in the file
	lastAnchorSeq  uint64    // its Seq
	needAnchor     bool      // write an anchor at the next flush
	wantCheckpoint bool      // sign the next anchor ([Log.Checkpoint])
	uncovered      int       // records since the last checkpoint
	uncoveredSince time.Time // when the first of them was appended
	lastIsCheck    bool      // the newest record is a checkpoint
	accepted       *RollbackError
}

// batch is a group of records written and fsynced together.
type batch struct {
	buf     []byte
	n       int
	anchor  bool   // a record asked to be anchored
	counter uint64 // the Counter value to move to once durable; 0: none
	last    uint64
	hash    [HashSize]byte
	done    chan struct{} // closed when the batch is durable, or failed
	err     error         // set before done is closed
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// Open opens the audit log at path, creating it (mode 0600) if it does not
// exist, and locks it for this process.
//
// Opening an existing log reads it whole and checks it as [Verify] does,
// MACs included; the time this takes grows with the log: about 0.5 s of
// CPU per 100,000 records of 300 bytes with an in-memory HMAC key
// (BenchmarkOpen100k), plus the MACer's own cost per record. A torn final frame (a crash during a write) is cut off, and
// [Log.Recovered] says what was cut. Any other failure makes Open refuse the
// log with the *[VerifyError] that names the first bad record; nothing is
// changed on disk then.
func Open(path string, mac MACer, opts Options) (*Log, error) {
	if mac == nil {
		return nil, errors.New("audit: Open needs a MACer")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CheckpointRecords <= 0 {
		opts.CheckpointRecords = 1000
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 10 * time.Second
	}
	_, statErr := os.Stat(path)
	existed := statErr == nil
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{
		mac:  mac,
		opts: opts,
		f:    f,
		sync: durable.Sync,
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
		cur:  newBatch(),
	}
	if err := l.load(path); err != nil {
		f.Close()
		return nil, err
	}
	l.dseq, l.dhash = l.seq, l.hash
	if opts.Counter != nil {
		if err := l.checkAnchor(context.Background(), existed); err != nil {
			f.Close()
			return nil, err
		}
	}
	go l.writer()
	if l.needAnchor {
		if _, err := l.Checkpoint(context.Background()); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// load locks the file, checks it, and recovers a torn tail or an interrupted
// creation.
func (l *Log) load(path string) error {
	if _, err := durable.Lock(l.f); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrLocked, path, err)
	}
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	size := fi.Size()
	hdr := header()
	if size < headerSize {
		// New, or a crash before the header was complete.
		b := make([]byte, size)
		if _, err := io.ReadFull(l.f, b); err != nil {
			return fmt.Errorf("audit: read %s: %w", path, err)
		}
		if !bytes.HasPrefix(hdr, b) {
			return &VerifyError{Reason: fmt.Sprintf("file is %d bytes, shorter than the header", size), Err: ErrCorrupt}
		}
		if l.opts.Anchor.Seq > 0 {
			return &VerifyError{Seq: 1, Reason: fmt.Sprintf("log is empty, expected head %d", l.opts.Anchor.Seq), Err: ErrMissingTail}
		}
		if size > 0 {
			l.recovered = &TornTail{Seq: 1, Offset: 0, Bytes: size, Reason: "incomplete file header"}
		}
		if _, err := l.f.WriteAt(hdr, 0); err != nil {
			return fmt.Errorf("audit: write header: %w", err)
		}
		if err := durable.Sync(l.f); err != nil {
			return fmt.Errorf("audit: sync %s: %w", path, err)
		}
		if err := durable.SyncDir(filepath.Dir(path)); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		l.size = headerSize
		l.version = formatVersion
		return nil
	}

	s := newScanner(bufio.NewReaderSize(io.NewSectionReader(l.f, 0, size), 256<<10), l.mac, l.opts.Anchor)
	for {
		rec, err := s.next()
		if err == io.EOF {
			break
		}
		if err == nil {
			l.noteLoaded(rec)
			if l.opts.Scan != nil {
				l.opts.Scan(rec)
			}
		}
		var ve *VerifyError
		if errors.As(err, &ve) && errors.Is(err, ErrTorn) {
			if err := l.f.Truncate(ve.Offset); err != nil {
				return fmt.Errorf("audit: cut torn tail: %w", err)
			}
			if err := durable.Sync(l.f); err != nil {
				return fmt.Errorf("audit: sync %s: %w", path, err)
			}
			l.recovered = &TornTail{Seq: ve.Seq, Offset: ve.Offset, Bytes: size - ve.Offset, Reason: ve.Reason}
			size = ve.Offset
			break
		}
		if err != nil {
			return err
		}
	}
	l.seq, l.hash, l.size, l.version = s.seq, s.hash, size, s.version
	return nil
}

// Recovered reports the torn final frame that Open cut off, or nil if the
// log was intact. pscsd should log it: the records in it were never
// acknowledged, so nothing a client was told is lost.
func (l *Log) Recovered() *TornTail {
	if l.recovered == nil {
		return nil
	}
	t := *l.recovered
	return &t
}

// Append adds r to the log and returns its sequence number once the record
// is durable: written and fsynced. Append fills in Seq, Prev and MAC, and
// Time if it is zero, in its own copy; it does not modify r, and keeps no
// reference to it after returning.
//
// Append is safe for concurrent use; concurrent calls share fsyncs. Records
// get their sequence numbers in the order their Append calls take the log's
// lock.
//
// If ctx is done before the record is queued, Append returns ctx's error and
// appends nothing. If ctx is done while the record waits for its fsync,
// Append returns the record's sequence number and an error wrapping the
// cause: the record will still be written, but its durability was not
// confirmed, so the reply it guards must not be sent.
//
// A write or fsync error is permanent: that Append and every later one
// fail, and the log must be closed and reopened (which rechecks the file and
// drops a torn tail). Records too large to encode within [MaxRecordSize]
// fail with [ErrTooLarge], and text that is not UTF-8 with
// [ErrInvalidRecord]; neither uses a sequence number.
func (l *Log) Append(ctx context.Context, r *Record) (uint64, error) {
	if r == nil {
		return 0, fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	if err := r.validate(); err != nil {
		return 0, err
	}
	if len(r.Evidence)+len(r.Result) > MaxRecordSize {
		return 0, fmt.Errorf("%w: %d bytes of evidence and result", ErrTooLarge, len(r.Evidence)+len(r.Result))
	}
	if err := ctx.Err(); err != nil {
		return 0, context.Cause(ctx)
	}
	l.mu.Lock()
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	rec := *r
	rec.Seq = l.seq + 1
	if rec.Time == 0 {
		rec.Time = l.opts.Now().UnixMilli()
	}
	rec.Prev = append([]byte(nil), l.hash[:]...)
	data, err := seal(&rec, l.mac)
	if err != nil {
		l.mu.Unlock()
		return 0, err
	}
	if len(data) > MaxRecordSize {
		l.mu.Unlock()
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	l.seq = rec.Seq
	l.hash = link(l.version, l.hash, data)
	b := l.cur
	b.buf = appendFrame(b.buf, data)
	b.n++
	b.anchor = b.anchor || r.Anchor
	b.last, b.hash = l.seq, l.hash
	l.stats.Appends++
	if l.uncovered == 0 {
		l.uncoveredSince = l.opts.Now()
	}
	l.uncovered++
	l.lastIsCheck = false
	l.mu.Unlock()

	if err := l.wait(ctx, b); err != nil {
		if errors.Is(err, errNotConfirmed) {
			return rec.Seq, fmt.Errorf("audit: record %d queued, durability not confirmed: %w", rec.Seq, context.Cause(ctx))
		}
		return rec.Seq, err
	}
	return rec.Seq, nil
}

// errNotConfirmed is what wait returns when ctx ended first.
var errNotConfirmed = errors.New("audit: durability not confirmed")

// usableLocked is the error of a closed or failed log, or nil.
func (l *Log) usableLocked() error {
	if l.closed {
		return ErrClosed
	}
	return l.err
}

// wait wakes the writer and waits until batch b is durable: nil, b's
// error, or, if ctx ends first, errNotConfirmed wrapping ctx's cause.
func (l *Log) wait(ctx context.Context, b *batch) error {
	select {
	case l.kick <- struct{}{}:
	default: // the writer is already due to run
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errNotConfirmed, context.Cause(ctx))
	}
}

// writer is the goroutine that writes and fsyncs batches.
func (l *Log) writer() {
	defer close(l.done)
	var window *time.Timer
	var tick <-chan time.Time
	if l.opts.Signer != nil {
		// Checkpoints are due by time too: look a few times per interval.
		t := time.NewTicker(max(l.opts.CheckpointInterval/4, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-l.kick:
		case <-tick:
		case <-l.quit:
			l.flush()
			return
		}
		if w := l.opts.GroupCommitWindow; w > 0 {
			if window == nil {
				window = time.NewTimer(w)
			} else {
				window.Reset(w)
			}
			select {
			case <-window.C:
			case <-l.quit:
				window.Stop()
				l.flush()
				return
			}
		}
		l.flush()
	}
}

// flush writes and fsyncs the queued records, if any, and wakes their
// Appends.
func (l *Log) flush() {
	l.mu.Lock()
	b := l.cur
	sign := l.checkpointDueLocked()
	if l.closed && l.opts.Counter != nil && l.lastAnchorSeq != l.seq {
		l.needAnchor = true // at Close, whatever follows the last anchor
	}
	if b.n == 0 && !sign && !l.needAnchor {
		l.mu.Unlock()
		return
	}
	if l.err == nil && (sign || b.anchor || l.needAnchor) && (l.opts.Counter != nil || sign) {
		if err := l.sealAnchorLocked(b, sign); err != nil {
			l.err = err
		}
	}
	l.cur = newBatch()
	err := l.err
	l.mu.Unlock()

	synced := false
	if err == nil {
		_, err = l.f.WriteAt(b.buf, l.size)
		if err == nil {
			l.size += int64(len(b.buf))
			if !l.opts.NoSync {
				err = l.sync(l.f)
				synced = true
			}
		}
		if err != nil {
			err = fmt.Errorf("audit: write failed, log unusable until reopened: %w", err)
		}
	}
	if err == nil && b.counter != 0 {
		// The anchor record is durable: move the counter to it. Until
		// this returns, the Appends of the batch wait.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		ierr := l.opts.Counter.Increment(ctx)
		cancel()
		if ierr != nil {
			err = fmt.Errorf("audit: anchoring record %d in the counter, log unusable until reopened: %w", b.last, ierr)
		}
	}

	l.mu.Lock()
	if err != nil {
		if l.err == nil {
			l.err = err
		}
		b.err = l.err
	} else {
		if b.counter != 0 {
			l.counter = b.counter
		}
		l.dseq, l.dhash = b.last, b.hash
		l.stats.Batches++
		l.stats.Bytes += uint64(len(b.buf))
		if synced {
			l.stats.Syncs++
		}
	}
	l.mu.Unlock()
	close(b.done)
}

// Head returns the sequence number and hash of the newest durable record:
// the anchor to keep outside the file (see [Anchor]). For an empty log it
// is 0 and HashSize zero bytes.
func (l *Log) Head() (seq uint64, hash []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dseq, append([]byte(nil), l.dhash[:]...)
}

// Stats returns counters since Open.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Close waits for queued records to be written and fsynced, then closes
// the file. Appends after Close fail with [ErrClosed]; so does a second
// Close. Close returns the log's write error, if one happened.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
	<-l.done
	l.mu.Lock()
	err := l.err
	l.mu.Unlock()
	if cerr := l.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("audit: %w", cerr)
	}
	return err
}
