package simkit

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/pscs/pscs/apdu"
)

// Applet is a card application: what a simulator implements.
type Applet interface {
	// Handle answers one whole command: chained blocks already joined,
	// GET RESPONSE already handled. The Card calls it with its lock held,
	// one command at a time; Handle may keep cmd.Data.
	Handle(cmd apdu.Command) Reply
	// Reset forgets the session (verified PINs, exchanges in progress). The
	// Card calls it on [Card.Reset], with its lock held.
	Reset()
}

// Reply is an applet's answer to a command.
type Reply struct {
	// Data is the response data, sent only with 90 00.
	Data []byte
	// SW is the status word; zero means 90 00.
	SW apdu.StatusWord
	// Delay is how long the card works on the command (see [Latency]).
	Delay time.Duration
}

// Status returns a Reply of status word sw alone.
func Status(sw apdu.StatusWord) Reply { return Reply{SW: sw} }

// OK returns a Reply of data with 90 00.
func OK(data []byte) Reply { return Reply{Data: data, SW: apdu.SWSuccess} }

// Options configure a [Card].
type Options struct {
	// ATR is the answer to reset.
	ATR []byte
	// MaxChain caps the data a command chain may carry; zero means 4096.
	MaxChain int
	// Latency.Other is the time the Card takes for what it answers itself
	// (malformed commands, chained blocks, GET RESPONSE).
	Latency Latency
}

// Card runs an [Applet] as a card: framing, chaining, response chaining,
// latency. It is a cards.Transmitter and a vpcd.Card, and is safe for
// concurrent use; like a real card it processes one command at a time.
type Card struct {
	mu     sync.Mutex
	applet Applet
	opts   Options

	pending      []byte // the rest of a long answer, for GET RESPONSE
	chain        []byte
	chainINS     byte
	chainP1P2    [2]byte
	chainStarted bool
}

// New makes a card running applet.
func New(applet Applet, opts Options) *Card {
	if opts.MaxChain <= 0 {
		opts.MaxChain = 4096
	}
	return &Card{applet: applet, opts: opts}
}

// ATR returns the card's answer to reset.
func (c *Card) ATR() []byte { return bytes.Clone(c.opts.ATR) }

// Locked runs f with the card's lock held: accessors of a simulator read
// its applet's state this way.
func (c *Card) Locked(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

// Reset models a card reset or power cycle (cards/vpcd calls it when pcscd
// powers the card down or up): pending responses and chains are dropped
// and the applet forgets its session.
func (c *Card) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending, c.chain, c.chainStarted = nil, nil, false
	c.applet.Reset()
}

// Transmit processes one command APDU and returns the response APDU. It
// returns an error only when ctx ends while the card is working (the
// latency model); malformed commands get status words, as on a card.
func (c *Card) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, delay := c.process(cmd)
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return rsp, nil
}

func sw(s apdu.StatusWord) []byte { return []byte{s.SW1(), s.SW2()} }

func (c *Card) process(raw []byte) (rsp []byte, delay time.Duration) {
	delay = c.opts.Latency.Other
	cmd, err := apdu.ParseCommand(raw)
	if err != nil {
		c.pending = nil
		return sw(apdu.SWWrongLength), delay
	}
	if cmd.CLA&^0x10 != 0x00 {
		c.pending = nil
		return sw(apdu.SWCLANotSupported), delay
	}
	if cmd.INS == 0xC0 { // GET RESPONSE
		if c.pending == nil {
			return sw(apdu.SWConditionsNotSatisfied), delay
		}
		data := c.pending
		c.pending = nil
		return c.respond(data, cmd), delay
	}
	c.pending = nil

	if cmd.CLA&0x10 != 0 {
		if c.chainStarted && (c.chainINS != cmd.INS || c.chainP1P2 != [2]byte{cmd.P1, cmd.P2}) {
			c.chain = nil
		}
		if len(c.chain)+len(cmd.Data) > c.opts.MaxChain {
			c.chain, c.chainStarted = nil, false
			return sw(apdu.SWWrongLength), delay
		}
		c.chain = append(c.chain, cmd.Data...)
		c.chainINS, c.chainP1P2, c.chainStarted = cmd.INS, [2]byte{cmd.P1, cmd.P2}, true
		return sw(apdu.SWSuccess), delay
	}
	if c.chainStarted {
		if c.chainINS == cmd.INS && c.chainP1P2 == [2]byte{cmd.P1, cmd.P2} && len(c.chain)+len(cmd.Data) <= c.opts.MaxChain {
			cmd.Data = append(c.chain, cmd.Data...)
		}
		c.chain, c.chainStarted = nil, false
	}

	r := c.applet.Handle(cmd)
	if r.SW == 0 {
		r.SW = apdu.SWSuccess
	}
	if r.SW != apdu.SWSuccess {
		return sw(r.SW), r.Delay
	}
	return c.respond(r.Data, cmd), r.Delay
}

// respond returns as much of data as the command's Ne allows and keeps the
// rest for GET RESPONSE (61 xx).
func (c *Card) respond(data []byte, cmd apdu.Command) []byte {
	limit := cmd.Ne
	if limit == 0 || (!cmd.Extended && limit > 256) {
		limit = 256
	}
	if len(data) <= limit {
		return append(bytes.Clone(data), 0x90, 0x00)
	}
	c.pending = bytes.Clone(data[limit:])
	return append(bytes.Clone(data[:limit]), sw(apdu.SWMoreData(min(len(c.pending), 256)))...)
}
