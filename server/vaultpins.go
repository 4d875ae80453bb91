package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/pscs/pscs/server/vault"
)

// VaultPINs is the PINVault of pscsd: each delegation's copy of the card's
// real PIN, sealed in a vault.Vault under the delegation's virtual PIN and
// this machine's TPM. Only the sealed entries are kept; a real PIN exists
// in clear only between OpenPIN and the end of the session that uses it.
//
// VaultPINs is safe for concurrent use.
type VaultPINs struct {
	Vault *vault.Vault

	mu      sync.RWMutex
	entries map[string]*vault.Entry // by delegation
	owners  map[string]*vault.Entry // by card: the owner's registered PIN
}

func vaultContext(delegation string) []byte { return []byte("pscs delegation\x00" + delegation) }

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

// OpenPIN implements PINVault.
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

func ownerContext(card string) []byte { return []byte("pscs owner PIN\x00" + card) }

// SealOwnerPIN seals a card's real PIN, which the owner registered, under
// the owner's passphrase (and the TPM): the only copy from which the
// copies of new delegations are made. It replaces an earlier one.
func (p *VaultPINs) SealOwnerPIN(card string, passphrase, pin []byte) (*vault.Entry, error) {
	e, err := p.Vault.Seal(passphrase, pin, ownerContext(card))
	if err != nil {
		return nil, err
	}
	p.LoadOwnerPIN(card, e)
	return e, nil
}

// LoadOwnerPIN installs an owner's sealed PIN read back from the store.
func (p *VaultPINs) LoadOwnerPIN(card string, e *vault.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owners == nil {
		p.owners = map[string]*vault.Entry{}
	}
	p.owners[card] = e
}

// Delegate opens the owner's sealed PIN of card with passphrase and seals
// a copy for delegation under vpin. A wrong passphrase wraps ErrWrongVPIN;
// a TPM at its guess limit, ErrGuessLimit.
// The real PIN is in clear only inside this call.
func (p *VaultPINs) Delegate(card, delegation string, passphrase, vpin []byte) (*vault.Entry, error) {
	p.mu.RLock()
	oe, ok := p.owners[card]
	p.mu.RUnlock()
	if !ok {
		return nil, ErrNoOwnerPIN
	}
	pin, err := p.Vault.Unseal(oe, passphrase, ownerContext(card))
	if err != nil {
		return nil, vaultError(err)
	}
	defer clear(pin)
	if err := p.Register(delegation, vpin, pin); err != nil {
		return nil, err
	}
	e, _ := p.Entry(delegation)
	return e, nil
}

// Forget drops a delegation's sealed PIN (a revoked delegation's).
func (p *VaultPINs) Forget(delegation string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.entries, delegation)
}
