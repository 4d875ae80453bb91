package apdu

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseTLVs(t *testing.T) {
	cert := seq([]byte{0x30, 0x82, 0x01, 0x3A}, 0x13A) // 0x13E bytes of "DER"
	container := cat(h(t, "70 82 01 3E"), cert, h(t, "71 01 00 FE 00"))
	tests := []struct {
		name string
		in   []byte
		want []TLV
	}{
		{"empty", nil, nil},
		{"PIV cert container value", container, []TLV{
			{0x70, cert}, {0x71, h(t, "00")}, {0xFE, []byte{}},
		}},
		{"PIV data object 53", cat(h(t, "53 82 01 47"), container), []TLV{{0x53, container}}},
		{"GET DATA request", h(t, "5C 03 5F C1 05"), []TLV{{0x5C, h(t, "5F C1 05")}}},
		{"2-byte tag", h(t, "7F 49 03 86 01 04"), []TLV{{0x7F49, h(t, "86 01 04")}}},
		{"3-byte tag", h(t, "5F C1 05 02 AA BB 5F FF 00 00"), []TLV{{0x5FC105, h(t, "AA BB")}, {0x5FFF00, []byte{}}}},
		{"81 length", cat(h(t, "81 81 80"), fill(1, 0x80)), []TLV{{0x81, fill(1, 0x80)}}},
		{"81 non-minimal", h(t, "04 81 02 AA BB"), []TLV{{0x04, h(t, "AA BB")}}},
		{"82 length", cat(h(t, "04 82 01 00"), fill(2, 256)), []TLV{{0x04, fill(2, 256)}}},
		{"83 length", cat(h(t, "04 83 01 00 01"), fill(3, 65537)), []TLV{{0x04, fill(3, 65537)}}},
		{"83 zero", h(t, "04 83 00 00 00 05 00"), []TLV{{0x04, []byte{}}, {0x05, []byte{}}}},
		{"GENERAL AUTHENTICATE template", h(t, "7C 06 82 00 81 02 01 02"), []TLV{{0x7C, h(t, "82 00 81 02 01 02")}}},
		{"zero tag not skipped", h(t, "00 00 FF 01 00"), []TLV{{0x00, []byte{}}, {0xFF01, []byte{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTLVs(tt.in)
			if err != nil {
				t.Fatalf("ParseTLVs error: %v", err)
			}
			assertTLVs(t, got, tt.want)
		})
	}
}

func assertTLVs(t *testing.T, got, want []TLV) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d TLVs, want %d: %v", len(got), len(want), got)
	}
	for i := range got {
		if got[i].Tag != want[i].Tag || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Errorf("TLV %d: got %X % X, want %X % X", i, got[i].Tag, got[i].Value, want[i].Tag, want[i].Value)
		}
	}
}

func TestParseTLVsErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"tag only", h(t, "53")},
		{"truncated 2-byte tag", h(t, "5F")},
		{"truncated 3-byte tag", h(t, "5F C1")},
		{"4-byte tag", h(t, "5F C1 85 01 00")},
		{"indefinite length", h(t, "30 80 00 00")},
		{"84 length", h(t, "04 84 00 00 00 01 AA")},
		{"FF length", h(t, "04 FF")},
		{"truncated 81", h(t, "04 81")},
		{"truncated 82", h(t, "04 82 01")},
		{"truncated 83", h(t, "04 83 00 01")},
		{"truncated value", h(t, "04 03 AA BB")},
		{"truncated long value", cat(h(t, "70 82 01 3E"), fill(0, 0x13D))},
		{"good then truncated", h(t, "71 01 00 FE")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTLVs(tt.in)
			if !errors.Is(err, ErrMalformed) || got != nil {
				t.Errorf("ParseTLVs(% X) = %v, %v; want nil, ErrMalformed", tt.in, got, err)
			}
		})
	}
}

func TestFindTLV(t *testing.T) {
	in := h(t, "70 02 AA BB 71 01 00 FE 00 71 01 01")
	tests := []struct {
		name    string
		in      []byte
		tag     uint32
		want    []byte
		found   bool
		wantErr bool
	}{
		{"first", in, 0x70, h(t, "AA BB"), true, false},
		{"first of two", in, 0x71, h(t, "00"), true, false},
		{"empty value", in, 0xFE, []byte{}, true, false},
		{"absent", in, 0x72, nil, false, false},
		{"nested not searched", in, 0xAA, nil, false, false},
		{"3-byte", h(t, "5F C1 05 01 07"), 0x5FC105, h(t, "07"), true, false},
		{"malformed before", h(t, "70 05 AA"), 0x71, nil, false, true},
		{"malformed after match", h(t, "70 01 AA 71 05"), 0x70, h(t, "AA"), true, false},
		{"empty input", nil, 0x70, nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := FindTLV(tt.in, tt.tag)
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if found != tt.found || !bytes.Equal(got, tt.want) || (tt.found && got == nil) {
				t.Errorf("got % X, %v; want % X, %v", got, found, tt.want, tt.found)
			}
		})
	}
}

func TestAppendTLV(t *testing.T) {
	tests := []struct {
		name  string
		tag   uint32
		value []byte
		want  []byte
	}{
		{"empty", 0xFE, nil, h(t, "FE 00")},
		{"short", 0x71, h(t, "00"), h(t, "71 01 00")},
		{"7F", 0x04, fill(9, 0x7F), cat(h(t, "04 7F"), fill(9, 0x7F))},
		{"81", 0x04, fill(9, 0x80), cat(h(t, "04 81 80"), fill(9, 0x80))},
		{"81 FF", 0x04, fill(9, 0xFF), cat(h(t, "04 81 FF"), fill(9, 0xFF))},
		{"82", 0x53, fill(9, 0x100), cat(h(t, "53 82 01 00"), fill(9, 0x100))},
		{"83", 0x53, fill(9, 0x10000), cat(h(t, "53 83 01 00 00"), fill(9, 0x10000))},
		{"2-byte tag", 0x7F49, h(t, "01"), h(t, "7F 49 01 01")},
		{"3-byte tag", 0x5FC105, nil, h(t, "5F C1 05 00")},
		{"tag 0", 0, nil, h(t, "00 00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendTLV([]byte{0xEE}, tt.tag, tt.value)
			if want := cat([]byte{0xEE}, tt.want); !bytes.Equal(got, want) {
				t.Errorf("got % X, want % X", got, want)
			}
			m, err := TLV{tt.tag, tt.value}.MarshalBinary()
			if err != nil || !bytes.Equal(m, tt.want) {
				t.Errorf("MarshalBinary = % X, %v", m, err)
			}
			back, err := ParseTLVs(tt.want)
			if err != nil {
				t.Fatalf("ParseTLVs error: %v", err)
			}
			assertTLVs(t, back, []TLV{{tt.tag, tt.value}})
		})
	}
}

func TestAppendLength(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, h(t, "00")},
		{0x7F, h(t, "7F")},
		{0x80, h(t, "81 80")},
		{0xFF, h(t, "81 FF")},
		{0x100, h(t, "82 01 00")},
		{0xFFFF, h(t, "82 FF FF")},
		{0x10000, h(t, "83 01 00 00")},
		{0xFFFFFF, h(t, "83 FF FF FF")},
		{0x1000000, h(t, "84 01 00 00 00")},
		{-1, nil},
	}
	for _, tt := range tests {
		if got := AppendLength(nil, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("AppendLength(%d) = % X, want % X", tt.n, got, tt.want)
		}
	}
	if got, want := AppendTag(nil, 0x01020304), h(t, "01 02 03 04"); !bytes.Equal(got, want) {
		t.Errorf("AppendTag(4 bytes) = % X, want % X", got, want)
	}
	if _, err := (TLV{Tag: 0x01020304}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("MarshalBinary(4-byte tag) err = %v, want ErrMalformed", err)
	}
}

func TestTLVConstructed(t *testing.T) {
	tests := []struct {
		tag  uint32
		want bool
	}{
		{0x53, false}, {0x70, true}, {0x7C, true}, {0x7F49, true}, {0x5FC105, false},
		{0x81, false}, {0xA4, true}, {0xBF8101, true}, {0, false},
	}
	for _, tt := range tests {
		if got := (TLV{Tag: tt.tag}).Constructed(); got != tt.want {
			t.Errorf("TLV{%X}.Constructed() = %v, want %v", tt.tag, got, tt.want)
		}
	}
	kids, err := TLV{0x7C, h(t, "82 00 81 02 01 02")}.Children()
	if err != nil {
		t.Fatal(err)
	}
	assertTLVs(t, kids, []TLV{{0x82, []byte{}}, {0x81, h(t, "01 02")}})
}
