package apdu

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// h decodes hex with optional spaces; "" gives nil.
func h(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.ReplaceAll(s, " ", "")
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// seq returns n bytes 0, 1, 2, … (mod 256), prefixed by start.
func seq(start []byte, n int) []byte {
	b := append([]byte(nil), start...)
	for i := range n {
		b = append(b, byte(i))
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
