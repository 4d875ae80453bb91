package store

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is returned by [Store.Get] and [Store.Delete] for a record
// that does not exist (and was not lost to tampering: that is an
// [*IntegrityError]).
var ErrNotFound = errors.New("store: record not found")

// ErrClosed is returned by every method of a closed [Store].
var ErrClosed = errors.New("store: closed")

// ErrIntegrity matches every [*IntegrityError] with [errors.Is].
var ErrIntegrity = errors.New("store: integrity check failed")

// Reason says what is wrong with a record.
type Reason int

const (
	// ReasonDamaged: bytes on disk were changed without keeping the
	// checksum right (bit rot or a careless edit), or are unreadable.
	ReasonDamaged Reason = iota + 1
	// ReasonForged: the checksum is right but the MAC is not: the record
	// was edited by someone without the key.
	ReasonForged
	// ReasonRemoved: a record that was written is missing from the file.
	ReasonRemoved
	// ReasonOldCopy: a valid record that was superseded was put back.
	ReasonOldCopy
	// ReasonRollback: the whole store is older than its anchor.
	ReasonRollback
	// ReasonQuarantined: a record found bad earlier and kept as bad by
	// [Store.Compact], until it is written or deleted again.
	ReasonQuarantined
	// ReasonDiffers: [Store.Verify] found the file no longer matches what
	// the running store holds.
	ReasonDiffers
)

func (r Reason) String() string {
	switch r {
	case ReasonDamaged:
		return "damaged"
	case ReasonForged:
		return "forged"
	case ReasonRemoved:
		return "removed"
	case ReasonOldCopy:
		return "old copy"
	case ReasonRollback:
		return "rollback"
	case ReasonQuarantined:
		return "quarantined"
	case ReasonDiffers:
		return "differs"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Problem is one thing wrong with the store, by record where the record
// is known. Kind and Key are empty when the problem cannot be tied to one
// record (unreadable bytes, a gap of unknown writes, a rollback).
type Problem struct {
	Kind    string
	Key     string
	Version uint64 // the record's version, when known
	Offset  int64  // where in the file it was found
	Reason  Reason
	Detail  string
}

func (p Problem) String() string {
	who := "store"
	if p.Kind != "" {
		who = fmt.Sprintf("%s %q", p.Kind, p.Key)
	}
	if p.Version != 0 {
		who += fmt.Sprintf(" v%d", p.Version)
	}
	return fmt.Sprintf("%s at offset %d: %s: %s", who, p.Offset, p.Reason, p.Detail)
}

// IntegrityError lists every problem found. It matches [ErrIntegrity].
type IntegrityError struct {
	Problems []Problem
}

func (e *IntegrityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: %d integrity problem(s)", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("; ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Is reports whether target is [ErrIntegrity].
func (e *IntegrityError) Is(target error) bool { return target == ErrIntegrity }

// IntegrityReport is the result of [Store.Verify].
type IntegrityReport struct {
	Version  uint64 // the version on disk
	Records  int    // valid live records on disk
	Head     Anchor // the head on disk
	Problems []Problem
}

// OK reports whether no problem was found.
func (r *IntegrityReport) OK() bool { return len(r.Problems) == 0 }
