// Package client is the Go client of the pscs protocol: it connects a
// delegate to pscsd over QUIC with mutual TLS, signs every state-changing
// request with the delegate's key, and keeps the round trips to the physical
// floor.
//
// # Use
//
//	c, err := client.Dial(ctx, client.Config{Addr: "pscs.example:4433", Certificate: cert, RootCAs: roots})
//	hello, err := c.Hello(ctx)                      // catalogue of remote cards
//	_, err = c.Login(ctx, slot, vpin)               // one round trip
//	sig, err := c.Sign(ctx, &transport.SignRequest{…}) // one round trip
//
// # Round trips
//
// Every request is one QUIC stream: one round trip once the connection is
// up. A new connection costs one more (the QUIC/TLS handshake), except when
// the client holds a session ticket from an earlier connection (share
// [Config.SessionCache] between clients of a process): then signed requests
// ride in 0-RTT early data and cost no extra round trip at all. The server
// detects replays of early data by the request's single-use nonce, and runs
// unsigned requests only once the handshake is complete.
//
// # Lost connections
//
// When the connection is lost, the next request reconnects. A request whose
// connection failed under it is sent again on the new connection with the
// same nonce: if the server never saw it, it runs now; if it did, the server
// refuses the copy as a replay and hands back the first outcome, so nothing
// runs twice.
//
// # Refused connections
//
// The server refuses a connection by closing it with a code once the
// handshake is complete: not enrolled (1), certificate expired (2), too
// many connections of the identity (21), or its handler's own. [Dial]
// returns before the handshake completes (so that the first request may
// ride in 0-RTT), so the refusal reaches the next request: it returns a
// *transport.Error with the code, and is not sent again. The client
// reports each refusal once, to one request: the request after it dials a
// new connection, which succeeds when the cause is gone (a connection of
// the identity closed, say) and is refused again otherwise. The same holds
// for a connection the server closes later with a code; only
// [transport.CodeShutdown] (the server going away) reconnects silently.
//
// # Concurrency
//
// A Client is safe for concurrent use; concurrent requests travel on
// parallel streams of one connection.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pscs/pscs/internal/israce"
	"github.com/pscs/pscs/transport"
)

// Config configures a Client.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// ServerName is the name the server's certificate must carry; empty
	// means the host of Addr.
	ServerName string
	// Certificate is the delegate's client certificate; its private key
	// (a crypto.Signer) also signs the requests.
	Certificate tls.Certificate
	// RootCAs verify the server's certificate. With ServerSPKI set and
	// RootCAs nil, the pin alone authenticates the server.
	RootCAs *x509.CertPool
	// ServerSPKI, if set, pins the SHA-256 of the server's
	// SubjectPublicKeyInfo.
	ServerSPKI []byte
	// SessionCache keeps TLS session tickets for resumption and 0-RTT; nil
	// means a cache of this Client only.
	SessionCache tls.ClientSessionCache
	// QUICConfig tunes QUIC; nil means transport.DefaultQUICConfig().
	QUICConfig *quic.Config
	// PacketConn is the UDP socket to use; nil means a new one.
	PacketConn net.PacketConn
	// Name is sent in Hello (client software and version).
	Name string
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Retries is how often a request whose connection failed is sent
	// again; zero means 2, a negative number none.
	Retries int
}

// Client is a connection to pscsd that reconnects when needed.
type Client struct {
	cfg    Config
	signer crypto.Signer
	tls    *tls.Config
	tr     *quic.Transport
	ownPC  bool
	raddr  net.Addr
	log    *slog.Logger
	cache  *ticketCache

	mu     sync.Mutex
	conn   *link
	closed bool

	offset atomic.Int64 // server time - local time, ms
	events chan *transport.Event
}

// Dial starts a connection to the server. It returns before the handshake
// completes, so that the first request can ride in 0-RTT early data.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	signer, ok := cfg.Certificate.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("client: the certificate's private key is not a crypto.Signer")
	}
	if cfg.Certificate.Leaf == nil && len(cfg.Certificate.Certificate) > 0 {
		leaf, err := x509.ParseCertificate(cfg.Certificate.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("client: certificate: %w", err)
		}
		cfg.Certificate.Leaf = leaf
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: address: %w", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: address: %w", err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.SessionCache == nil {
		cfg.SessionCache = tls.NewLRUClientSessionCache(8)
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	c := &Client{cfg: cfg, signer: signer, raddr: raddr, log: cfg.Logger,
		events: make(chan *transport.Event, 64),
		cache:  &ticketCache{ClientSessionCache: cfg.SessionCache}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.tls = &tls.Config{
		Certificates:       []tls.Certificate{cfg.Certificate},
		RootCAs:            cfg.RootCAs,
		ServerName:         cfg.ServerName,
		NextProtos:         []string{transport.ALPN},
		MinVersion:         tls.VersionTLS13,
		ClientSessionCache: c.cache,
	}
	if cfg.ServerSPKI != nil {
		c.tls.InsecureSkipVerify = cfg.RootCAs == nil // the pin below authenticates
		pin := append([]byte(nil), cfg.ServerSPKI...)
		c.tls.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("client: server sent no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if string(sum[:]) != string(pin) {
				return errors.New("client: server key does not match the pin")
			}
			return nil
		}
	}
	pc := cfg.PacketConn
	if pc == nil {
		pc, err = net.ListenUDP("udp", nil)
		if err != nil {
			return nil, err
		}
		c.ownPC = true
	}
	c.tr = &quic.Transport{Conn: pc}
	if _, err := c.connection(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ticketCache remembers whether the last lookup found a ticket, to know
// whether a new connection will attempt 0-RTT.
type ticketCache struct {
	tls.ClientSessionCache
	found atomic.Bool
}

func (t *ticketCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := t.ClientSessionCache.Get(key)
	t.found.Store(ok && s != nil)
	return s, ok
}

// link is one QUIC connection and whether it was dialed with a session
// ticket (so requests sent before its handshake completes go as 0-RTT).
type link struct {
	qc    *quic.Conn
	early bool
}

// connection returns the current connection, dialing a new one if there is
// none or it is closed.
func (c *Client) connection(ctx context.Context) (*link, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, net.ErrClosed
	}
	if l := c.conn; l != nil {
		if l.qc.Context().Err() == nil {
			return l, nil
		}
		// The server closed the connection: a refusal (its code) is
		// the next request's answer, once; the request after it dials
		// again.
		c.conn = nil
		if err := refusal(l.qc); err != nil {
			return nil, err
		}
	}
	qconf := c.cfg.QUICConfig
	if qconf == nil {
		qconf = transport.DefaultQUICConfig()
	}
	c.cache.found.Store(false)
	qc, err := c.tr.DialEarly(ctx, c.raddr, c.tls, qconf)
	if err != nil {
		return nil, classify(err)
	}
	// quic-go v0.65 reads the peer's transport parameters when a stream
	// is opened while its handshake goroutine may still write them, which
	// is what 0-RTT does (quic-go issue 4303). Built with the race
	// detector, the client therefore sends nothing before the handshake
	// completes (resumption, without early data); the tests that measure
	// 0-RTT run without the race detector too.
	c.conn = &link{qc: qc, early: c.cache.found.Load() && !israce.Enabled}
	go c.readEvents(qc)
	c.log.Debug("connecting", "addr", c.cfg.Addr, "0rtt", c.conn.early)
	return c.conn, nil
}

// replace swaps l for the connection that replaced it after the server
// refused 0-RTT.
func (c *Client) replace(l *link, next *quic.Conn) *link {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == l {
		c.conn = &link{qc: next}
		go c.readEvents(next)
		return c.conn
	}
	return &link{qc: next}
}

// refusal returns the *transport.Error of a connection the server closed
// with a code other than CodeShutdown (after which a new connection is
// welcome), or nil.
func refusal(qc *quic.Conn) error {
	if qc.Context().Err() == nil {
		return nil
	}
	var te *transport.Error
	if err := classify(context.Cause(qc.Context())); errors.As(err, &te) && te.Remote && te.Code != transport.CodeShutdown && te.Code != transport.CodeOK {
		return err
	}
	return nil
}

// drop forgets l if it is the current connection.
func (c *Client) drop(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == l {
		c.conn = nil
	}
}

// Close closes the connection and the socket if the client made it.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		conn.qc.CloseWithError(0, "client closed")
	}
	err := c.tr.Close()
	if c.ownPC {
		c.tr.Conn.Close()
	}
	return err
}

// Events delivers the server's events. The channel is buffered; events
// that find it full are dropped (the catalogue tag tells what was missed).
func (c *Client) Events() <-chan *transport.Event { return c.events }

func (c *Client) readEvents(qc *quic.Conn) {
	for {
		st, err := qc.AcceptUniStream(qc.Context())
		if err != nil {
			return
		}
		go func() {
			r := bufio.NewReader(st)
			for {
				ev, err := transport.ReadEventFrame(r)
				if err != nil {
					st.CancelRead(0)
					return
				}
				select {
				case c.events <- ev:
				default:
				}
			}
		}()
	}
}

// classify turns QUIC errors into transport errors where the server chose a
// code.
func classify(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return &transport.Error{Code: transport.Code(ae.ErrorCode), Message: ae.ErrorMessage, Remote: true}
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return &transport.Error{Code: transport.Code(se.ErrorCode), Remote: true}
	}
	return err
}

// connectionLost reports whether err means the connection died (so the
// request may be sent again), as opposed to a refusal or a local error.
func connectionLost(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Code == transport.CodeShutdown
	}
	var tre0 *quic.TransportError
	if errors.As(err, &tre0) && tre0.ErrorCode >= 0x100 && tre0.ErrorCode <= 0x1FF {
		return false // a TLS alert: the handshake failed, and would again
	}
	var idle *quic.IdleTimeoutError
	var reset *quic.StatelessResetError
	var hs *quic.HandshakeTimeoutError
	var ae *quic.ApplicationError
	var tre *quic.TransportError
	return errors.As(err, &idle) || errors.As(err, &reset) || errors.As(err, &hs) ||
		errors.As(err, &ae) || errors.As(err, &tre) || errors.Is(err, quic.Err0RTTRejected) ||
		errors.Is(err, net.ErrClosed)
}

// Do sends one request and decodes the answer's body into out (if not nil).
// body is the operation's body; secret travels outside the signature (the
// virtual PIN of Login). A refusal is a *transport.Error.
func (c *Client) Do(ctx context.Context, op transport.Op, body any, secret []byte, out any) error {
	var rawBody []byte
	if body != nil {
		b, err := transport.Marshal(body)
		if err != nil {
			return err
		}
		rawBody = b
	}
	var nonce []byte
	if op.Signed() {
		nonce = make([]byte, transport.NonceSize)
		rand.Read(nonce)
	}
	when := time.Now().UnixMilli() + c.offset.Load()
	var lastErr error
	for attempt := 0; attempt <= max(c.cfg.Retries, 0); attempt++ {
		if attempt > 0 {
			c.log.Debug("resending request", "op", op, "attempt", attempt, "err", lastErr)
		}
		l, err := c.connection(ctx)
		if err != nil {
			lastErr = err
			if errors.Is(err, net.ErrClosed) {
				return err // closed by Close
			}
			if connectionLost(err) && ctx.Err() == nil {
				continue
			}
			return err
		}
		resp, err := c.roundTrip(ctx, l, op, rawBody, secret, nonce, when)
		if errors.Is(err, quic.Err0RTTRejected) {
			// The server refused early data: send it again on the
			// connection that replaced this one, bound to it.
			next, nerr := l.qc.NextConnection(ctx)
			if nerr != nil {
				return classify(nerr)
			}
			l = c.replace(l, next)
			resp, err = c.roundTrip(ctx, l, op, rawBody, secret, nonce, when)
		}
		if err != nil {
			var ae *quic.ApplicationError
			closed := errors.As(err, &ae) && ae.Remote // the whole connection, with a code
			err = classify(err)
			lastErr = err
			if connectionLost(err) && ctx.Err() == nil {
				c.drop(l)
				continue
			}
			if closed {
				c.drop(l) // refused: this request reports it, the next one dials
			}
			return err
		}
		if resp.Status == transport.CodeReplay && attempt > 0 && resp.Original != nil {
			resp = resp.Original // our own first try got through
		}
		if resp.Status != transport.CodeOK {
			return &transport.Error{Code: resp.Status, Message: resp.Message, TriesLeft: resp.TriesLeft, Remote: true}
		}
		if out != nil {
			return transport.Unmarshal(resp.Body, out)
		}
		return nil
	}
	return lastErr
}

// roundTrip sends one request on a new stream of qc and reads the answer.
func (c *Client) roundTrip(ctx context.Context, l *link, op transport.Op, body, secret, nonce []byte, when int64) (*transport.Response, error) {
	qc := l.qc
	req := transport.Request{Version: transport.ProtocolVersion, Op: op, Secret: secret}
	if op.Signed() {
		p := &transport.SignedPayload{Op: op, Nonce: nonce, Time: when, Body: body}
		if !l.early {
			select {
			case <-qc.HandshakeComplete():
			case <-qc.Context().Done():
				return nil, context.Cause(qc.Context())
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case <-qc.HandshakeComplete():
			st := qc.ConnectionState().TLS
			b, err := st.ExportKeyingMaterial(transport.BindingLabel, nil, transport.BindingSize)
			if err != nil {
				return nil, err
			}
			p.Binding = b
		default: // 0-RTT: unbound, the nonce protects it
		}
		signed, err := transport.SignPayload(c.signer, p)
		if err != nil {
			return nil, err
		}
		req.Signed = signed
	} else {
		req.Body = body
	}
	// Encoded in a buffer of this call's own, wiped on return: it may hold
	// the secret.
	var enc bytes.Buffer
	enc.Grow(len(body) + len(secret) + 512)
	defer func() { clear(enc.Bytes()[:enc.Cap()]) }()
	if err := transport.MarshalToBuffer(&req, &enc); err != nil {
		return nil, err
	}
	raw := enc.Bytes()
	if len(raw) > transport.MaxRequestSize {
		return nil, transport.Errorf(transport.CodeTooLarge, "request of %d bytes", len(raw))
	}
	if !l.early {
		// Nothing before the handshake unless this connection sends early
		// data (see connection).
		select {
		case <-qc.HandshakeComplete():
		case <-qc.Context().Done():
			return nil, context.Cause(qc.Context())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		st.CancelRead(0)
		st.CancelWrite(0)
	})
	defer stop()
	if _, err := st.Write(raw); err != nil {
		return nil, err
	}
	st.Close()
	data, err := readAll(st, transport.MaxResponseSize)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	var resp transport.Response
	if err := transport.Unmarshal(data, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func readAll(st *quic.Stream, max int) ([]byte, error) {
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := st.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > max {
			st.CancelRead(quic.StreamErrorCode(transport.CodeTooLarge))
			return nil, transport.Errorf(transport.CodeTooLarge, "response over %d bytes", max)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, err
		}
	}
}

// Hello asks for the server's time and the identity's catalogue. It
// corrects the client's clock offset for request times.
func (c *Client) Hello(ctx context.Context) (*transport.HelloResponse, error) {
	var out transport.HelloResponse
	start := time.Now()
	if err := c.Do(ctx, transport.OpHello, &transport.HelloRequest{Client: c.cfg.Name}, nil, &out); err != nil {
		return nil, err
	}
	mid := start.Add(time.Since(start) / 2)
	c.offset.Store(out.Time - mid.UnixMilli())
	return &out, nil
}

// Login logs in to remote card slot with the virtual PIN.
func (c *Client) Login(ctx context.Context, slot uint64, vpin []byte) (*transport.LoginResponse, error) {
	var out transport.LoginResponse
	if err := c.Do(ctx, transport.OpLogin, &transport.LoginRequest{Slot: slot}, vpin, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Sign asks for a signature.
func (c *Client) Sign(ctx context.Context, req *transport.SignRequest) (*transport.SignResponse, error) {
	var out transport.SignResponse
	if err := c.Do(ctx, transport.OpSign, req, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SignWithPIN asks for a signature with a key that needs the virtual PIN
// with every signature (CKA_ALWAYS_AUTHENTICATE true in the catalogue):
// the vPIN travels beside the request, outside its signature, and the
// server checks it before the card signs.
func (c *Client) SignWithPIN(ctx context.Context, req *transport.SignRequest, vpin []byte) (*transport.SignResponse, error) {
	var out transport.SignResponse
	if err := c.Do(ctx, transport.OpSign, req, vpin, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Decrypt asks for a decryption with a key of a remote card (RSA:
// CKM_RSA_PKCS or CKM_RSA_PKCS_OAEP with transport.OAEPParams). vpin is
// nil, or the virtual PIN for a key that needs it with every operation
// (CKA_ALWAYS_AUTHENTICATE true in the catalogue). The plaintext is the
// caller's to clear.
func (c *Client) Decrypt(ctx context.Context, req *transport.DecryptRequest, vpin []byte) (*transport.DecryptResponse, error) {
	var out transport.DecryptResponse
	if err := c.Do(ctx, transport.OpDecrypt, req, vpin, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Derive asks for an ECDH key agreement (CKM_ECDH1_DERIVE) with a key of a
// remote card and the peer's point in req.Data; vpin as for Decrypt. The
// answer is the shared x coordinate, the caller's to clear.
func (c *Client) Derive(ctx context.Context, req *transport.DeriveRequest, vpin []byte) (*transport.DeriveResponse, error) {
	var out transport.DeriveResponse
	if err := c.Do(ctx, transport.OpDerive, req, vpin, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logout logs out of remote card slot.
func (c *Client) Logout(ctx context.Context, slot uint64) error {
	return c.Do(ctx, transport.OpLogout, &transport.LogoutRequest{Slot: slot}, nil, nil)
}

// Ping is an empty request: one round trip.
func (c *Client) Ping(ctx context.Context) error {
	return c.Do(ctx, transport.OpPing, nil, nil, nil)
}
