package token

import (
	"context"
	"errors"

	"github.com/pscs/pscs/transport"
)

// Login logs the application in to the session's token with the virtual
// PIN: one request to the server. A context-specific login (for a key that
// needs one before each signature) costs no round trip: the PIN goes with
// the signature request, and the server checks it there.
func (m *Module) Login(h, userType uint64, pin []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if userType == ckuSO {
		return m.loginSO(ss) // see conformance.go
	}
	sl := ss.slot
	m.mu.Lock()
	minPIN, maxPIN := int(sl.info.Token.MinPIN), int(sl.info.Token.MaxPIN)
	m.mu.Unlock()
	if len(pin) < minPIN || maxPIN > 0 && len(pin) > maxPIN {
		return ErrPINLenRange // never sent: it cannot be a virtual PIN
	}
	switch userType {
	case ckuUser:
	case ckuContextSpecific:
		if ss.sign == nil {
			return ErrOperationNotInitialized
		}
		m.mu.Lock()
		in := sl.loggedIn
		m.mu.Unlock()
		if !in {
			return ErrUserNotLoggedIn
		}
		if len(pin) == 0 {
			return ErrPINIncorrect
		}
		clear(ss.sign.pin)
		ss.sign.pin = append([]byte(nil), pin...)
		ss.sign.authed = true
		return nil
	default:
		return ErrUserTypeInvalid
	}
	sl.loginMu.Lock()
	defer sl.loginMu.Unlock()
	m.mu.Lock()
	if userType == ckuUser && sl.loggedIn {
		m.mu.Unlock()
		return ErrUserAlreadyLoggedIn
	}
	gen := sl.gen
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	b, err := m.conn(ctx)
	if err != nil {
		return err
	}
	resp, err := m.loginRequest(ctx, b, sl, pin)
	if err != nil {
		return remoteError(err, true)
	}
	kept := newSecret(pin)
	m.mu.Lock()
	if sl.gen != gen || m.sessions[h] != ss {
		// The session closed, or the token went, while the login was
		// on its way: it logs nothing in.
		m.mu.Unlock()
		kept.wipe()
		return ErrSessionClosed
	}
	sl.loggedIn, sl.locked, sl.vpin = true, false, vpinState{}
	sl.pin.wipe()
	sl.pin, sl.fresh = kept, true
	sl.logins++
	m.mu.Unlock()
	if resp != nil && resp.Catalogue != nil {
		m.setCatalogue(resp.Catalogue)
	}
	return nil
}

// loginRequest sends the login to the server, once more after a Hello if
// this clock is off, and notes a locked delegation.
func (m *Module) loginRequest(ctx context.Context, b Backend, sl *slot, pin []byte) (*transport.LoginResponse, error) {
	resp, err := b.Login(ctx, sl.id, pin)
	if errors.Is(err, transport.ErrStale) {
		// This clock is off: Hello corrects the request times.
		if _, herr := b.Hello(ctx); herr == nil {
			resp, err = b.Login(ctx, sl.id, pin)
		}
	}
	if err != nil {
		m.noteVPIN(sl, err)
		m.log.Info("pscs: login refused", "slot", sl.id, "err", err)
		return nil, err
	}
	return resp, nil
}

// Logout logs the application out of the session's token, and the
// connection out of the remote card.
func (m *Module) Logout(h uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	sl := ss.slot
	sl.loginMu.Lock()
	defer sl.loginMu.Unlock()
	m.mu.Lock()
	in := sl.loggedIn
	sl.forgetLocked()
	m.mu.Unlock()
	if !in {
		return ErrUserNotLoggedIn
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	if b, err := m.conn(ctx); err == nil {
		if err := b.Logout(ctx, sl.id); err != nil {
			m.log.Info("pscs: logout", "slot", sl.id, "err", err)
		}
	}
	return nil
}
