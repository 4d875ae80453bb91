package vpcd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxFrame is the largest payload a frame can carry: its length is a 16-bit
// big-endian integer.
const MaxFrame = 0xFFFF

// Control messages from vpcd to the card: frames whose payload is one byte.
const (
	ctrlPowerOff = 0x00 // no reply
	ctrlPowerOn  = 0x01 // no reply
	ctrlReset    = 0x02 // no reply
	ctrlGetATR   = 0x04 // reply: the ATR
)

// errEmptyFrame reports a frame with a zero length. vpcd never sends one; a
// peer that does is not speaking the protocol.
var errEmptyFrame = errors.New("vpcd: empty frame")

// readFrame reads one frame (2-byte big-endian length, then the payload) from
// r into buf, which must hold at least [MaxFrame] bytes, and returns the
// payload, a subslice of buf. A frame cut short yields io.ErrUnexpectedEOF,
// a clean end of stream before the length yields io.EOF.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 {
		return nil, errEmptyFrame
	}
	if n > len(buf) {
		return nil, fmt.Errorf("vpcd: frame of %d bytes exceeds buffer of %d", n, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}

// appendFrame appends the frame carrying payload to b.
func appendFrame(b, payload []byte) ([]byte, error) {
	if len(payload) > MaxFrame {
		return b, fmt.Errorf("vpcd: payload of %d bytes does not fit a frame (max %d)", len(payload), MaxFrame)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...), nil
}
