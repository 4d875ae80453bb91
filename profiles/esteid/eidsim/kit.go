package eidsim

// What every simulated ISO 7816 card needs and nothing EstEID-specific:
// response chaining (61 xx and GET RESPONSE), command chaining (CLA bit
// 10), PIN counters and seeded keys. These are the parts the shared
// simulator kit (issue 11 item 4) takes over; they are kept apart here so
// that the card logic in eidsim.go and files.go sits on them unchanged.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"io"
	"math/big"

	"github.com/pscs/pscs/apdu"
)

// maxChain caps the data a command chain may collect.
const maxChain = 4096

// session is the transport state of a card between two commands: the rest
// of a long answer and the blocks of a command chain. A reset clears it.
type session struct {
	pending []byte // rest of the last answer, for GET RESPONSE
	chain   []byte
	chainHd [3]byte // INS P1 P2 of the chain
	chained bool
}

func (s *session) reset() { *s = session{} }

// begin parses raw and deals with what the card does before looking at
// the instruction: a malformed command, a class other than 00 (or 10,
// chaining), GET RESPONSE and the blocks of a command chain. It returns the
// whole command to process, or the answer when there is nothing more to
// do (done).
func (s *session) begin(raw []byte) (cmd apdu.Command, rsp []byte, done bool) {
	cmd, err := apdu.ParseCommand(raw)
	if err != nil {
		s.reset()
		return cmd, sw(apdu.SWWrongLength), true
	}
	if cmd.CLA&^0x10 != 0 {
		s.reset()
		return cmd, sw(apdu.SWCLANotSupported), true
	}
	if cmd.INS == 0xC0 {
		if s.pending == nil {
			return cmd, sw(apdu.SWConditionsNotSatisfied), true
		}
		data := s.pending
		s.pending = nil
		return cmd, s.respond(data, cmd), true
	}
	s.pending = nil
	hd := [3]byte{cmd.INS, cmd.P1, cmd.P2}
	if cmd.CLA&0x10 != 0 {
		if s.chained && s.chainHd != hd {
			s.chain = nil
		}
		if len(s.chain)+len(cmd.Data) > maxChain {
			s.chain, s.chained = nil, false
			return cmd, sw(apdu.SWWrongLength), true
		}
		s.chain = append(s.chain, cmd.Data...)
		s.chainHd, s.chained = hd, true
		return cmd, sw(apdu.SWSuccess), true
	}
	if s.chained {
		if s.chainHd == hd && len(s.chain)+len(cmd.Data) <= maxChain {
			cmd.Data = append(s.chain, cmd.Data...)
		}
		s.chain, s.chained = nil, false
	}
	return cmd, nil, false
}

// respond returns as much of data as the command's Ne allows, with 90 00,
// and keeps the rest for GET RESPONSE (61 xx).
func (s *session) respond(data []byte, cmd apdu.Command) []byte {
	limit := cmd.Ne
	if limit == 0 || (!cmd.Extended && limit > 256) {
		limit = 256
	}
	if len(data) <= limit {
		return append(bytes.Clone(data), 0x90, 0x00)
	}
	s.pending = bytes.Clone(data[limit:])
	return append(bytes.Clone(data[:limit]), 0x61, byte(min(len(s.pending), 256)))
}

func sw(s apdu.StatusWord) []byte { return []byte{byte(s >> 8), byte(s)} }

// counter is a PIN or PUK with its retry counter and its security status.
type counter struct {
	value     []byte // padded as the card stores it
	max, left int
	verified  bool
}

// check compares padded with the stored value: a wrong value costs a try
// (63 Cx, x the tries left), a right one restores them all; a blocked
// counter answers 69 83 and is not compared.
func (p *counter) check(padded []byte) apdu.StatusWord {
	if p.left == 0 {
		p.verified = false
		return apdu.SWAuthBlocked
	}
	if subtle.ConstantTimeCompare(padded, p.value) != 1 {
		p.verified = false
		p.left--
		return apdu.SWRetries(p.left)
	}
	p.left, p.verified = p.max, true
	return apdu.SWSuccess
}

// status answers an empty VERIFY: 90 00 when verified, 69 83 when blocked,
// 63 Cx otherwise.
func (p *counter) status() apdu.StatusWord {
	switch {
	case p.left == 0:
		return apdu.SWAuthBlocked
	case p.verified:
		return apdu.SWSuccess
	}
	return apdu.SWRetries(p.left)
}

// seedStream is SHA-256(seed || label || counter) blocks: reproducible
// bytes for test keys. It is not a DRBG; the simulator's keys are not
// secrets.
type seedStream struct {
	seed, label []byte
	ctr         uint64
	buf         []byte
}

func (s *seedStream) Read(p []byte) (int, error) {
	for n := 0; n < len(p); {
		if len(s.buf) == 0 {
			h := sha256.New()
			h.Write(s.seed)
			h.Write(s.label)
			h.Write(binary.BigEndian.AppendUint64(nil, s.ctr))
			s.ctr++
			s.buf = h.Sum(nil)
		}
		k := copy(p[n:], s.buf)
		s.buf, n = s.buf[k:], n+k
	}
	return len(p), nil
}

// seededECKey derives a key on curve from seed and label. (crypto/ecdsa
// ignores a caller's random source, so the scalar is derived here.)
func seededECKey(curve elliptic.Curve, seed []byte, label string) (*ecdsa.PrivateKey, error) {
	size := (curve.Params().BitSize + 7) / 8
	buf := make([]byte, size+8)
	io.ReadFull(&seedStream{seed: seed, label: []byte(label)}, buf)
	nMinus1 := new(big.Int).Sub(curve.Params().N, big.NewInt(1))
	d := new(big.Int).SetBytes(buf)
	d.Mod(d, nMinus1).Add(d, big.NewInt(1))
	return ecdsa.ParseRawPrivateKey(curve, d.FillBytes(make([]byte, size)))
}
