package apdu

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed is wrapped by every error that reports bytes which do not
// form a valid APDU or BER-TLV, by encoding errors for values that cannot be
// represented, and by [ErrResponseTooLong].
var ErrMalformed = errors.New("apdu: malformed")

// Limits of ISO/IEC 7816-3 length fields.
const (
	// MaxShortData is the largest Lc of a short command.
	MaxShortData = 255
	// MaxShortNe is the largest Ne of a short command (Le = 0x00).
	MaxShortNe = 256
	// MaxExtendedData is the largest Lc of an extended command.
	MaxExtendedData = 65535
	// MaxExtendedNe is the largest Ne of an extended command (Le = 0x0000),
	// and the largest amount of data a single R-APDU can carry.
	MaxExtendedNe = 65536
)

// Command is a command APDU (C-APDU) with its semantic fields. Lengths are
// stored as real numbers (Ne = 256, not Le = 0x00); the wire form is chosen
// by [Command.AppendBinary].
//
// A Command is a plain value. It is safe for concurrent use as long as no
// goroutine modifies it, or the Data it refers to, at the same time.
type Command struct {
	CLA, INS, P1, P2 byte

	// Data is the command data field. Its length is Nc; nil or empty means
	// no Lc field.
	Data []byte

	// Ne is the maximum number of response data bytes expected: 0 means no
	// Le field, otherwise 1..65536. In short form Ne = 256 is encoded as
	// Le = 0x00, in extended form Ne = 65536 as Le = 0x0000.
	Ne int

	// Extended requests extended length fields even when the short form
	// would fit. ParseCommand sets it when the input used extended lengths.
	// It has no effect on a case 1 command (no Lc and no Le).
	Extended bool
}

// IsExtended reports whether c is encoded with extended length fields:
// either because Extended is set or because Data or Ne do not fit the short
// form. A case 1 command (no data, Ne = 0) is never extended.
func (c Command) IsExtended() bool {
	if len(c.Data) == 0 && c.Ne == 0 {
		return false
	}
	return c.Extended || len(c.Data) > MaxShortData || c.Ne > MaxShortNe
}

// AppendBinary appends the wire encoding of c to b. It uses short length
// fields unless c.Extended is set, len(c.Data) > 255 or c.Ne > 256. It
// returns an error wrapping [ErrMalformed], and b unchanged, when
// len(c.Data) > 65535, c.Ne < 0 or c.Ne > 65536.
func (c Command) AppendBinary(b []byte) ([]byte, error) {
	nc := len(c.Data)
	switch {
	case nc > MaxExtendedData:
		return b, fmt.Errorf("%w: command data of %d bytes exceeds %d", ErrMalformed, nc, MaxExtendedData)
	case c.Ne < 0 || c.Ne > MaxExtendedNe:
		return b, fmt.Errorf("%w: Ne %d out of range 0..%d", ErrMalformed, c.Ne, MaxExtendedNe)
	}
	b = append(b, c.CLA, c.INS, c.P1, c.P2)
	if !c.IsExtended() {
		if nc > 0 {
			b = append(b, byte(nc))
			b = append(b, c.Data...)
		}
		if c.Ne > 0 {
			b = append(b, byte(c.Ne)) // 256 -> 0x00
		}
		return b, nil
	}
	// Extended: a single 00 introduces the first length field.
	b = append(b, 0)
	if nc > 0 {
		b = append(b, byte(nc>>8), byte(nc))
		b = append(b, c.Data...)
	}
	if c.Ne > 0 {
		b = append(b, byte(c.Ne>>8), byte(c.Ne)) // 65536 -> 0x0000
	}
	return b, nil
}

// MarshalBinary returns the wire encoding of c; see [Command.AppendBinary].
func (c Command) MarshalBinary() ([]byte, error) {
	n := 4 + len(c.Data) + 5
	if len(c.Data) > MaxExtendedData {
		n = 0
	}
	return c.AppendBinary(make([]byte, 0, n))
}

// String returns the wire encoding of c as upper-case hex bytes separated by
// spaces, for example "00 A4 04 00 05 A0 00 00 03 08". A command that cannot
// be encoded is described field by field instead. String prints the data
// field verbatim: do not log commands that carry PINs or keys.
func (c Command) String() string {
	b, err := c.MarshalBinary()
	if err != nil {
		return fmt.Sprintf("apdu.Command{CLA:%02X INS:%02X P1:%02X P2:%02X Nc:%d Ne:%d} (%v)",
			c.CLA, c.INS, c.P1, c.P2, len(c.Data), c.Ne, err)
	}
	return hexString(b)
}

// hexString formats b as "00 A4 04 00".
func hexString(b []byte) string {
	const digits = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(3 * len(b))
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteByte(digits[x>>4])
		sb.WriteByte(digits[x&0x0F])
	}
	return sb.String()
}

// ParseCommand decodes a complete C-APDU. It recognises every case of
// ISO/IEC 7816-3 §12.1.3:
//
//	case 1   CLA INS P1 P2
//	case 2S  CLA INS P1 P2 Le                    (Le 00 = 256)
//	case 3S  CLA INS P1 P2 Lc Data               (Lc 01..FF)
//	case 4S  CLA INS P1 P2 Lc Data Le
//	case 2E  CLA INS P1 P2 00 Le1 Le2            (Le 0000 = 65536)
//	case 3E  CLA INS P1 P2 00 Lc1 Lc2 Data       (Lc 0001..FFFF)
//	case 4E  CLA INS P1 P2 00 Lc1 Lc2 Data Le1 Le2
//
// Extended is set for the E cases. Data aliases b (it is nil for cases 1
// and 2). Inputs shorter than 4 bytes, with trailing bytes, with lengths
// that disagree with the input size, or with a zero Lc are rejected with an
// error wrapping [ErrMalformed].
//
// For every b that ParseCommand accepts, MarshalBinary of the result is
// byte-identical to b.
func ParseCommand(b []byte) (Command, error) {
	if len(b) < 4 {
		return Command{}, fmt.Errorf("%w: command of %d bytes is shorter than its 4-byte header", ErrMalformed, len(b))
	}
	c := Command{CLA: b[0], INS: b[1], P1: b[2], P2: b[3]}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return c, nil
	case len(body) == 1: // case 2S
		c.Ne = shortNe(body[0])
		return c, nil
	case body[0] != 0: // case 3S or 4S
		nc := int(body[0])
		switch len(body) {
		case 1 + nc:
			c.Data = body[1 : 1+nc : 1+nc]
		case 2 + nc:
			c.Data = body[1 : 1+nc : 1+nc]
			c.Ne = shortNe(body[1+nc])
		default:
			return Command{}, fmt.Errorf("%w: short Lc %d does not match %d body bytes", ErrMalformed, nc, len(body))
		}
		return c, nil
	case len(body) < 3:
		return Command{}, fmt.Errorf("%w: %d body bytes starting with 00: short Lc 0 or truncated extended length", ErrMalformed, len(body))
	}
	// body[0] == 0 and len(body) >= 3: extended.
	c.Extended = true
	n := int(body[1])<<8 | int(body[2])
	if len(body) == 3 { // case 2E
		c.Ne = extendedNe(n)
		return c, nil
	}
	if n == 0 {
		return Command{}, fmt.Errorf("%w: extended Lc 0 followed by %d bytes", ErrMalformed, len(body)-3)
	}
	switch len(body) {
	case 3 + n: // case 3E
		c.Data = body[3 : 3+n : 3+n]
	case 5 + n: // case 4E
		c.Data = body[3 : 3+n : 3+n]
		c.Ne = extendedNe(int(body[3+n])<<8 | int(body[4+n]))
	default:
		return Command{}, fmt.Errorf("%w: extended Lc %d does not match %d body bytes", ErrMalformed, n, len(body))
	}
	return c, nil
}

func shortNe(le byte) int {
	if le == 0 {
		return MaxShortNe
	}
	return int(le)
}

func extendedNe(le int) int {
	if le == 0 {
		return MaxExtendedNe
	}
	return le
}
