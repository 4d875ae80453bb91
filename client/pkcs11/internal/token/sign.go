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
		// An operation that has taken no data yet is replaced: OpenSSH
		// leaves one behind when the context-specific login of a
		// PIN-always key fails, and would otherwise find the session
		// unusable for every other key.
		if ss.sign.parts {
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
	if n, done := m.checkOut(op, out, hasOut); done {
		return n, sizeErr(n, out, hasOut)
	}
	return m.finishSign(ss, out)
}

// finishSign asks the server for the signature and ends the operation.
func (m *Module) finishSign(ss *session, out []byte) (int, error) {
	op := ss.sign
	ss.sign = nil // its PIN is wiped below, after the request
	defer clear(op.pin)
	input, err := op.input()
	if err != nil {
		return 0, err
	}
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
	var resp *transport.SignResponse
	if op.key.alwaysAuth {
		resp, err = b.SignWithPIN(ctx, req, op.pin)
		clear(op.pin)
	} else {
		resp, err = b.Sign(ctx, req)
	}
	if err != nil {
		if errors.Is(err, &transport.Error{Code: transport.CodeNotLoggedIn}) {
			m.mu.Lock()
			ss.slot.loggedIn = false // the server forgot the login (a new connection)
			m.mu.Unlock()
		}
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
		return len(resp.Signature), ErrBufferTooSmall // only with an unknown size
	}
	return copy(out, resp.Signature), nil
}
