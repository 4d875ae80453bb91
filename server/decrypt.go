package server

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// Decryption and key agreement
//
// Decrypt (CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP) and Derive (CKM_ECDH1_DERIVE,
// with an EC key or an X25519 key: a 32-byte peer, a 32-byte secret, an
// all-zero secret refused with CodeDecryption) run under the same policy as signatures: the delegation must name the
// "decrypt" operation (a delegation without it is refused with
// CodeDenied), its window, hours and limits apply (each decryption or
// key agreement counts like a signature), and a key whose card wants the
// PIN before every operation wants the virtual PIN with every request. The
// card's profile must implement profiles.Decrypter, and the key must be one
// it offers (profiles.Key.Decrypt). The audit record keeps the signed
// request (which holds the ciphertext or the peer's point) and, as its
// result, the SHA-256 of that input: never the plaintext or the shared
// secret, which appear in no log either.

// decryptOp is one decryption or key agreement on a remote card.
type decryptOp struct {
	slot, key uint64
	input     []byte // ciphertext or peer point
	// fits checks that the request's mechanism and input suit the key.
	fits func(pub crypto.PublicKey) error
	run  func(ctx context.Context, d profiles.Decrypter, k profiles.Key) ([]byte, error)
}

func (s *Server) decrypt(ctx context.Context, call *transport.Call) (any, error) {
	var req transport.DecryptRequest
	if err := call.Decode(&req); err != nil {
		return nil, err
	}
	opts, perr := decryptOptions(req.Mechanism, req.Params)
	out, err := s.decrypter(ctx, call, perr, decryptOp{slot: req.Slot, key: req.Key, input: req.Data,
		fits: func(pub crypto.PublicKey) error {
			if _, ok := pub.(*rsa.PublicKey); !ok {
				return transport.Errorf(transport.CodeMechanism, "mechanism %#x does not fit the key", req.Mechanism)
			}
			return nil
		},
		run: func(ctx context.Context, d profiles.Decrypter, k profiles.Key) ([]byte, error) {
			return d.Decrypt(ctx, k.ID, req.Data, opts)
		}})
	if err != nil {
		return nil, err
	}
	return &transport.DecryptResponse{Plaintext: out}, nil
}

func (s *Server) derive(ctx context.Context, call *transport.Call) (any, error) {
	var req transport.DeriveRequest
	if err := call.Decode(&req); err != nil {
		return nil, err
	}
	var perr error
	if req.Mechanism != p11.CKMECDH1Derive {
		perr = transport.Errorf(transport.CodeMechanism, "mechanism %#x not supported for key agreement", req.Mechanism)
	}
	out, err := s.decrypter(ctx, call, perr, decryptOp{slot: req.Slot, key: req.Key, input: req.Data,
		fits: func(pub crypto.PublicKey) error {
			switch p := pub.(type) {
			case *ecdsa.PublicKey:
				return nil
			case *ecdh.PublicKey:
				if p.Curve() != ecdh.X25519() {
					break
				}
				// RFC 7748: the peer's key is its 32-byte u-coordinate.
				if len(req.Data) != x25519Size {
					return transport.Errorf(transport.CodeDecryption, "an X25519 peer key is %d bytes", x25519Size)
				}
				return nil
			}
			return transport.Errorf(transport.CodeMechanism, "CKM_ECDH1_DERIVE needs an EC or X25519 key")
		},
		run: func(ctx context.Context, d profiles.Decrypter, k profiles.Key) ([]byte, error) {
			out, err := d.DeriveECDH(ctx, k.ID, req.Data)
			if _, ok := k.Public.(*ecdh.PublicKey); ok && err == nil && (len(out) != x25519Size || allZero(out)) {
				// A small-order peer makes every secret zero (RFC 7748,
				// 6.1): the agreement is refused, as crypto/ecdh does.
				clear(out)
				return nil, profiles.ErrDecryption
			}
			return out, err
		}})
	if err != nil {
		return nil, err
	}
	return &transport.DeriveResponse{Secret: out}, nil
}

// x25519Size is the size of an X25519 public key and shared secret.
const x25519Size = 32

// allZero reports whether b is all zeros, in time that depends on its
// length only.
func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// decryptOptions turns a PKCS #11 decryption mechanism into the options of
// profiles.Decrypter.Decrypt.
func decryptOptions(mech uint64, params []byte) (crypto.DecrypterOpts, error) {
	switch mech {
	case ckmRSAPKCS:
		//lint:ignore SA1019 PKCS #11's CKM_RSA_PKCS decryption is PKCS #1 v1.5, and cards hold keys that need it
		return &rsa.PKCS1v15DecryptOptions{}, nil
	case ckmRSAPKCSOAEP:
		var p transport.OAEPParams
		if err := transport.Unmarshal(params, &p); err != nil {
			return nil, transport.Errorf(transport.CodeMalformed, "OAEP parameters")
		}
		hashes := map[uint64]struct {
			h   crypto.Hash
			mgf uint64
		}{p11.CKMSHA1: {crypto.SHA1, p11.CKGMGF1SHA1}, p11.CKMSHA256: {crypto.SHA256, p11.CKGMGF1SHA256},
			p11.CKMSHA384: {crypto.SHA384, p11.CKGMGF1SHA384}, p11.CKMSHA512: {crypto.SHA512, p11.CKGMGF1SHA512}}
		h, ok := hashes[p.Hash]
		if !ok || h.mgf != p.MGF {
			return nil, transport.Errorf(transport.CodeMechanism, "OAEP with hash %#x and MGF %#x not supported", p.Hash, p.MGF)
		}
		return &rsa.OAEPOptions{Hash: h.h, MGFHash: h.h, Label: p.Label}, nil
	}
	return nil, transport.Errorf(transport.CodeMechanism, "mechanism %#x not supported for decryption", mech)
}

// decrypter runs op under the delegation's policy, as sign runs a
// signature; perr is the request's error found while decoding it (a bad
// mechanism), refused once the session is known.
func (s *Server) decrypter(ctx context.Context, call *transport.Call, perr error, op decryptOp) ([]byte, error) {
	start := time.Now()
	who := call.Conn.Identity.ID
	card, ok := s.card(op.slot)
	if !ok {
		return nil, s.refuse(ctx, call, "", transport.Errorf(transport.CodeNoSuchSlot, "no remote card %d", op.slot), start)
	}
	sess, ok := call.Conn.Value(sessionKey{op.slot}).(*session)
	if !ok {
		return nil, s.refuse(ctx, call, "", transport.Errorf(transport.CodeNotLoggedIn, ""), start)
	}
	if perr != nil {
		return nil, s.refuse(ctx, call, sess.delegation, perr, start)
	}
	idx, ref, ok := s.keyOf(card, op.key)
	keyID := ref.ID
	d, err := s.cfg.Book.Check(policy.Request{Delegate: who, Card: card.Name, Op: "decrypt", Key: keyID})
	if err != nil {
		return nil, s.refuse(ctx, call, d.ID, err, start)
	}
	n := note{events: policy.EventCounted, anchor: d.Total > 0 || d.PerHour > 0}
	if d.ID != sess.delegation {
		return nil, s.refuseNoted(ctx, call, d.ID, n, transport.Errorf(transport.CodeNotLoggedIn, "log in again"), start)
	}
	if !ok {
		return nil, s.refuseNoted(ctx, call, d.ID, n, transport.Errorf(transport.CodeNoSuchKey, ""), start)
	}
	usable := func(k profiles.Key) error {
		if !k.Decrypt {
			return transport.Errorf(transport.CodeMechanism, "key %s does not decrypt", k.ID)
		}
		return op.fits(k.Public)
	}
	var freshPINs map[string][]byte
	if k, ok := card.Pool.Key(idx); ok {
		if err := usable(k); err != nil {
			return nil, s.refuseNoted(ctx, call, d.ID, n, err, start)
		}
		if k.PINPolicy == profiles.PINAlways {
			if len(call.Secret) == 0 {
				return nil, s.refuseNoted(ctx, call, d.ID, n, errPINEveryTime, start)
			}
			var ev policy.Event
			freshPINs, ev, err = s.openVPIN(ctx, who, card.Name, call.Op.String(), d.ID, call.Secret)
			n.events |= ev
			if err != nil {
				return nil, s.refuseNoted(ctx, call, d.ID, n, err, start)
			}
			defer wipePINs(freshPINs)
		}
	}
	var out []byte
	var by string
	var cardLocked atomic.Bool
	// In a remote card of cards with different keys, to the card that
	// holds the key (nil: any card, they share their keys).
	var on func(m *rsc.Member) bool
	if ref.Card != "" {
		on = rsc.Holds(ref)
	}
	err = card.Pool.DoOn(ctx, who, on, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		onCard := time.Now()
		sess.mu.Lock()
		loggedIn := sess.pins != nil
		sess.mu.Unlock()
		if !loggedIn {
			return transport.Errorf(transport.CodeNotLoggedIn, "") // logged out meanwhile
		}
		cl := cardLog{s: s, card: card.Name, m: m}
		k, ok := m.Key(keyID)
		if !ok {
			return transport.Errorf(transport.CodeKeyGone, "key %s is no longer on the card", keyID)
		}
		if err := usable(k); err != nil {
			return err
		}
		dc, ok := c.(profiles.Decrypter)
		if !ok {
			return transport.Errorf(transport.CodeMechanism, "the card's profile does not decrypt")
		}
		if k.PINPolicy == profiles.PINAlways && freshPINs == nil {
			return errPINEveryTime
		}
		if k.PINPolicy != profiles.PINNever {
			pin, err := sess.pinFor(freshPINs, c.PINs(), k.PIN)
			if err != nil {
				return err
			}
			err = c.VerifyPIN(ctx, k.PIN, pin)
			clear(pin)
			if errors.Is(err, apdu.ErrWrongPIN) || errors.Is(err, apdu.ErrBlocked) {
				s.cfg.Book.LockCard(card.Name)
				cardLocked.Store(true)
				cl.log("verify PIN", err, "the card refused its registered PIN: delegations on it locked")
				return transport.Errorf(transport.CodeLocked, "the owner must register the card's PIN again")
			}
			if err != nil {
				return cl.fail("verify PIN", err)
			}
		}
		res, err := op.run(ctx, dc, k)
		switch {
		case errors.Is(err, profiles.ErrDecryption):
			return transport.Errorf(transport.CodeDecryption, "")
		case errors.Is(err, profiles.ErrKeyUsage):
			return transport.Errorf(transport.CodeMechanism, "the key does not do this")
		case err != nil:
			return cl.fail(call.Op.String()+" with "+k.ID, err)
		}
		if mt := s.cfg.Metrics; mt != nil {
			mt.CardOp(card.Name, m.ID, time.Since(onCard))
		}
		out, by = res, m.ID
		return nil
	})
	if cardLocked.Load() {
		n.events |= policy.EventCardLocked
	}
	if err != nil {
		return nil, s.refuseNoted(ctx, call, d.ID, n, s.requestError(card.Name, err), start)
	}
	digest := sha256.Sum256(op.input)
	if err := s.audit(ctx, call, d.ID, 0, by, digest[:], start, n); err != nil {
		clear(out)
		return nil, err
	}
	return out, nil
}
