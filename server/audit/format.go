package audit

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pscs/pscs/internal/durable"
)

// Magic begins every audit log file.
const Magic = "pscs-audit v1\n"

const (
	formatVersion = 2
	headerSize    = 24
	frameHeadSize = 8 // length + CRC of the length
	frameOverhead = frameHeadSize + 4
)

func crc(b []byte) uint32 { return durable.CRC(b) }

// header returns the 24-byte file header.
// chainLabel starts the input of each link of the version 2 hash chain.
const chainLabel = "pscs audit chain v2\x00"

// link is the chain hash after a record whose bytes are data, given the
// chain hash before it. Version 1 logs chain the records' own hashes:
// SHA-256(data). Version 2 logs chain SHA-256(chainLabel || prev ||
// SHA-256(data)), so that a record can be shown by its SHA-256 alone (an
// export that omits other owners' records still verifies as a chain).
func link(version uint16, prev [HashSize]byte, data []byte) [HashSize]byte {
	d := sha256.Sum256(data)
	if version == 1 {
		return d
	}
	return linkDigest(prev, d[:])
}

// linkDigest is link for version 2, given the record's SHA-256.
func linkDigest(prev [HashSize]byte, digest []byte) [HashSize]byte {
	b := make([]byte, 0, len(chainLabel)+2*HashSize)
	b = append(append(append(b, chainLabel...), prev[:]...), digest...)
	return sha256.Sum256(b)
}

func header() []byte {
	h := make([]byte, 0, headerSize)
	h = append(h, Magic...)
	h = binary.BigEndian.AppendUint16(h, formatVersion)
	h = binary.BigEndian.AppendUint32(h, MaxRecordSize)
	return binary.BigEndian.AppendUint32(h, crc(h))
}

// appendFrame appends the frame holding record bytes data to b.
func appendFrame(b, data []byte) []byte {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(data)))
	b = append(b, l[:]...)
	b = binary.BigEndian.AppendUint32(b, crc(l[:]))
	b = append(b, data...)
	return binary.BigEndian.AppendUint32(b, crc(data))
}

// Kinds of verification failure. A *VerifyError wraps exactly one of them
// (ErrCheck also wraps the check's own error), so errors.Is tells them apart.
var (
	// ErrTorn: the final frame is incomplete, as a crash in the middle of a
	// write leaves it. Nothing in it was acknowledged. Open drops it.
	ErrTorn = errors.New("torn write at the end of the log")
	// ErrCorrupt: a complete frame or the header fails its checksum or
	// limits: the file is damaged (or crudely edited).
	ErrCorrupt = errors.New("log damaged")
	// ErrTampered: a record is intact but not authentic or not in its
	// place: wrong MAC, wrong sequence number, broken hash chain, or an
	// encoding no writer produces.
	ErrTampered = errors.New("log tampered with")
	// ErrMissingTail: the log ends before the expected head given with
	// ExpectHead or Options.Anchor: records were cut off (rollback).
	ErrMissingTail = errors.New("log ends before the expected head")
	// ErrCheck: the per-record check given to Verify refused a record.
	ErrCheck = errors.New("record check failed")
)

// VerifyError names the first record of a log that cannot be trusted.
type VerifyError struct {
	// Seq is the sequence number the bad record should have: the record at
	// Offset when it is damaged, altered, or in the wrong place, or the
	// first missing record. It is 0 for a bad file header.
	Seq uint64
	// Offset is the byte offset of the frame (or, for ErrMissingTail, of
	// the end of the log; for a bad header, 0).
	Offset int64
	// Reason says what is wrong, for people.
	Reason string
	// Err is the kind: ErrTorn, ErrCorrupt, ErrTampered, ErrMissingTail,
	// or ErrCheck joined with the error the check returned.
	Err error
}

func (e *VerifyError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("audit: %v: file header: %s", kindOf(e.Err), e.Reason)
	}
	return fmt.Sprintf("audit: %v: record %d at offset %d: %s", kindOf(e.Err), e.Seq, e.Offset, e.Reason)
}

func (e *VerifyError) Unwrap() error { return e.Err }

func kindOf(err error) error {
	for _, k := range []error{ErrTorn, ErrCorrupt, ErrTampered, ErrMissingTail, ErrCheck} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

// A VerifyOption changes what Verify expects.
type VerifyOption func(*verifyConfig)

type verifyConfig struct {
	anchor        Anchor
	checkpointKey *ecdsa.PublicKey
	stats         *CheckpointStats
}

// Anchor is a head of the log (see [Log.Head]) kept outside the log file,
// so that cutting records off the end can be detected. The zero Anchor
// expects nothing.
type Anchor struct {
	Seq  uint64
	Hash []byte // HashSize bytes
}

// ExpectHead makes Verify require that the log contains record a.Seq and
// that its hash is a.Hash. A log that ends earlier fails with
// [ErrMissingTail]; one whose record a.Seq differs fails with [ErrTampered].
// Records after a.Seq are allowed: they were appended after the anchor was
// taken.
func ExpectHead(a Anchor) VerifyOption {
	return func(c *verifyConfig) { c.anchor = a }
}

// Verify reads a whole log file from r and checks the header, every frame's
// checksum, every record's MAC (unless mac is nil: then only the structure
// and the hash chain are checked, which is what someone without the key can
// do), that Seq goes 1, 2, 3, …, and the hash chain; then it calls check, if
// not nil, for each record that passed (e.g. to verify the COSE signature in
// Evidence against the delegate's enrolled key).
//
// It returns the number of good records before the first bad one, and for a
// bad log a *[VerifyError] naming that record; errors.Is tells the kind
// ([ErrTorn], [ErrCorrupt], [ErrTampered], [ErrMissingTail], [ErrCheck]).
// Errors reading r, and errors of the MACer itself, are returned as they
// are, wrapped. A log with a torn final frame returns the complete records'
// count and an ErrTorn error; those records are good.
func Verify(r io.Reader, mac MACer, check func(*Record) error, opts ...VerifyOption) (int, error) {
	var c verifyConfig
	for _, o := range opts {
		o(&c)
	}
	s := newScanner(r, mac, c.anchor)
	n := 0
	var covered uint64 // Seq of the last verified checkpoint
	if c.stats == nil {
		c.stats = &CheckpointStats{}
	}
	for {
		rec, err := s.next()
		if err == io.EOF && c.checkpointKey != nil && (covered != s.seq || covered == 0) {
			if covered == 0 {
				return n, &VerifyError{Seq: s.seq + 1, Offset: s.off, Err: ErrMissingTail,
					Reason: fmt.Sprintf("no checkpoint in %d records: nothing is covered by the server's signature", s.seq)}
			}
			return n, &VerifyError{Seq: covered + 1, Offset: s.off, Err: ErrMissingTail,
				Reason: fmt.Sprintf("%d records after the last checkpoint (record %d) are covered by no signature: the log's end was cut, or it is a copy taken while pscsd ran", s.seq-covered, covered)}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if c.checkpointKey != nil && rec.Op == OpCheckpoint && rec.Identity == Identity {
			if !verifyCheckpoint(c.checkpointKey, rec) {
				return n, &VerifyError{Seq: rec.Seq, Offset: s.last, Err: ErrTampered,
					Reason: "checkpoint signature does not verify: a record before it was edited, deleted or inserted (hash chain recomputed), or the checkpoint is not this server's"}
			}
			covered = rec.Seq
			c.stats.Checkpoints++
			c.stats.Covered = covered
		}
		if check != nil {
			if err := check(rec); err != nil {
				return n, &VerifyError{Seq: rec.Seq, Offset: s.last, Reason: err.Error(), Err: fmt.Errorf("%w: %w", ErrCheck, err)}
			}
		}
		n++
	}
}

// ReadAll reads a log file from r and calls fn for each record, in order.
// It checks frames, sequence numbers and the hash chain as [Verify] does
// with a nil MACer, but not MACs: use Verify for that. It stops at the first
// error fn returns and returns that error unchanged; a bad log ends with a
// *[VerifyError], after fn has seen every record before the bad one. fn owns
// the records it is given.
func ReadAll(r io.Reader, fn func(*Record) error) error {
	s := newScanner(r, nil, Anchor{})
	for {
		rec, err := s.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

// ReadRaw is [ReadAll] that also gives fn each record's bytes as they are
// in the file (what the hash chain covers); fn must copy them to keep them.
func ReadRaw(r io.Reader, fn func(rec *Record, data []byte) error) error {
	s := newScanner(r, nil, Anchor{})
	for {
		rec, err := s.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(rec, s.data); err != nil {
			return err
		}
	}
}

// scanner reads a log file frame by frame, holding one frame in memory.
type scanner struct {
	br     *bufio.Reader
	mac    MACer
	anchor Anchor

	started bool
	version uint16         // of the file format
	data    []byte         // the bytes of the record last returned, until the next
	off     int64          // offset of the next frame
	last    int64          // offset of the frame last returned
	seq     uint64         // Seq of the last good record
	hash    [HashSize]byte // hash of the last good record
	buf     []byte
}

func newScanner(r io.Reader, mac MACer, anchor Anchor) *scanner {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &scanner{br: br, mac: mac, anchor: anchor}
}

func (s *scanner) fail(kind error, format string, args ...any) *VerifyError {
	return &VerifyError{Seq: s.seq + 1, Offset: s.off, Reason: fmt.Sprintf(format, args...), Err: kind}
}

func (s *scanner) readHeader() error {
	var h [headerSize]byte
	n, err := io.ReadFull(s.br, h[:])
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &VerifyError{Reason: fmt.Sprintf("file is %d bytes, shorter than the header", n), Err: ErrCorrupt}
	}
	if err != nil {
		return fmt.Errorf("audit: read header: %w", err)
	}
	bad := func(reason string) error { return &VerifyError{Reason: reason, Err: ErrCorrupt} }
	switch {
	case string(h[:len(Magic)]) != Magic:
		return bad("not a pscs audit log (bad magic)")
	case binary.BigEndian.Uint32(h[20:]) != crc(h[:20]):
		return bad("header checksum mismatch")
	case binary.BigEndian.Uint16(h[14:]) != 1 && binary.BigEndian.Uint16(h[14:]) != 2:
		return bad(fmt.Sprintf("unsupported format version %d", binary.BigEndian.Uint16(h[14:])))
	case binary.BigEndian.Uint32(h[16:]) != MaxRecordSize:
		return bad(fmt.Sprintf("unsupported maximum record size %d", binary.BigEndian.Uint32(h[16:])))
	}
	s.version = binary.BigEndian.Uint16(h[14:])
	s.off = headerSize
	return nil
}

// next returns the next good record, io.EOF after the last one, or an error.
// After an error the scanner must not be used again.
func (s *scanner) next() (*Record, error) {
	if !s.started {
		s.started = true
		if err := s.readHeader(); err != nil {
			return nil, err
		}
	}
	rec, err := s.frame()
	if err == io.EOF && s.anchor.Seq > s.seq {
		return nil, s.fail(ErrMissingTail, "log ends after record %d, before the expected head %d: records cut off", s.seq, s.anchor.Seq)
	}
	var ve *VerifyError
	if errors.As(err, &ve) && errors.Is(err, ErrTorn) && s.anchor.Seq > s.seq {
		// The expected head was durable, so it cannot be in a torn frame.
		return nil, s.fail(ErrMissingTail, "log ends after record %d in a torn frame (%s), before the expected head %d", s.seq, ve.Reason, s.anchor.Seq)
	}
	return rec, err
}

func (s *scanner) frame() (*Record, error) {
	var h [frameHeadSize]byte
	n, err := io.ReadFull(s.br, h[:])
	switch {
	case err == io.EOF:
		return nil, io.EOF
	case err == io.ErrUnexpectedEOF:
		return nil, s.fail(ErrTorn, "incomplete frame: %d bytes at the end of the file", n)
	case err != nil:
		return nil, fmt.Errorf("audit: read at offset %d: %w", s.off, err)
	}
	length := binary.BigEndian.Uint32(h[:4])
	if binary.BigEndian.Uint32(h[4:]) != crc(h[:4]) {
		if h == [frameHeadSize]byte{} {
			zero, err := s.restIsZero()
			if err != nil {
				return nil, err
			}
			if zero {
				return nil, s.fail(ErrTorn, "zero bytes to the end of the file where a frame should start")
			}
		}
		return nil, s.fail(ErrCorrupt, "frame length checksum mismatch")
	}
	if length == 0 || length > MaxRecordSize {
		return nil, s.fail(ErrCorrupt, "frame length %d out of range 1..%d", length, MaxRecordSize)
	}
	need := int(length) + 4
	if cap(s.buf) < need {
		s.buf = make([]byte, need)
	}
	b := s.buf[:need]
	n, err = io.ReadFull(s.br, b)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return nil, s.fail(ErrTorn, "incomplete final frame: %d of %d bytes", frameHeadSize+n, frameHeadSize+need)
	case err != nil:
		return nil, fmt.Errorf("audit: read at offset %d: %w", s.off, err)
	}
	data := b[:length]
	if binary.BigEndian.Uint32(b[length:]) != crc(data) {
		// Some file systems show zeros where a crash left data unwritten.
		// A final frame whose last 8 bytes (checksum included) are zero
		// is such a torn write; a single changed byte cannot produce one.
		if len(b) >= 8 && allZero(b[len(b)-8:]) {
			if _, err := s.br.Peek(1); err == io.EOF {
				return nil, s.fail(ErrTorn, "final frame ends in zero bytes")
			}
		}
		return nil, s.fail(ErrCorrupt, "record checksum mismatch")
	}
	rec, err := open(data, s.mac)
	if err != nil {
		var me *macerError
		if errors.As(err, &me) {
			return nil, fmt.Errorf("audit: record %d: %w", s.seq+1, err)
		}
		return nil, s.fail(ErrTampered, "%v", err)
	}
	if rec.Seq != s.seq+1 {
		what := "records missing or out of order"
		if rec.Seq <= s.seq {
			what = "an earlier record copied here, or records out of order"
		}
		return nil, s.fail(ErrTampered, "found record %d where record %d belongs: %s", rec.Seq, s.seq+1, what)
	}
	if !bytes.Equal(rec.Prev, s.hash[:]) {
		return nil, s.fail(ErrTampered, "hash chain broken: Prev does not match record %d", s.seq)
	}
	sum := link(s.version, s.hash, data)
	if rec.Seq == s.anchor.Seq && !bytes.Equal(sum[:], s.anchor.Hash) {
		return nil, s.fail(ErrTampered, "record differs from the expected head (anchor hash mismatch)")
	}
	s.seq, s.hash, s.data = rec.Seq, sum, data
	s.last = s.off
	s.off += int64(frameHeadSize + need)
	return rec, nil
}

// restIsZero reads to the end and reports whether every byte is zero.
func (s *scanner) restIsZero() (bool, error) {
	var b [4096]byte
	for {
		n, err := s.br.Read(b[:])
		if !allZero(b[:n]) {
			return false, nil
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("audit: read at offset %d: %w", s.off, err)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
