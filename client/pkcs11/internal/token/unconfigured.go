package token

import "github.com/pscs/pscs/transport"

// UnconfiguredSlot is the ID of the one slot a module without a server
// offers (see [Options.Unconfigured]).
const UnconfiguredSlot = 0

// unconfigured gives a module that has no server to connect to one slot,
// with no token, whose description says what is missing: a person who
// lists the slots (pkcs11-tool -L, a browser's security devices) reads
// it, where a module with no slots would only show "No slots". An
// application that looks for tokens finds none, as before.
func (m *Module) unconfigured(desc string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &slot{id: UnconfiguredSlot, info: transport.Slot{ID: UnconfiguredSlot, Description: desc}, offered: true}
	m.slots[s.id] = s
	m.cat = &transport.Catalogue{}
	m.readyLocked()
	close(m.connected)
}
