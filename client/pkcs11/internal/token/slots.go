package token

import (
	"cmp"
	"slices"
	"sync"

	"github.com/pscs/pscs/transport"
)

// slot is a remote card as a PKCS #11 slot. A slot once seen stays in the
// slot list; its token is present while the catalogue offers it and a card
// can serve it.
type slot struct {
	id      uint64
	info    transport.Slot
	offered bool // in the current catalogue
	objects []*object
	mechs   map[uint64]MechanismInfo
	raw     []byte // the slot's catalogue entry, to notice changes

	loginMu  sync.Mutex // one login or logout at a time
	loggedIn bool
	locked   bool      // the server said the delegation is locked
	vpin     vpinState // what the server said of the vPIN (pinflags.go)
	gen      uint64    // incremented when the token goes away: its sessions end

	// The login's virtual PIN, in locked memory (see [secret]), while the
	// application is logged in: to log in again when the server forgot the
	// login, and for the first PIN-always signature after C_Login.
	pin    *secret
	fresh  bool   // the login has authorized no PIN-always signature yet
	logins uint64 // incremented by every login, the replayed ones too
}

// forgetLocked ends the application's login to the token and wipes its
// virtual PIN.
func (s *slot) forgetLocked() {
	s.loggedIn, s.fresh = false, false
	s.pin.wipe()
	s.pin = nil
}

func (s *slot) present() bool { return s.offered && s.info.Present }

// Info about the library (CK_INFO).
type Info struct {
	Manufacturer, Description string
	Version                   Version
}

// Version mirrors CK_VERSION.
type Version struct{ Major, Minor byte }

// LibraryInfo describes the library for C_GetInfo.
func LibraryInfo() Info {
	return Info{Manufacturer: "pscs", Description: "pscs remote smart cards", Version: Version{1, 0}}
}

// SlotList lists the slots, or only those with a token present.
func (m *Module) SlotList(tokenPresent bool) ([]uint64, error) {
	if err := m.waitCatalogue(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for id, s := range m.slots {
		if !tokenPresent || s.present() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// SlotInfo mirrors CK_SLOT_INFO.
type SlotInfo struct {
	Description, Manufacturer string
	Flags                     uint64
	Hardware, Firmware        Version
}

func (m *Module) slot(id uint64) (*slot, error) {
	if err := m.waitCatalogue(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[id]
	if s == nil {
		return nil, ErrSlotIDInvalid
	}
	return s, nil
}

// SlotInfo describes slot id.
func (m *Module) SlotInfo(id uint64) (SlotInfo, error) {
	s, err := m.slot(id)
	if err != nil {
		return SlotInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	desc := s.info.Description
	if desc == "" {
		desc = "pscs remote card " + s.info.Token.Label
	}
	info := SlotInfo{Description: desc, Manufacturer: "pscs", Flags: ckfRemovableDevice | ckfHWSlot,
		Hardware: Version{1, 0}, Firmware: Version{1, 0}}
	if s.present() {
		info.Flags |= ckfTokenPresent
	}
	return info, nil
}

// TokenInfo mirrors CK_TOKEN_INFO.
type TokenInfo struct {
	Label, Manufacturer, Model, Serial string
	Flags                              uint64
	MaxSessions, Sessions              uint64
	MaxRWSessions, RWSessions          uint64
	MaxPIN, MinPIN                     uint64
	TotalPublic, FreePublic            uint64
	TotalPrivate, FreePrivate          uint64
	Hardware, Firmware                 Version
}

// TokenInfo describes the token in slot id.
func (m *Module) TokenInfo(id uint64) (TokenInfo, error) {
	s, err := m.slot(id)
	if err != nil {
		return TokenInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return TokenInfo{}, ErrTokenNotPresent
	}
	t := s.info.Token
	info := TokenInfo{Label: t.Label, Manufacturer: cmp.Or(t.Manufacturer, "pscs"), Model: cmp.Or(t.Model, "remote card"),
		Serial: t.Serial, Flags: t.Flags | ckfRNG, MaxSessions: 0, MaxRWSessions: 0,
		MaxPIN: uint64(cmp.Or(t.MaxPIN, 64)), MinPIN: uint64(cmp.Or(t.MinPIN, 4)),
		TotalPublic: Unavailable, FreePublic: Unavailable, TotalPrivate: Unavailable, FreePrivate: Unavailable,
		Hardware: Version{1, 0}, Firmware: Version{1, 0}}
	info.Flags |= s.pinFlags()
	for _, ss := range m.sessions {
		if ss.slot == s && ss.gen == s.gen {
			info.Sessions++
			if ss.rw {
				info.RWSessions++
			}
		}
	}
	return info, nil
}

// MechanismList lists the mechanisms of the token in slot id.
func (m *Module) MechanismList(id uint64) ([]uint64, error) {
	s, err := m.slot(id)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return nil, ErrTokenNotPresent
	}
	var out []uint64
	for t := range s.mechs {
		out = append(out, t)
	}
	slices.Sort(out)
	return out, nil
}

// MechanismInfo describes mechanism mech of the token in slot id.
func (m *Module) MechanismInfo(id, mech uint64) (MechanismInfo, error) {
	s, err := m.slot(id)
	if err != nil {
		return MechanismInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return MechanismInfo{}, ErrTokenNotPresent
	}
	info, ok := s.mechs[mech]
	if !ok {
		return MechanismInfo{}, ErrMechanismInvalid
	}
	return info, nil
}

// WaitForSlotEvent returns a slot whose token appeared, went away or
// changed since the last call. With dontBlock it returns CKR_NO_EVENT if
// there is none; otherwise it waits for one, or for Finalize.
func (m *Module) WaitForSlotEvent(dontBlock bool) (uint64, error) {
	for {
		m.mu.Lock()
		if m.finalized {
			m.mu.Unlock()
			return 0, ErrNotInitialized
		}
		if len(m.pending) > 0 {
			ids := make([]uint64, 0, len(m.pending))
			for id := range m.pending {
				ids = append(ids, id)
			}
			id := slices.Min(ids)
			delete(m.pending, id)
			m.mu.Unlock()
			return id, nil
		}
		ch := m.changed
		m.mu.Unlock()
		if dontBlock {
			return 0, ErrNoEvent
		}
		<-ch
	}
}
