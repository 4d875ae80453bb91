package cards

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Conn is a connected card as a [Worker] uses it. cards/pcsc.Card
// implements it.
type Conn interface {
	Transmitter
	// Begin starts an exclusive transaction (SCardBeginTransaction): no
	// other PC/SC client can interleave commands until End.
	Begin(ctx context.Context) error
	// End ends the transaction and leaves the card as it is.
	End() error
	// Reset resets the card, which drops its security state (verified
	// PINs): what one user of the card leaves behind, the next cannot use.
	Reset(ctx context.Context) error
	// Close disconnects.
	Close() error
}

// Checker is an optional capability of a [Conn]: Check reports whether the
// connection still stands, without sending the card anything: an error
// wrapping [ErrCardReset] when another client reset the card since the
// connection's last call (cards/pcsc asks SCardStatus), [ErrCardRemoved]
// when the card was pulled. A [Worker] checks before it resets the card
// itself, which would hide another client's reset (SCardReconnect clears
// SCARD_W_RESET_CARD): a reset by another program may come with a change
// of the card's keys (see [Worker.Connections]).
type Checker interface {
	Check(ctx context.Context) error
}

// Opener connects to the card a Worker owns.
type Opener func(ctx context.Context) (Conn, error)

// Worker is the one goroutine that owns a card. Requests reach it through
// [Worker.Do], each with its own context, and run one at a time inside a
// PC/SC transaction, so that no two requests interleave their APDUs.
//
// The worker connects on the first request, and reconnects when the card
// was reset, removed and reinserted, or the PC/SC service restarted. A
// request that fails because the card was reset underneath it (its PIN
// state is gone) runs once more on the fresh connection, from its start; a
// request that succeeded is never run again, whatever ending the
// transaction reports.
//
// Requests made with [Worker.DoAs] name their principal (the delegate a
// request serves). When the principal changes, and on every new connection,
// the worker resets the card before the request, so that no principal ever
// rides on a PIN another one verified.
//
// # Failures of the card
//
// A request fails with an error marked [ErrCardFailed] when the card or its
// link failed under it: connecting, the reset for a new principal,
// beginning the transaction, or an exchange of the request's function
// (Transmit returned an error); or when the request's function failed
// right after the card answered its last command with an execution error
// (ISO/IEC 7816-4 §5.6: SW1 64 or 65, or 6F, no precise diagnosis). The
// worker sees the exchanges itself, so the mark holds whatever the function
// made of the error it got (even an error that wraps nothing); the cause
// stays in the chain (errors.Is with [ErrCardReset], [ErrCardRemoved], …).
// Any other status word the card answered (a wrong PIN above all) is the
// request's outcome and is never marked, nor is the end of the request's
// context. After a failure of the card the worker drops the connection, and
// the next request connects afresh (and so resets the card).
//
// # Changes of the card
//
// Another program may change the card between two requests (a new key
// generated, a certificate imported), and PC/SC tells only that the card
// was reset, if the program reset it (as PIV tools do when they
// disconnect). The worker then connects again: [Worker.Connections] counts
// its connections, so a request's function can tell that what it learned of
// the card on an earlier connection (its keys, say) may no longer hold.
//
// A Worker is safe for concurrent use.
type Worker struct {
	open  Opener
	log   *slog.Logger
	conns atomic.Uint64
	reqs  chan *request
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once
}

type request struct {
	ctx       context.Context
	fn        func(context.Context, Transmitter) error
	done      chan error
	isolate   bool
	principal string
}

// NewWorker starts the owner goroutine of a card. log may be nil.
func NewWorker(open Opener, log *slog.Logger) *Worker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Worker{open: open, log: log, reqs: make(chan *request), quit: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// Do runs fn on the card's owner goroutine, inside a transaction. fn must
// not keep t after it returns. Do returns when fn has run, or at once with
// ctx's error if ctx ends before the worker picks the request up; once fn
// has started, it runs to its end (fn sees ctx and should stop between
// APDUs, never in the middle of a chained exchange).
//
// Do is for requests that verify no PIN (reading certificates, say); a
// request that does uses [Worker.DoAs].
func (w *Worker) Do(ctx context.Context, fn func(ctx context.Context, t Transmitter) error) error {
	return w.submit(&request{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// DoAs is Do for a request on behalf of principal: if the card's previous
// request was another principal's, or the connection is new, the card is
// reset first.
func (w *Worker) DoAs(ctx context.Context, principal string, fn func(ctx context.Context, t Transmitter) error) error {
	return w.submit(&request{ctx: ctx, fn: fn, done: make(chan error, 1), isolate: true, principal: principal})
}

func (w *Worker) submit(r *request) error {
	ctx := r.ctx
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.quit:
		return ErrClosed
	}
	return <-r.done
}

// Connections is the number of connections the worker has made to its
// card. A new connection follows the card's reset by another PC/SC client,
// its removal and reinsertion, a failure of the card or a restart of the
// PC/SC service, and any of them may hide a change another program made to
// the card. Called from a request's function, it counts the connection the
// function runs on: a function that compares it with the count at which it
// read the card's keys knows whether to read them again.
func (w *Worker) Connections() uint64 { return w.conns.Load() }

// Close stops the worker after the request in progress and disconnects.
func (w *Worker) Close() error {
	w.once.Do(func() { close(w.quit) })
	<-w.done
	return nil
}

func (w *Worker) run() {
	defer close(w.done)
	var conn Conn
	// last is the principal whose request the card served last on conn;
	// nil when the card's state is unknown (a new connection).
	var last *string
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-w.quit:
			return
		case r := <-w.reqs:
			var err error
			conn, err = w.serve(conn, r, &last)
			r.done <- err
		}
	}
}

// serve runs one request and returns the connection to keep (nil to
// reconnect next time).
func (w *Worker) serve(conn Conn, r *request, last **string) (Conn, error) {
	for attempt := 0; ; attempt++ {
		if err := r.ctx.Err(); err != nil {
			return conn, err
		}
		if conn == nil {
			c, err := w.open(r.ctx)
			if err != nil {
				return nil, failed(fmt.Errorf("cards: connect: %w", err))
			}
			conn, *last = c, nil
			w.conns.Add(1)
		}
		if r.isolate && (*last == nil || **last != r.principal) {
			if ck, ok := conn.(Checker); ok && *last != nil {
				// Resetting the card ourselves would hide a reset by
				// another client, and with it a change of the card.
				if err := failed(ck.Check(r.ctx)); err != nil {
					if !errors.Is(err, ErrCardFailed) {
						return conn, err // the request's context ended first
					}
					w.log.Info("card connection lost before a request", "err", err)
					conn.Close()
					conn = nil
					if attempt > 0 || !errors.Is(err, ErrCardReset) {
						return nil, err
					}
					continue
				}
			}
			if err := failed(conn.Reset(r.ctx)); err != nil {
				if !errors.Is(err, ErrCardFailed) {
					return conn, err // the request's context ended first
				}
				w.log.Info("card reset failed", "err", err)
				conn.Close()
				return nil, fmt.Errorf("cards: reset before a new principal: %w", err)
			}
			p := r.principal
			*last = &p
		}
		err, broke, endErr := w.transact(conn, r)
		if err == nil {
			if broke || endErr != nil {
				// Done, but the connection is in doubt: reconnect next time.
				w.log.Info("card connection in doubt after a request", "err", endErr)
				conn.Close()
				return nil, nil
			}
			return conn, nil
		}
		if !errors.Is(err, ErrCardFailed) {
			// The request's own outcome: a status word, its context.
			if endErr != nil {
				conn.Close()
				return nil, err
			}
			return conn, err
		}
		w.log.Info("card failed during a request", "err", err)
		conn.Close()
		conn = nil
		// Only a reset (the card is still there, its state gone) is worth
		// running the request again here; any other failure of the card
		// fails the request, and a pool may give it to another card.
		if attempt > 0 || !errors.Is(err, ErrCardReset) {
			return nil, err
		}
	}
}

// transact runs r in a transaction. err is Begin's failure or the request's
// outcome: fn's error, or, when an exchange failed during fn and fn failed,
// that failure of the card. broke reports that an exchange failed (even if
// fn recovered); endErr is End's error.
func (w *Worker) transact(conn Conn, r *request) (err error, broke bool, endErr error) {
	if err := conn.Begin(r.ctx); err != nil {
		return failed(err), false, nil
	}
	t := &watched{t: conn}
	err = r.fn(r.ctx, t)
	endErr = conn.End()
	if err != nil && !errors.Is(err, ErrCardFailed) {
		switch {
		case t.err != nil:
			// fn made something else of the card's failure (a code for
			// the wire, say): the failure is what happened.
			err = t.err
		case executionError(t.sw1) && r.ctx.Err() == nil:
			err = &cardFailure{fmt.Errorf("cards: the card failed to execute a command (SW1 %02X): %w", t.sw1, err)}
		}
	}
	return err, t.err != nil, endErr
}

// executionError reports whether sw1 says that the card failed to execute
// a command: 64 and 65 (execution error, non-volatile memory unchanged or
// changed) and 6F (no precise diagnosis), ISO/IEC 7816-4 §5.6, table 6.
// None of them answers a wrong PIN (63Cx) or a blocked one (6983).
func executionError(sw1 byte) bool { return sw1 == 0x64 || sw1 == 0x65 || sw1 == 0x6F }

// watched is the Transmitter a request's function gets: it marks the
// failures of the link with ErrCardFailed and remembers the first, and the
// first byte of the status word of the last response.
type watched struct {
	t   Transmitter
	err error
	sw1 byte
}

func (w *watched) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	rsp, err := w.t.Transmit(ctx, cmd)
	if err = failed(err); w.err == nil && errors.Is(err, ErrCardFailed) {
		w.err = err
	}
	if err == nil && len(rsp) >= 2 {
		w.sw1 = rsp[len(rsp)-2]
	}
	return rsp, err
}

// Direct returns an Opener for a card reached in process, such as a
// simulator: transactions are no-ops (the Worker already serializes), and
// Reset calls the card's own Reset.
func Direct(card interface {
	Transmitter
	Reset()
}) Opener {
	return func(ctx context.Context) (Conn, error) { return directConn{card}, nil }
}

type directConn struct {
	card interface {
		Transmitter
		Reset()
	}
}

func (d directConn) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	return d.card.Transmit(ctx, cmd)
}
func (directConn) Begin(ctx context.Context) error   { return ctx.Err() }
func (directConn) End() error                        { return nil }
func (d directConn) Reset(ctx context.Context) error { d.card.Reset(); return nil }
func (directConn) Close() error                      { return nil }
