// Package vpcd is the card side of the protocol of vsmartcard's virtual
// smart card reader driver (vpcd), so that a [Card] simulated in Go appears
// as a card in a real pcscd, to every PC/SC client on the machine.
//
// # Protocol
//
// vpcd is a pcscd reader driver. In its listen mode (a reader.conf entry with
// DEVICENAME /dev/null:PORT) it listens on TCP port PORT for slot 0 and
// PORT+1 for slot 1, and accepts one card per slot. The card connects to
// vpcd; the TCP connection being open is the card being inserted, closing it
// is pulling the card.
//
// Every message, both ways, is a frame: a 2-byte big-endian length, then
// that many bytes. From vpcd, a 1-byte frame is a control message: 0x00
// power off, 0x01 power on, 0x02 reset (none of them answered) and 0x04 GET
// ATR, answered with the ATR. A longer frame is a command APDU, answered with
// the response APDU. vpcd waits for an answer without a timeout, so the card
// side always answers or closes the connection.
//
// # Latency
//
// vpcd writes the length and the payload of a frame in two send calls with
// Nagle's algorithm on, so the payload waits for the card side's ACK of the
// length, which Linux delays by up to 40 ms. The card side here therefore
// sets TCP_QUICKACK before every read (the option does not stick), which
// brings an APDU round trip through pcscd from about 45 ms to about 0.3 ms.
//
// # Privacy
//
// The optional trace log ([Server.Logger]) records command headers and
// lengths only, never command or response data, which may carry PINs.
package vpcd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"
)

// Card is the card side a simulator implements.
//
// A Server calls the methods of a Card from one goroutine per connection:
// a Card served on one connection at a time needs no locking.
type Card interface {
	// ATR returns the card's answer to reset, sent to vpcd on GET ATR.
	// An empty ATR is a card that does not answer: the connection closes
	// (the card is removed; [Server.Plug] inserts it again). vpcd itself
	// would wait for ever on an empty ATR frame, and pcscd with it.
	ATR() []byte
	// Transmit answers one command APDU with a full response APDU
	// (data, SW1, SW2). An error closes the connection: the card is
	// removed.
	Transmit(ctx context.Context, cmd []byte) ([]byte, error)
	// Reset is called on power off, power on and reset: the card clears
	// its volatile state (selected application, verified PINs).
	Reset()
}

// Server connects cards to vpcd. The zero value is ready to use; a Server
// is safe for concurrent use and may serve several cards at once.
type Server struct {
	// Logger receives a trace of the exchanges at debug level and
	// connection events at info level. Nil discards them.
	Logger *slog.Logger
	// MaxBackoff caps the wait between connection attempts in [Server.Plug].
	// Zero means 100 ms.
	MaxBackoff time.Duration
}

// Serve connects card to the vpcd at addr, for example "127.0.0.1:35963",
// with a zero [Server].
func Serve(ctx context.Context, addr string, card Card) error {
	return (&Server{}).Serve(ctx, addr, card)
}

// Plug keeps card inserted in the vpcd at addr with a zero [Server].
func Plug(ctx context.Context, addr string, card Card) error {
	return (&Server{}).Plug(ctx, addr, card)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Serve connects card to the vpcd at addr and answers vpcd until ctx ends or
// the connection fails. When ctx ends Serve closes the connection, which
// pcscd sees as the card being pulled, and returns nil. Otherwise it returns
// why the connection ended: the dial error, io.EOF when vpcd closed the
// connection (pcscd stopped), a protocol error, or the error of
// Card.Transmit.
func (s *Server) Serve(ctx context.Context, addr string, card Card) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("vpcd: %w", err)
	}
	err = s.serveConn(ctx, conn, card)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// serveConn serves card on conn until ctx ends or the exchange fails, and
// closes conn.
func (s *Server) serveConn(ctx context.Context, conn net.Conn, card Card) error {
	log := s.logger().With("addr", conn.RemoteAddr().String())
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		if stop() {
			conn.Close()
		}
	}()
	log.Info("vpcd: card inserted")
	err := serveSession(ctx, quickAckConn(conn), conn, card, log)
	if ctx.Err() != nil {
		log.Info("vpcd: card removed")
		return nil
	}
	log.Info("vpcd: connection ended", "err", err)
	return err
}

// errNoATR ends a connection whose card gave no ATR.
var errNoATR = errors.New("vpcd: the card gave no ATR")

// serveSession runs the card side of the protocol, reading frames from r
// and writing the answers to w, until an error. It never returns nil.
func serveSession(ctx context.Context, r io.Reader, w io.Writer, card Card, log *slog.Logger) error {
	buf := make([]byte, MaxFrame)
	out := make([]byte, 0, 2+258)
	for {
		msg, err := readFrame(r, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("vpcd: connection closed by vpcd: %w", err)
			}
			return err
		}
		var reply []byte
		if len(msg) == 1 {
			switch msg[0] {
			case ctrlPowerOff, ctrlPowerOn, ctrlReset:
				log.Debug("vpcd: control", "op", ctrlName(msg[0]))
				card.Reset()
				continue
			case ctrlGetATR:
				reply = card.ATR()
				log.Debug("vpcd: GET ATR", "atr", hex.EncodeToString(reply))
				if len(reply) == 0 {
					// vsmartcard's vpcd reads an empty frame with
					// recv(MSG_WAITALL) of 0 bytes, which waits for a
					// byte that never comes: close instead, which it
					// reads as "virtual ICC removed".
					return errNoATR
				}
			default:
				// Not in the protocol: vpcd expects no answer to
				// what it never sends.
				log.Warn("vpcd: unknown control message ignored", "code", msg[0])
				continue
			}
		} else {
			start := time.Now()
			reply, err = card.Transmit(ctx, msg)
			if err != nil {
				return fmt.Errorf("vpcd: card: %w", err)
			}
			if log.Enabled(ctx, slog.LevelDebug) {
				log.Debug("vpcd: APDU", "header", hex.EncodeToString(msg[:min(4, len(msg))]),
					"len", len(msg), "rlen", len(reply), "sw", hex.EncodeToString(reply[max(0, len(reply)-2):]),
					"took", time.Since(start))
			}
		}
		out, err = appendFrame(out[:0], reply)
		if err != nil {
			return err
		}
		if _, err := w.Write(out); err != nil {
			return fmt.Errorf("vpcd: %w", err)
		}
	}
}

func ctrlName(b byte) string {
	switch b {
	case ctrlPowerOff:
		return "power off"
	case ctrlPowerOn:
		return "power on"
	case ctrlReset:
		return "reset"
	}
	return "?"
}

// Plug keeps card inserted in the vpcd at addr: it serves card as
// [Server.Serve] does and, whenever the connection ends or cannot be made
// (pcscd stopped or restarting), connects again after a short backoff that
// grows from 5 ms to [Server.MaxBackoff]. It returns nil when ctx ends.
func (s *Server) Plug(ctx context.Context, addr string, card Card) error {
	maxBackoff := s.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 100 * time.Millisecond
	}
	backoff := 5 * time.Millisecond
	for {
		start := time.Now()
		err := s.Serve(ctx, addr, card)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Second {
			backoff = 5 * time.Millisecond
		}
		s.logger().Debug("vpcd: reconnecting", "addr", addr, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
