package apdu

import "fmt"

// Response is a response APDU (R-APDU): the response data field followed by
// the status word SW1 SW2.
//
// A Response is a plain value. It is safe for concurrent use as long as no
// goroutine modifies it, or the Data it refers to, at the same time.
type Response struct {
	Data []byte
	SW   StatusWord
}

// ParseResponse decodes an R-APDU. It needs at least the 2 status bytes and
// accepts at most 65536 data bytes; otherwise it returns an error wrapping
// [ErrMalformed]. Data aliases b. For every b that ParseResponse accepts,
// MarshalBinary of the result is byte-identical to b.
func ParseResponse(b []byte) (Response, error) {
	n := len(b)
	if n < 2 {
		return Response{}, fmt.Errorf("%w: response of %d bytes has no status word", ErrMalformed, n)
	}
	if n-2 > MaxExtendedNe {
		return Response{}, fmt.Errorf("%w: response data of %d bytes exceeds %d", ErrMalformed, n-2, MaxExtendedNe)
	}
	return Response{
		Data: b[: n-2 : n-2],
		SW:   StatusWord(uint16(b[n-2])<<8 | uint16(b[n-1])),
	}, nil
}

// AppendBinary appends Data and the two status bytes to b. It returns an
// error wrapping [ErrMalformed], and b unchanged, if Data is longer than
// 65536 bytes, the most any R-APDU can carry.
func (r Response) AppendBinary(b []byte) ([]byte, error) {
	if len(r.Data) > MaxExtendedNe {
		return b, fmt.Errorf("%w: response data of %d bytes exceeds %d", ErrMalformed, len(r.Data), MaxExtendedNe)
	}
	b = append(b, r.Data...)
	return append(b, r.SW.SW1(), r.SW.SW2()), nil
}

// MarshalBinary returns the wire encoding of r; see [Response.AppendBinary].
func (r Response) MarshalBinary() ([]byte, error) {
	if len(r.Data) > MaxExtendedNe {
		return r.AppendBinary(nil)
	}
	return r.AppendBinary(make([]byte, 0, len(r.Data)+2))
}
