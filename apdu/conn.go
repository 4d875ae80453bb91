package apdu

import (
	"context"
	"errors"
	"fmt"
)

// Transmitter sends one raw C-APDU and returns the raw R-APDU (response
// data followed by SW1 SW2). It does no chaining, GET RESPONSE or 6Cxx
// handling of its own; [Conn] does that on top of it.
//
// Transmit returns a non-nil error only for transport failures (card
// removed, reader gone, ctx expired); card status words travel inside the
// reply. It must honour ctx for the single exchange it performs. Transmit
// must not keep cmd after it returns ([Conn] reuses the buffer); the caller
// may use the returned slice only until the next call.
// Implementations document their own concurrency safety; [Conn] calls
// Transmit from one goroutine at a time per Do call.
type Transmitter interface {
	Transmit(ctx context.Context, cmd []byte) ([]byte, error)
}

// ErrResponseTooLong is wrapped by the errors [Conn.Do] returns when a card
// sends more response data than [Conn.MaxResponse] or asks for more GET
// RESPONSE rounds than [Conn.MaxGetResponse]. It wraps [ErrMalformed].
var ErrResponseTooLong = fmt.Errorf("%w: response too long", ErrMalformed)

// Defaults for the zero values of [Conn] limits.
const (
	DefaultMaxResponse    = 65536
	DefaultMaxGetResponse = 256
)

// insGetResponse is GET RESPONSE, ISO/IEC 7816-4 §11.7.1.
const insGetResponse = 0xC0

// claChaining is the command-chaining bit of an interindustry CLA,
// ISO/IEC 7816-4 §5.4.1.
const claChaining = 0x10

// Conn runs complete command/response exchanges over a [Transmitter]:
// command chaining, response chaining (61xx and GET RESPONSE) and 6Cxx
// retries.
//
// Conn keeps no state between calls, but it is not safe for concurrent use:
// two goroutines calling Do on the same card would interleave the APDUs of
// chained sequences. Use one goroutine per card, and do not change the
// fields while Do runs.
type Conn struct {
	// T carries the APDUs. It must be set.
	T Transmitter

	// Extended says the card accepts extended length fields. Then commands
	// with more than 255 data bytes, or Ne above 256, go out in extended
	// form. When false (the default) such commands are chained and Ne is
	// capped at 256, the rest coming through GET RESPONSE.
	Extended bool

	// MaxResponse caps the assembled response data in bytes. Zero or
	// negative means DefaultMaxResponse (65536).
	MaxResponse int

	// MaxGetResponse caps the number of GET RESPONSE commands one Do may
	// send. Zero or negative means DefaultMaxGetResponse (256).
	MaxGetResponse int
}

// Do sends cmd and returns the response data.
//
// A final status word of 9000 gives (data, nil). Any other final status word
// is returned as the error: a [StatusWord] value, so callers use
// errors.Is(err, apdu.ErrWrongPIN) or errors.As(err, &sw); the data that came
// with it (for example with a 62xx warning) is returned too.
//
// Sequence:
//
//   - Command chaining: when len(cmd.Data) > 255 and neither c.Extended nor
//     cmd.Extended is set, the data goes out in 255-byte blocks with CLA|0x10
//     on all but the last. Every intermediate block must be answered with
//     9000, otherwise Do stops and returns that status word. Ne is sent on
//     the last block only.
//   - Unless c.Extended or cmd.Extended is set, Ne above 256 is sent as 256
//     (Le = 00): the card delivers the rest through 61xx.
//   - Response chaining: while the card answers 61xx, Do appends the data
//     and sends GET RESPONSE (00 C0 00 00 with Le = xx, 00 meaning 256) on
//     the logical channel of cmd.CLA. The first non-61 status word is the
//     result.
//   - 6Cxx: the last command sent is re-sent once with Ne = xx (00 meaning
//     256), and the data of the 6Cxx reply is dropped. A second 6Cxx in the
//     same Do is returned as the error.
//
// Errors other than status words: an error wrapping [ErrResponseTooLong]
// (and so [ErrMalformed]) when the response exceeds c.MaxResponse bytes or
// needs more than c.MaxGetResponse GET RESPONSE rounds; an error wrapping
// [ErrMalformed] when a reply is shorter than 2 bytes or cmd cannot be
// encoded; transport errors from the Transmitter wrapped with %w; ctx.Err()
// if ctx is already done when Do is called. Once the first APDU is sent, Do
// finishes the sequence even if ctx ends: the APDUs after the first go out
// with context.WithoutCancel(ctx), because abandoning a chained or GET
// RESPONSE sequence midway would leave the card in an undefined state. The
// Transmitter enforces ctx on the first exchange.
func (c *Conn) Do(ctx context.Context, cmd Command) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.T == nil {
		return nil, errors.New("apdu: Conn.T is nil")
	}
	if len(cmd.Data) > MaxExtendedData || cmd.Ne < 0 || cmd.Ne > MaxExtendedNe {
		_, err := cmd.AppendBinary(nil)
		return nil, err
	}
	maxResp := c.MaxResponse
	if maxResp <= 0 {
		maxResp = DefaultMaxResponse
	}
	maxGR := c.MaxGetResponse
	if maxGR <= 0 {
		maxGR = DefaultMaxGetResponse
	}
	extended := c.Extended || cmd.Extended
	if !extended && cmd.Ne > MaxShortNe {
		cmd.Ne = MaxShortNe
	}

	// One encode buffer is reused for every APDU; Transmitters must not keep
	// the command slice (they only get it for the duration of the call).
	// The buffer may hold a PIN: it is cleared when Do returns.
	var buf []byte
	defer func() { clear(buf[:cap(buf)]) }()
	txCtx := ctx
	send := func(cmd Command) (Response, error) {
		var err error
		buf, err = cmd.AppendBinary(buf[:0])
		if err != nil {
			return Response{}, err
		}
		reply, err := c.T.Transmit(txCtx, buf)
		txCtx = context.WithoutCancel(ctx) // the sequence has started
		if err != nil {
			return Response{}, fmt.Errorf("apdu: transmit %02X %02X: %w", cmd.CLA, cmd.INS, err)
		}
		if len(reply) < 2 {
			return Response{}, fmt.Errorf("%w: reply of %d bytes to %02X %02X has no status word", ErrMalformed, len(reply), cmd.CLA, cmd.INS)
		}
		n := len(reply) - 2
		return Response{Data: reply[:n:n], SW: NewStatusWord(reply[n], reply[n+1])}, nil
	}

	// Command chaining.
	last := cmd
	chained := false
	if !extended && len(cmd.Data) > MaxShortData {
		chained = true
		data := cmd.Data
		for len(data) > MaxShortData {
			block := Command{CLA: cmd.CLA | claChaining, INS: cmd.INS, P1: cmd.P1, P2: cmd.P2, Data: data[:MaxShortData]}
			r, err := send(block)
			if err != nil {
				return nil, err
			}
			if r.SW != SWSuccess {
				return nil, r.SW
			}
			data = data[MaxShortData:]
		}
		last.Data = data
	}

	var out []byte
	retried := false
	rounds := 0
	r, err := send(last)
	for {
		if err != nil {
			return nil, err
		}
		if r.SW.SW1() == 0x6C {
			// Re-issuing only the last block of a chain would be a
			// different command: report the status instead.
			if retried || (chained && last.INS != insGetResponse) {
				return nil, r.SW
			}
			retried = true
			last.Ne, _ = r.SW.WrongLe()
			r, err = send(last)
			continue
		}
		if len(r.Data) > maxResp-len(out) {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrResponseTooLong, maxResp)
		}
		out = append(out, r.Data...)
		if r.SW.SW1() == 0x61 {
			if rounds >= maxGR {
				return nil, fmt.Errorf("%w: more than %d GET RESPONSE rounds", ErrResponseTooLong, maxGR)
			}
			rounds++
			ne, _ := r.SW.MoreData()
			last = Command{CLA: getResponseCLA(cmd.CLA), INS: insGetResponse, Ne: ne}
			r, err = send(last)
			continue
		}
		if r.SW != SWSuccess {
			return out, r.SW
		}
		return out, nil
	}
}

// getResponseCLA keeps the logical-channel bits of cla (ISO/IEC 7816-4
// §5.4.1): b2-b1 for the first interindustry class (and proprietary classes,
// which follow it by convention), b4-b1 for the further interindustry class.
func getResponseCLA(cla byte) byte {
	if cla&0xC0 == 0x40 {
		return 0x40 | cla&0x0F
	}
	return cla & 0x03
}
