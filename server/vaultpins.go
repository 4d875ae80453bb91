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
	entries map[string]*vault.Entry
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
	if errors.Is(err, vault.ErrWrongVPIN) {
		return nil, ErrWrongVPIN
	}
	return pin, err
}
