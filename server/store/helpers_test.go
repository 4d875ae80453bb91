package store

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// hmacMACer is a fixed-key HMAC-SHA256 MACer for tests.
type hmacMACer []byte

func (k hmacMACer) MAC(label string, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil), nil
}

var testMAC = hmacMACer("pscs store test key, not secret")

func tempStore(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "pscs.store")
}

func mustOpen(t *testing.T, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(path, testMAC, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustPut(t *testing.T, s *Store, kind, key, value string) {
	t.Helper()
	if err := s.Put(kind, key, []byte(value)); err != nil {
		t.Fatalf("Put(%s, %s): %v", kind, key, err)
	}
}

// diskFrame is one frame as found in a file.
type diskFrame struct {
	off, n int
	b      body
}

func readFrames(t *testing.T, path string) ([]byte, []diskFrame) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fs []diskFrame
	for pos := len(fileMagic); pos < len(data); {
		enc, _, n, st := readFrame(data[pos:])
		if st != frameOK {
			t.Fatalf("frame at %d: status %d", pos, st)
		}
		b, err := parseBody(enc)
		if err != nil {
			t.Fatalf("frame at %d: %v", pos, err)
		}
		fs = append(fs, diskFrame{pos, n, b})
		pos += n
	}
	return data, fs
}

// findFrame returns the last frame for (kind, key).
func findFrame(t *testing.T, fs []diskFrame, kind, key string) diskFrame {
	t.Helper()
	for i := len(fs) - 1; i >= 0; i-- {
		if kindNames[fs[i].b.Kind] == kind && fs[i].b.Key == key {
			return fs[i]
		}
	}
	t.Fatalf("no frame for %s %q", kind, key)
	return diskFrame{}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// openProblems opens path expecting an *IntegrityError and returns the
// store and the problems.
func openProblems(t *testing.T, path string, opts ...Option) (*Store, []Problem) {
	t.Helper()
	s, err := Open(path, testMAC, opts...)
	var ie *IntegrityError
	if !errors.As(err, &ie) || !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Open = %v, want *IntegrityError", err)
	}
	if s == nil {
		t.Fatal("Open returned no store with its report")
	}
	t.Cleanup(func() { s.Close() })
	for _, p := range ie.Problems {
		t.Logf("reported: %v", p)
	}
	return s, ie.Problems
}

func hasProblem(ps []Problem, kind, key string, r Reason) bool {
	for _, p := range ps {
		if p.Kind == kind && p.Key == key && p.Reason == r {
			return true
		}
	}
	return false
}

func wantGet(t *testing.T, s *Store, kind, key, want string) {
	t.Helper()
	got, err := s.Get(kind, key)
	if err != nil || !bytes.Equal(got, []byte(want)) {
		t.Errorf("Get(%s, %s) = %q, %v; want %q", kind, key, got, err, want)
	}
}

func wantBad(t *testing.T, s *Store, kind, key string) {
	t.Helper()
	got, err := s.Get(kind, key)
	var ie *IntegrityError
	if !errors.As(err, &ie) || got != nil {
		t.Errorf("Get(%s, %s) = %q, %v; want *IntegrityError and no bytes", kind, key, got, err)
	}
}
