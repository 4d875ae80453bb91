package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/server/vault"
	ptransport "github.com/pscs/pscs/transport"
)

// TestVaultPINsGuessLimit: on a TPM simulator, VaultPINs passes the
// vault's refusals on as the server's: wrong vPINs as ErrWrongVPIN until
// only the TPM's reserve is left, then ErrGuessLimit, for the delegation's
// vPIN and the owner's passphrase alike.
func TestVaultPINsGuessLimit(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	da := vault.DA{MaxTries: 6, Recovery: time.Hour, LockoutRecovery: time.Hour, Reserve: 2}
	v, err := vault.Open(transport.FromReadWriteCloser(sim), t.TempDir(),
		vault.WithParams(vault.Params{Time: 1, Memory: 64, Threads: 1}), vault.WithDA(da))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	p := &server.VaultPINs{Vault: v}
	if _, err := p.SealOwnerPIN("mayor", []byte("passphrase"), []byte("123456")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Delegate("mayor", "d1", []byte("passphrase"), []byte("2718")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range int(da.MaxTries - da.Reserve) {
		if _, err := p.OpenPIN(ctx, "d1", []byte("0000")); !errors.Is(err, server.ErrWrongVPIN) {
			t.Fatalf("wrong vPIN %d: %v, want ErrWrongVPIN", i+1, err)
		}
	}
	if _, err := p.OpenPIN(ctx, "d1", []byte("2718")); !errors.Is(err, server.ErrGuessLimit) || errors.Is(err, server.ErrWrongVPIN) {
		t.Errorf("right vPIN at the reserve: %v, want ErrGuessLimit only", err)
	}
	if _, err := p.Delegate("mayor", "d2", []byte("passphrase"), []byte("1414")); !errors.Is(err, server.ErrGuessLimit) {
		t.Errorf("owner passphrase at the reserve: %v, want ErrGuessLimit", err)
	}
}

// TestVaultPINsSeveralPINs: an owner registers two PINs of a card (the
// default one and "pin2"); a delegation gets a copy of each under its one
// vPIN, named so that the store keeps them apart; entries sealed before
// cards had several PINs (the default PIN, under the card's or the
// delegation's name alone) still open, as the default PIN.
func TestVaultPINsSeveralPINs(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	v, err := vault.Open(transport.FromReadWriteCloser(sim), t.TempDir(),
		vault.WithParams(vault.Params{Time: 1, Memory: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	ctx := context.Background()
	pass := []byte("passphrase")
	p := &server.VaultPINs{Vault: v}

	// An owner entry as v1/v2 sealed it: the card's name alone.
	old, err := v.Seal(pass, []byte("11111"), []byte("pscs owner PIN\x00eid"))
	if err != nil {
		t.Fatal(err)
	}
	p.LoadOwnerPIN("eid", old)
	if _, err := p.SealOwnerPINSlot("eid", "pin2", pass, []byte("22222")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Delegate("eid", "d1", pass, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	names := p.Entries("d1")
	if _, ok := names["d1"]; !ok || len(names) != 2 {
		t.Fatalf("entries of d1: %v, want d1 and %s", names, server.PINName("d1", "pin2"))
	}
	if _, ok := names[server.PINName("d1", "pin2")]; !ok {
		t.Fatalf("entries of d1: %v, no pin2", names)
	}
	pins, err := p.OpenPINs(ctx, "d1", []byte("2718"))
	if err != nil {
		t.Fatal(err)
	}
	if string(pins[""]) != "11111" || string(pins["pin2"]) != "22222" || len(pins) != 2 {
		t.Errorf("OpenPINs = %q, want the default PIN and pin2", pins)
	}
	if pin, err := p.OpenPIN(ctx, "d1", []byte("2718")); err != nil || string(pin) != "11111" {
		t.Errorf("OpenPIN = %q, %v; want the default PIN", pin, err)
	}
	if _, err := p.OpenPINs(ctx, "d1", []byte("0000")); !errors.Is(err, server.ErrWrongVPIN) {
		t.Errorf("OpenPINs with a wrong vPIN: %v, want ErrWrongVPIN", err)
	}

	// A delegation entry as v1/v2 sealed it opens as the default PIN.
	oldD, err := v.Seal([]byte("1414"), []byte("123456"), []byte("pscs delegation\x00d-old"))
	if err != nil {
		t.Fatal(err)
	}
	p.Load("d-old", oldD)
	if pins, err := p.OpenPINs(ctx, "d-old", []byte("1414")); err != nil || string(pins[""]) != "123456" || len(pins) != 1 {
		t.Errorf("OpenPINs of an old entry = %q, %v", pins, err)
	}

	p.Forget("d1")
	if n := len(p.Entries("d1")); n != 0 {
		t.Errorf("%d entries of d1 after Forget", n)
	}
	if base, slot := server.SplitPINName(server.PINName("card#x", "pin2")); base != "card#x" || slot != "pin2" {
		t.Errorf("SplitPINName(PINName) = %q, %q", base, slot)
	}
}

// TestLoadStateSeveralPINs: the sealed copies of every PIN of a card,
// kept in the store under their entry names, load back (the owner's and a
// delegation's); those of a revoked delegation do not.
func TestLoadStateSeveralPINs(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	v, err := vault.Open(transport.FromReadWriteCloser(sim), t.TempDir(),
		vault.WithParams(vault.Params{Time: 1, Memory: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	pass := []byte("passphrase")
	st := &memStore{m: map[string][]byte{}}
	put := func(kind, key string, b []byte) {
		if err := st.Put(kind, key, b); err != nil {
			t.Fatal(err)
		}
	}
	p := &server.VaultPINs{Vault: v}
	for slot, pin := range map[string]string{"": "1111", "pin2": "22222"} {
		e, err := p.SealOwnerPINSlot("eid", slot, pass, []byte(pin))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := e.MarshalBinary()
		put(store.KindVault, "owner-pin:"+server.PINName("eid", slot), b)
	}
	for _, id := range []string{"d-kept", "d-revoked"} {
		if _, err := p.Delegate("eid", id, pass, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		for name, e := range p.Entries(id) {
			b, _ := e.MarshalBinary()
			put(store.KindVault, name, b)
		}
		db, err := store.EncodeDelegation(policy.Delegation{ID: id, Owner: "alice", Delegate: "bob", Card: "eid"})
		if err != nil {
			t.Fatal(err)
		}
		put(store.KindDelegation, id, db)
	}
	put(store.KindConfig, "revoked:d-revoked", []byte("2026-12-04T00:00:00Z"))

	loaded := &server.VaultPINs{Vault: v}
	if err := server.LoadState(st, policy.NewBook(nil), ptransport.NewStaticEnrollment(), loaded); err != nil {
		t.Fatal(err)
	}
	pins, err := loaded.OpenPINs(context.Background(), "d-kept", []byte("2718"))
	if err != nil || string(pins[""]) != "1111" || string(pins["pin2"]) != "22222" {
		t.Errorf("loaded d-kept: %q, %v", pins, err)
	}
	if n := len(loaded.Entries("d-revoked")); n != 0 {
		t.Errorf("%d entries of the revoked delegation loaded", n)
	}
	if _, err := loaded.Delegate("eid", "d-new", pass, []byte("1414")); err != nil {
		t.Fatal(err)
	}
	if n := len(loaded.Entries("d-new")); n != 2 {
		t.Errorf("a new delegation from the loaded owner PINs has %d entries, want 2", n)
	}
}
