package transcript

import (
	"bytes"
	"context"
	"fmt"
	"sync"
)

// Replay is a card that answers with a transcript's responses: a
// cards.Transmitter for driver tests. It expects the transcript's commands
// in order, byte for byte, and answers each with the recorded response; an
// unexpected command is an error (and every later command too). Check
// [Replay.Done] at the end of a test for commands the driver never sent.
// Safe for concurrent use.
type Replay struct {
	mu  sync.Mutex
	ex  []Exchange
	n   int
	err error
}

// NewReplay returns a Replay of t's Transmit calls.
func NewReplay(t *Transcript) *Replay { return &Replay{ex: t.Exchanges()} }

// Transmit answers cmd with the next recorded response if cmd is the next
// recorded command.
func (r *Replay) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.err != nil:
		return nil, r.err
	case r.n >= len(r.ex):
		r.err = fmt.Errorf("transcript: command %X after the last of %d exchanges", cmd, len(r.ex))
	case !bytes.Equal(cmd, r.ex[r.n].Command):
		r.err = fmt.Errorf("transcript: exchange %d: command %X, the transcript has %X", r.n, cmd, r.ex[r.n].Command)
	default:
		r.n++
		return bytes.Clone(r.ex[r.n-1].Response), nil
	}
	return nil, r.err
}

// Done reports the first unexpected command, or the exchanges never
// reached, or nil when the transcript was played to its end.
func (r *Replay) Done() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if r.n < len(r.ex) {
		return fmt.Errorf("transcript: %d of %d exchanges never sent (next: %X)", len(r.ex)-r.n, len(r.ex), r.ex[r.n].Command)
	}
	return nil
}
