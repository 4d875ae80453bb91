package transport

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/quic-go/quic-go"
)

// Identity is an enrolled party, as the server's Enrollment knows it.
type Identity struct {
	// ID names the identity in logs and the audit trail.
	ID string
	// Certificate is the client certificate the connection presented.
	Certificate *x509.Certificate
	// Key verifies the identity's request signatures; nil means the
	// certificate's public key.
	Key crypto.PublicKey
	// Value is the enrollment's own data, for the handler.
	Value any
}

func (id *Identity) key() crypto.PublicKey {
	if id.Key != nil {
		return id.Key
	}
	return id.Certificate.PublicKey
}

// Enrollment maps a client certificate to an enrolled identity. It returns
// an error wrapping ErrNotEnrolled for a certificate it does not know. The
// transport has already checked the certificate's validity period and that
// the client holds its key.
type Enrollment interface {
	Identify(ctx context.Context, cert *x509.Certificate) (*Identity, error)
}

// StaticEnrollment is an Enrollment from a set of certificates, keyed by
// the SHA-256 of their DER. It is safe for concurrent use: certificates
// may be added while a server uses it.
type StaticEnrollment struct {
	mu sync.RWMutex
	m  map[[32]byte]*Identity
}

// NewStaticEnrollment returns an empty StaticEnrollment.
func NewStaticEnrollment() *StaticEnrollment {
	return &StaticEnrollment{m: map[[32]byte]*Identity{}}
}

// Add enrolls cert under id.
func (e *StaticEnrollment) Add(id string, cert *x509.Certificate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[sha256.Sum256(cert.Raw)] = &Identity{ID: id, Certificate: cert}
}

// Certificate returns the certificate enrolled under id.
func (e *StaticEnrollment) Certificate(id string) (*x509.Certificate, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, v := range e.m {
		if v.ID == id {
			return v.Certificate, true
		}
	}
	return nil, false
}

// Identify implements Enrollment.
func (e *StaticEnrollment) Identify(_ context.Context, cert *x509.Certificate) (*Identity, error) {
	e.mu.RLock()
	id, ok := e.m[sha256.Sum256(cert.Raw)]
	e.mu.RUnlock()
	if !ok {
		return nil, ErrNotEnrolled
	}
	c := *id
	c.Certificate = cert
	return &c, nil
}

// Call is one request, as the handler sees it.
type Call struct {
	Conn *Conn
	Op   Op
	// Body is the operation's CBOR body; decode it with [Call.Decode].
	Body cbor.RawMessage
	// Secret is the request's secret (the virtual PIN of Login). The
	// transport zeroes it when the handler returns: copy what must live on.
	Secret []byte
	// Evidence is the verified COSE_Sign1 of a signed request, byte for
	// byte as the client sent it: what the audit log keeps. Nil for
	// unsigned operations.
	Evidence []byte
	// Nonce and Time are the signed request's.
	Nonce []byte
	Time  time.Time
	// Early is true when the request arrived on a 0-RTT connection before
	// the handshake completed.
	Early bool
}

// Decode decodes the call's body into v.
func (c *Call) Decode(v any) error { return Unmarshal(c.Body, v) }

// Handler serves requests. It returns the response body (encoded with
// Marshal) or an error; an *Error chooses the code, any other error is
// CodeInternal and its text stays in the server's log.
//
// Handle is called concurrently, for requests of one connection and of many.
type Handler interface {
	Handle(ctx context.Context, call *Call) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, call *Call) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, call *Call) (any, error) { return f(ctx, call) }

// ConnHandler is an optional interface of a Handler that wants to know when
// connections of enrolled identities start and end. A Connected error closes
// the connection with the error's code.
type ConnHandler interface {
	Connected(c *Conn) error
	Closed(c *Conn)
}

// Conn is an accepted connection of an enrolled identity. It is safe for
// concurrent use.
type Conn struct {
	Identity *Identity
	qc       *quic.Conn
	server   *Server

	mu     sync.Mutex
	values map[any]any

	ident *identity // the identity's counts and replay memory

	evMu   sync.Mutex // serializes events; never held with mu
	events *quic.SendStream
}

// RemoteAddr is the client's current address (it changes on migration).
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Used0RTT reports whether the connection was resumed with 0-RTT data.
func (c *Conn) Used0RTT() bool { return c.qc.ConnectionState().Used0RTT }

// Context ends when the connection does.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// Value returns what SetValue stored under key.
func (c *Conn) Value(key any) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values[key]
}

// SetValue stores per-connection state for the handler (a login, say).
func (c *Conn) SetValue(key, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.values == nil {
		c.values = map[any]any{}
	}
	c.values[key] = v
}

// Notify sends ev on the connection's event stream, opening it the first
// time.
func (c *Conn) Notify(ev *Event) error {
	frame, err := AppendEventFrame(nil, ev)
	if err != nil {
		return err
	}
	c.evMu.Lock()
	defer c.evMu.Unlock()
	if c.events == nil {
		s, err := c.qc.OpenUniStream()
		if err != nil {
			return err
		}
		c.events = s
	}
	c.events.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err = c.events.Write(frame); err != nil {
		// A frame written in part would garble the stream: drop it; the
		// next event opens a new one.
		c.events.CancelWrite(quic.StreamErrorCode(CodeTimeout))
		c.events = nil
	}
	return err
}

// Swap stores v under key and returns what was there, atomically.
func (c *Conn) Swap(key, v any) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.values == nil {
		c.values = map[any]any{}
	}
	old := c.values[key]
	if v == nil {
		delete(c.values, key)
	} else {
		c.values[key] = v
	}
	return old
}

// ReplayWindow is the server's replay window, for Hello answers.
func (c *Conn) ReplayWindow() time.Duration { return c.server.ReplayWindow }

// Close closes the connection with code.
func (c *Conn) Close(code Code, msg string) error {
	return c.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

// DefaultResendPeriod is [Server.ResendPeriod] when zero: the QUIC idle
// timeout of [DefaultQUICConfig] (30 s, within which a client notices
// that its connection is lost) and 10 s more to connect again and resend.
// The client (package client) resends at once on a new connection, with
// the request's nonce and time.
const DefaultResendPeriod = 40 * time.Second

// Server serves the protocol over QUIC. Set its fields before Serve; it is
// safe for concurrent use afterwards.
type Server struct {
	Handler    Handler
	Enrollment Enrollment
	// TLSConfig holds the server certificate. The server takes a clone and
	// sets TLS 1.3, ALPN "pscs/1" and the client-certificate requirement.
	TLSConfig *tls.Config
	// QUICConfig tunes QUIC; nil means defaults (see [DefaultQUICConfig]).
	// Allow0RTT is always set.
	QUICConfig *quic.Config
	// Logger receives connection events and errors; nil discards them.
	Logger *slog.Logger
	// ReplayWindow is how far a request's time may be from the server's,
	// and how long nonces are remembered. Zero means 2 minutes.
	ReplayWindow time.Duration
	// RequestTimeout bounds each request. Zero means 30 seconds.
	RequestTimeout time.Duration
	// ResendPeriod is how long after answering a signed request the
	// server keeps the whole answer, for the same identity resending the
	// request (same nonce) after losing its connection: such a resend
	// gets CodeReplay with the first answer (Response.Original), and
	// each one starts the period again. After it, only the nonce is kept
	// until it expires: a replay or a later resend is still refused with
	// CodeReplay and never runs, but without the first answer. Zero means
	// [DefaultResendPeriod].
	ResendPeriod time.Duration
	// Limits bound what each identity, and all clients together, may
	// hold of the server; the zero value has a default for each (see
	// [Limits]).
	Limits Limits
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	once   sync.Once
	lim    *limiter
	conns  sync.Map // *Conn -> struct{}
	active atomic.Int64
	stats  Stats
}

// Stats counts what the server did.
type Stats struct {
	Connections atomic.Int64 // accepted and identified
	Refused     atomic.Int64 // connections refused with a code (not enrolled, expired, too many, the ConnHandler's)
	Requests    atomic.Int64 // requests answered
	Replays     atomic.Int64 // requests refused as replays
	Errors      atomic.Int64 // requests answered with an error code
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// LimitStats returns the figures of every limit of [Server.Limits]: its
// value, its use now and how often it refused. It is for metrics.
func (s *Server) LimitStats() []LimitStat {
	s.init()
	return s.lim.stats()
}

// ActiveConnections is the number of open connections.
func (s *Server) ActiveConnections() int64 { return s.active.Load() }

// DefaultQUICConfig is the QUIC configuration when Server.QUICConfig or the
// client's is nil: 30 s idle timeout, keepalive every 10 s, 0-RTT allowed,
// at most 256 concurrent requests per connection.
func DefaultQUICConfig() *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:        30 * time.Second,
		KeepAlivePeriod:       10 * time.Second,
		Allow0RTT:             true,
		MaxIncomingStreams:    256,
		MaxIncomingUniStreams: 4,
	}
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.ReplayWindow == 0 {
			s.ReplayWindow = 2 * time.Minute
		}
		if s.RequestTimeout == 0 {
			s.RequestTimeout = 30 * time.Second
		}
		if s.ResendPeriod == 0 {
			s.ResendPeriod = DefaultResendPeriod
		}
		if s.Now == nil {
			s.Now = time.Now
		}
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		s.lim = newLimiter(s.Limits, s.Now, s.ResendPeriod)
	})
}

// ServerTLSConfig returns the TLS configuration the server uses for base.
func ServerTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{ALPN}
	// Any certificate, proven by the client's signature in the handshake;
	// the Enrollment decides who it is, so that an unknown or expired
	// certificate gets its own error code rather than a TLS alert.
	c.ClientAuth = tls.RequireAnyClientCert
	return c
}

// Serve accepts connections on pc until ctx ends. It closes every
// connection (code CodeShutdown) before returning.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	s.init()
	if s.Handler == nil || s.Enrollment == nil || s.TLSConfig == nil {
		return errors.New("transport: Server needs Handler, Enrollment and TLSConfig")
	}
	qconf := s.QUICConfig
	if qconf == nil {
		qconf = DefaultQUICConfig()
	} else {
		qconf = qconf.Clone()
	}
	qconf.Allow0RTT = true
	// What QUIC buffers for requests the server has not read yet: one
	// request's worth per stream, 1 MiB per connection.
	if qconf.InitialStreamReceiveWindow == 0 {
		qconf.InitialStreamReceiveWindow = serverStreamWindow
	}
	if qconf.MaxStreamReceiveWindow == 0 {
		qconf.MaxStreamReceiveWindow = serverStreamWindow
	}
	if qconf.InitialConnectionReceiveWindow == 0 {
		qconf.InitialConnectionReceiveWindow = serverConnectionWindow / 2
	}
	if qconf.MaxConnectionReceiveWindow == 0 {
		qconf.MaxConnectionReceiveWindow = serverConnectionWindow
	}
	tr := &quic.Transport{Conn: pc,
		VerifySourceAddress: s.lim.verifySourceAddress,
		ConnContext:         s.lim.connContext}
	ln, err := tr.ListenEarly(ServerTLSConfig(s.TLSConfig), qconf)
	if err != nil {
		return err
	}
	defer tr.Close()
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	sweepCtx, stopSweep := context.WithCancel(ctx)
	defer stopSweep() // before wg.Wait, also when Accept fails
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sweep(sweepCtx)
	}()
	defer s.conns.Range(func(k, _ any) bool {
		k.(*Conn).Close(CodeShutdown, "server shutting down")
		return true
	})
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		stop := context.AfterFunc(ctx, func() { qc.CloseWithError(quic.ApplicationErrorCode(CodeShutdown), "server shutting down") })
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			s.serveConn(ctx, qc)
		}()
	}
}

// sweep forgets expired nonces and idle identities, and the answers kept
// past the resend period, every quarter of the replay window or eighth of
// the resend period (whichever is shorter, at least a second), until ctx
// ends.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(max(min(s.ReplayWindow/4, s.ResendPeriod/8), time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.lim.sweep(s.Now())
		}
	}
}

func (s *Server) serveConn(ctx context.Context, qc *quic.Conn) {
	log := s.Logger.With("remote", qc.RemoteAddr().String())
	if isClosed(qc.HandshakeComplete()) {
		handshakeDone(qc)
	} else {
		go func() {
			select {
			case <-qc.HandshakeComplete():
				handshakeDone(qc)
			case <-qc.Context().Done():
			}
		}()
	}
	// The identity: a resumed connection's at once, from its session
	// ticket (the client proved the ticket's key with the PSK binder of
	// its ClientHello), so that its 0-RTT requests run without waiting; a
	// new connection's only once the handshake is complete. Before that,
	// TLS may already show the client's certificate while the
	// CertificateVerify that proves its key is still to come: counted
	// then, anyone holding alice's (public) certificate could take her
	// connection slots. (TLS itself refuses a client without a
	// certificate: alert certificate_required.)
	state := qc.ConnectionState().TLS
	if !state.DidResume {
		if !handshakeComplete(ctx, qc) {
			return
		}
		state = qc.ConnectionState().TLS
	}
	if len(state.PeerCertificates) == 0 {
		s.refuse(ctx, qc, log, CodeNotEnrolled, "no client certificate")
		return
	}
	cert := state.PeerCertificates[0]
	now := s.Now()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		s.refuse(ctx, qc, log, CodeCertExpired, "client certificate expired or not yet valid", "subject", cert.Subject.String(), "not_after", cert.NotAfter)
		return
	}
	id, err := s.Enrollment.Identify(ctx, cert)
	if err != nil || id == nil {
		code := CodeOf(err)
		if code == CodeInternal || code == CodeOK {
			code = CodeNotEnrolled
		}
		s.refuse(ctx, qc, log, code, code.String(), "subject", cert.Subject.String(), "err", err)
		return
	}
	ident, ok := s.lim.connect(id.ID)
	if !ok {
		s.refuse(ctx, qc, log, CodeTooManyConnections, CodeTooManyConnections.String(), "identity", id.ID, "limit", s.lim.l.ConnectionsPerIdentity)
		return
	}
	defer s.lim.disconnect(ident)
	c := &Conn{Identity: id, qc: qc, server: s, ident: ident}
	if ch, ok := s.Handler.(ConnHandler); ok {
		if err := ch.Connected(c); err != nil {
			code := CodeOf(err)
			if code == CodeOK {
				code = CodeInternal
			}
			s.refuse(ctx, qc, log, code, "refused", "identity", id.ID, "err", err)
			return
		}
		defer ch.Closed(c)
	}
	s.stats.Connections.Add(1)
	s.active.Add(1)
	s.conns.Store(c, struct{}{})
	defer func() {
		s.conns.Delete(c)
		s.active.Add(-1)
	}()
	log = log.With("identity", id.ID)
	log.Debug("connection", "0rtt", qc.ConnectionState().Used0RTT)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := qc.AcceptStream(qc.Context())
		if err != nil {
			return
		}
		if !s.lim.startStream(ident) {
			// Nothing read, nothing written, no goroutine: the stream
			// is reset both ways with the code.
			s.stats.Requests.Add(1)
			s.stats.Errors.Add(1)
			st.CancelRead(quic.StreamErrorCode(CodeTooManyRequests))
			st.CancelWrite(quic.StreamErrorCode(CodeTooManyRequests))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.lim.endStream(ident)
			s.serveStream(ctx, c, st, log)
		}()
	}
}

// serveStream reads one request, answers it and closes the stream.
func (s *Server) serveStream(ctx context.Context, c *Conn, st *quic.Stream, log *slog.Logger) {
	defer st.Close()
	var resp *Response
	if ok, wait := s.lim.allow(c.ident); !ok {
		// Refused before anything of it is read or verified.
		st.CancelRead(quic.StreamErrorCode(CodeRateLimited))
		resp = &Response{Status: CodeRateLimited, Message: "the identity's request rate is over its limit", RetryAfter: retryAfterMillis(wait)}
	} else {
		st.SetReadDeadline(time.Now().Add(s.RequestTimeout))
		raw, held, err := s.lim.readRequest(c.ident, st, MaxRequestSize)
		if err != nil {
			code := CodeOf(err)
			if code == CodeInternal {
				code = CodeMalformed
			}
			st.CancelRead(quic.StreamErrorCode(code))
			resp = &Response{Status: code, Message: "request not read: " + code.String()}
		} else {
			resp = s.answer(ctx, c, raw, log)
		}
		clear(raw[:cap(raw)]) // the request may have carried a secret
		s.lim.release(c.ident, held)
	}
	if resp.Version == 0 {
		resp.Version = ProtocolVersion
	}
	out, err := Marshal(resp)
	if err != nil || len(out) > MaxResponseSize {
		log.Error("response not encodable", "err", err, "size", len(out))
		out, _ = Marshal(&Response{Version: ProtocolVersion, Status: CodeInternal})
	}
	s.stats.Requests.Add(1)
	if resp.Status != CodeOK {
		s.stats.Errors.Add(1)
	}
	st.SetWriteDeadline(time.Now().Add(s.RequestTimeout))
	st.Write(out)
}

// answer decodes, authenticates and runs one request.
func (s *Server) answer(ctx context.Context, c *Conn, raw []byte, log *slog.Logger) *Response {
	var req Request
	if err := Unmarshal(raw, &req); err != nil {
		return &Response{Status: CodeMalformed, Message: "request does not decode"}
	}
	defer clear(req.Secret)
	if _, known := opNames[req.Op]; !known {
		return &Response{Status: CodeUnsupported, Message: fmt.Sprintf("unknown operation %d", req.Op)}
	}
	call := &Call{Conn: c, Op: req.Op, Secret: req.Secret}
	handshakeDone := isClosed(c.qc.HandshakeComplete())
	call.Early = !handshakeDone

	if !req.Op.Signed() {
		if req.Signed != nil {
			return &Response{Status: CodeMalformed, Message: "unsigned operation with a signature"}
		}
		// Unsigned requests are replayable: never act on 0-RTT data alone.
		select {
		case <-c.qc.HandshakeComplete():
		case <-c.qc.Context().Done():
			return &Response{Status: CodeShutdown}
		}
		call.Body = req.Body
		return s.run(ctx, call, log)
	}
	if req.Signed == nil {
		return &Response{Status: CodeSignatureRequired, Message: req.Op.String() + " must be signed"}
	}
	if req.Body != nil {
		return &Response{Status: CodeMalformed, Message: "signed request with an unsigned body"}
	}
	p, err := VerifyPayload(req.Signed, c.Identity.key())
	if err != nil {
		log.Info("request refused", "op", req.Op, "err", err)
		return errorResponse(err)
	}
	if p.Op != req.Op {
		return &Response{Status: CodeBadSignature, Message: "signed operation differs from the request's"}
	}
	now := s.Now()
	t := time.UnixMilli(p.Time)
	if d := now.Sub(t); d > s.ReplayWindow || d < -s.ReplayWindow {
		return &Response{Status: CodeStale, Message: fmt.Sprintf("request time off by %v; the window is ±%v", d.Round(time.Millisecond), s.ReplayWindow)}
	}
	// Binding: requests sent after the handshake carry the connection's
	// exporter value; only a connection resumed with 0-RTT may carry
	// unbound requests.
	bound := true
	if len(p.Binding) > 0 || !c.Used0RTT() {
		if !handshakeDone {
			select {
			case <-c.qc.HandshakeComplete():
			case <-c.qc.Context().Done():
				return &Response{Status: CodeShutdown}
			}
		}
		want, err := exporter(c.qc)
		bound = err == nil && bytes.Equal(p.Binding, want)
	}
	// A nonce seen before is a replay, whatever the binding (a request
	// replayed on another connection is reported as the replay it is); a
	// fresh one is remembered only once the request is bound right, so that
	// a client can resend a request it bound wrong.
	replay := c.ident.replay
	key := nonceKey(p.Nonce) // NonceSize bytes: VerifyPayload checked
	entry, seen := replay.lookup(key)
	if !seen && !bound {
		return &Response{Status: CodeBadBinding, Message: "request not bound to this connection"}
	}
	fresh := false
	if !seen {
		var err error
		entry, fresh, err = replay.begin(key, t.Add(2*s.ReplayWindow), now)
		if err != nil {
			s.lim.refused[limNonces].Add(1)
			log.Debug("request refused: the identity's replay memory is full", "op", req.Op)
			return errorResponse(err)
		}
	}
	if !fresh {
		s.stats.Replays.Add(1)
		log.Warn("replayed request refused", "op", req.Op, "nonce", hex.EncodeToString(p.Nonce), "early", call.Early)
		resp := &Response{Status: CodeReplay, Message: "nonce already used"}
		if !bound {
			return resp
		}
		// The same identity resending on its own connection after losing
		// one learns the first outcome, without a second execution.
		if entry == nil {
			return resp // past the resend period: the nonce alone is kept
		}
		select {
		case <-entry.done:
			resp.Original = entry.resp
			replay.resent(entry, s.Now())
		case <-time.After(s.RequestTimeout):
		case <-ctx.Done():
		}
		return resp
	}
	call.Body, call.Evidence, call.Nonce, call.Time = p.Body, req.Signed, p.Nonce, t
	resp := s.run(ctx, call, log)
	resp.Version = ProtocolVersion // before finish: replays read resp concurrently
	replay.finish(entry, resp, s.Now())
	return resp
}

// refuse closes qc with code, once its handshake is complete. Closed
// before, the close would also travel in Initial and Handshake packets,
// where QUIC carries no application code, only a bare APPLICATION_ERROR
// (RFC 9000, section 10.2.3): the client, reading whichever packet came
// first, could not tell the refusal from a failed handshake. After it the
// server holds 1-RTT keys only, and the client reads the code.
func (s *Server) refuse(ctx context.Context, qc *quic.Conn, log *slog.Logger, code Code, msg string, args ...any) {
	s.stats.Refused.Add(1)
	log.Info("connection refused: "+msg, append([]any{"code", code}, args...)...)
	handshakeComplete(ctx, qc)
	qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

// handshakeComplete waits until qc's handshake is complete; false: the
// connection or ctx ended first.
func handshakeComplete(ctx context.Context, qc *quic.Conn) bool {
	select {
	case <-qc.HandshakeComplete():
		return true
	case <-qc.Context().Done():
	case <-ctx.Done():
	}
	return isClosed(qc.HandshakeComplete())
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// exporter is the connection's binding value.
func exporter(qc *quic.Conn) ([]byte, error) {
	st := qc.ConnectionState().TLS
	return st.ExportKeyingMaterial(BindingLabel, nil, BindingSize)
}

func (s *Server) run(ctx context.Context, call *Call, log *slog.Logger) *Response {
	ctx, cancel := context.WithTimeout(ctx, s.RequestTimeout)
	defer cancel()
	body, err := s.Handler.Handle(ctx, call)
	if err != nil {
		if CodeOf(err) == CodeInternal {
			log.Error("handler failed", "op", call.Op, "err", err)
			if ctx.Err() != nil {
				return &Response{Status: CodeTimeout}
			}
		}
		return errorResponse(err)
	}
	resp := &Response{Status: CodeOK}
	if body != nil {
		b, err := Marshal(body)
		if err != nil {
			log.Error("response body not encodable", "op", call.Op, "err", err)
			return &Response{Status: CodeInternal}
		}
		resp.Body = b
	}
	return resp
}

// errorResponse turns an error into a response; only *Error messages
// reach the wire.
func errorResponse(err error) *Response {
	var e *Error
	if errors.As(err, &e) {
		r := &Response{Status: e.Code, Message: e.Message, TriesLeft: e.TriesLeft}
		var re *retryError
		if errors.As(err, &re) {
			r.RetryAfter = retryAfterMillis(re.after)
		}
		return r
	}
	return &Response{Status: CodeInternal}
}
