package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/veraison/go-cose"
)

// Signed requests are COSE_Sign1 messages (RFC 9052, 4.2) whose payload is a
// CBOR SignedPayload, with the protected header carrying the algorithm and,
// as kid, the SHA-256 of the signer's SubjectPublicKeyInfo. The external
// additional data is the ALPN string, so that a pscs request signature is
// never valid in another protocol.

// BindingLabel is the TLS exporter label of request binding (RFC 8446, 7.5).
const BindingLabel = "EXPORTER-pscs request binding"

// BindingSize is the length of a binding value.
const BindingSize = 32

var externalAAD = []byte(ALPN)

// KeyID returns the COSE kid of a public key: SHA-256 of its
// SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// algorithmFor chooses the COSE algorithm of a key: ES256/ES384/ES512 for
// ECDSA by curve, EdDSA for Ed25519, PS256 for RSA.
func algorithmFor(pub crypto.PublicKey) (cose.Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return cose.AlgorithmES256, nil
		case elliptic.P384():
			return cose.AlgorithmES384, nil
		case elliptic.P521():
			return cose.AlgorithmES512, nil
		}
	case ed25519.PublicKey:
		return cose.AlgorithmEdDSA, nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return cose.AlgorithmPS256, nil
		}
	}
	return 0, fmt.Errorf("transport: no COSE algorithm for key %T", pub)
}

// SignPayload makes the COSE_Sign1 of a request with signer.
func SignPayload(signer crypto.Signer, p *SignedPayload) ([]byte, error) {
	alg, err := algorithmFor(signer.Public())
	if err != nil {
		return nil, err
	}
	cs, err := cose.NewSigner(alg, signer)
	if err != nil {
		return nil, err
	}
	kid, err := KeyID(signer.Public())
	if err != nil {
		return nil, err
	}
	payload, err := Marshal(p)
	if err != nil {
		return nil, err
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	msg.Headers.Protected[cose.HeaderLabelKeyID] = kid
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, externalAAD, cs); err != nil {
		return nil, err
	}
	return msg.MarshalCBOR()
}

// VerifyPayload checks a request's COSE_Sign1 against pub and returns its
// payload. Every failure is ErrBadSignature or ErrMalformed.
func VerifyPayload(raw []byte, pub crypto.PublicKey) (*SignedPayload, error) {
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		return nil, Errorf(CodeMalformed, "signed request: %v", err)
	}
	want, err := algorithmFor(pub)
	if err != nil {
		return nil, Errorf(CodeBadSignature, "identity key: %v", err)
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil || alg != want {
		return nil, Errorf(CodeBadSignature, "algorithm %v, want %v", alg, want)
	}
	kid, _ := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	wantKid, _ := KeyID(pub)
	if string(kid) != string(wantKid) {
		return nil, Errorf(CodeBadSignature, "signed by another key than the connection's identity")
	}
	v, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return nil, Errorf(CodeBadSignature, "%v", err)
	}
	if err := msg.Verify(externalAAD, v); err != nil {
		return nil, Errorf(CodeBadSignature, "%v", err)
	}
	var p SignedPayload
	if err := Unmarshal(msg.Payload, &p); err != nil {
		return nil, err
	}
	if len(p.Nonce) != NonceSize {
		return nil, Errorf(CodeMalformed, "nonce of %d bytes", len(p.Nonce))
	}
	if len(p.Binding) != 0 && len(p.Binding) != BindingSize {
		return nil, Errorf(CodeMalformed, "binding of %d bytes", len(p.Binding))
	}
	return &p, nil
}

// replayCache remembers every nonce of one identity seen inside the time
// window, and the response given to it, so that a request is executed at
// most once. Each identity has its own (see [Limits.NoncesPerIdentity]).
type replayCache struct {
	mu      sync.Mutex
	entries map[string]*replayEntry
	max     int
	inserts int
	peak    int // the most entries since the map was last made anew
}

type replayEntry struct {
	expires time.Time
	done    chan struct{} // closed when resp is set
	resp    *Response
}

func newReplayCache(max int) *replayCache {
	return &replayCache{entries: map[string]*replayEntry{}, max: max}
}

// begin registers key. fresh is true the first time; otherwise e is the
// earlier request's entry. A full cache refuses with CodeReplayMemoryFull
// rather than forget nonces; the error's RetryAfter says when the first
// nonce may be forgotten.
func (c *replayCache) begin(key string, expires, now time.Time) (e *replayEntry, fresh bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[key]; ok {
		return old, false, nil
	}
	c.inserts++
	full := c.max >= 0 && len(c.entries) >= c.max
	if c.inserts%1024 == 0 || full {
		c.sweepLocked(now)
	}
	if c.max >= 0 && len(c.entries) >= c.max {
		var first time.Time
		for _, v := range c.entries {
			if first.IsZero() || v.expires.Before(first) {
				first = v.expires
			}
		}
		return nil, false, &retryError{err: Errorf(CodeReplayMemoryFull, "the identity's replay memory holds %d nonces", len(c.entries)), after: first.Sub(now)}
	}
	e = &replayEntry{expires: expires, done: make(chan struct{})}
	c.entries[key] = e
	c.peak = max(c.peak, len(c.entries))
	return e, true, nil
}

// sweep forgets the nonces that expired before now and whose request has
// been answered.
func (c *replayCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
}

func (c *replayCache) sweepLocked(now time.Time) {
	for k, v := range c.entries {
		if now.After(v.expires) {
			select {
			case <-v.done:
				delete(c.entries, k)
			default: // still running: keep
			}
		}
	}
	// A Go map never gives back the room of deleted entries: once it
	// holds a quarter of its peak, make it anew, so that the memory of
	// a flood goes back.
	if c.peak >= 1024 && len(c.entries) <= c.peak/4 {
		m := make(map[string]*replayEntry, len(c.entries))
		for k, v := range c.entries {
			m[k] = v
		}
		c.entries, c.peak = m, len(m)
	}
}

// lookup returns the entry of key, if the nonce was seen.
func (c *replayCache) lookup(key string) (*replayEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return e, ok
}

func (c *replayCache) finish(e *replayEntry, resp *Response) {
	e.resp = resp
	close(e.done)
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
