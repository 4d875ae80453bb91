package token

import (
	"context"
	"errors"

	"github.com/pscs/pscs/transport"
)

// relogin logs the token in again with the vPIN its login keeps, after the
// server answered a request of that login with CodeNotLoggedIn: the
// server restarted, or the connection was lost and the client reconnected
// (the server ties a login to its connection). logins is the slot's login
// count the refused request was sent under; if another call has logged in
// again since, relogin has nothing to do.
//
// A refusal that concerns the vPIN or the delegation (a wrong vPIN,
// locked, revoked) ends the login and wipes its vPIN, so that it is never
// tried twice: the application gets CKR_USER_NOT_LOGGED_IN and logs in
// itself. Anything else (the server unreachable, the card not yet back)
// keeps the login for the next call.
func (m *Module) relogin(ctx context.Context, b Backend, sl *slot, logins uint64) error {
	sl.loginMu.Lock()
	defer sl.loginMu.Unlock()
	m.mu.Lock()
	if !sl.loggedIn || sl.pin == nil {
		m.mu.Unlock()
		return ErrUserNotLoggedIn
	}
	if sl.logins != logins {
		m.mu.Unlock()
		return nil
	}
	pin, gen := sl.pin.bytes(), sl.gen
	m.mu.Unlock()
	defer clear(pin)
	resp, err := m.loginRequest(ctx, b, sl, pin)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.Code == transport.CodeWrongPIN || te.Code == transport.CodeLocked || te.Code == transport.CodeRevoked) {
			m.mu.Lock()
			if sl.gen == gen && sl.logins == logins {
				sl.forgetLocked()
			}
			m.mu.Unlock()
			if te.Code == transport.CodeWrongPIN {
				return &rvError{ErrUserNotLoggedIn, err}
			}
		}
		return remoteError(err, true)
	}
	m.mu.Lock()
	if sl.gen != gen || sl.logins != logins || !sl.loggedIn {
		m.mu.Unlock()
		return ErrUserNotLoggedIn // logged out meanwhile
	}
	sl.logins++
	m.mu.Unlock()
	m.log.Info("pscs: logged in again: the server had forgotten the login", "slot", sl.id)
	if resp != nil && resp.Catalogue != nil {
		m.setCatalogue(resp.Catalogue)
	}
	return nil
}
