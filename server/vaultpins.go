package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pscs/pscs/profiles"

	"github.com/pscs/pscs/server/vault"
)

// VaultPINs is the PINVault of pscsd: each delegation's copy of the card's
// real PIN, sealed in a vault.Vault under the delegation's virtual PIN and
// this machine's TPM. Only the sealed entries are kept; a real PIN exists
// in clear only between OpenPIN and the end of the session that uses it.
//
// # One registered PIN per card PIN
//
// A card may have several PINs (EstEID: PIN1 for authentication, PIN2 for
// signatures; see profiles.Card.PINs). The owner registers each; a
// delegation gets a copy of each under its one virtual PIN. Entries are
// named by card (owner) or delegation, and PIN slot: the card's default
// PIN (its first, the PIV PIN on PIV cards) has slot "" and is named by
// the card or delegation alone, as entries were before cards had several
// PINs, so existing v1/v2 entries open unchanged; another PIN is named
// [PINName](base, pinID), with its own vault context.
//
// VaultPINs is safe for concurrent use.
type VaultPINs struct {
	Vault *vault.Vault

	mu      sync.RWMutex
	entries map[string]*vault.Entry // by delegation
	owners  map[string]*vault.Entry // by card: the owner's registered PIN
}

func vaultContext(name string) []byte {
	base, slot := SplitPINName(name)
	if slot == "" {
		return []byte("pscs delegation\x00" + base)
	}
	return []byte("pscs delegation\x00" + base + "\x00pin\x00" + slot)
}

// pinMarker separates a card's or delegation's name from a PIN slot in
// the name of a sealed entry (and of its store record).
const pinMarker = "#pin:"

// PINName is the name of the sealed entry of PIN slot of base, a card or
// delegation: base itself for the default PIN (slot ""), base#pin:slot
// otherwise.
func PINName(base, slot string) string {
	if slot == "" {
		return base
	}
	return base + pinMarker + slot
}

// SplitPINName undoes PINName.
func SplitPINName(name string) (base, slot string) {
	if i := strings.LastIndex(name, pinMarker); i >= 0 {
		return name[:i], name[i+len(pinMarker):]
	}
	return name, ""
}

// PINSlot is the slot under which the vault keeps PIN pinID of a card
// whose PINs are pins: "" for the default (first) PIN, else pinID.
func PINSlot(pins []profiles.PINInfo, pinID string) string {
	if pinID == profiles.DefaultPIN(pins) {
		return ""
	}
	return pinID
}

// Register seals pin for delegation under vpin, replacing an earlier entry.
func (p *VaultPINs) Register(delegation string, vpin, pin []byte) error {
	e, err := p.Vault.Seal(vpin, pin, vaultContext(delegation))
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.entries == nil {
		p.entries = map[string]*vault.Entry{}
	}
	p.entries[delegation] = e
	return nil
}

// Load installs a sealed entry read back from the store.
func (p *VaultPINs) Load(delegation string, e *vault.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.entries == nil {
		p.entries = map[string]*vault.Entry{}
	}
	p.entries[delegation] = e
}

// Entry returns the sealed entry of delegation, for the store.
func (p *VaultPINs) Entry(delegation string) (*vault.Entry, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.entries[delegation]
	return e, ok
}

// OpenPINs implements PINsVault: every PIN of the delegation, by slot.
// A wrong vpin is found on the first entry tried, the default PIN's.
func (p *VaultPINs) OpenPINs(_ context.Context, delegation string, vpin []byte) (map[string][]byte, error) {
	p.mu.RLock()
	names := p.namesLocked(p.entries, delegation)
	es := make([]*vault.Entry, len(names))
	for i, n := range names {
		es[i] = p.entries[n]
	}
	p.mu.RUnlock()
	if len(names) == 0 {
		return nil, fmt.Errorf("server: no sealed PIN for delegation %s", delegation)
	}
	out := map[string][]byte{}
	for i, n := range names {
		pin, err := p.Vault.Unseal(es[i], vpin, vaultContext(n))
		if err != nil {
			for _, b := range out {
				clear(b)
			}
			return nil, vaultError(err)
		}
		_, slot := SplitPINName(n)
		out[slot] = pin
	}
	return out, nil
}

// namesLocked lists the entry names of base in m, the default PIN's first.
func (p *VaultPINs) namesLocked(m map[string]*vault.Entry, base string) []string {
	var names []string
	for n := range m {
		if b, _ := SplitPINName(n); b == base {
			names = append(names, n)
		}
	}
	slices.Sort(names) // base sorts before base#pin:…
	return names
}

// Entries returns the sealed entries of delegation by entry name
// ([PINName]), for the store.
func (p *VaultPINs) Entries(delegation string) map[string]*vault.Entry {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := map[string]*vault.Entry{}
	for _, n := range p.namesLocked(p.entries, delegation) {
		out[n] = p.entries[n]
	}
	return out
}

// OpenPIN implements PINVault: the delegation's default PIN.
func (p *VaultPINs) OpenPIN(_ context.Context, delegation string, vpin []byte) ([]byte, error) {
	p.mu.RLock()
	e, ok := p.entries[delegation]
	p.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("server: no sealed PIN for delegation %s", delegation)
	}
	pin, err := p.Vault.Unseal(e, vpin, vaultContext(delegation))
	return pin, vaultError(err)
}

// vaultError maps the vault's refusals of a vPIN to the server's:
// vault.ErrWrongVPIN to ErrWrongVPIN, vault.ErrGuessLimit to ErrGuessLimit
// (each wrapping the vault's error, whose details stay in the log).
func vaultError(err error) error {
	switch {
	case errors.Is(err, vault.ErrWrongVPIN):
		return ErrWrongVPIN
	case errors.Is(err, vault.ErrGuessLimit):
		return fmt.Errorf("%w (%v)", ErrGuessLimit, err)
	}
	return err
}

// ErrNoOwnerPIN: the owner has not registered the card's PIN.
var ErrNoOwnerPIN = errors.New("server: the card's PIN is not registered")

func ownerContext(name string) []byte {
	card, slot := SplitPINName(name)
	if slot == "" {
		return []byte("pscs owner PIN\x00" + card)
	}
	return []byte("pscs owner PIN\x00" + card + "\x00pin\x00" + slot)
}

// SealOwnerPIN seals a card's real default PIN, which the owner
// registered, under the owner's passphrase (and the TPM): the only copy
// from which the copies of new delegations are made. It replaces an
// earlier one.
func (p *VaultPINs) SealOwnerPIN(card string, passphrase, pin []byte) (*vault.Entry, error) {
	return p.SealOwnerPINSlot(card, "", passphrase, pin)
}

// SealOwnerPINSlot is SealOwnerPIN for the card's PIN in slot ([PINSlot]).
// The entry's name, for the store, is PINName(card, slot).
func (p *VaultPINs) SealOwnerPINSlot(card, slot string, passphrase, pin []byte) (*vault.Entry, error) {
	name := PINName(card, slot)
	e, err := p.Vault.Seal(passphrase, pin, ownerContext(name))
	if err != nil {
		return nil, err
	}
	p.LoadOwnerPIN(name, e)
	return e, nil
}

// LoadOwnerPIN installs an owner's sealed PIN read back from the store,
// by entry name ([PINName]).
func (p *VaultPINs) LoadOwnerPIN(card string, e *vault.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owners == nil {
		p.owners = map[string]*vault.Entry{}
	}
	p.owners[card] = e
}

// Delegate opens each of the owner's sealed PINs of card with passphrase
// and seals a copy for delegation under vpin; it returns the copy of the
// default PIN, or of the first PIN registered (see [VaultPINs.Entries] for
// all). A wrong passphrase wraps ErrWrongVPIN; a TPM at its guess limit,
// ErrGuessLimit. The real PINs are in clear only inside this call.
func (p *VaultPINs) Delegate(card, delegation string, passphrase, vpin []byte) (*vault.Entry, error) {
	p.mu.RLock()
	names := p.namesLocked(p.owners, card)
	oes := make([]*vault.Entry, len(names))
	for i, n := range names {
		oes[i] = p.owners[n]
	}
	p.mu.RUnlock()
	if len(names) == 0 {
		return nil, ErrNoOwnerPIN
	}
	var first *vault.Entry
	for i, n := range names {
		pin, err := p.Vault.Unseal(oes[i], passphrase, ownerContext(n))
		if err != nil {
			p.Forget(delegation)
			return nil, vaultError(err)
		}
		_, slot := SplitPINName(n)
		e, err := p.Vault.Seal(vpin, pin, vaultContext(PINName(delegation, slot)))
		clear(pin)
		if err != nil {
			p.Forget(delegation)
			return nil, err
		}
		p.Load(PINName(delegation, slot), e)
		if first == nil {
			first = e
		}
	}
	return first, nil
}

// Forget drops a delegation's sealed PIN (a revoked delegation's).
func (p *VaultPINs) Forget(delegation string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.namesLocked(p.entries, delegation) {
		delete(p.entries, n)
	}
}
