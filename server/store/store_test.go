package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pscs/pscs/server/policy"
)

func TestPutGetDeleteList(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	if v := s.Version(); v != 0 {
		t.Errorf("new store Version = %d, want 0", v)
	}
	mustPut(t, s, KindIdentity, "alice", "cert-a")
	mustPut(t, s, KindIdentity, "bob", "cert-b")
	mustPut(t, s, KindCard, "pool1", "card config")
	mustPut(t, s, KindIdentity, "alice", "cert-a2")
	if err := s.Delete(KindIdentity, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(KindIdentity, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete twice = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(KindIdentity, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get deleted = %v, want ErrNotFound", err)
	}
	if err := s.Put("nonsense", "x", nil); err == nil {
		t.Error("Put of unknown kind succeeded")
	}
	if err := s.Put(KindConfig, "", nil); err == nil {
		t.Error("Put of empty key succeeded")
	}
	if v := s.Version(); v != 5 {
		t.Errorf("Version = %d, want 5", v)
	}
	head := s.Head()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, path, WithAnchor(head))
	defer s.Close()
	wantGet(t, s, KindIdentity, "alice", "cert-a2")
	wantGet(t, s, KindCard, "pool1", "card config")
	if got, _ := s.List(KindIdentity); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("List = %q", got)
	}
	if s.Version() != 5 || s.Head() != head {
		t.Errorf("after reopen Version/Head = %d/%x, want %d/%x", s.Version(), s.Head().Hash, head.Version, head.Hash)
	}
	if rep, err := s.Verify(); err != nil || !rep.OK() || rep.Records != 2 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	defer s.Close()
	if s2, err := Open(path, testMAC); err == nil {
		s2.Close()
		t.Error("second Open of the same file succeeded")
	}
}

func TestCompaction(t *testing.T) {
	old := compactMinBytes
	compactMinBytes = 4096
	t.Cleanup(func() { compactMinBytes = old })
	path := tempStore(t)
	s := mustOpen(t, path)
	for i := range 2000 {
		mustPut(t, s, KindVault, fmt.Sprintf("k%02d", i%40), fmt.Sprintf("value %d", i))
	}
	if err := s.Delete(KindVault, "k00"); err != nil {
		t.Fatal(err)
	}
	head := s.Head()
	s.Close()
	if fi, _ := os.Stat(path); fi.Size() > 3*compactMinBytes {
		t.Errorf("file is %d bytes after 2000 writes of 40 keys: no compaction?", fi.Size())
	}
	s = mustOpen(t, path, WithAnchor(head))
	defer s.Close()
	if s.Version() != 2001 {
		t.Errorf("Version = %d, want 2001", s.Version())
	}
	for i := 1; i < 40; i++ {
		wantGet(t, s, KindVault, fmt.Sprintf("k%02d", i), fmt.Sprintf("value %d", 1960+i))
	}
	if _, err := s.Get(KindVault, "k00"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get deleted = %v", err)
	}
	if _, err := s.Verify(); err != nil {
		t.Error(err)
	}
}

// TestNotEncrypted shows that the store keeps values as given: a known
// string Put is found by grepping the file, so the same grep finding
// nothing for a real PIN (in the vault tests) means something. Secrets
// must be sealed before Put.
func TestNotEncrypted(t *testing.T) {
	path := tempStore(t)
	s := mustOpen(t, path)
	blob := []byte("sealed-vault-entry:KNOWN-MARKER-4711:end")
	if err := s.Put(KindVault, "d1", blob); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(KindVault, "d1")
	if err != nil || !bytes.Equal(got, blob) {
		t.Errorf("Get = %q, %v; want the blob as given", got, err)
	}
	s.Close()
	data, _ := os.ReadFile(path)
	if !bytes.Contains(data, []byte("KNOWN-MARKER-4711")) {
		t.Error("grep does not find a value stored in clear: the grep method would prove nothing")
	}
	if bytes.Contains(data, []byte("NEVER-PUT-9999")) {
		t.Error("grep finds a string that was never stored")
	}
}

func TestDelegationRoundTrip(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		loc = time.FixedZone("X", 3600)
	}
	d := policy.Delegation{ID: "d1", Owner: "alice", Delegate: "bob", Card: "pool", Ops: []string{"sign"},
		NotBefore: time.Unix(1700000000, 5).UTC(), NotAfter: time.Unix(1800000000, 0).UTC(),
		Hours: &policy.Hours{Days: 0x3e, From: 480, To: 1080, Location: loc}, PerHour: 10, Total: 100,
		Documents: [][]byte{{1, 2, 3}}, Warranty: true, MaxWrongVPIN: 3}
	enc, err := EncodeDelegation(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDelegation(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hours.Location.String() != loc.String() && loc.String() != "X" {
		t.Errorf("location %v, want %v", got.Hours.Location, loc)
	}
	got.Hours.Location, d.Hours.Location = nil, nil
	gh, dh := *got.Hours, *d.Hours
	got.Hours, d.Hours = nil, nil
	if fmt.Sprint(got) != fmt.Sprint(d) || gh != dh {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, d)
	}
	if enc[0]>>5 != 5 || enc[1] != 0x01 {
		t.Errorf("encoding %x does not start with a map keyed by integer 1", enc[:4])
	}
}

func TestAnchorEncoding(t *testing.T) {
	a := Anchor{Version: 42, Hash: [32]byte{1, 2, 3}}
	b, _ := a.MarshalBinary()
	var got Anchor
	if err := got.UnmarshalBinary(b); err != nil || got != a {
		t.Errorf("round trip = %+v, %v", got, err)
	}
}
