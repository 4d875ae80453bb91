package cborpolicy

import (
	"encoding/hex"
	"strings"
	"testing"
)

type rec struct {
	A string   `cbor:"1,keyasint"`
	B []string `cbor:"2,keyasint,omitempty"`
}

// TestPolicy: each thing the policy forbids is refused, and the valid
// record beside it decodes, with both modes.
func TestPolicy(t *testing.T) {
	deep := strings.Repeat("81", MaxNesting) + "01" // [[[…1…]]], one level too deep inside the map
	for _, tc := range []struct {
		name, hex string
		ok        bool
	}{
		{"valid", "a1016161", true},
		{"indefinite map", "bf016161ff", false},
		{"indefinite text", "a1017f6161ff", false},
		{"indefinite array", "a102" + "9f6161ff", false},
		{"invalid UTF-8", "a10161ff", false},
		{"duplicate key", "a2016161016162", false},
		{"tag", "a101c16161", false},
		{"too deep", "a103" + deep, false},
		{"too many elements", "a102" + "9a00001001" + strings.Repeat("6161", MaxElements+1), false},
		{"trailing bytes", "a101616100", false},
	} {
		b, err := hex.DecodeString(tc.hex)
		if err != nil {
			t.Fatal(tc.name, err)
		}
		for name, dm := range map[string]interface{ Unmarshal([]byte, any) error }{"DecMode": DecMode, "StrictDecMode": StrictDecMode} {
			var r rec
			err := dm.Unmarshal(b, &r)
			if tc.ok && err != nil {
				t.Errorf("%s: %s: %v", name, tc.name, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("%s: %s: decoded %+v, want an error", name, tc.name, r)
			}
		}
	}
}

// TestStrictRefusesUnknownFields: DecMode ignores a field it does not
// know; StrictDecMode refuses it.
func TestStrictRefusesUnknownFields(t *testing.T) {
	b, _ := hex.DecodeString("a20161610901") // {1: "a", 9: 1}
	var r rec
	if err := DecMode.Unmarshal(b, &r); err != nil || r.A != "a" {
		t.Errorf("DecMode: %+v, %v", r, err)
	}
	if err := StrictDecMode.Unmarshal(b, &r); err == nil {
		t.Error("StrictDecMode accepted an unknown field")
	}
}

// TestDeterministicEncoding: one value, one encoding (keys sorted,
// shortest integers).
func TestDeterministicEncoding(t *testing.T) {
	b, err := EncMode.Marshal(map[int]uint64{2: 1, 1: 24})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != "a20118180201" {
		t.Errorf("encoding %s, want a20118180201", got)
	}
}
