// Package cards reaches smart cards: the byte-level [Transmitter] seam that every
// profile driver talks through, the errors a card link can fail with, and the
// [Worker] that gives each card exactly one owner goroutine.
//
// # Layers
//
// A card is reached through a [Transmitter]: one command APDU in, one response
// APDU out. Implementations live in subpackages:
//
//   - cards/pcsc talks to readers through the PC/SC daemon (pcscd), and is the
//     only package of the server that uses cgo.
//   - cards/vpcd is the card side of vsmartcard's vpcd protocol: it plugs any
//     simulated card into a real pcscd, so that every client, ours or not,
//     sees it as a card in a reader.
//
// Simulators of card applications implement [Transmitter] themselves, so the
// same simulator serves in-process unit tests and integration tests through
// pcscd.
//
// This package knows no card application: SELECT, VERIFY and signatures are
// the business of the profiles.
package cards

import (
	"context"
	"errors"
)

// Transmitter sends one command APDU to a card and returns the card's response
// APDU (response data followed by SW1 SW2).
//
// Transmit does no chaining, GET RESPONSE or retries of its own; see
// apdu.Conn for that. An implementation returns an error only when the
// exchange itself failed (the card was removed or reset, the reader or the
// PC/SC service went away, ctx ended before the command was sent); a status
// word, even an error status, is a successful exchange. Errors wrap the
// sentinels of this package where one applies.
//
// Implementations are not required to be safe for concurrent use: a card is
// owned by one goroutine (see [Worker]).
type Transmitter interface {
	Transmit(ctx context.Context, cmd []byte) ([]byte, error)
}

// Errors of a card link. Implementations wrap them, so test with errors.Is.
var (
	// ErrNoCard: the reader is empty.
	ErrNoCard = errors.New("cards: no card in reader")
	// ErrCardRemoved: the card was pulled during or since the last exchange.
	ErrCardRemoved = errors.New("cards: card removed")
	// ErrCardReset: another client or the reader reset the card; its
	// security state (verified PINs, selected application) is gone.
	ErrCardReset = errors.New("cards: card was reset")
	// ErrNoReader: the reader named does not exist (any more).
	ErrNoReader = errors.New("cards: no such reader")
	// ErrServiceUnavailable: the PC/SC service is not running or was restarted.
	ErrServiceUnavailable = errors.New("cards: PC/SC service unavailable")
	// ErrSharingViolation: another process holds the card exclusively.
	ErrSharingViolation = errors.New("cards: card in use by another process")
	// ErrClosed: the connection or worker was closed.
	ErrClosed = errors.New("cards: closed")
	// ErrCardFailed marks a failure of the card or of the link to it, as
	// opposed to an answer of the card: connecting, the reset for a new
	// principal, beginning a transaction or an exchange did not complete.
	// [Worker] adds it to every such error of a request, next to the
	// sentinel of the cause when there is one, whatever the request's
	// function made of the error. A status word, even an error status such
	// as a wrong PIN, is an answer and never carries it; nor does the end of
	// the request's context. A request that failed with it did not fail
	// because of what it asked: another card may serve it (see
	// server/rsc.Pool).
	ErrCardFailed = errors.New("cards: card failed")
)

// cardFailure is err marked with [ErrCardFailed]; its message is err's.
type cardFailure struct{ err error }

func (e *cardFailure) Error() string   { return e.err.Error() }
func (e *cardFailure) Unwrap() []error { return []error{e.err, ErrCardFailed} }

// failed marks err, an error of a card connection or of making one, as the
// card's failure. It leaves nil, errors already marked and the ends of
// contexts as they are.
func failed(err error) error {
	if err == nil || errors.Is(err, ErrCardFailed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &cardFailure{err}
}
