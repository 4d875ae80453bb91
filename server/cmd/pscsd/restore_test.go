package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/store"
)

// TestAsideDirOfOneSecond: two restores in one second keep their replaced
// files apart; the first one's stay as they were.
func TestAsideDirOfOneSecond(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 6, 3, 30, 0, 0, time.UTC)
	first, err := asideDir(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(first, "store"), []byte("the first restore's"), 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := asideDir(dir, now.Add(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatalf("both restores move their files to %s", first)
	}
	if want := filepath.Join(dir, "replaced-20261206T033000Z-2"); second != want {
		t.Errorf("second: %s, want %s", second, want)
	}
	if b, err := os.ReadFile(filepath.Join(first, "store")); err != nil || string(b) != "the first restore's" {
		t.Errorf("the first restore's files: %q, %v", b, err)
	}
	if _, err := os.ReadDir(second); err != nil {
		t.Error(err)
	}
}

// TestRevokeAllCarriesCardState: the revocations of what is unknown
// (pscsd recover, pscsd restore) carry the newest state of the card
// beside each delegation's: the policy rebuilt from the log takes a
// card's lock and wrong passphrases from the newest record naming it,
// so a revocation without them would reset them.
func TestRevokeAllCarriesCardState(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "store"), wrongKey{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := audit.Open(filepath.Join(dir, "audit.log"), wrongKey{}, audit.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, d := range []policy.Delegation{{ID: "d1", Delegate: "bob", Card: "mayor"}, {ID: "d2", Delegate: "carol", Card: "mayor"}} {
		b, err := store.EncodeDelegation(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(store.KindDelegation, d.ID, b); err != nil {
			t.Fatal(err)
		}
	}
	known := marks{}
	known.add(&audit.Record{Delegation: "d1", Policy: &audit.Policy{Serial: 4, Card: "mayor", Used: 3}})
	known.add(&audit.Record{Policy: &audit.Policy{Serial: 7, Card: "mayor", CardLock: 6, WrongPassphrase: 2}})
	var got []*audit.Record
	revoked, err := revokeAll(context.Background(), l, st, known.maxSerial(), known.newest, "recover:policy", "test",
		func(r *audit.Record) { got = append(got, r) })
	if err != nil || len(revoked) != 2 || len(got) != 2 {
		t.Fatalf("revokeAll: %v %v, %d records", revoked, err, len(got))
	}
	for i, r := range got {
		p := r.Policy
		if !p.Revoked || p.Serial != uint64(8+i) || p.CardLock != 6 || p.WrongPassphrase != 2 || !server.Revoked(st, r.Delegation) {
			t.Errorf("%s: %+v, revoked in the store %v; want revoked, serial %d, the card's lock 6 and 2 wrong passphrases",
				r.Delegation, *p, server.Revoked(st, r.Delegation), 8+i)
		}
	}
	if got[0].Policy.Used != 3 {
		t.Errorf("d1's use count %d, want 3", got[0].Policy.Used)
	}
}
