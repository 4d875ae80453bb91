// Package pcsc reaches smart cards through the PC/SC service (pcscd with
// pcsc-lite) by way of github.com/ebfe/scard. It is the only package of the
// server that uses cgo; built without cgo, [Open] fails with an error
// wrapping errors.ErrUnsupported.
//
// # Layers
//
// A [Context] lists readers ([Context.Readers]), reports card insertion and
// removal ([Context.Watch]) and connects to cards ([Context.Connect]). A
// [Card] is a [cards.Transmitter] for one connected card, with PC/SC
// transactions and reconnection.
//
// # Errors
//
// Failures of the PC/SC service are returned as [*Error], which carries the
// PC/SC return code and wraps the sentinel of package cards that applies:
// [cards.ErrCardRemoved], [cards.ErrCardReset], [cards.ErrNoCard],
// [cards.ErrNoReader], [cards.ErrServiceUnavailable] or
// [cards.ErrSharingViolation]. Test with errors.Is.
//
// # Service restarts
//
// pcscd may be restarted under us. A [Context] notices (SCARD_E_NO_SERVICE,
// an invalid handle) and establishes a new PC/SC context on its next call;
// [Context.Watch] reports the cards as removed and resumes with the new
// service. The handles of connected cards do not survive: their Transmit
// fails with [cards.ErrServiceUnavailable], and [Card.Reconnect] (or a new
// [Context.Connect]) connects them again.
//
// # Concurrency
//
// libpcsclite serializes every call on one PC/SC context. Each [Card]
// therefore has a PC/SC context of its own, so cards in different readers
// are used in parallel, and [Context.Watch] waits on its own context too.
// SCardTransmit and SCardBeginTransaction cannot be interrupted: a ctx is
// checked before them, not during them (SCardCancel only interrupts
// SCardGetStatusChange). The calls of a [Context] ([Context.Readers],
// [Context.Connect]) return when their ctx ends even if pcscd does not
// answer (libpcsclite would wait for ever): the PC/SC call finishes in the
// background.
package pcsc

import (
	"fmt"

	"github.com/pscs/pscs/cards"
)

// Reader is the state of one reader, from [Context.Readers].
type Reader struct {
	Name    string
	Present bool   // a card is in the reader
	ATR     []byte // the card's ATR when Present
	// Events is pcsc-lite's event counter of the reader (the high 16
	// bits of its event state, wrapping): pcscd's reader thread adds one
	// each time it sees a card inserted or removed, and only then.
	//
	// A reader shown empty with the counter it had while the card was in
	// may not be empty for pcscd yet: pcscd (1.9.9) marks the reader empty
	// in its shared state when a reset or an exchange finds the card
	// gone, without telling its reader thread, which goes on believing
	// the card in until its next poll (every 400 ms) finds the slot
	// empty. A card inserted before that poll is never reported (the
	// thread sees "present" as before), and the reader stays empty for
	// every client until that card is removed again. A client that
	// inserts a card itself (a test with vpcd) waits for the counter to
	// move first.
	Events uint16
}

// EventKind is what happened in a reader.
type EventKind int

const (
	// Inserted: a card was inserted (or was present when Watch started).
	Inserted EventKind = iota + 1
	// Removed: the card was removed, or the PC/SC service went away.
	Removed
	// ReaderAdded: a reader appeared (not for the readers present when
	// Watch started).
	ReaderAdded
	// ReaderRemoved: a reader disappeared.
	ReaderRemoved
)

func (k EventKind) String() string {
	switch k {
	case Inserted:
		return "inserted"
	case Removed:
		return "removed"
	case ReaderAdded:
		return "reader added"
	case ReaderRemoved:
		return "reader removed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change in a reader, from [Context.Watch].
type Event struct {
	Reader string
	Kind   EventKind
	ATR    []byte // the card's ATR, for Inserted
}

// Error is a failure reported by the PC/SC service.
type Error struct {
	Op     string // the PC/SC function, e.g. "SCardTransmit"
	Reader string // the reader, when the operation concerned one
	Code   uint32 // the PC/SC return code, e.g. 0x80100069 (SCARD_W_REMOVED_CARD)
	Msg    string // pcsc-lite's description of Code
	Err    error  // the sentinel of package cards it means, or nil
}

func (e *Error) Error() string {
	s := "pcsc: " + e.Op
	if e.Reader != "" {
		s += fmt.Sprintf(" %q", e.Reader)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + fmt.Sprintf(" (0x%08X: %s)", e.Code, e.Msg)
}

// Unwrap returns the sentinel of package cards, or nil.
func (e *Error) Unwrap() error { return e.Err }

var _ cards.Transmitter = (*Card)(nil)
var _ cards.Checker = (*Card)(nil)
