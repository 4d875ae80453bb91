package token

import (
	"context"
	"errors"

	"github.com/pscs/pscs/transport"
)

// SignInit starts a signature with private key kh.
func (m *Module) SignInit(h uint64, mech Mechanism, kh uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.sign != nil {
		// An operation that has taken no data yet, or whose signature
		// waits for a larger buffer, is replaced: OpenSSH
		// leaves one behind when the context-specific login of a
		// PIN-always key fails, and would otherwise find the session
		// unusable for every other key.
		if ss.sign.parts && ss.sign.result == nil {
			return ErrOperationActive
		}
		ss.endSign()
	}
	m.mu.Lock()
	in := ss.slot.loggedIn
	m.mu.Unlock()
	o, err := m.visible(ss, kh)
	if err != nil {
		if !in {
			return ErrUserNotLoggedIn
		}
		return ErrKeyHandleInvalid
	}
	if o.class != ckoPrivateKey {
		return ErrKeyTypeInconsistent
	}
	if !o.canSign {
		return ErrKeyFunctionNotPermitted
	}
	if !in {
		return ErrUserNotLoggedIn
	}
	op, err := newSignOp(mech, o)
	if err != nil {
		return err
	}
	op.slot = ss.slot.id
	ss.sign = op
	return nil
}

// Sign signs data in one part into out (with the two-call convention:
// hasOut false asks for the length; a buffer too small is
// CKR_BUFFER_TOO_SMALL, and the operation goes on). It returns the
// signature's length. One request to the server.
func (m *Module) Sign(h uint64, data, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	op := ss.sign
	if op == nil {
		return 0, ErrOperationNotInitialized
	}
	if op.result != nil {
		return deliver(ss, out, hasOut)
	}
	if op.parts {
		ss.endSign()
		return 0, ErrOperationActive
	}
	if n, done := m.checkOut(op, out, hasOut); done {
		return n, sizeErr(n, out, hasOut)
	}
	if err := op.update(data); err != nil {
		ss.endSign()
		return 0, err
	}
	return m.finishSign(ss, out)
}

// checkOut answers the length query and a buffer too small, which leave
// the operation active.
func (m *Module) checkOut(op *signOp, out []byte, hasOut bool) (int, bool) {
	n := op.key.sigLen
	if n == 0 {
		return 0, false // unknown: sign, then see
	}
	return n, !hasOut || len(out) < n
}

func sizeErr(n int, out []byte, hasOut bool) error {
	if hasOut && len(out) < n {
		return ErrBufferTooSmall
	}
	return nil
}

// SignUpdate feeds a part of the data.
func (m *Module) SignUpdate(h uint64, data []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.sign == nil {
		return ErrOperationNotInitialized
	}
	if err := ss.sign.update(data); err != nil {
		ss.endSign()
		return err
	}
	return nil
}

// SignFinal signs the data given in parts, like Sign.
func (m *Module) SignFinal(h uint64, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	op := ss.sign
	if op == nil {
		return 0, ErrOperationNotInitialized
	}
	if op.result != nil {
		return deliver(ss, out, hasOut)
	}
	if n, done := m.checkOut(op, out, hasOut); done {
		return n, sizeErr(n, out, hasOut)
	}
	return m.finishSign(ss, out)
}

// deliver hands over the signature that an earlier call made for a
// buffer too small, and ends the operation once it is taken.
func deliver(ss *session, out []byte, hasOut bool) (int, error) {
	n := len(ss.sign.result)
	if !hasOut || len(out) < n {
		return n, sizeErr(n, out, hasOut)
	}
	copy(out, ss.sign.result)
	ss.endSign()
	return n, nil
}

// finishSign asks the server for the signature and ends the operation
// (unless out is too small for it: then it keeps the signature).
//
// A key that wants the PIN with every signature (CKA_ALWAYS_AUTHENTICATE)
// signs with the PIN of the operation's context-specific login or, for
// the first such signature after C_Login, with the login's: a local PIV
// card under OpenSC behaves so. There the login's VERIFY leaves the card's
// security status satisfied for the next operation of a PIN-always key
// and OpenSC lets the card decide: the first signature after the login
// succeeds, the next is refused for want of security status, and OpenSC
// does not re-verify from its PIN cache for a key that demands user
// consent (sc_pkcs15_pincache_revalidate in libopensc's pkcs15-pin.c;
// framework-pkcs15.c marks such keys CKA_ALWAYS_AUTHENTICATE from the
// object's user_consent), so the application gets CKR_USER_NOT_LOGGED_IN
// until it makes a context-specific login. Here the login's vPIN travels
// with that first signature: still one request.
//
// A signature the server refuses because it forgot the login (it
// restarted, or the connection was lost) logs in again with the login's
// vPIN and is sent once more (see relogin).
func (m *Module) finishSign(ss *session, out []byte) (int, error) {
	op := ss.sign
	ss.sign = nil // its PIN is wiped below, after the request
	defer func() { clear(op.pin) }()
	input, err := op.input()
	if err != nil {
		return 0, err
	}
	sl := ss.slot
	m.mu.Lock()
	if op.key.alwaysAuth {
		if !op.authed && sl.fresh && sl.loggedIn {
			op.pin, op.authed = sl.pin.bytes(), true
		}
		sl.fresh = false // used, as the card's security status would be
	}
	logins := sl.logins
	m.mu.Unlock()
	if op.key.alwaysAuth && !op.authed {
		return 0, ErrUserNotLoggedIn
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	b, err := m.conn(ctx)
	if err != nil {
		return 0, remoteError(err, true)
	}
	req := &transport.SignRequest{Slot: op.slot, Key: op.key.handle, Mechanism: op.mech.remote, Data: input}
	resp, err := signRequest(ctx, b, req, op)
	if errors.Is(err, &transport.Error{Code: transport.CodeNotLoggedIn}) {
		// The server forgot the login (a new connection).
		if rerr := m.relogin(ctx, b, sl, logins); rerr != nil {
			return 0, rerr
		}
		resp, err = signRequest(ctx, b, req, op)
	}
	if err != nil {
		if op.key.alwaysAuth {
			m.noteVPIN(ss.slot, err)
		}
		m.log.Info("pscs: signature refused", "slot", op.slot, "err", err)
		return 0, remoteError(err, true)
	}
	if op.key.alwaysAuth {
		m.noteVPIN(ss.slot, nil) // a right vPIN clears the wrong ones
	}
	if len(out) < len(resp.Signature) {
		// An unknown size, or a key that changed on the card since the
		// catalogue (a longer key of the same type): the operation stays
		// active with the signature, as the two-call convention wants,
		// and the card is not asked again (a PIN-always key would want
		// another PIN).
		op.result, ss.sign = resp.Signature, op
		return len(resp.Signature), ErrBufferTooSmall
	}
	return copy(out, resp.Signature), nil
}

func signRequest(ctx context.Context, b Backend, req *transport.SignRequest, op *signOp) (*transport.SignResponse, error) {
	if op.key.alwaysAuth {
		return b.SignWithPIN(ctx, req, op.pin)
	}
	return b.Sign(ctx, req)
}
