//go:build cgo

package pcsc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ebfe/scard"

	"github.com/pscs/pscs/cards"
)

// kindOf returns the sentinel of package cards that a PC/SC return code
// means, or nil.
func kindOf(code scard.Error) error {
	switch code {
	case scard.ErrRemovedCard:
		return cards.ErrCardRemoved
	case scard.ErrResetCard:
		return cards.ErrCardReset
	case scard.ErrNoSmartcard:
		return cards.ErrNoCard
	case scard.ErrUnknownReader, scard.ErrReaderUnavailable, scard.ErrNoReadersAvailable:
		return cards.ErrNoReader
	case scard.ErrSharingViolation:
		return cards.ErrSharingViolation
	}
	if serviceLost(code) {
		return cards.ErrServiceUnavailable
	}
	return nil
}

// serviceLost reports whether code means that the PC/SC context is dead:
// pcscd stopped or restarted, and a new context is needed. An invalid
// handle means the same here: this package never uses a handle it released.
func serviceLost(code scard.Error) bool {
	switch code {
	case scard.ErrNoService, scard.ErrServiceStopped, scard.ErrInvalidHandle,
		scard.ErrCommError, scard.ErrShutdown:
		return true
	}
	return false
}

// mapErr turns an error of package scard into an *Error.
func mapErr(op, reader string, err error) error {
	if err == nil {
		return nil
	}
	code, ok := err.(scard.Error)
	if !ok {
		return fmt.Errorf("pcsc: %s %q: %w", op, reader, err)
	}
	msg, _ := strings.CutPrefix(code.Error(), "scard: ")
	return &Error{Op: op, Reader: reader, Code: uint32(code), Msg: msg, Err: kindOf(code)}
}

// lost reports whether err, straight from package scard, means the PC/SC
// context is dead.
func lost(err error) bool {
	code, ok := err.(scard.Error)
	return ok && serviceLost(code)
}

// isServiceLost reports whether err, from mapErr, means the PC/SC context
// is dead.
func isServiceLost(err error) bool {
	var e *Error
	return errors.As(err, &e) && serviceLost(scard.Error(e.Code))
}

// Context is a connection to the PC/SC service. Its methods are safe for
// concurrent use; calls other than Watch and Connect are serialized.
//
// Every method that may block honours its ctx: libpcsclite waits for
// pcscd without a timeout, so a PC/SC call runs on a goroutine of its
// own, and the method returns ctx's error when ctx ends first. A call so
// left finishes in the background: the Context's next call waits for it
// (honouring its own ctx), a card connected too late is disconnected.
type Context struct {
	// sem, held (one value in it) by the call using sc, serializes
	// the calls and guards sc and closed.
	sem    chan struct{}
	sc     *scard.Context // nil: establish on next use
	closed bool

	closing context.Context // ends on Close, stops Watch
	close   context.CancelFunc
}

// Open establishes a PC/SC context. It fails with an error wrapping
// [cards.ErrServiceUnavailable] if pcscd is not running.
func Open() (*Context, error) {
	closing, cancel := context.WithCancel(context.Background())
	c := &Context{sem: make(chan struct{}, 1), closing: closing, close: cancel}
	if err := c.do(context.Background(), func(*scard.Context) error { return nil }); err != nil {
		cancel()
		return nil, err
	}
	return c, nil
}

// Close releases the PC/SC context and ends running Watch calls. Cards from
// Connect stay connected: close them separately. Close is idempotent.
func (c *Context) Close() error {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	if c.closed {
		return nil
	}
	c.closed = true
	c.close()
	if c.sc != nil {
		err := c.sc.Release()
		c.sc = nil
		if err != nil && !lost(err) {
			return mapErr("SCardReleaseContext", "", err)
		}
	}
	return nil
}

// do runs f on the PC/SC context, establishing one first if needed. If f
// fails because the service was restarted, do establishes a new context and
// runs f once more. f returns errors from mapErr. When ctx ends first, do
// returns its error and f goes on in the background, holding the Context
// until it returns: the caller must then not read what f writes.
func (c *Context) do(ctx context.Context, f func(*scard.Context) error) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-c.sem }()
		done <- c.run(f)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is do holding sem.
func (c *Context) run(f func(*scard.Context) error) error {
	if c.closed {
		return fmt.Errorf("pcsc: context: %w", cards.ErrClosed)
	}
	for attempt := 0; ; attempt++ {
		if c.sc == nil {
			sc, err := scard.EstablishContext()
			if err != nil {
				return mapErr("SCardEstablishContext", "", err)
			}
			c.sc = sc
		}
		err := f(c.sc)
		if attempt == 0 && isServiceLost(err) {
			c.sc.Release()
			c.sc = nil
			continue
		}
		return err
	}
}

// listReaders lists the readers; none is not an error.
func listReaders(sc *scard.Context) ([]string, error) {
	names, err := sc.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return nil, nil
	}
	return names, mapErr("SCardListReaders", "", err)
}

// low16 is the part of a reader state that holds flags: pcsc-lite keeps an
// event counter in the high 16 bits.
const low16 = 0xFFFF

// Readers returns the readers and whether each holds a card, or ctx's
// error if ctx ends first.
func (c *Context) Readers(ctx context.Context) ([]Reader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Reader
	err := c.do(ctx, func(sc *scard.Context) error {
		names, err := listReaders(sc)
		if err != nil || len(names) == 0 {
			out = nil
			return err
		}
		rs := make([]scard.ReaderState, len(names))
		for i, n := range names {
			rs[i] = scard.ReaderState{Reader: n, CurrentState: scard.StateUnaware}
		}
		if err := sc.GetStatusChange(rs, 0); err != nil {
			return mapErr("SCardGetStatusChange", "", err)
		}
		out = make([]Reader, len(rs))
		for i, r := range rs {
			out[i] = Reader{Name: r.Reader, Present: r.EventState&low16&scard.StatePresent != 0,
				Events: uint16(uint32(r.EventState) >> 16)}
			if out[i].Present {
				out[i].ATR = bytes.Clone(r.Atr)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err // out may still be written by an abandoned call
	}
	return out, nil
}

// pnpReader is pcsc-lite's pseudo reader whose state changes when a reader
// is added or removed.
const pnpReader = `\\?PnP?\Notification`

// watchPoll bounds each wait for a change, so that a cancellation racing
// with the start of a wait costs at most this much.
const watchPoll = time.Second

// Watch reports card insertions and removals, and readers coming and
// going, on events until ctx ends or the Context is closed. It starts by
// reporting Inserted for every card already present.
//
// Watch waits on a PC/SC context of its own, so other methods are not held
// up. When pcscd goes away, Watch reports Removed for every card it knew,
// waits for the service to come back (retrying every 100 ms at most),
// lists the readers again and reports the cards then present. Cards
// swapped between two waits are reported as Removed then Inserted.
//
// Watch blocks while events is full, and never closes it. It returns nil
// when ctx ends, an error wrapping [cards.ErrClosed] when the Context is
// closed, and any other PC/SC failure.
func (c *Context) Watch(ctx context.Context, events chan<- Event) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.closing, cancel)()
	w := &watcher{events: events, present: map[string]bool{}, counter: map[string]uint32{}}
	backoff := 5 * time.Millisecond
	for {
		start := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			if c.closing.Err() != nil {
				return fmt.Errorf("pcsc: watch: %w", cards.ErrClosed)
			}
			return nil
		}
		if !isServiceLost(err) {
			return err
		}
		w.lostService(ctx)
		if time.Since(start) > time.Second {
			backoff = 5 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// watcher is the state of a Watch, kept across PC/SC contexts.
type watcher struct {
	events  chan<- Event
	readers map[string]bool   // known readers; nil before the first listing
	present map[string]bool   // readers with a card
	counter map[string]uint32 // pcsc-lite's event counter per reader
	noPnP   bool              // the service does not know pnpReader
}

func (w *watcher) emit(ctx context.Context, ev Event) {
	select {
	case w.events <- ev:
	case <-ctx.Done():
	}
}

// lostService reports every known card as removed.
func (w *watcher) lostService(ctx context.Context) {
	for r := range w.present {
		w.emit(ctx, Event{Reader: r, Kind: Removed})
	}
	clear(w.present)
	clear(w.counter)
}

// session watches on one PC/SC context until it fails or ctx ends.
func (w *watcher) session(ctx context.Context) error {
	sc, err := scard.EstablishContext()
	if err != nil {
		return mapErr("SCardEstablishContext", "", err)
	}
	defer sc.Release()
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		sc.Cancel()
		close(cancelled)
	})
	defer func() {
		if !stop() {
			<-cancelled // never Cancel a released context
		}
	}()

	states, err := w.list(ctx, sc, nil)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		if len(states) == 0 {
			// No reader and no PnP notification: scard cannot wait on an
			// empty list (it would index states[0]); look again later.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(watchPoll):
			}
			if states, err = w.list(ctx, sc, states); err != nil {
				return err
			}
			continue
		}
		err := sc.GetStatusChange(states, watchPoll)
		switch {
		case err == nil:
		case errors.Is(err, scard.ErrTimeout), errors.Is(err, scard.ErrCancelled):
			continue
		case errors.Is(err, scard.ErrUnknownReader):
			if states, err = w.list(ctx, sc, states); err != nil {
				return err
			}
			continue
		default:
			return mapErr("SCardGetStatusChange", "", err)
		}
		relist := false
		for i := range states {
			st := &states[i]
			ev := st.EventState
			switch {
			case st.Reader == pnpReader:
				if ev&scard.StateUnknown != 0 {
					w.noPnP, relist = true, true
				} else if ev&scard.StateChanged != 0 {
					relist = true
				}
			case ev&(scard.StateUnknown|scard.StateIgnore) != 0:
				relist = true // the reader is gone
			default:
				w.update(ctx, st.Reader, ev, st.Atr)
			}
			st.CurrentState = ev &^ scard.StateChanged
			st.Atr = nil
		}
		if relist {
			if states, err = w.list(ctx, sc, states); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// update compares the state of reader with what was known and reports the
// difference.
func (w *watcher) update(ctx context.Context, reader string, ev scard.StateFlag, atr []byte) {
	present := ev&low16&scard.StatePresent != 0
	counter := uint32(ev) >> 16
	was := w.present[reader]
	prev, seen := w.counter[reader]
	w.counter[reader] = counter
	switch {
	case present && !was:
		w.present[reader] = true
		w.emit(ctx, Event{Reader: reader, Kind: Inserted, ATR: bytes.Clone(atr)})
	case !present && was:
		delete(w.present, reader)
		w.emit(ctx, Event{Reader: reader, Kind: Removed})
	case present && was && seen && prev != counter:
		// Pulled and inserted again between two waits.
		w.emit(ctx, Event{Reader: reader, Kind: Removed})
		w.emit(ctx, Event{Reader: reader, Kind: Inserted, ATR: bytes.Clone(atr)})
	}
}

// list lists the readers, reports readers that came or went since the last
// listing (not at the first), and returns the states to wait on, keeping
// the current state of readers in old.
func (w *watcher) list(ctx context.Context, sc *scard.Context, old []scard.ReaderState) ([]scard.ReaderState, error) {
	names, err := listReaders(sc)
	if err != nil {
		return nil, err
	}
	prev := map[string]scard.StateFlag{}
	for _, st := range old {
		prev[st.Reader] = st.CurrentState
	}
	now := map[string]bool{}
	states := make([]scard.ReaderState, 0, len(names)+1)
	for _, n := range names {
		now[n] = true
		states = append(states, scard.ReaderState{Reader: n, CurrentState: prev[n]}) // StateUnaware if new
		if w.readers != nil && !w.readers[n] {
			w.emit(ctx, Event{Reader: n, Kind: ReaderAdded})
		}
	}
	for r := range w.readers {
		if !now[r] {
			if w.present[r] {
				delete(w.present, r)
				w.emit(ctx, Event{Reader: r, Kind: Removed})
			}
			delete(w.counter, r)
			w.emit(ctx, Event{Reader: r, Kind: ReaderRemoved})
		}
	}
	w.readers = now
	if !w.noPnP {
		states = append(states, scard.ReaderState{Reader: pnpReader, CurrentState: prev[pnpReader]})
	}
	return states, nil
}

// Connect connects to the card in reader, shared with other PC/SC clients,
// with T=0 or T=1. The Card has a PC/SC context of its own. If ctx ends
// first, Connect returns its error, and a connection made after that is
// closed.
func (c *Context) Connect(ctx context.Context, reader string) (*Card, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	closed := c.closed
	<-c.sem
	if closed {
		return nil, fmt.Errorf("pcsc: context: %w", cards.ErrClosed)
	}
	type result struct {
		k   *Card
		err error
	}
	done := make(chan result, 1)
	go func() {
		k := &Card{reader: reader}
		err := k.connect()
		done <- result{k, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		return r.k, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.err == nil {
				r.k.Close() // connected after the caller gave up
			}
		}()
		return nil, ctx.Err()
	}
}

// Card is a connection to the card in one reader. A Card is NOT safe for
// concurrent use: it belongs to one owner goroutine (see cards.Worker),
// which also keeps APDU sequences (chaining, GET RESPONSE, VERIFY then
// sign) together, inside a transaction when other PC/SC clients may use
// the card.
type Card struct {
	reader string
	sc     *scard.Context
	h      *scard.Card
	atr    []byte
	closed bool
}

// connect establishes a PC/SC context and connects to the card. On failure
// the Card is left without a connection.
func (k *Card) connect() error {
	sc, err := scard.EstablishContext()
	if err != nil {
		return mapErr("SCardEstablishContext", k.reader, err)
	}
	h, err := sc.Connect(k.reader, scard.ShareShared, scard.ProtocolAny)
	if err != nil {
		sc.Release()
		return mapErr("SCardConnect", k.reader, err)
	}
	st, err := h.Status()
	if err != nil {
		h.Disconnect(scard.LeaveCard)
		sc.Release()
		return mapErr("SCardStatus", k.reader, err)
	}
	k.sc, k.h, k.atr = sc, h, bytes.Clone(st.Atr)
	return nil
}

// disconnect drops the connection and the PC/SC context, if any.
func (k *Card) disconnect() error {
	var err error
	if k.h != nil {
		if e := k.h.Disconnect(scard.LeaveCard); e != nil && !lost(e) {
			err = mapErr("SCardDisconnect", k.reader, e)
		}
		k.h = nil
	}
	if k.sc != nil {
		k.sc.Release()
		k.sc = nil
	}
	return err
}

// Reader returns the name of the card's reader.
func (k *Card) Reader() string { return k.reader }

// ATR returns the card's answer to reset, as of the last Connect or
// Reconnect.
func (k *Card) ATR() []byte { return bytes.Clone(k.atr) }

// usable checks that the card can be used for op.
func (k *Card) usable(op string) error {
	if k.closed {
		return fmt.Errorf("pcsc: %s %q: %w", op, k.reader, cards.ErrClosed)
	}
	if k.h == nil {
		return &Error{Op: op, Reader: k.reader, Code: uint32(scard.ErrNoService),
			Msg: "not connected (a reconnect failed)", Err: cards.ErrServiceUnavailable}
	}
	return nil
}

// fail maps err of op. An error that names no cause is refined by the
// reader's state: a card pulled during the exchange gives a driver error,
// not SCARD_W_REMOVED_CARD.
func (k *Card) fail(op string, err error) error {
	mapped := mapErr(op, k.reader, err)
	var e *Error
	if !errors.As(mapped, &e) || e.Err != nil {
		return mapped
	}
	// pcsc-lite answers SCardTransmit with SCARD_E_NOT_TRANSACTED when the
	// reader driver could not reach the card: it was pulled, and pcscd has
	// not polled the reader yet.
	if op == "SCardTransmit" && e.Code == uint32(scard.ErrNotTransacted) {
		e.Err = cards.ErrCardRemoved
		return e
	}
	if _, serr := k.h.Status(); serr != nil {
		if code, ok := serr.(scard.Error); ok {
			e.Err = kindOf(code)
		}
	}
	return e
}

// Transmit sends one command APDU and returns the response APDU. It
// implements [cards.Transmitter]. ctx is checked before sending; once sent,
// the exchange cannot be interrupted.
//
// Errors wrap [cards.ErrCardRemoved] (the card was pulled: connect again
// once a card is back), [cards.ErrCardReset] (call [Card.Reconnect], then
// redo SELECT and VERIFY), [cards.ErrNoCard],
// [cards.ErrServiceUnavailable] (pcscd restarted: call Reconnect) or
// [cards.ErrClosed].
func (k *Card) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if err := k.usable("SCardTransmit"); err != nil {
		return nil, err
	}
	if len(cmd) == 0 {
		return nil, fmt.Errorf("pcsc: SCardTransmit %q: empty command APDU", k.reader)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pcsc: SCardTransmit %q: %w", k.reader, err)
	}
	// scard panics on any other protocol (a ShareDirect connection).
	if p := k.h.ActiveProtocol(); p != scard.ProtocolT0 && p != scard.ProtocolT1 {
		return nil, fmt.Errorf("pcsc: SCardTransmit %q: unsupported protocol %d", k.reader, p)
	}
	rsp, err := k.h.Transmit(cmd)
	if err != nil {
		return nil, k.fail("SCardTransmit", err)
	}
	if len(rsp) < 2 {
		// Every response has a status word; pcsc-lite hands back nothing
		// when the card stopped answering in the middle of the exchange.
		return nil, fmt.Errorf("pcsc: SCardTransmit %q: %d-byte response, the card stopped answering: %w",
			k.reader, len(rsp), cards.ErrCardRemoved)
	}
	return rsp, nil
}

// Begin starts a PC/SC transaction: other clients cannot use the card until
// [Card.End]. ctx is checked first; SCardBeginTransaction itself waits,
// uninterruptibly, while another client holds a transaction.
func (k *Card) Begin(ctx context.Context) error {
	if err := k.usable("SCardBeginTransaction"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pcsc: SCardBeginTransaction %q: %w", k.reader, err)
	}
	if err := k.h.BeginTransaction(); err != nil {
		return k.fail("SCardBeginTransaction", err)
	}
	return nil
}

// End ends the transaction started by Begin, leaving the card as it is.
func (k *Card) End() error {
	if err := k.usable("SCardEndTransaction"); err != nil {
		return err
	}
	if err := k.h.EndTransaction(scard.LeaveCard); err != nil {
		return k.fail("SCardEndTransaction", err)
	}
	return nil
}

// Reconnect restores the connection after [cards.ErrCardReset], a pulled
// and re-inserted card, or a restart of pcscd: it reconnects the handle
// (SCardReconnect, shared, T=0 or T=1, leaving the card as it is) and, if
// that fails, connects afresh on a new PC/SC context. The card's security
// state is gone either way: redo SELECT and VERIFY. On failure the Card
// keeps its old connection, and Reconnect can be tried again.
func (k *Card) Reconnect(ctx context.Context) error {
	if k.closed {
		return fmt.Errorf("pcsc: SCardReconnect %q: %w", k.reader, cards.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pcsc: SCardReconnect %q: %w", k.reader, err)
	}
	if k.h != nil {
		err := k.h.Reconnect(scard.ShareShared, scard.ProtocolAny, scard.LeaveCard)
		if err == nil {
			if st, err := k.h.Status(); err == nil {
				k.atr = bytes.Clone(st.Atr)
				return nil
			}
		}
	}
	fresh := &Card{reader: k.reader}
	if err := fresh.connect(); err != nil {
		return err
	}
	k.disconnect()
	k.sc, k.h, k.atr = fresh.sc, fresh.h, fresh.atr
	return nil
}

// Reset resets the card (SCardReconnect with SCARD_RESET_CARD): its
// security state (verified PINs, selected application) is gone, so the next
// user of the card starts from nothing. Other PC/SC clients of the card see
// SCARD_W_RESET_CARD on their next call.
func (k *Card) Reset(ctx context.Context) error {
	if err := k.usable("SCardReconnect"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pcsc: SCardReconnect %q: %w", k.reader, err)
	}
	if err := k.h.Reconnect(scard.ShareShared, scard.ProtocolAny, scard.ResetCard); err != nil {
		return k.fail("SCardReconnect", err)
	}
	if st, err := k.h.Status(); err == nil {
		k.atr = bytes.Clone(st.Atr)
	}
	return nil
}

// Check reports, without sending the card anything (SCardStatus), whether
// the connection still stands: an error wrapping [cards.ErrCardReset] when
// another client reset the card since this connection's last call (a
// reset of this connection's own, with [Card.Reset], clears it),
// [cards.ErrCardRemoved] when the card was pulled. It implements
// [cards.Checker].
func (k *Card) Check(ctx context.Context) error {
	if err := k.usable("SCardStatus"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pcsc: SCardStatus %q: %w", k.reader, err)
	}
	if _, err := k.h.Status(); err != nil {
		return mapErr("SCardStatus", k.reader, err)
	}
	return nil
}

// Close disconnects from the card, leaving it as it is, and releases the
// Card's PC/SC context. Close is idempotent.
func (k *Card) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	return k.disconnect()
}
