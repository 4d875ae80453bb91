package token

import (
	"hash"
	"sync"
)

// session is a PKCS #11 session.
type session struct {
	mu      sync.Mutex // serialises the session's calls
	handle  uint64
	slot    *slot
	gen     uint64
	rw      bool
	find    []uint64 // handles left to return; nil: no search
	finding bool
	sign    *signOp
	digest  hash.Hash
	decrypt *decryptOp
	derived []*object // keys derived in this session (C_DeriveKey), until it closes
}

// OpenSession opens a session with the token in slot id.
func (m *Module) OpenSession(id, flags uint64) (uint64, error) {
	if flags&ckfSerialSession == 0 {
		return 0, ErrSessionParallelNotSupp
	}
	s, err := m.slot(id)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finalized {
		return 0, ErrNotInitialized
	}
	if !s.present() {
		return 0, ErrTokenNotPresent
	}
	m.nextSession++
	h := m.nextSession
	m.sessions[h] = &session{handle: h, slot: s, gen: s.gen, rw: flags&ckfRWSession != 0}
	return h, nil
}

// CloseSession closes session h. Closing a token's last session logs the
// application out of it (locally: the server forgets the login when the
// connection ends, or at the next login).
func (m *Module) CloseSession(h uint64) error {
	m.mu.Lock()
	s, ok := m.sessions[h]
	if !ok {
		m.mu.Unlock()
		return ErrSessionHandleInvalid
	}
	delete(m.sessions, h)
	m.logoutIfLastLocked(s.slot)
	m.mu.Unlock()
	dropped([]*session{s})
	return nil
}

func (m *Module) logoutIfLastLocked(sl *slot) {
	for _, other := range m.sessions {
		if other.slot == sl && other.gen == sl.gen {
			return
		}
	}
	sl.forgetLocked()
	sl.gen++ // a login in flight does not log the slot in again
}

// CloseAllSessions closes every session with the token in slot id.
func (m *Module) CloseAllSessions(id uint64) error {
	s, err := m.slot(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	var gone []*session
	for h, ss := range m.sessions {
		if ss.slot == s {
			delete(m.sessions, h)
			gone = append(gone, ss)
		}
	}
	s.forgetLocked()
	s.gen++ // a login in flight does not log the slot in again
	m.mu.Unlock()
	dropped(gone)
	return nil
}

// endSign ends the session's signature operation and wipes the PIN a
// context-specific login left in it. The caller holds ss.mu.
func (ss *session) endSign() {
	if ss.sign != nil {
		clear(ss.sign.pin)
		ss.sign = nil
	}
}

// endDerived wipes and forgets the keys derived in the session. The caller
// holds ss.mu.
func (ss *session) endDerived() {
	for _, o := range ss.derived {
		clear(o.attrs[ckaValue])
	}
	ss.derived = nil
	ss.decrypt = nil
}

// dropped wipes what sessions taken out of the module hold. A session busy
// in a call is left to it: its call ends the operation (finishSign wipes
// its PIN), and no later call can reach it.
func dropped(ss []*session) {
	for _, s := range ss {
		if s.mu.TryLock() {
			s.endSign()
			s.endDerived()
			s.mu.Unlock()
		}
	}
}

// session finds session h, locked; the caller unlocks ss.mu. A session
// whose token went away is CKR_DEVICE_REMOVED.
func (m *Module) session(h uint64) (*session, error) {
	m.mu.Lock()
	ss, ok := m.sessions[h]
	if m.finalized {
		m.mu.Unlock()
		return nil, ErrNotInitialized
	}
	if !ok {
		m.mu.Unlock()
		return nil, ErrSessionHandleInvalid
	}
	if ss.gen != ss.slot.gen {
		m.mu.Unlock()
		return nil, ErrDeviceRemoved
	}
	m.mu.Unlock()
	ss.mu.Lock()
	return ss, nil
}

// SessionInfo mirrors CK_SESSION_INFO.
type SessionInfo struct {
	Slot, State, Flags, DeviceError uint64
}

// SessionInfo describes session h.
func (m *Module) SessionInfo(h uint64) (SessionInfo, error) {
	ss, err := m.session(h)
	if err != nil {
		return SessionInfo{}, err
	}
	defer ss.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	info := SessionInfo{Slot: ss.slot.id, Flags: ckfSerialSession}
	switch {
	case ss.rw && ss.slot.loggedIn:
		info.State = cksRWUser
	case ss.rw:
		info.State = cksRWPublic
	case ss.slot.loggedIn:
		info.State = cksROUser
	default:
		info.State = cksROPublic
	}
	if ss.rw {
		info.Flags |= ckfRWSession
	}
	return info, nil
}
