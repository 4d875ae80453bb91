package apdu

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseCommand(t *testing.T) {
	cert := h(t, "5C 03 5F C1 05")
	digest := seq(nil, 32)
	big := seq(nil, 300)
	tests := []struct {
		name string
		in   []byte
		want Command
	}{
		{"case 1 empty VERIFY (OpenSC)", h(t, "00 20 00 80"),
			Command{CLA: 0x00, INS: 0x20, P1: 0x00, P2: 0x80}},
		{"case 2S empty VERIFY (piv-go)", h(t, "00 20 00 80 00"),
			Command{INS: 0x20, P2: 0x80, Ne: 256}},
		{"case 2E empty VERIFY (ykman)", h(t, "00 20 00 80 00 00 00"),
			Command{INS: 0x20, P2: 0x80, Ne: 65536, Extended: true}},
		{"logout", h(t, "00 20 FF 80"),
			Command{INS: 0x20, P1: 0xFF, P2: 0x80}},
		{"case 3S VERIFY with PIN", h(t, "00 20 00 80 08 31 32 33 34 35 36 FF FF"),
			Command{INS: 0x20, P2: 0x80, Data: h(t, "31 32 33 34 35 36 FF FF")}},
		{"case 3S SELECT PIV", h(t, "00 A4 04 00 05 A0 00 00 03 08"),
			Command{INS: 0xA4, P1: 0x04, Data: h(t, "A0 00 00 03 08")}},
		{"case 4S SELECT PIV", h(t, "00 A4 04 00 05 A0 00 00 03 08 00"),
			Command{INS: 0xA4, P1: 0x04, Data: h(t, "A0 00 00 03 08"), Ne: 256}},
		{"case 3S GET DATA without Le (piv-go)", h(t, "00 CB 3F FF 05 5C 03 5F C1 05"),
			Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: cert}},
		{"case 4S GET DATA Le 00", h(t, "00 CB 3F FF 05 5C 03 5F C1 05 00"),
			Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: cert, Ne: 256}},
		{"case 4S GET DATA Le 08 (OpenSC)", h(t, "00 CB 3F FF 05 5C 03 5F C1 05 08"),
			Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: cert, Ne: 8}},
		{"case 4E GET DATA (ykman)", h(t, "00 CB 3F FF 00 00 05 5C 03 5F C1 05 00 00"),
			Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: cert, Ne: 65536, Extended: true}},
		{"case 3E GET DATA", h(t, "00 CB 3F FF 00 00 05 5C 03 5F C1 05"),
			Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: cert, Extended: true}},
		{"case 2S GET RESPONSE", h(t, "00 C0 00 00 4B"),
			Command{INS: 0xC0, Ne: 0x4B}},
		{"case 1 GET RESPONSE (go-iso7816)", h(t, "00 C0 00 00"),
			Command{INS: 0xC0}},
		{"case 2S OpenPGP GET DATA 6E", h(t, "00 CA 00 6E 00"),
			Command{INS: 0xCA, P2: 0x6E, Ne: 256}},
		{"case 2E OpenPGP GET DATA 6E Le 0BFE", h(t, "00 CA 00 6E 00 0B FE"),
			Command{INS: 0xCA, P2: 0x6E, Ne: 3070, Extended: true}},
		{"case 4E PSO:CDS", cat(h(t, "00 2A 9E 9A 00 00 20"), digest, h(t, "00 00")),
			Command{INS: 0x2A, P1: 0x9E, P2: 0x9A, Data: digest, Ne: 65536, Extended: true}},
		{"case 4S GENERAL AUTHENTICATE P-256", cat(h(t, "00 87 11 9A 26 7C 24 82 00 81 20"), digest, h(t, "00")),
			Command{INS: 0x87, P1: 0x11, P2: 0x9A, Data: cat(h(t, "7C 24 82 00 81 20"), digest), Ne: 256}},
		{"case 3E PUT DATA 300 bytes", cat(h(t, "00 DB 3F FF 00 01 2C"), big),
			Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: big, Extended: true}},
		{"case 4E Lc 1 Le 1", h(t, "80 CA 01 02 00 00 01 AA 00 01"),
			Command{CLA: 0x80, INS: 0xCA, P1: 1, P2: 2, Data: h(t, "AA"), Ne: 1, Extended: true}},
		{"case 2E Ne 1", h(t, "00 B0 00 00 00 00 01"),
			Command{INS: 0xB0, Ne: 1, Extended: true}},
		{"case 3S 255 bytes", cat(h(t, "00 DA 00 00 FF"), fill(0xAB, 255)),
			Command{INS: 0xDA, Data: fill(0xAB, 255)}},
		{"case 3E 65535 bytes", cat(h(t, "00 DA 00 00 00 FF FF"), fill(0xCD, 65535)),
			Command{INS: 0xDA, Data: fill(0xCD, 65535), Extended: true}},
		{"chained block", cat(h(t, "10 87 07 9C FF"), fill(0xFF, 255)),
			Command{CLA: 0x10, INS: 0x87, P1: 0x07, P2: 0x9C, Data: fill(0xFF, 255)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand(tt.in)
			if err != nil {
				t.Fatalf("ParseCommand(% X) error: %v", tt.in, err)
			}
			assertCommand(t, got, tt.want)
			enc, err := got.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary error: %v", err)
			}
			if !bytes.Equal(enc, tt.in) {
				t.Errorf("round trip: got % X, want % X", enc, tt.in)
			}
			// Encoding the expected value gives the input too.
			enc2, err := tt.want.MarshalBinary()
			if err != nil || !bytes.Equal(enc2, tt.in) {
				t.Errorf("want.MarshalBinary() = % X, %v; want % X", enc2, err, tt.in)
			}
		})
	}
}

func assertCommand(t *testing.T, got, want Command) {
	t.Helper()
	if got.CLA != want.CLA || got.INS != want.INS || got.P1 != want.P1 || got.P2 != want.P2 ||
		got.Ne != want.Ne || got.Extended != want.Extended || !bytes.Equal(got.Data, want.Data) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"3 bytes", h(t, "00 20 00")},
		{"short Lc 0 (6 bytes)", h(t, "00 20 00 80 00 00")},
		{"short Lc too long", h(t, "00 A4 04 00 05 A0 00")},
		{"short trailing bytes", h(t, "00 A4 04 00 01 A0 00 00")},
		{"short trailing 2 bytes after Le", h(t, "00 A4 04 00 05 A0 00 00 03 08 00 00")},
		{"extended Lc 0 with data", h(t, "00 20 00 80 00 00 00 01")},
		{"extended Lc 0 with Le", h(t, "00 20 00 80 00 00 00 00 00")},
		{"extended Lc mismatch", h(t, "00 20 00 80 00 00 02 AA")},
		{"extended Le truncated", h(t, "00 20 00 80 00 00 01 AA 00")},
		{"extended trailing", h(t, "00 20 00 80 00 00 01 AA 00 00 00")},
		{"extended 8 bytes", h(t, "00 20 00 80 00 00 00 00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand(tt.in)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseCommand(% X) = %+v, %v; want error wrapping ErrMalformed", tt.in, got, err)
			}
		})
	}
}

func TestCommandAppendBinary(t *testing.T) {
	tests := []struct {
		name string
		c    Command
		want []byte
	}{
		{"case 1", Command{INS: 0xA4}, h(t, "00 A4 00 00")},
		{"case 1 ignores Extended", Command{INS: 0xA4, Extended: true}, h(t, "00 A4 00 00")},
		{"empty non-nil data", Command{INS: 0xA4, Data: []byte{}}, h(t, "00 A4 00 00")},
		{"Ne 256 short", Command{INS: 0xB0, Ne: 256}, h(t, "00 B0 00 00 00")},
		{"Ne 257 extended", Command{INS: 0xB0, Ne: 257}, h(t, "00 B0 00 00 00 01 01")},
		{"Ne 65536 extended", Command{INS: 0xB0, Ne: 65536}, h(t, "00 B0 00 00 00 00 00")},
		{"Ne 1 forced extended", Command{INS: 0xB0, Ne: 1, Extended: true}, h(t, "00 B0 00 00 00 00 01")},
		{"data forced extended", Command{INS: 0xD6, Data: h(t, "01 02")}, h(t, "00 D6 00 00 02 01 02")},
		{"data and Ne 257", Command{INS: 0xD6, Data: h(t, "01"), Ne: 257}, h(t, "00 D6 00 00 00 00 01 01 01 01")},
		{"256 data bytes", Command{INS: 0xD6, Data: fill(7, 256)}, cat(h(t, "00 D6 00 00 00 01 00"), fill(7, 256))},
		{"256 data bytes Ne 256", Command{INS: 0xD6, Data: fill(7, 256), Ne: 256},
			cat(h(t, "00 D6 00 00 00 01 00"), fill(7, 256), h(t, "01 00"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0xEE}
			got, err := tt.c.AppendBinary(prefix)
			if err != nil {
				t.Fatalf("AppendBinary error: %v", err)
			}
			if want := cat(prefix, tt.want); !bytes.Equal(got, want) {
				t.Errorf("got % X, want % X", got, want)
			}
			if s, want := tt.c.String(), hexString(tt.want); s != want {
				t.Errorf("String() = %q, want %q", s, want)
			}
		})
	}
}

func TestCommandAppendBinaryErrors(t *testing.T) {
	tests := []struct {
		name string
		c    Command
	}{
		{"Ne -1", Command{Ne: -1}},
		{"Ne 65537", Command{Ne: 65537}},
		{"data 65536", Command{Data: make([]byte, 65536)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte{1, 2}
			got, err := tt.c.AppendBinary(in)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
			if !bytes.Equal(got, in) {
				t.Errorf("got % X, want input unchanged % X", got, in)
			}
			if _, err := tt.c.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Errorf("MarshalBinary err = %v, want ErrMalformed", err)
			}
			if s := tt.c.String(); s == "" {
				t.Errorf("String() is empty")
			}
		})
	}
}

func TestCommandString(t *testing.T) {
	c := Command{INS: 0xA4, P1: 0x04, Data: h(t, "A0 00 00 03 08")}
	if got, want := c.String(), "00 A4 04 00 05 A0 00 00 03 08"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestResponse(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Response
	}{
		{"status only", h(t, "90 00"), Response{SW: SWSuccess}},
		{"SELECT PIV", h(t, "61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08 90 00"),
			Response{Data: h(t, "61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08"), SW: SWSuccess}},
		{"more data", h(t, "01 02 61 4B"), Response{Data: h(t, "01 02"), SW: 0x614B}},
		{"wrong PIN", h(t, "63 C2"), Response{SW: 0x63C2}},
		{"max data", cat(fill(1, 65536), h(t, "90 00")), Response{Data: fill(1, 65536), SW: SWSuccess}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResponse(tt.in)
			if err != nil {
				t.Fatalf("ParseResponse error: %v", err)
			}
			if got.SW != tt.want.SW || !bytes.Equal(got.Data, tt.want.Data) {
				t.Errorf("got %v % X, want %v % X", got.SW, got.Data, tt.want.SW, tt.want.Data)
			}
			enc, err := got.MarshalBinary()
			if err != nil || !bytes.Equal(enc, tt.in) {
				t.Errorf("MarshalBinary = % X, %v; want % X", enc, err, tt.in)
			}
		})
	}
	for _, in := range [][]byte{nil, {0x90}, make([]byte, 65539)} {
		if _, err := ParseResponse(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseResponse(%d bytes) err = %v, want ErrMalformed", len(in), err)
		}
	}
	if _, err := (Response{Data: make([]byte, 65537)}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("MarshalBinary(65537 bytes) err = %v, want ErrMalformed", err)
	}
}

func BenchmarkParseCommand(b *testing.B) {
	in := cat([]byte{0x00, 0x87, 0x11, 0x9A, 0x26, 0x7C, 0x24, 0x82, 0x00, 0x81, 0x20}, seq(nil, 32), []byte{0})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCommand(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	c := Command{INS: 0x87, P1: 0x11, P2: 0x9A, Data: seq(nil, 38), Ne: 256}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = c.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
