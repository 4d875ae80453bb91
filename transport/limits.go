package transport

import (
	"context"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Limits bound what each identity, and all clients together, may hold of a
// [Server]: so that no delegate can slow down or refuse another
// (DESIGN.md, decision 13). Every limit has a default (its zero value),
// its own refusal code, and a figure in [Server.Limits]. A negative value
// turns a limit off.
//
// A refusal for a limit of one identity reaches only that identity: the
// others keep their connections, their request rate and their replay
// memory whatever it does.
type Limits struct {
	// ConnectionsPerIdentity is how many connections one identity may
	// have open at once. Zero means 16. One more is closed, once
	// identified and its handshake complete, with CodeTooManyConnections
	// (21). A connection resumed from a session ticket counts like any.
	ConnectionsPerIdentity int
	// StreamsPerIdentity is how many unfinished requests (streams
	// accepted and not yet answered) one identity may have, across all
	// its connections. Zero means 256. The stream of one more is reset
	// at once, both ways, with CodeTooManyRequests (22), before anything
	// of it is read.
	StreamsPerIdentity int
	// RequestRate is how many requests per second one identity may send
	// on average, and RequestBurst how many at once (a token bucket).
	// Zero means 1,000 per second and a burst of 2,000. One more is
	// answered with CodeRateLimited (23) and a retry-after hint, without
	// being read, verified or remembered.
	RequestRate  float64
	RequestBurst int
	// NoncesPerIdentity is how many nonces of one identity the replay
	// memory holds: each identity's signed requests are remembered apart,
	// so that no identity fills or evicts another's. Zero means 65,536:
	// at the default rate, more than 60 s of requests; nonces are
	// forgotten about twice the replay window after their request's time.
	// A nonce costs its response only for [Server.ResendPeriod] after
	// its answer, then some 50 bytes (the nonce and its expiry).
	// A fresh request of an identity whose memory is full is answered with
	// CodeReplayMemoryFull (24) and a retry-after hint, and not executed.
	NoncesPerIdentity int
	// RequestBytesPerIdentity bounds the bytes the server holds for the
	// unfinished requests of one identity (their read buffers, counted
	// by capacity, until the request is answered). Zero means 4 MiB.
	// A request that would pass it is refused with CodeIdentityMemory
	// (25), its stream reset.
	RequestBytesPerIdentity int
	// RequestBytes bounds the same for all identities together. Zero
	// means 64 MiB. Refusal: CodeServerMemory (26).
	RequestBytes int
	// RetryHandshakes is how many handshakes from addresses QUIC has not
	// validated may be in progress before every new one must first prove
	// its address with a QUIC Retry (RFC 9000, 8.1.2): one more round
	// trip for a real client, and no state at all for a flood from
	// spoofed or unreachable addresses. Zero means 64; negative, never.
	RetryHandshakes int
	// Handshakes bounds all the handshakes in progress, validated or not;
	// a new connection attempt over it is refused by QUIC with
	// CONNECTION_REFUSED (transport error 0x2: the handshake never got as
	// far as a code of this protocol). Zero means 1,024.
	Handshakes int
}

// Default limits.
const (
	DefaultConnectionsPerIdentity  = 16
	DefaultStreamsPerIdentity      = 256
	DefaultRequestRate             = 1000
	DefaultRequestBurst            = 2000
	DefaultNoncesPerIdentity       = 65536
	DefaultRequestBytesPerIdentity = 4 << 20
	DefaultRequestBytes            = 64 << 20
	DefaultRetryHandshakes         = 64
	DefaultHandshakes              = 1024
)

// Server-side QUIC receive windows, when the server's QUICConfig leaves
// them zero: a stream may bring one whole request (MaxRequestSize) before
// the server reads it, and a connection 1 MiB, so that what QUIC buffers
// for unread requests is bounded too (per identity: its connections ×
// 1 MiB).
const (
	serverStreamWindow     = MaxRequestSize
	serverConnectionWindow = 1 << 20
)

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.ConnectionsPerIdentity, DefaultConnectionsPerIdentity)
	def(&l.StreamsPerIdentity, DefaultStreamsPerIdentity)
	def(&l.RequestBurst, DefaultRequestBurst)
	def(&l.NoncesPerIdentity, DefaultNoncesPerIdentity)
	def(&l.RequestBytesPerIdentity, DefaultRequestBytesPerIdentity)
	def(&l.RequestBytes, DefaultRequestBytes)
	def(&l.RetryHandshakes, DefaultRetryHandshakes)
	def(&l.Handshakes, DefaultHandshakes)
	if l.RequestRate == 0 {
		l.RequestRate = DefaultRequestRate
	}
}

// over reports whether n passes limit (a negative limit is none).
func over(n int64, limit int) bool { return limit >= 0 && n > int64(limit) }

// LimitStat is one limit's figures, for metrics.
type LimitStat struct {
	// Name is a constant: "connections_per_identity",
	// "streams_per_identity", "request_rate", "nonces_per_identity",
	// "request_bytes_per_identity", "request_bytes", "retry_handshakes",
	// "handshakes".
	Name string
	// Code is the refusal code, 0 for the QUIC-level limits.
	Code Code
	// Limit is the configured value (negative: none).
	Limit float64
	// InUse is the current use: for a per-identity limit, the highest
	// among identities; for the request rate, the lowest bucket fill of
	// an identity, in requests.
	InUse float64
	// Refused counts refusals (for retry_handshakes: Retry packets asked
	// for; for handshakes: connection attempts refused).
	Refused int64
}

// identity is what the server holds for one identity: its counts, its
// token bucket and its replay memory. It outlives the identity's
// connections while its replay memory holds nonces.
type identity struct {
	mu      sync.Mutex
	conns   int
	streams int
	tokens  float64
	last    time.Time
	replay  *replayCache
	bytes   atomic.Int64 // request buffers held
}

// limiter holds the per-identity state and the server-wide counts.
type limiter struct {
	l      Limits
	now    func() time.Time
	resend time.Duration // Server.ResendPeriod
	mu     sync.Mutex
	ids    map[string]*identity
	bytes  atomic.Int64 // request buffers held, all identities

	handshakes  atomic.Int64 // in progress
	unvalidated atomic.Int64 // in progress from unvalidated addresses

	refused [8]atomic.Int64 // by limit, indexed as limitNames
}

const (
	limConns = iota
	limStreams
	limRate
	limNonces
	limIDBytes
	limBytes
	limRetry
	limHandshakes
)

var limitNames = [...]string{"connections_per_identity", "streams_per_identity", "request_rate",
	"nonces_per_identity", "request_bytes_per_identity", "request_bytes", "retry_handshakes", "handshakes"}

var limitCodes = [...]Code{CodeTooManyConnections, CodeTooManyRequests, CodeRateLimited,
	CodeReplayMemoryFull, CodeIdentityMemory, CodeServerMemory, 0, 0}

func newLimiter(l Limits, now func() time.Time, resend time.Duration) *limiter {
	l.setDefaults()
	return &limiter{l: l, now: now, resend: resend, ids: map[string]*identity{}}
}

// connect counts a connection of the identity named id and returns its
// state; false: it is over its limit. The identity's state stays while
// it has a connection, so that all its connections share one replay
// memory.
func (lm *limiter) connect(id string) (*identity, bool) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	s := lm.ids[id]
	if s == nil {
		s = &identity{replay: newReplayCache(lm.l.NoncesPerIdentity, lm.resend), tokens: float64(lm.l.RequestBurst), last: lm.now()}
		lm.ids[id] = s
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if over(int64(s.conns+1), lm.l.ConnectionsPerIdentity) {
		lm.refused[limConns].Add(1)
		return s, false
	}
	s.conns++
	return s, true
}

func (lm *limiter) disconnect(s *identity) {
	s.mu.Lock()
	s.conns--
	s.mu.Unlock()
}

// startStream counts an unfinished request of id; false: over its limit.
func (lm *limiter) startStream(s *identity) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if over(int64(s.streams+1), lm.l.StreamsPerIdentity) {
		lm.refused[limStreams].Add(1)
		return false
	}
	s.streams++
	return true
}

func (lm *limiter) endStream(s *identity) {
	s.mu.Lock()
	s.streams--
	s.mu.Unlock()
}

// allow takes a token of id's bucket. When there is none it returns how
// long until there is.
func (lm *limiter) allow(s *identity) (bool, time.Duration) {
	if lm.l.RequestRate < 0 {
		return true, 0
	}
	now := lm.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := now.Sub(s.last); d > 0 {
		s.tokens = math.Min(float64(lm.l.RequestBurst), s.tokens+d.Seconds()*lm.l.RequestRate)
	}
	s.last = now
	if s.tokens >= 1 {
		s.tokens--
		return true, 0
	}
	lm.refused[limRate].Add(1)
	return false, time.Duration((1 - s.tokens) / lm.l.RequestRate * float64(time.Second))
}

// reserve counts n more bytes of request buffers for id. On refusal
// nothing is counted.
func (lm *limiter) reserve(s *identity, n int) error {
	if v := s.bytes.Add(int64(n)); over(v, lm.l.RequestBytesPerIdentity) {
		s.bytes.Add(-int64(n))
		lm.refused[limIDBytes].Add(1)
		return Errorf(CodeIdentityMemory, "the identity's unfinished requests hold %d bytes already", v-int64(n))
	}
	if v := lm.bytes.Add(int64(n)); over(v, lm.l.RequestBytes) {
		lm.bytes.Add(-int64(n))
		s.bytes.Add(-int64(n))
		lm.refused[limBytes].Add(1)
		return Errorf(CodeServerMemory, "the server's unfinished requests hold %d bytes already", v-int64(n))
	}
	return nil
}

func (lm *limiter) release(s *identity, n int) {
	s.bytes.Add(-int64(n))
	lm.bytes.Add(-int64(n))
}

// readRequest reads r to its end, at most max bytes (more is
// CodeTooLarge), counting its buffer against id's and the server's
// request memory. The caller releases n bytes once done with the buffer.
func (lm *limiter) readRequest(s *identity, r io.Reader, max int) (buf []byte, n int, err error) {
	const first = 1 << 10
	if err := lm.reserve(s, first); err != nil {
		return nil, 0, err
	}
	buf, n = make([]byte, 0, first), first
	for {
		if len(buf) == cap(buf) {
			if len(buf) > max {
				return buf, n, Errorf(CodeTooLarge, "message over %d bytes", max)
			}
			grow := min(2*cap(buf), max+1) - cap(buf)
			if err := lm.reserve(s, grow); err != nil {
				return buf, n, err
			}
			nb := make([]byte, len(buf), cap(buf)+grow)
			copy(nb, buf)
			clear(buf)
			buf, n = nb, n+grow
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if len(buf) > max {
			return buf, n, Errorf(CodeTooLarge, "message over %d bytes", max)
		}
		if err == io.EOF {
			return buf, n, nil
		}
		if err != nil {
			return buf, n, err
		}
	}
}

// hsKey marks a connection's context with its handshake's tracker.
type hsKey struct{}

// handshake tracks one handshake in progress until it ends one way or
// another.
type handshake struct {
	lm         *limiter
	unverified bool
	done       atomic.Bool
}

func (h *handshake) finish() {
	if h.done.CompareAndSwap(false, true) {
		h.lm.handshakes.Add(-1)
		if h.unverified {
			h.lm.unvalidated.Add(-1)
		}
	}
}

// verifySourceAddress is quic.Transport.VerifySourceAddress: Retry once
// RetryHandshakes unvalidated handshakes are in progress. quic-go calls it
// and connContext from its one packet-handling goroutine, so the count it
// reads cannot move past the threshold between them.
func (lm *limiter) verifySourceAddress(net.Addr) bool {
	if lm.l.RetryHandshakes < 0 || lm.unvalidated.Load() < int64(lm.l.RetryHandshakes) {
		return false
	}
	lm.refused[limRetry].Add(1)
	return true
}

// connContext is quic.Transport.ConnContext: it counts the handshake, or
// refuses it over the limit.
func (lm *limiter) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if over(lm.handshakes.Load()+1, lm.l.Handshakes) {
		lm.refused[limHandshakes].Add(1)
		return nil, errTooManyHandshakes
	}
	h := &handshake{lm: lm, unverified: !info.AddrVerified}
	lm.handshakes.Add(1)
	if h.unverified {
		lm.unvalidated.Add(1)
	}
	context.AfterFunc(ctx, h.finish)
	return context.WithValue(ctx, hsKey{}, h), nil
}

var errTooManyHandshakes = Errorf(CodeBusy, "too many handshakes in progress")

// handshakeDone ends the count of qc's handshake.
func handshakeDone(qc *quic.Conn) {
	if h, ok := qc.Context().Value(hsKey{}).(*handshake); ok {
		h.finish()
	}
}

// sweep forgets expired nonces of every identity, and the identities that
// hold nothing any more.
func (lm *limiter) sweep(now time.Time) {
	lm.mu.Lock()
	ids := make([]*identity, 0, len(lm.ids))
	names := make([]string, 0, len(lm.ids))
	for k, s := range lm.ids {
		ids, names = append(ids, s), append(names, k)
	}
	lm.mu.Unlock()
	for i, s := range ids {
		s.replay.sweep(now)
		s.mu.Lock()
		idle := s.conns == 0 && s.streams == 0 && s.replay.len() == 0 && s.bytes.Load() == 0
		s.mu.Unlock()
		if idle {
			lm.mu.Lock()
			// Taken again under lm.mu: get may have handed it out meanwhile.
			s.mu.Lock()
			if s.conns == 0 && s.streams == 0 && s.replay.len() == 0 {
				delete(lm.ids, names[i])
			}
			s.mu.Unlock()
			lm.mu.Unlock()
		}
	}
}

// stats returns every limit's figures.
func (lm *limiter) stats() []LimitStat {
	var maxConns, maxStreams, maxNonces, maxBytes int64
	minTokens := math.Inf(1)
	lm.mu.Lock()
	ids := make([]*identity, 0, len(lm.ids))
	for _, s := range lm.ids {
		ids = append(ids, s)
	}
	lm.mu.Unlock()
	now := lm.now()
	for _, s := range ids {
		s.mu.Lock()
		maxConns, maxStreams = max(maxConns, int64(s.conns)), max(maxStreams, int64(s.streams))
		t := math.Min(float64(lm.l.RequestBurst), s.tokens+now.Sub(s.last).Seconds()*lm.l.RequestRate)
		s.mu.Unlock()
		minTokens = math.Min(minTokens, t)
		maxNonces = max(maxNonces, int64(s.replay.len()))
		maxBytes = max(maxBytes, s.bytes.Load())
	}
	if math.IsInf(minTokens, 1) {
		minTokens = float64(lm.l.RequestBurst)
	}
	l := lm.l
	in := [...]float64{float64(maxConns), float64(maxStreams), minTokens, float64(maxNonces), float64(maxBytes),
		float64(lm.bytes.Load()), float64(lm.unvalidated.Load()), float64(lm.handshakes.Load())}
	lim := [...]float64{float64(l.ConnectionsPerIdentity), float64(l.StreamsPerIdentity), l.RequestRate,
		float64(l.NoncesPerIdentity), float64(l.RequestBytesPerIdentity), float64(l.RequestBytes),
		float64(l.RetryHandshakes), float64(l.Handshakes)}
	out := make([]LimitStat, len(limitNames))
	for i := range out {
		out[i] = LimitStat{Name: limitNames[i], Code: limitCodes[i], Limit: lim[i], InUse: in[i], Refused: lm.refused[i].Load()}
	}
	return out
}

// retryError is a refusal with a hint of when to try again (Response
// field 5).
type retryError struct {
	err   *Error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// retryAfterMillis rounds d up to whole milliseconds, at least 1.
func retryAfterMillis(d time.Duration) uint32 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return uint32(min(max(ms, 1), math.MaxUint32))
}
