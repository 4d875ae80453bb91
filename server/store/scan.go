package store

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"fmt"
)

type rkey struct {
	kind byte
	key  string
}

type record struct {
	value   []byte
	version uint64
}

// loaded is what scan found in a file.
type loaded struct {
	recs     map[rkey]record
	bad      map[rkey][]Problem // records that must not be served
	problems []Problem

	version    uint64   // the newest write's version
	head       [32]byte // history hash at version
	anchorOK   bool     // the anchor's version was seen and its hash compared equal
	anchorSeen bool

	// The physically last frame, which the next write links to.
	last    body
	lastTag []byte
	frames  int
	end     int   // offset after the last complete frame
	torn    int   // bytes after end that looked like an interrupted write
	live    int64 // bytes of live records, for the compaction heuristic
}

func newLoaded() *loaded {
	return &loaded{recs: map[rkey]record{}, bad: map[rkey][]Problem{}}
}

func (l *loaded) report(p Problem) {
	l.problems = append(l.problems, p)
	if p.Kind != "" {
		k := rkey{kindCodes[p.Kind], p.Key}
		l.bad[k] = append(l.bad[k], p)
		if r, ok := l.recs[k]; ok {
			l.live -= int64(len(r.value))
			delete(l.recs, k)
		}
	}
}

// apply makes a valid write current.
func (l *loaded) apply(b *body) {
	k := rkey{b.Kind, b.Key}
	delete(l.bad, k) // a newer valid write supersedes whatever was wrong
	if r, ok := l.recs[k]; ok {
		l.live -= int64(len(r.value))
		delete(l.recs, k)
	}
	switch b.Op {
	case opPut, opSnap:
		l.recs[k] = record{value: b.Value, version: b.Version}
		l.live += int64(len(b.Value))
	case opBad:
		l.report(Problem{Kind: kindNames[b.Kind], Key: b.Key, Version: b.Version, Reason: ReasonQuarantined, Detail: string(b.Value)})
	}
}

func verifyMAC(mac MACer, enc, tag []byte) (bool, error) {
	want, err := mac.MAC(macLabel, enc)
	if err != nil {
		return false, err
	}
	return hmac.Equal(want, tag), nil
}

// resync returns the offset of the next readable frame at or after from,
// or -1.
func resync(data []byte, from int) int {
	for i := from; i+len(frameMagic) <= len(data); i++ {
		j := bytes.Index(data[i:], []byte(frameMagic))
		if j < 0 {
			return -1
		}
		i += j
		if _, _, _, st := readFrame(data[i:]); st == frameOK {
			return i
		}
	}
	return -1
}

// scan reads and checks a whole store file. It returns an error only when
// the MACer fails or the file is not a store; everything wrong with
// records goes into loaded.problems.
func scan(data []byte, mac MACer, anchor *Anchor) (*loaded, error) {
	l := newLoaded()
	if len(data) < len(fileMagic) || string(data[:len(fileMagic)]) != fileMagic {
		return nil, &IntegrityError{Problems: []Problem{{Reason: ReasonDamaged, Detail: "not a pscs store file (bad header)"}}}
	}
	const (
		wantBegin = iota
		inSnapshot
		inWrites
	)
	region := wantBegin
	var count, seen uint64 // snapshot records announced and read
	var prevTag []byte     // stored tag of the physically previous frame
	pos := len(fileMagic)
	l.end = pos
	for pos < len(data) {
		enc, tag, n, st := readFrame(data[pos:])
		if st != frameOK {
			next := resync(data, pos+1)
			if next < 0 {
				// Nothing readable follows: an interrupted write.
				l.torn = len(data) - pos
				break
			}
			p := Problem{Offset: int64(pos), Reason: ReasonDamaged,
				Detail: fmt.Sprintf("%d unreadable bytes", next-pos)}
			prevTag = nil
			if st == frameDamaged && n > 0 && pos+n == next {
				// Framing intact, contents changed: name the record if we can.
				bl := int(binary.BigEndian.Uint32(data[pos+4:]))
				if b, err := parseBody(data[pos+frameHeaderLen : pos+frameHeaderLen+bl]); err == nil && b.Op != opBegin {
					p.Kind, p.Key, p.Version = kindNames[b.Kind], b.Key, b.Version
					p.Detail = "checksum mismatch: the record was changed on disk"
				}
				prevTag = bytes.Clone(data[pos+frameHeaderLen+bl : pos+n-frameTrailer])
			}
			l.report(p)
			pos = next
			l.end = pos
			continue
		}
		off := int64(pos)
		pos += n
		l.end = pos
		l.frames++
		linked := prevTag != nil
		b, err := parseBody(enc)
		if err != nil {
			l.report(Problem{Offset: off, Reason: ReasonForged, Detail: "malformed record with a valid checksum"})
			prevTag = bytes.Clone(tag)
			continue
		}
		l.last, l.lastTag = b, bytes.Clone(tag)
		ok, err := verifyMAC(mac, enc, tag)
		if err != nil {
			return nil, fmt.Errorf("store: MAC: %w", err)
		}
		chainOK := l.frames == 1 || (linked && bytes.Equal(b.PrevTag, prevTag))
		prevTag = bytes.Clone(tag)
		if !ok {
			l.report(Problem{Kind: kindNames[b.Kind], Key: b.Key, Version: b.Version, Offset: off, Reason: ReasonForged,
				Detail: "MAC mismatch: the record was changed by someone without the key"})
			if region == inWrites && b.Version > l.version {
				l.head = headHash(l.head, enc)
			}
			continue
		}
		if l.frames == 1 {
			if b.Op == opBegin {
				count = binary.BigEndian.Uint64(b.Value)
				l.version = b.Version
				copy(l.head[:], b.Value[8:])
				region = inSnapshot
				l.checkAnchor(anchor)
				continue
			}
			l.report(Problem{Offset: off, Reason: ReasonRemoved, Detail: "the file's first record is missing"})
			region = inWrites
		}
		if b.Op == opBegin {
			l.report(Problem{Offset: off, Version: b.Version, Reason: ReasonOldCopy, Detail: "the start of another copy of the store"})
			continue
		}
		snap := b.Op == opSnap || b.Op == opBad
		if region == inSnapshot && !snap {
			region = inWrites
			if seen < count {
				l.report(Problem{Offset: off, Reason: ReasonRemoved,
					Detail: fmt.Sprintf("%d of the %d records written by the last compaction are missing", count-seen, count)})
			}
		}
		if region == inWrites && snap {
			l.report(Problem{Kind: kindNames[b.Kind], Key: b.Key, Version: b.Version, Offset: off, Reason: ReasonOldCopy,
				Detail: "a compacted record out of place"})
			continue
		}
		if !chainOK {
			if region == inWrites && b.Version <= l.version || region == inSnapshot {
				l.report(Problem{Kind: kindNames[b.Kind], Key: b.Key, Version: b.Version, Offset: off, Reason: ReasonOldCopy,
					Detail: fmt.Sprintf("not linked to the record before it: an old copy (store is at version %d)", l.version)})
				if region == inSnapshot {
					l.reportRemoved(&b, off)
					seen++
				}
				continue
			}
			l.reportRemoved(&b, off)
		}
		if region == inSnapshot {
			seen++
			if b.Version > l.version {
				l.report(Problem{Kind: kindNames[b.Kind], Key: b.Key, Version: b.Version, Offset: off, Reason: ReasonForged,
					Detail: "compacted record newer than its compaction"})
				continue
			}
			l.apply(&b)
			continue
		}
		if b.Version <= l.version {
			l.report(Problem{Kind: kindNames[b.Kind], Key: b.Key, Version: b.Version, Offset: off, Reason: ReasonOldCopy,
				Detail: fmt.Sprintf("version %d repeated (store is at version %d)", b.Version, l.version)})
			continue
		}
		l.version = b.Version
		l.head = headHash(l.head, enc)
		l.checkAnchor(anchor)
		l.apply(&b)
	}
	if region == inSnapshot && seen < count {
		l.report(Problem{Offset: int64(l.end), Reason: ReasonRemoved,
			Detail: fmt.Sprintf("%d of the %d records written by the last compaction are missing", count-seen, count)})
	}
	if anchor != nil {
		switch {
		case l.version < anchor.Version:
			l.report(Problem{Version: l.version, Reason: ReasonRollback,
				Detail: fmt.Sprintf("the store is at version %d but the anchor says %d: rolled back", l.version, anchor.Version)})
		case l.anchorSeen && !l.anchorOK:
			l.report(Problem{Version: anchor.Version, Reason: ReasonRollback,
				Detail: "the store's history at the anchored version differs from the anchor"})
		}
	}
	return l, nil
}

// reportRemoved reports the record that b names as its predecessor, and
// any gap in versions before it.
func (l *loaded) reportRemoved(b *body, off int64) {
	if b.PrevKind != 0 {
		l.report(Problem{Kind: kindNames[b.PrevKind], Key: b.PrevKey, Version: b.PrevVersion, Offset: off, Reason: ReasonRemoved,
			Detail: "record missing from the file"})
	}
	if b.Op != opSnap && b.Op != opBad && b.PrevVersion > l.version+1 {
		l.report(Problem{Offset: off, Reason: ReasonRemoved,
			Detail: fmt.Sprintf("the writes of versions %d to %d are missing (their records are unknown)", l.version+1, b.PrevVersion-1)})
	}
}

func (l *loaded) checkAnchor(a *Anchor) {
	if a != nil && a.Version == l.version {
		l.anchorSeen = true
		l.anchorOK = l.head == a.Hash
	}
}
