package apdu

import (
	"fmt"
)

// MaxTLVLength is the largest value length that the supported length forms
// (short, 81, 82, 83) can express.
const MaxTLVLength = 0xFFFFFF

// TLV is one BER-TLV data object as used on smart cards (ISO/IEC 7816-4
// §5.2). Tag holds the tag bytes as they appear on the wire, big-endian:
// 0x53, 0x5FC105, 0x7F49. Value is the value field; after [ParseTLVs] it
// aliases the parsed input.
//
// A TLV is a plain value. It is safe for concurrent use as long as no
// goroutine modifies it, or the Value it refers to, at the same time.
type TLV struct {
	Tag   uint32
	Value []byte
}

// Constructed reports whether bit 6 (0x20) of the first tag byte is set,
// which in BER marks a value made of nested data objects. Smart-card
// applications do not always follow that convention (the PIV certificate
// tag 70 is "constructed" but holds a DER certificate), which is why
// [ParseTLVs] never recurses on its own; use [TLV.Children] when nesting is
// known to be there.
func (t TLV) Constructed() bool {
	first := t.Tag
	for first > 0xFF {
		first >>= 8
	}
	return first&0x20 != 0
}

// Children parses t.Value as a flat sequence of data objects; see
// [ParseTLVs].
func (t TLV) Children() ([]TLV, error) { return ParseTLVs(t.Value) }

// AppendBinary appends the encoding of t to b, like [AppendTLV], but returns
// an error wrapping [ErrMalformed], and b unchanged, when the value is
// longer than [MaxTLVLength] or the tag is longer than 3 bytes.
func (t TLV) AppendBinary(b []byte) ([]byte, error) {
	if len(t.Value) > MaxTLVLength {
		return b, fmt.Errorf("%w: TLV value of %d bytes exceeds %d", ErrMalformed, len(t.Value), MaxTLVLength)
	}
	if t.Tag > 0xFFFFFF {
		return b, fmt.Errorf("%w: tag %X longer than 3 bytes", ErrMalformed, t.Tag)
	}
	return AppendTLV(b, t.Tag, t.Value), nil
}

// MarshalBinary returns the encoding of t; see [TLV.AppendBinary].
func (t TLV) MarshalBinary() ([]byte, error) { return t.AppendBinary(nil) }

// ParseTLVs parses b as a flat sequence of BER-TLV data objects and returns
// them in order; nested objects are not parsed (see [TLV.Children]). Each
// Value aliases b. Empty input gives (nil, nil).
//
// Tags are 1 to 3 bytes (first byte xxx11111 announces subsequent bytes,
// which continue while bit 8 is set). Lengths are the short form 00..7F or
// the long forms 81 xx, 82 xxxx and 83 xxxxxx; non-minimal long forms are
// accepted. The indefinite length 80, longer length forms, tags of 4 or
// more bytes and values that run past the end of b are rejected with an
// error wrapping [ErrMalformed]. Zero-length values such as the PIV "FE 00"
// are fine, and bytes 00 and FF are parsed as tags, not skipped as padding.
func ParseTLVs(b []byte) ([]TLV, error) {
	var out []TLV
	for off := 0; off < len(b); {
		t, n, err := parseTLV(b[off:])
		if err != nil {
			return nil, fmt.Errorf("%w (at offset %d)", err, off)
		}
		out = append(out, t)
		off += n
	}
	return out, nil
}

// FindTLV returns the value of the first top-level data object in b with
// the given tag, aliasing b. It returns (nil, false, nil) if no object has
// that tag, and an error wrapping [ErrMalformed] if b is malformed before
// the object is found; data after the match is not examined.
func FindTLV(b []byte, tag uint32) ([]byte, bool, error) {
	for off := 0; off < len(b); {
		t, n, err := parseTLV(b[off:])
		if err != nil {
			return nil, false, fmt.Errorf("%w (at offset %d)", err, off)
		}
		if t.Tag == tag {
			return t.Value, true, nil
		}
		off += n
	}
	return nil, false, nil
}

// parseTLV parses one data object at the start of b and returns it with the
// number of bytes it occupies.
func parseTLV(b []byte) (TLV, int, error) {
	if len(b) == 0 {
		return TLV{}, 0, fmt.Errorf("%w: empty TLV", ErrMalformed)
	}
	tag := uint32(b[0])
	i := 1
	if b[0]&0x1F == 0x1F {
		for {
			if i == 3 {
				return TLV{}, 0, fmt.Errorf("%w: tag %X… longer than 3 bytes", ErrMalformed, tag)
			}
			if i >= len(b) {
				return TLV{}, 0, fmt.Errorf("%w: truncated tag", ErrMalformed)
			}
			tag = tag<<8 | uint32(b[i])
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
	}
	if i >= len(b) {
		return TLV{}, 0, fmt.Errorf("%w: tag %X without length", ErrMalformed, tag)
	}
	l := int(b[i])
	i++
	if l >= 0x80 {
		k := l & 0x7F
		switch {
		case k == 0:
			return TLV{}, 0, fmt.Errorf("%w: tag %X: indefinite length", ErrMalformed, tag)
		case k > 3:
			return TLV{}, 0, fmt.Errorf("%w: tag %X: length form %02X not supported", ErrMalformed, tag, l)
		case len(b)-i < k:
			return TLV{}, 0, fmt.Errorf("%w: tag %X: truncated length", ErrMalformed, tag)
		}
		l = 0
		for _, x := range b[i : i+k] {
			l = l<<8 | int(x)
		}
		i += k
	}
	if len(b)-i < l {
		return TLV{}, 0, fmt.Errorf("%w: tag %X: length %d exceeds the %d bytes left", ErrMalformed, tag, l, len(b)-i)
	}
	return TLV{Tag: tag, Value: b[i : i+l : i+l]}, i + l, nil
}

// AppendTLV appends the data object tag, length, value to b, using
// [AppendTag] and [AppendLength] (minimal length encoding). It never panics
// and never fails: a value longer than [MaxTLVLength] gets a valid BER 84
// length that [ParseTLVs] does not accept. Use [TLV.AppendBinary] to have
// that reported as an error instead.
func AppendTLV(b []byte, tag uint32, value []byte) []byte {
	b = AppendTag(b, tag)
	b = AppendLength(b, len(value))
	return append(b, value...)
}

// AppendTag appends the wire bytes of tag to b: its big-endian bytes with
// leading zero bytes dropped, at least one byte (tag 0 is written as 00).
// AppendTag does not check that the bytes form a valid BER tag.
func AppendTag(b []byte, tag uint32) []byte {
	switch {
	case tag > 0xFFFFFF:
		return append(b, byte(tag>>24), byte(tag>>16), byte(tag>>8), byte(tag))
	case tag > 0xFFFF:
		return append(b, byte(tag>>16), byte(tag>>8), byte(tag))
	case tag > 0xFF:
		return append(b, byte(tag>>8), byte(tag))
	}
	return append(b, byte(tag))
}

// AppendLength appends the minimal BER encoding of the length n to b:
// 00..7F, 81 xx, 82 xxxx, 83 xxxxxx, and for n > [MaxTLVLength] the
// general long form 84 xxxxxxxx (or longer), which [ParseTLVs] rejects. A
// negative n is a programming error; AppendLength then returns b unchanged.
func AppendLength(b []byte, n int) []byte {
	switch {
	case n < 0:
		return b
	case n < 0x80:
		return append(b, byte(n))
	case n <= 0xFF:
		return append(b, 0x81, byte(n))
	case n <= 0xFFFF:
		return append(b, 0x82, byte(n>>8), byte(n))
	case n <= 0xFFFFFF:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	k := 0
	for x := uint64(n); x > 0; x >>= 8 {
		k++
	}
	b = append(b, 0x80|byte(k))
	for i := k - 1; i >= 0; i-- {
		b = append(b, byte(uint64(n)>>(8*i)))
	}
	return b
}
