package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/pscs/pscs/internal/durable"
)

// Record kinds accepted by [Store.Put].
const (
	KindIdentity   = "identity"   // enrolled owners and delegates (certificates)
	KindCard       = "card"       // remote cards: name, slot, member card serials
	KindDelegation = "delegation" // see [EncodeDelegation]
	KindVault      = "vault"      // sealed vault entries (vault.Entry.MarshalBinary)
	KindConfig     = "config"     // anything else pscsd keeps
)

// MACer authenticates store records. MAC returns a tag (16 to 64 bytes)
// over data under a key that someone with a copy of the disk does not
// have, bound to label; the same label and data always give the same tag.
// In pscsd it is the TPM-held key of server/vault.
// It is the one [durable.MACer] of the project's files.
type MACer = durable.MACer

// Anchor identifies a state of the store: its version and the hash of its
// whole write history up to that version. Keep it outside the store file
// (in the audit log, in TPM NV memory) and give it back to [Open] with
// [WithAnchor] to detect a rollback of the whole file.
type Anchor struct {
	Version uint64
	Hash    [32]byte
}

// MarshalBinary encodes a as 40 bytes: the version, big-endian, then the hash.
func (a Anchor) MarshalBinary() ([]byte, error) {
	return append(binary.BigEndian.AppendUint64(nil, a.Version), a.Hash[:]...), nil
}

// UnmarshalBinary decodes what [Anchor.MarshalBinary] encodes.
func (a *Anchor) UnmarshalBinary(p []byte) error {
	if len(p) != 40 {
		return errors.New("store: anchor must be 40 bytes")
	}
	a.Version = binary.BigEndian.Uint64(p)
	copy(a.Hash[:], p[8:])
	return nil
}

// Option configures [Open].
type Option func(*options)

type options struct {
	anchor *Anchor
}

// WithAnchor makes [Open] check the store against an anchor taken earlier
// with [Store.Head]: a store older than the anchor, or whose history at the
// anchored version differs, is reported with [ReasonRollback].
func WithAnchor(a Anchor) Option {
	return func(o *options) { o.anchor = &a }
}

// compactMinBytes: files smaller than this are never compacted
// automatically. A variable so that tests can make compaction frequent.
var compactMinBytes int64 = 1 << 20

// Store is an open store file. It is safe for concurrent use by multiple
// goroutines; only one process may have a store file open at a time (Open
// takes an exclusive lock on it where the system has flock).
type Store struct {
	mu   sync.RWMutex
	path string
	mac  MACer
	f    *os.File
	size int64

	recs    map[rkey]record
	bad     map[rkey][]Problem
	live    int64 // bytes of live values
	version uint64
	head    [32]byte
	last    body   // the file's last frame, without its value
	lastTag []byte // and its tag

	damaged   bool  // Open found problems: no automatic compaction
	recovered int   // bytes of an interrupted write dropped by Open
	err       error // a failed write leaves the file in doubt: sticky
	closed    bool
	unlock    func() error
}

// Open opens the store at path, creating it if it does not exist, and
// checks every record.
//
// When it finds problems it returns the Store together with an
// [*IntegrityError] that lists every one of them by record. The Store
// then serves the good records; the bad ones give an [*IntegrityError]
// from [Store.Get] (never their bytes, never [ErrNotFound]) until they are
// written or deleted again. The problems stay on disk, and Open and
// [Store.Verify] report them again, until [Store.Compact] rewrites the file.
// A Store opened with problems must not be trusted blindly: pscsd logs
// the report and refuses to serve until an operator has looked at it. A
// [ReasonRollback] problem concerns every record.
//
// Open returns a nil Store when the file cannot be used at all: it is not
// a store file, it cannot be read or locked, or the MACer fails.
func Open(path string, mac MACer, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	_ = os.Remove(path + ".tmp") // a compaction that did not finish
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := create(path, mac); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	unlock, err := durable.Lock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %s is in use: %w", path, err)
	}
	s := &Store{path: path, mac: mac, f: f, unlock: unlock}
	data, err := os.ReadFile(path)
	if err == nil {
		err = s.load(data, o.anchor)
	}
	var ie *IntegrityError
	if err != nil && !errors.As(err, &ie) || s.recs == nil {
		s.unlock()
		f.Close()
		return nil, err
	}
	return s, err
}

func (s *Store) load(data []byte, anchor *Anchor) error {
	l, err := scan(data, s.mac, anchor)
	if err != nil {
		return err
	}
	if l.torn > 0 {
		// An interrupted write: nothing in it was ever acknowledged.
		if err := s.f.Truncate(int64(l.end)); err != nil {
			return err
		}
		if err := durable.Sync(s.f); err != nil {
			return err
		}
		s.recovered = l.torn
	}
	s.size = int64(l.end)
	s.recs, s.bad, s.live = l.recs, l.bad, l.live
	s.version, s.head = l.version, l.head
	s.last, s.lastTag = l.last, l.lastTag
	s.last.Value = nil
	if len(l.problems) > 0 {
		s.damaged = true
		return &IntegrityError{Problems: l.problems}
	}
	return nil
}

// create writes a new, empty store file atomically.
func create(path string, mac MACer) error {
	buf, _, _, err := snapshot(mac, nil, nil, 0, [32]byte{}, body{}, nil)
	if err != nil {
		return err
	}
	return replaceFile(path, buf)
}

// replaceFile writes data to path through a temporary file, fsyncs it,
// renames it into place and fsyncs the directory.
func replaceFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = durable.Sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return durable.SyncDir(filepath.Dir(path))
}

// snapshot encodes a whole store file holding recs and bad at version.
// It returns the file and its last frame and tag.
func snapshot(mac MACer, recs map[rkey]record, bad map[rkey][]Problem, version uint64, head [32]byte, prev body, prevTag []byte) ([]byte, body, []byte, error) {
	buf := []byte(fileMagic)
	type item struct {
		k rkey
		b body
	}
	var items []item
	for k, r := range recs {
		items = append(items, item{k, body{Op: opSnap, Version: r.version, Kind: k.kind, Key: k.key, Value: r.value}})
	}
	for k, ps := range bad {
		var why []string
		var v uint64
		for _, p := range ps {
			why = append(why, p.Reason.String()+": "+p.Detail)
			v = max(v, p.Version)
		}
		items = append(items, item{k, body{Op: opBad, Version: min(v, version), Kind: k.kind, Key: k.key, Value: []byte(strings.Join(why, "; "))}})
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := int(a.b.Op) - int(b.b.Op); c != 0 {
			return c
		}
		if a.b.Version != b.b.Version {
			if a.b.Version < b.b.Version {
				return -1
			}
			return 1
		}
		return strings.Compare(a.k.key, b.k.key)
	})
	begin := body{Op: opBegin, Version: version, PrevVersion: prev.Version, PrevKind: prev.Kind, PrevKey: prev.Key, PrevTag: prevTag,
		Value: append(binary.BigEndian.AppendUint64(nil, uint64(len(items))), head[:]...)}
	last, lastTag := begin, []byte(nil)
	frames := append([]body{begin}, make([]body, 0, len(items))...)
	for _, it := range items {
		frames = append(frames, it.b)
	}
	for i := range frames {
		b := frames[i]
		if i > 0 {
			b.PrevVersion, b.PrevKind, b.PrevKey, b.PrevTag = last.Version, last.Kind, last.Key, lastTag
		}
		enc := b.append(nil)
		tag, err := macFor(mac, enc)
		if err != nil {
			return nil, body{}, nil, err
		}
		buf = appendFrame(buf, enc, tag)
		last, lastTag = b, tag
	}
	last.Value = nil
	return buf, last, lastTag, nil
}

func macFor(mac MACer, enc []byte) ([]byte, error) {
	tag, err := mac.MAC(macLabel, enc)
	if err != nil {
		return nil, fmt.Errorf("store: MAC: %w", err)
	}
	if len(tag) < minTag || len(tag) > maxTag {
		return nil, fmt.Errorf("store: MAC of %d bytes, want %d to %d", len(tag), minTag, maxTag)
	}
	return tag, nil
}

func checkKind(kind string) (byte, error) {
	c, ok := kindCodes[kind]
	if !ok {
		return 0, fmt.Errorf("store: unknown kind %q", kind)
	}
	return c, nil
}

func checkKey(key string) error {
	if key == "" || len(key) > MaxKeySize {
		return fmt.Errorf("store: key must be 1 to %d bytes", MaxKeySize)
	}
	return nil
}

func (s *Store) usableLocked() error {
	if s.closed {
		return ErrClosed
	}
	return s.err
}

// Put stores value under (kind, key), replacing any earlier value, and
// returns once the write is on disk (fsynced). The store keeps value as
// given: it authenticates but does not encrypt, so secrets must be sealed
// (server/vault) before they are Put. Put makes a copy of value.
func (s *Store) Put(kind, key string, value []byte) error {
	k, err := checkKind(kind)
	if err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("store: value of %d bytes exceeds %d", len(value), MaxValueSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeLocked(opPut, k, key, value)
}

// Delete removes (kind, key), durably. It returns [ErrNotFound] if there is
// no such record. Deleting a record that is bad (see [Open]) clears it.
func (s *Store) Delete(kind, key string) error {
	k, err := checkKind(kind)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	rk := rkey{k, key}
	if _, ok := s.recs[rk]; !ok && s.bad[rk] == nil {
		return ErrNotFound
	}
	return s.writeLocked(opDelete, k, key, nil)
}

func (s *Store) writeLocked(op, kind byte, key string, value []byte) error {
	if err := s.usableLocked(); err != nil {
		return err
	}
	b := body{Op: op, Version: s.version + 1,
		PrevVersion: s.last.Version, PrevKind: s.last.Kind, PrevKey: s.last.Key, PrevTag: s.lastTag,
		Kind: kind, Key: key, Value: value}
	enc := b.append(nil)
	tag, err := macFor(s.mac, enc)
	if err != nil {
		return err
	}
	frame := appendFrame(nil, enc, tag)
	if _, err := s.f.WriteAt(frame, s.size); err != nil {
		s.err = fmt.Errorf("store: write failed, reopen the store: %w", err)
		return s.err
	}
	if err := durable.Sync(s.f); err != nil {
		s.err = fmt.Errorf("store: sync failed, reopen the store: %w", err)
		return s.err
	}
	s.size += int64(len(frame))
	s.version = b.Version
	s.head = headHash(s.head, enc)
	b.Value = nil
	s.last, s.lastTag = b, tag
	rk := rkey{kind, key}
	delete(s.bad, rk)
	if r, ok := s.recs[rk]; ok {
		s.live -= int64(len(r.value))
		delete(s.recs, rk)
	}
	if op == opPut {
		s.recs[rk] = record{value: bytes.Clone(value), version: b.Version}
		s.live += int64(len(value))
	}
	if !s.damaged && s.size > compactMinBytes && s.size > 2*(s.live+int64(len(s.recs))*96) {
		// The write is durable already; a failed compaction leaves the
		// old file in place (or makes the store sticky-failed if the
		// new file is in place but cannot be reopened).
		_ = s.compactLocked()
	}
	return nil
}

// Get returns a copy of the value stored under (kind, key). It returns
// [ErrNotFound] if there is none, and an [*IntegrityError] naming the
// problems if the record is bad (see [Open]); it never returns bad bytes.
func (s *Store) Get(kind, key string) ([]byte, error) {
	k, err := checkKind(kind)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	rk := rkey{k, key}
	if ps := s.bad[rk]; ps != nil {
		return nil, &IntegrityError{Problems: slices.Clone(ps)}
	}
	r, ok := s.recs[rk]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(r.value), nil
}

// List returns the keys of kind in lexical order, bad records included
// (their Get returns an [*IntegrityError]).
func (s *Store) List(kind string) ([]string, error) {
	k, err := checkKind(kind)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	var keys []string
	for rk := range s.recs {
		if rk.kind == k {
			keys = append(keys, rk.key)
		}
	}
	for rk := range s.bad {
		if rk.kind == k {
			keys = append(keys, rk.key)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// Version returns the store's version: the number of writes (Put and
// Delete) ever made to it. Every record's MAC covers the version of the
// write that made it.
func (s *Store) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}

// Head returns the anchor of the current state; see [WithAnchor].
func (s *Store) Head() Anchor {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Anchor{Version: s.version, Hash: s.head}
}

// Recovered returns how many bytes of an interrupted write Open dropped
// from the end of the file (0 after a clean shutdown). Nothing in them
// had been acknowledged to a caller.
func (s *Store) Recovered() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.recovered
}

// Compact rewrites the file with only the current records, atomically
// (write a new file, fsync, rename, fsync the directory). Records that
// are bad are kept as bad, so they still fail in [Store.Get] after it; the
// other problems Open reported (unreadable bytes, gaps of unknown
// writes, a rollback) are not carried over: calling Compact acknowledges
// them. The store compacts itself when the file has grown to more than
// twice its live data, unless Open reported problems.
func (s *Store) Compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	return s.compactLocked()
}

func (s *Store) compactLocked() error {
	buf, last, lastTag, err := snapshot(s.mac, s.recs, s.bad, s.version, s.head, s.last, s.lastTag)
	if err != nil {
		return err
	}
	if err := replaceFile(s.path, buf); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err == nil {
		var unlock func() error
		if unlock, err = durable.Lock(f); err == nil {
			s.unlock()
			s.f.Close()
			s.f, s.unlock = f, unlock
		} else {
			f.Close()
		}
	}
	if err != nil {
		s.err = fmt.Errorf("store: reopening after compaction: %w", err)
		return s.err
	}
	s.size = int64(len(buf))
	s.last, s.lastTag = last, lastTag
	s.damaged = false
	return nil
}

// Verify reads the whole file again and checks every record, and that
// the file still holds exactly what the running store holds. It returns
// the report, and also an [*IntegrityError] with the same problems if
// there are any; other errors mean the check could not be made.
func (s *Store) Verify() (*IntegrityReport, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, err
	}
	l, err := scan(data, s.mac, nil)
	if err != nil {
		var ie *IntegrityError
		if errors.As(err, &ie) {
			return &IntegrityReport{Problems: ie.Problems}, err
		}
		return nil, err
	}
	if l.torn > 0 {
		l.report(Problem{Offset: int64(l.end), Reason: ReasonDamaged, Detail: fmt.Sprintf("%d unreadable bytes at the end", l.torn)})
	}
	reported := map[rkey]bool{}
	for _, p := range l.problems {
		if p.Kind != "" {
			reported[rkey{kindCodes[p.Kind], p.Key}] = true
		}
	}
	differs := func(k rkey, v uint64, why string) {
		if !reported[k] {
			reported[k] = true
			l.problems = append(l.problems, Problem{Kind: kindNames[k.kind], Key: k.key, Version: v, Reason: ReasonDiffers, Detail: why})
		}
	}
	for k, r := range s.recs {
		d, ok := l.recs[k]
		switch {
		case !ok:
			differs(k, r.version, "missing from the file")
		case d.version != r.version || !bytes.Equal(d.value, r.value):
			differs(k, d.version, fmt.Sprintf("the file holds version %d, the store version %d", d.version, r.version))
		}
	}
	for k, d := range l.recs {
		if _, ok := s.recs[k]; !ok && s.bad[k] == nil {
			differs(k, d.version, "in the file but not in the store")
		}
	}
	if l.version != s.version || l.head != s.head {
		l.problems = append(l.problems, Problem{Version: l.version, Reason: ReasonRollback,
			Detail: fmt.Sprintf("the file is at version %d, the store at %d", l.version, s.version)})
	}
	rep := &IntegrityReport{Version: l.version, Records: len(l.recs), Head: Anchor{l.version, l.head}, Problems: l.problems}
	if len(rep.Problems) > 0 {
		return rep, &IntegrityError{Problems: rep.Problems}
	}
	return rep, nil
}

// Close closes the store. Every acknowledged write is already on disk.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.unlock()
	return s.f.Close()
}
