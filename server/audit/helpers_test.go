package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// hmacMACer is the test MACer: HMAC-SHA256 under a fixed key, with the
// label bound in front of the data.
type hmacMACer struct{ key []byte }

func (h hmacMACer) MAC(label string, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil), nil
}

var (
	testKey  MACer = hmacMACer{key: []byte("pscs audit test key: not a secret")}
	otherKey MACer = hmacMACer{key: []byte("some other machine's key")}
)

// fixedNow is a clock for reproducible files.
func fixedNow() time.Time { return time.UnixMilli(1_760_000_000_000) }

// testRecord is a plausible record number i.
func testRecord(i int) *Record {
	r := &Record{
		Identity: fmt.Sprintf("delegate-%d@example.org", i%3),
		Op:       "sign",
		Evidence: bytes.Repeat([]byte{0xd2, byte(i)}, 40), // stands in for a COSE_Sign1
		Card:     "piv:reader0",
		Result:   bytes.Repeat([]byte{byte(i)}, 64),
		Timings:  map[string]int64{"policy": 12, "card": 41000 + int64(i)},
	}
	if i%3 == 2 {
		r.Delegation = "d-0123456789ab"
		r.Policy = &Policy{Serial: uint64(10 * i), Time: fixedNow().UnixMilli() + 1, Events: 1, Card: "mayor", Used: uint64(i), WrongVPIN: 1, CardLock: 3, WrongPassphrase: 2}
	}
	if i%4 == 3 {
		r.Decision = 7
		r.Card, r.Result = "", nil
	}
	return r
}

// createLog writes a log of n test records at dir/name and returns its path
// and the head after each record (heads[i] is the head after record i+1).
func createLog(t testing.TB, dir string, n int) (string, []Anchor) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, testKey, Options{NoSync: true, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	var heads []Anchor
	for i := 1; i <= n; i++ {
		seq, err := l.Append(context.Background(), testRecord(i))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("Append #%d: got seq %d", i, seq)
		}
		s, h := l.Head()
		heads = append(heads, Anchor{Seq: s, Hash: h})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, heads
}

// span is where one frame lies in a file.
type span struct{ off, end int }

// frameSpans splits an intact log file into frames.
func frameSpans(t testing.TB, data []byte) []span {
	t.Helper()
	var s []span
	for off := headerSize; off < len(data); {
		if len(data)-off < frameOverhead {
			t.Fatalf("frameSpans: %d stray bytes at %d", len(data)-off, off)
		}
		end := off + frameOverhead + int(binary.BigEndian.Uint32(data[off:]))
		s = append(s, span{off, end})
		off = end
	}
	return s
}

// rebuild makes a log file from a header and frames.
func rebuild(data []byte, frames [][]byte) []byte {
	out := append([]byte(nil), data[:headerSize]...)
	for _, f := range frames {
		out = append(out, f...)
	}
	return out
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// verifyFile runs Verify on a file.
func verifyFile(t testing.TB, path string, mac MACer, opts ...VerifyOption) (int, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Verify(f, mac, nil, opts...)
}
