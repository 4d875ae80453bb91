package apdu

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// Seeds shared by the corpus files under testdata/fuzz and f.Add.
func commandSeeds() [][]byte {
	return [][]byte{
		{0x00, 0x20, 0x00, 0x80},
		{0x00, 0x20, 0x00, 0x80, 0x00},
		{0x00, 0x20, 0x00, 0x80, 0x00, 0x00, 0x00},
		{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05},
		{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00},
		{0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x00, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00, 0x00},
		{0x00, 0xCA, 0x00, 0x6E, 0x00, 0x0B, 0xFE},
		{0x00, 0x20, 0x00, 0x80, 0x00, 0x00}, // invalid: short Lc 0
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range commandSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseCommand(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		out, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of accepted % X: %v", in, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip: in % X, out % X (%+v)", in, out, c)
		}
		if c.Extended != c.IsExtended() && (len(c.Data) > 0 || c.Ne > 0) {
			t.Fatalf("Extended %v but IsExtended %v", c.Extended, c.IsExtended())
		}
		_ = c.String()
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte{0x90, 0x00})
	f.Add([]byte{0x63, 0xC2})
	f.Add([]byte{0x7C, 0x02, 0x82, 0x00, 0x61, 0x08})
	f.Add([]byte{0x90})
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseResponse(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		out, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("round trip: in % X, out % X, %v", in, out, err)
		}
		_ = r.SW.Error()
		_, _ = r.SW.Retries()
		if r.SW.OK() != (r.SW.Err() == nil) {
			t.Fatalf("%v: OK %v but Err %v", r.SW, r.SW.OK(), r.SW.Err())
		}
	})
}

func FuzzParseTLVs(f *testing.F) {
	f.Add([]byte{0x70, 0x02, 0x30, 0x00, 0x71, 0x01, 0x00, 0xFE, 0x00})
	f.Add([]byte{0x5F, 0xC1, 0x05, 0x81, 0x01, 0xAA})
	f.Add([]byte{0x7F, 0x49, 0x82, 0x00, 0x01, 0x00})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		tlvs, err := ParseTLVs(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var enc []byte
		for _, tl := range tlvs {
			enc = AppendTLV(enc, tl.Tag, tl.Value)
		}
		if len(enc) > len(in) {
			t.Fatalf("minimal re-encoding grew: %d > %d bytes", len(enc), len(in))
		}
		back, err := ParseTLVs(enc)
		if err != nil {
			t.Fatalf("re-parse of % X: %v", enc, err)
		}
		if len(back) != len(tlvs) {
			t.Fatalf("re-parse: %d TLVs, want %d", len(back), len(tlvs))
		}
		for i := range back {
			if back[i].Tag != tlvs[i].Tag || !bytes.Equal(back[i].Value, tlvs[i].Value) {
				t.Fatalf("TLV %d: got %X % X, want %X % X", i, back[i].Tag, back[i].Value, tlvs[i].Tag, tlvs[i].Value)
			}
			v, ok, err := FindTLV(in, tlvs[i].Tag)
			if err != nil || !ok {
				t.Fatalf("FindTLV(%X) = %v, %v", tlvs[i].Tag, ok, err)
			}
			first := tlvs[0]
			for _, x := range tlvs {
				if x.Tag == tlvs[i].Tag {
					first = x
					break
				}
			}
			if !bytes.Equal(v, first.Value) {
				t.Fatalf("FindTLV(%X) = % X, want % X", tlvs[i].Tag, v, first.Value)
			}
		}
	})
}

// rogueCard answers from fuzz bytes: each reply is a 2-byte big-endian
// length followed by that many bytes (cut short at the end of the script).
// When the script runs out it starts over, so a script of 61xx replies
// chains forever unless Conn stops it.
type rogueCard struct {
	t      *testing.T
	script []byte
	off    int
	n      int
	maxN   int
}

func (r *rogueCard) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	r.n++
	if r.n > r.maxN {
		r.t.Fatalf("more than %d transmits", r.maxN)
	}
	if _, err := ParseCommand(cmd); err != nil {
		r.t.Fatalf("Conn sent a malformed command % X: %v", cmd, err)
	}
	if len(cmd) > 4+3+MaxExtendedData+2 {
		r.t.Fatalf("command of %d bytes", len(cmd))
	}
	if len(r.script) < 2 {
		return r.script, nil
	}
	if r.off+2 > len(r.script) {
		r.off = 0
	}
	n := int(r.script[r.off])<<8 | int(r.script[r.off+1])
	r.off += 2
	end := min(r.off+n, len(r.script))
	reply := r.script[r.off:end]
	r.off = end
	return reply, nil
}

func FuzzConnDo(f *testing.F) {
	f.Add(uint16(10), byte(0), byte(0), false, []byte{0x00, 0x02, 0x90, 0x00})
	f.Add(uint16(300), byte(4), byte(8), false, []byte{0x00, 0x02, 0x90, 0x00, 0x00, 0x03, 0x01, 0x61, 0x01, 0x00, 0x02, 0x6C, 0x05})
	f.Add(uint16(0), byte(2), byte(1), false, []byte{0x00, 0x03, 0xAA, 0x61, 0x00})
	f.Add(uint16(600), byte(0), byte(0), true, []byte{0x00, 0x02, 0x6C, 0x00})
	f.Add(uint16(5), byte(1), byte(1), false, []byte{0x00, 0x01, 0x90})
	f.Fuzz(func(t *testing.T, nc uint16, maxGR, maxRespK byte, ext bool, script []byte) {
		conn := Conn{
			Extended:       ext,
			MaxGetResponse: int(maxGR % 16),
			MaxResponse:    int(maxRespK) * 64,
		}
		wantGR := conn.MaxGetResponse
		if wantGR <= 0 {
			wantGR = DefaultMaxGetResponse
		}
		wantResp := conn.MaxResponse
		if wantResp <= 0 {
			wantResp = DefaultMaxResponse
		}
		cmd := Command{CLA: 0x00, INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: make([]byte, int(nc)%2000), Ne: int(nc) % 70000}
		blocks := 1
		if !ext {
			blocks = max(1, (len(cmd.Data)+MaxShortData-1)/MaxShortData)
		}
		card := &rogueCard{t: t, script: script, maxN: blocks + 1 + wantGR}
		conn.T = card
		data, err := conn.Do(context.Background(), cmd)
		if len(data) > wantResp {
			t.Fatalf("returned %d bytes, cap %d", len(data), wantResp)
		}
		if cap(data) > 2*wantResp+512 {
			t.Fatalf("returned buffer capacity %d, cap %d", cap(data), wantResp)
		}
		var sw StatusWord
		if errors.As(err, &sw) && sw == SWSuccess {
			t.Fatalf("9000 returned as an error")
		}
		if err == nil && cmd.Ne <= 65536 && cmd.Ne >= 0 && card.n == 0 {
			t.Fatalf("success without transmitting")
		}
	})
}
