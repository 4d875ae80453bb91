package store

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/pscs/pscs/internal/durable"
)

// threeRecords makes a store with a, b and c (identities) and returns its path.
func threeRecords(t *testing.T) string {
	t.Helper()
	path := tempStore(t)
	s := mustOpen(t, path)
	mustPut(t, s, KindIdentity, "a", "value-a")
	mustPut(t, s, KindIdentity, "b", "value-b")
	mustPut(t, s, KindIdentity, "c", "value-c")
	mustPut(t, s, KindConfig, "z", "last")
	s.Close()
	return path
}

func TestDetectFlippedByte(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fixCRC bool // recompute the checksum, as a deliberate editor would
		want   Reason
	}{
		{"raw flip", false, ReasonDamaged},
		{"flip with checksum fixed", true, ReasonForged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := threeRecords(t)
			data, fs := readFrames(t, path)
			f := findFrame(t, fs, KindIdentity, "b")
			i := f.off + f.n - frameTrailer - 32 - 1 // last byte of the value
			data[i] ^= 0x01
			if tc.fixCRC {
				end := f.off + f.n - frameTrailer
				binary.BigEndian.PutUint32(data[end:], durable.CRC(data[f.off:end]))
			}
			writeFile(t, path, data)

			s, ps := openProblems(t, path)
			if !hasProblem(ps, KindIdentity, "b", tc.want) {
				t.Errorf("problems %v do not name identity b as %v", ps, tc.want)
			}
			if len(ps) != 1 {
				t.Errorf("%d problems, want exactly 1", len(ps))
			}
			wantBad(t, s, KindIdentity, "b")
			wantGet(t, s, KindIdentity, "a", "value-a")
			wantGet(t, s, KindIdentity, "c", "value-c")
			if rep, err := s.Verify(); err == nil || !hasProblem(rep.Problems, KindIdentity, "b", tc.want) {
				t.Errorf("Verify = %v, want the same problem", err)
			}
		})
	}
}

func TestDetectDeletedRecord(t *testing.T) {
	path := threeRecords(t)
	data, fs := readFrames(t, path)
	f := findFrame(t, fs, KindIdentity, "b")
	writeFile(t, path, slices.Delete(data, f.off, f.off+f.n))

	s, ps := openProblems(t, path)
	if !hasProblem(ps, KindIdentity, "b", ReasonRemoved) {
		t.Errorf("problems %v do not name identity b as removed", ps)
	}
	wantBad(t, s, KindIdentity, "b") // not silently "not found"
	wantGet(t, s, KindIdentity, "a", "value-a")
	wantGet(t, s, KindIdentity, "c", "value-c")

	// A new write fixes the record; Compact acknowledges the report.
	mustPut(t, s, KindIdentity, "b", "re-enrolled")
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(); err != nil {
		t.Errorf("Verify after repair: %v", err)
	}
}

func TestDetectDeletedRecordAfterCompaction(t *testing.T) {
	path := threeRecords(t)
	s := mustOpen(t, path)
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, victim := range []string{"b", "z"} { // middle, and last compacted record
		t.Run(victim, func(t *testing.T) {
			data, fs := readFrames(t, path)
			kind := KindIdentity
			if victim == "z" {
				kind = KindConfig
			}
			f := findFrame(t, fs, kind, victim)
			p := tempStore(t)
			writeFile(t, p, slices.Delete(slices.Clone(data), f.off, f.off+f.n))
			_, ps := openProblems(t, p)
			if victim == "b" && !hasProblem(ps, kind, victim, ReasonRemoved) {
				t.Errorf("problems %v do not name %s as removed", ps, victim)
			}
			if !slices.ContainsFunc(ps, func(p Problem) bool { return p.Reason == ReasonRemoved }) {
				t.Errorf("no removal reported: %v", ps)
			}
		})
	}
}

func TestDetectOldCopy(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	mustPut(t, s, KindDelegation, "d1", "limit=100")
	mustPut(t, s, KindIdentity, "a", "value-a")
	mustPut(t, s, KindDelegation, "d1", "revoked")
	mustPut(t, s, KindIdentity, "c", "value-c")
	s.Close()
	data, fs := readFrames(t, path)
	old := fs[1] // d1 = limit=100, a valid frame with a valid MAC
	cur := findFrame(t, fs, KindDelegation, "d1")
	if string(old.b.Value) != "limit=100" || string(cur.b.Value) != "revoked" {
		t.Fatal("test setup: wrong frames")
	}
	oldBytes := slices.Clone(data[old.off : old.off+old.n])
	data = slices.Replace(data, cur.off, cur.off+cur.n, oldBytes...)
	writeFile(t, path, data)

	s, ps := openProblems(t, path)
	if !hasProblem(ps, KindDelegation, "d1", ReasonOldCopy) {
		t.Errorf("problems %v do not name delegation d1 as an old copy", ps)
	}
	wantBad(t, s, KindDelegation, "d1") // never "limit=100" again
	wantGet(t, s, KindIdentity, "a", "value-a")
	wantGet(t, s, KindIdentity, "c", "value-c")
}

func TestDetectOldCopyAcrossCompaction(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	mustPut(t, s, KindVault, "d1", "entry-1")
	mustPut(t, s, KindVault, "d2", "entry-2")
	oldData, _ := os.ReadFile(path)
	mustPut(t, s, KindVault, "d1", "entry-1b")
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, KindConfig, "after", "x")
	s.Close()
	// Take the old d1 frame from the old file and put it in place of the
	// compacted d1.
	_, oldFs := func() ([]byte, []diskFrame) {
		p := tempStore(t)
		writeFile(t, p, oldData)
		return readFrames(t, p)
	}()
	of := findFrame(t, oldFs, KindVault, "d1")
	data, fs := readFrames(t, path)
	cf := findFrame(t, fs, KindVault, "d1")
	data = slices.Replace(data, cf.off, cf.off+cf.n, oldData[of.off:of.off+of.n]...)
	writeFile(t, path, data)
	s, ps := openProblems(t, path)
	if !hasProblem(ps, KindVault, "d1", ReasonOldCopy) && !hasProblem(ps, KindVault, "d1", ReasonRemoved) {
		t.Errorf("problems %v do not name vault d1", ps)
	}
	wantBad(t, s, KindVault, "d1")
	wantGet(t, s, KindVault, "d2", "entry-2")
}

func TestDetectRollback(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	mustPut(t, s, KindDelegation, "d1", "active")
	oldData, _ := os.ReadFile(path)
	mustPut(t, s, KindDelegation, "d1", "revoked")
	head := s.Head()
	s.Close()

	writeFile(t, path, oldData)
	// Without an anchor a whole-file rollback is undetectable: the old
	// file is valid in every respect. This is the documented limitation.
	s = mustOpen(t, path)
	wantGet(t, s, KindDelegation, "d1", "active")
	s.Close()

	s, ps := openProblems(t, path, WithAnchor(head))
	if !slices.ContainsFunc(ps, func(p Problem) bool { return p.Reason == ReasonRollback }) {
		t.Errorf("problems %v: no rollback", ps)
	}
	s.Close()

	// An anchor from another history at the same version is refused too.
	forged := head
	forged.Version = 1
	forged.Hash[0] ^= 1
	_, ps = openProblems(t, path, WithAnchor(forged))
	if !slices.ContainsFunc(ps, func(p Problem) bool { return p.Reason == ReasonRollback }) {
		t.Errorf("problems %v: no mismatch", ps)
	}
}

func TestAnchorSurvivesCompaction(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	mustPut(t, s, KindCard, "c1", "x")
	mustPut(t, s, KindCard, "c2", "y")
	before := s.Head()
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if s.Head() != before {
		t.Error("Compact changed the head")
	}
	mustPut(t, s, KindCard, "c3", "z")
	s.Close()
	s = mustOpen(t, path, WithAnchor(before))
	s.Close()
}

func TestVerifyWhileOpen(t *testing.T) {
	path := threeRecords(t)
	s := mustOpen(t, path)
	defer s.Close()
	data, fs := readFrames(t, path)
	f := findFrame(t, fs, KindIdentity, "c")
	writeFile(t, path, slices.Delete(data, f.off, f.off+f.n))
	rep, err := s.Verify()
	if !errors.Is(err, ErrIntegrity) || !hasProblem(rep.Problems, KindIdentity, "c", ReasonRemoved) {
		t.Errorf("Verify = %v, %v; want identity c removed", rep, err)
	}
	wantGet(t, s, KindIdentity, "c", "value-c") // memory is still right
}

func TestNotAStore(t *testing.T) {
	path := tempStore(t)
	writeFile(t, path, []byte("hello"))
	if s, err := Open(path, testMAC); s != nil || !errors.Is(err, ErrIntegrity) {
		t.Errorf("Open(garbage) = %v, %v", s, err)
	}
}

func TestWrongKey(t *testing.T) {
	path := threeRecords(t)
	s, err := Open(path, hmacMACer("another machine's key"))
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Open with another key = %v", err)
	}
	defer s.Close()
	wantBad(t, s, KindIdentity, "a")
}

func TestTornTailIsDropped(t *testing.T) {
	path := threeRecords(t)
	data, fs := readFrames(t, path)
	last := fs[len(fs)-1]
	torn := data[:last.off+last.n/2] // the last write stopped half way
	writeFile(t, path, torn)
	s := mustOpen(t, path)
	defer s.Close()
	if s.Recovered() == 0 {
		t.Error("Recovered = 0 after a torn write")
	}
	if _, err := s.Get(KindConfig, "z"); !errors.Is(err, ErrNotFound) {
		t.Errorf("torn write visible: %v", err)
	}
	wantGet(t, s, KindIdentity, "c", "value-c")
	mustPut(t, s, KindConfig, "z", "again")
	if _, err := s.Verify(); err != nil {
		t.Error(err)
	}
}
