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
// window, so that a request is executed at most once. Each identity has
// its own (see [Limits.NoncesPerIdentity]).
//
// It keeps a nonce in one of two forms:
//
//   - recent: while its request runs, and for the resend period
//     ([Server.ResendPeriod]) after its answer, with the whole response,
//     so that the same identity resending the request after losing its
//     connection gets the first answer (Response.Original); each such
//     resend starts the period again;
//   - old: after that, only the nonce itself (a fixed-size key) and its
//     expiry, until it expires: a replay is still refused (CodeReplay)
//     and never runs, but comes without the first answer.
//
// So what a flood of requests leaves in memory for the two replay windows
// is some 50 bytes a nonce, not its response (see
// TestReplayMemoryPerNonce), and the maps are made anew once they have
// shrunk, so that their room goes back too.
type replayCache struct {
	mu     sync.Mutex
	recent map[nonceKey]*replayEntry
	old    map[nonceKey]int64 // expiry, Unix nanoseconds
	max    int
	resend time.Duration
	// next: no nonce expires before it (Unix ns; 0 when none is
	// remembered), so that a full cache sweeps only when a sweep can
	// free something, and knows its retry-after hint at once.
	next       int64
	inserts    int
	peakRecent int // the most entries since the map was last made anew
	peakOld    int
}

// nonceKey is a nonce as a map key: a fixed-size array, held inside the
// map's own slots rather than as a string of its own.
type nonceKey [NonceSize]byte

type replayEntry struct {
	expires  int64         // Unix ns
	answered int64         // Unix ns; set before done is closed, then under the cache's mu
	done     chan struct{} // closed when resp is set
	resp     *Response
}

func newReplayCache(max int, resend time.Duration) *replayCache {
	return &replayCache{recent: map[nonceKey]*replayEntry{}, old: map[nonceKey]int64{}, max: max, resend: resend}
}

// begin registers key. fresh is true the first time; otherwise e is the
// earlier request's entry, or nil once only the nonce is kept. A full
// cache refuses with CodeReplayMemoryFull rather than forget nonces; the
// error's RetryAfter says when the first nonce may be forgotten.
func (c *replayCache) begin(key nonceKey, expires, now time.Time) (e *replayEntry, fresh bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.recent[key]; ok {
		return old, false, nil
	}
	if _, ok := c.old[key]; ok {
		return nil, false, nil
	}
	c.inserts++
	full := c.max >= 0 && c.lenLocked() >= c.max
	if c.inserts%1024 == 0 || full && c.next != 0 && now.UnixNano() > c.next {
		c.sweepLocked(now)
	}
	if c.max >= 0 && c.lenLocked() >= c.max {
		return nil, false, &retryError{err: Errorf(CodeReplayMemoryFull, "the identity's replay memory holds %d nonces", c.lenLocked()),
			after: time.Duration(c.next - now.UnixNano())}
	}
	e = &replayEntry{expires: expires.UnixNano(), done: make(chan struct{})}
	c.recent[key] = e
	c.peakRecent = max(c.peakRecent, len(c.recent))
	if c.next == 0 || e.expires < c.next {
		c.next = e.expires
	}
	return e, true, nil
}

// sweep forgets the nonces that expired before now and whose request has
// been answered, and keeps only the nonce of those answered more than the
// resend period ago.
func (c *replayCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
}

func (c *replayCache) sweepLocked(now time.Time) {
	t := now.UnixNano()
	var next int64
	keep := func(exp int64) {
		if next == 0 || exp < next {
			next = exp
		}
	}
	for k, v := range c.recent {
		select {
		case <-v.done:
		default: // still running: keep
			keep(v.expires)
			continue
		}
		switch {
		case t > v.expires:
			delete(c.recent, k)
		case t-v.answered >= int64(c.resend):
			delete(c.recent, k)
			c.old[k] = v.expires
			keep(v.expires)
		default:
			keep(v.expires)
		}
	}
	c.peakOld = max(c.peakOld, len(c.old))
	for k, exp := range c.old {
		if t > exp {
			delete(c.old, k)
		} else {
			keep(exp)
		}
	}
	c.next = next
	// A Go map never gives back the room of deleted entries: once it
	// holds a quarter of its peak, make it anew, so that the memory of
	// a flood goes back.
	c.recent = remake(c.recent, &c.peakRecent)
	c.old = remake(c.old, &c.peakOld)
}

// remake returns m, or a copy of it in a map of its size once it holds at
// most a quarter of its peak.
func remake[V any](m map[nonceKey]V, peak *int) map[nonceKey]V {
	if *peak < 1024 || len(m) > *peak/4 {
		return m
	}
	n := make(map[nonceKey]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	*peak = len(n)
	return n
}

// lookup reports whether the nonce key was seen, and returns its entry
// while its response is kept (nil after).
func (c *replayCache) lookup(key nonceKey) (*replayEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.recent[key]; ok {
		return e, true
	}
	_, ok := c.old[key]
	return nil, ok
}

// finish records the answer to e's request, given at now.
func (c *replayCache) finish(e *replayEntry, resp *Response, now time.Time) {
	e.resp, e.answered = resp, now.UnixNano()
	close(e.done)
}

// resent notes that the response of e (finished) was handed to a resend
// at now: its resend period starts again, so that the client's next
// resend, if the answer to this one is lost too, finds it as well.
func (c *replayCache) resent(e *replayEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.answered = max(e.answered, now.UnixNano())
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lenLocked()
}

func (c *replayCache) lenLocked() int { return len(c.recent) + len(c.old) }
