package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"github.com/pscs/pscs/internal/durable"
)

// fileMagic is the fixed 16-byte file header.
const fileMagic = "pscs-store v1\n\x00\x00"

// frameMagic starts every frame; Open resynchronises on it after damage.
const frameMagic = "PSr1"

// macLabel is the label given to the MACer for every frame body.
const macLabel = "pscs/store/v1/frame"

const (
	frameHeaderLen = 4 + 4 + 1 // magic, body length, tag length
	frameTrailer   = 4         // CRC-32C
	// MaxValueSize is the largest value Put accepts.
	MaxValueSize = 1 << 20
	// MaxKeySize is the longest key Put accepts, in bytes.
	MaxKeySize = 1024
	maxBody    = MaxValueSize + 2*MaxKeySize + 256
	minTag     = 16
	maxTag     = 64
)

// Operations; numbers are never reused.
const (
	opBegin  = 1 // first frame of a file: Version = store version, Value = count(8) || head hash(32)
	opPut    = 2
	opDelete = 3
	opSnap   = 4 // a live record rewritten by compaction, with its own version
	opBad    = 5 // a record known to be bad, kept by compaction; Value = reason
)

// Kind codes; numbers are never reused.
var kindCodes = map[string]byte{
	KindIdentity:   1,
	KindCard:       2,
	KindDelegation: 3,
	KindVault:      4,
	KindConfig:     5,
}

var kindNames = map[byte]string{1: KindIdentity, 2: KindCard, 3: KindDelegation, 4: KindVault, 5: KindConfig}

// body is the MACed part of a frame.
type body struct {
	Op          byte
	Version     uint64
	PrevVersion uint64 // version of the frame physically before this one
	PrevKind    byte   // its kind (0: none)
	PrevKey     string // its key
	PrevTag     []byte // its tag, as stored
	Kind        byte
	Key         string
	Value       []byte
}

func (b *body) append(dst []byte) []byte {
	dst = append(dst, b.Op)
	dst = binary.BigEndian.AppendUint64(dst, b.Version)
	dst = binary.BigEndian.AppendUint64(dst, b.PrevVersion)
	dst = append(dst, b.PrevKind)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b.PrevKey)))
	dst = append(dst, b.PrevKey...)
	dst = append(dst, byte(len(b.PrevTag)))
	dst = append(dst, b.PrevTag...)
	dst = append(dst, b.Kind)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b.Key)))
	dst = append(dst, b.Key...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b.Value)))
	dst = append(dst, b.Value...)
	return dst
}

var errBadBody = errors.New("malformed record")

// parseBody decodes a frame body. It rejects trailing bytes and unknown
// operations, so that append(parseBody(x)) == x for every accepted x.
func parseBody(p []byte) (body, error) {
	var b body
	r := reader{p: p}
	b.Op = r.u8()
	b.Version = r.u64()
	b.PrevVersion = r.u64()
	b.PrevKind = r.u8()
	b.PrevKey = string(r.bytes(int(r.u16())))
	b.PrevTag = r.bytes(int(r.u8()))
	b.Kind = r.u8()
	b.Key = string(r.bytes(int(r.u16())))
	b.Value = r.bytes(int(r.u32()))
	if r.bad || len(r.p) != 0 || b.Op < opBegin || b.Op > opBad {
		return body{}, errBadBody
	}
	if b.Op == opBegin {
		if b.Kind != 0 || b.Key != "" || len(b.Value) != 8+sha256.Size {
			return body{}, errBadBody
		}
	} else if kindNames[b.Kind] == "" || len(b.Key) > MaxKeySize {
		return body{}, errBadBody
	}
	if b.PrevKind != 0 && kindNames[b.PrevKind] == "" {
		return body{}, errBadBody
	}
	return b, nil
}

type reader struct {
	p   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.p) {
		r.bad = true
		return nil
	}
	v := bytes.Clone(r.p[:n])
	r.p = r.p[n:]
	return v
}

func (r *reader) u8() byte {
	b := r.bytes(1)
	if r.bad {
		return 0
	}
	return b[0]
}
func (r *reader) u16() uint16 {
	b := r.bytes(2)
	if r.bad {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}
func (r *reader) u32() uint32 {
	b := r.bytes(4)
	if r.bad {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}
func (r *reader) u64() uint64 {
	b := r.bytes(8)
	if r.bad {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// appendFrame appends the on-disk frame for an encoded body and its tag.
func appendFrame(dst, enc, tag []byte) []byte {
	start := len(dst)
	dst = append(dst, frameMagic...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(enc)))
	dst = append(dst, byte(len(tag)))
	dst = append(dst, enc...)
	dst = append(dst, tag...)
	return binary.BigEndian.AppendUint32(dst, durable.CRC(dst[start:]))
}

// frameStatus says what readFrame found at an offset.
type frameStatus int

const (
	frameOK      frameStatus = iota
	frameShort               // the file ends inside the frame
	frameDamaged             // bad magic, bad lengths or bad checksum
)

// readFrame reads the frame at p[0:]. It returns the body bytes, the tag
// and the frame's length.
func readFrame(p []byte) (enc, tag []byte, n int, st frameStatus) {
	if len(p) < frameHeaderLen {
		return nil, nil, 0, frameShort
	}
	if string(p[:4]) != frameMagic {
		return nil, nil, 0, frameDamaged
	}
	bl := binary.BigEndian.Uint32(p[4:])
	tl := int(p[8])
	if bl > maxBody || tl < minTag || tl > maxTag {
		return nil, nil, 0, frameDamaged
	}
	n = frameHeaderLen + int(bl) + tl + frameTrailer
	if len(p) < n {
		return nil, nil, 0, frameShort
	}
	if durable.CRC(p[:n-frameTrailer]) != binary.BigEndian.Uint32(p[n-frameTrailer:]) {
		return nil, nil, n, frameDamaged
	}
	enc = p[frameHeaderLen : frameHeaderLen+int(bl)]
	tag = p[frameHeaderLen+int(bl) : n-frameTrailer]
	return enc, tag, n, frameOK
}

// headHash extends the store's history hash by one write.
func headHash(prev [32]byte, enc []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("pscs/store/v1/head"))
	h.Write(prev[:])
	h.Write(enc)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
