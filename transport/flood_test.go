package transport_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/transport"
)

// Tests that each limit of transport.Limits refuses the identity that
// reached it with its own code, and leaves another identity alone. Real
// QUIC on loopback; where the server's clock matters it is frozen.

// enroll issues and enrolls a new identity.
func (e *env) newIdentity(name string) tls.Certificate {
	c := e.ca.Issue(name, testpki.Options{})
	e.enroll.Add(name, c.Leaf)
	return c
}

// limit returns the server's figures for the limit name.
func (e *env) limit(t *testing.T, name string) transport.LimitStat {
	t.Helper()
	for _, l := range e.server.LimitStats() {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no limit %q", name)
	return transport.LimitStat{}
}

// waitFor waits until cond holds: the server's side of what the test did
// happens on the server's goroutines.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 30 s", what)
		}
	}
}

var pingRequest, _ = transport.Marshal(&transport.Request{Version: transport.ProtocolVersion, Op: transport.OpPing})

// try sends b on a new stream of r and returns the answer, or the error
// that ended the stream.
func (r *raw) try(t *testing.T, b []byte) (*transport.Response, error) {
	t.Helper()
	st, err := r.qc.OpenStreamSync(ctxT(t))
	if err != nil {
		return nil, err
	}
	st.Write(b)
	st.Close()
	out, err := io.ReadAll(st)
	if err != nil {
		return nil, err
	}
	var resp transport.Response
	if err := transport.Unmarshal(out, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// hold opens a stream on r and sends n bytes of a request that it never
// finishes.
func (r *raw) hold(t *testing.T, n int) {
	t.Helper()
	st, err := r.qc.OpenStreamSync(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

func frozen(s *transport.Server) {
	t0 := time.Now()
	s.Now = func() time.Time { return t0 }
}

func wantStatus(t *testing.T, who string, resp *transport.Response, err error, want transport.Code) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v, want status %d (%v)", who, err, want, want)
	}
	if resp.Status != want {
		t.Fatalf("%s: status %d (%v), want %d (%v)", who, resp.Status, resp.Status, want, want)
	}
}

func TestConnectionsPerIdentity(t *testing.T) {
	e := newEnvWith(t, func(s *transport.Server) { s.Limits.ConnectionsPerIdentity = 2 })
	bob := e.newIdentity("bob")
	for i := range 2 {
		resp, err := e.raw(t, e.alice).try(t, pingRequest)
		wantStatus(t, "alice's connection "+string(rune('1'+i)), resp, err, transport.CodeOK)
	}
	c, err := client.Dial(ctxT(t), e.config(e.alice))
	if err == nil {
		defer c.Close()
		_, err = c.Hello(ctxT(t))
	}
	if !errors.Is(err, &transport.Error{Code: transport.CodeTooManyConnections}) {
		t.Fatalf("alice's third connection: %v, want code 21", err)
	}
	for i := range 2 {
		resp, err := e.raw(t, bob).try(t, pingRequest)
		wantStatus(t, "bob's connection "+string(rune('1'+i)), resp, err, transport.CodeOK)
	}
	if l := e.limit(t, "connections_per_identity"); l.Refused != 1 || l.Code != transport.CodeTooManyConnections || l.Limit != 2 {
		t.Errorf("figures %+v, want 1 refusal of limit 2, code 21", l)
	}
}

// ticketSink is a TLS session cache that tells when a ticket arrives.
type ticketSink struct {
	tls.ClientSessionCache
	put chan struct{}
}

func newTicketSink() *ticketSink {
	return &ticketSink{ClientSessionCache: tls.NewLRUClientSessionCache(8), put: make(chan struct{}, 64)}
}

func (s *ticketSink) Put(key string, cs *tls.ClientSessionState) {
	s.ClientSessionCache.Put(key, cs)
	if cs != nil {
		select {
		case s.put <- struct{}{}:
		default:
		}
	}
}

// wait returns once the cache has received a ticket since the last wait.
func (s *ticketSink) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.put:
	case <-ctxT(t).Done():
		t.Fatal("no session ticket")
	}
}

// TestConnectionsPerIdentityResumed: a connection resumed from a session
// ticket (identified from the ticket, before its handshake completes, so
// that 0-RTT requests run at once) counts against the limit like any, and
// its refusal reaches the client as the code.
func TestConnectionsPerIdentityResumed(t *testing.T) {
	e := newEnvWith(t, func(s *transport.Server) { s.Limits.ConnectionsPerIdentity = 2 })
	cache := newTicketSink()
	first := e.rawCached(t, e.alice, cache)
	resp, err := first.try(t, pingRequest)
	wantStatus(t, "alice's first connection", resp, err, transport.CodeOK)
	cache.wait(t)
	second := e.rawCached(t, e.alice, cache)
	if !second.qc.ConnectionState().TLS.DidResume {
		t.Fatal("alice's second connection was not resumed")
	}
	resp, err = second.try(t, pingRequest)
	wantStatus(t, "alice's second connection (resumed)", resp, err, transport.CodeOK)
	if l := e.limit(t, "connections_per_identity"); l.InUse != 2 {
		t.Fatalf("figures %+v, want 2 connections in use", l)
	}
	// The third, resumed too: its Hello rides in 0-RTT where the client
	// sends early data (not under the race detector, see package client).
	cfg := e.config(e.alice)
	cfg.SessionCache = cache
	c, err := client.Dial(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Hello(ctxT(t)); !errors.Is(err, &transport.Error{Code: transport.CodeTooManyConnections}) {
		t.Fatalf("alice's third connection (resumed): %v, want code 21", err)
	}
	if l := e.limit(t, "connections_per_identity"); l.Refused != 1 || l.InUse != 2 {
		t.Fatalf("figures %+v, want 1 refusal and 2 connections in use", l)
	}
	// The resumed second connection holds its slot until it closes.
	second.qc.CloseWithError(0, "")
	waitFor(t, "down to 1 connection", func() bool { return e.limit(t, "connections_per_identity").InUse == 1 })
	if _, err := c.Hello(ctxT(t)); err != nil {
		t.Fatalf("alice's third connection, once her second closed: %v", err)
	}
	if l := e.limit(t, "connections_per_identity"); l.Refused != 1 || l.InUse != 2 {
		t.Errorf("figures %+v, want 1 refusal and 2 connections in use", l)
	}
}

// TestRefusalReportedOnce: the client reports a refused connection's code
// to one request, without dialing again behind its caller's back; the
// next request dials anew, refused again while the cause lasts, served
// once it is gone.
func TestRefusalReportedOnce(t *testing.T) {
	e := newEnvWith(t, func(s *transport.Server) { s.Limits.ConnectionsPerIdentity = 1 })
	holder := e.raw(t, e.alice)
	resp, err := holder.try(t, pingRequest)
	wantStatus(t, "alice's first connection", resp, err, transport.CodeOK)
	// Dial returns before the handshake completes: the refusal comes
	// later, to the first request.
	c, err := client.Dial(ctxT(t), e.config(e.alice))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := int64(1); i <= 2; i++ {
		err := c.Ping(ctxT(t))
		if !errors.Is(err, &transport.Error{Code: transport.CodeTooManyConnections}) {
			t.Fatalf("request %d: %v, want code 21", i, err)
		}
		// One connection per request: no silent redial (more), no
		// stale report without a dial (fewer).
		if got := e.server.Stats().Refused.Load(); got != i {
			t.Fatalf("after request %d: %d connections refused, want %d", i, got, i)
		}
	}
	holder.qc.CloseWithError(0, "")
	waitFor(t, "down to 0 connections", func() bool { return e.limit(t, "connections_per_identity").InUse == 0 })
	for i := range 2 {
		if err := c.Ping(ctxT(t)); err != nil {
			t.Fatalf("request %d once alice's other connection closed: %v", 3+i, err)
		}
	}
	if got, want := e.server.Stats().Refused.Load(), int64(2); got != want {
		t.Errorf("%d connections refused, want %d", got, want)
	}
	if got, want := e.server.Stats().Connections.Load(), int64(2); got != want {
		t.Errorf("%d connections served, want %d (the holder's, then the client's one)", got, want)
	}
}

func TestStreamsPerIdentity(t *testing.T) {
	e := newEnvWith(t, func(s *transport.Server) { s.Limits.StreamsPerIdentity = 4 })
	a1, a2 := e.raw(t, e.alice), e.raw(t, e.alice)
	for range 2 {
		a1.hold(t, 1)
		a2.hold(t, 1)
	}
	waitFor(t, "holding alice's 4 unfinished requests", func() bool { return e.limit(t, "streams_per_identity").InUse == 4 })
	for _, r := range []*raw{a1, a2, e.raw(t, e.alice)} {
		_, err := r.try(t, pingRequest)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(transport.CodeTooManyRequests) {
			t.Fatalf("alice's fifth unfinished request: %v, want a stream reset with code 22", err)
		}
	}
	bob := e.raw(t, e.newIdentity("bob"))
	for range 4 {
		bob.hold(t, 1)
	}
	// The server accepts a connection's streams in order: bob's fifth
	// comes after his four.
	// Bob is at his own limit, not alice's: his count is his own.
	_, err := bob.try(t, pingRequest)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(transport.CodeTooManyRequests) {
		t.Fatalf("bob's fifth unfinished request: %v, want a stream reset with code 22", err)
	}
	carol := e.raw(t, e.newIdentity("carol"))
	resp, err := carol.try(t, pingRequest)
	wantStatus(t, "carol, while alice and bob hold their limit", resp, err, transport.CodeOK)
}

func TestRequestRate(t *testing.T) {
	e := newEnvWith(t, func(s *transport.Server) {
		frozen(s)
		s.Limits.RequestRate, s.Limits.RequestBurst = 1, 3
	})
	alice, bob := e.raw(t, e.alice), e.raw(t, e.newIdentity("bob"))
	for i := range 3 {
		resp, err := alice.try(t, pingRequest)
		wantStatus(t, "alice's request "+string(rune('1'+i)), resp, err, transport.CodeOK)
	}
	resp, err := alice.try(t, pingRequest)
	wantStatus(t, "alice's fourth request", resp, err, transport.CodeRateLimited)
	if resp.RetryAfter != 1000 {
		t.Errorf("retry after %d ms, want 1000 (one token at 1 a second)", resp.RetryAfter)
	}
	// Another connection of alice's shares her bucket.
	resp, err = e.raw(t, e.alice).try(t, pingRequest)
	wantStatus(t, "alice on a new connection", resp, err, transport.CodeRateLimited)
	for i := range 3 {
		resp, err := bob.try(t, pingRequest)
		wantStatus(t, "bob's request "+string(rune('1'+i)), resp, err, transport.CodeOK)
	}
	if l := e.limit(t, "request_rate"); l.Refused != 2 || l.InUse != 0 {
		t.Errorf("figures %+v, want 2 refusals and an empty bucket", l)
	}
}

func TestReplayMemoryPerIdentity(t *testing.T) {
	e := newEnvWith(t, func(s *transport.Server) {
		frozen(s)
		s.Limits.NoncesPerIdentity = 3
	})
	bobCert := e.newIdentity("bob")
	login := &transport.LoginRequest{Slot: 1}
	send := func(cert tls.Certificate) (first []byte, codes []transport.Code) {
		r := e.raw(t, cert)
		bind := func(p *transport.SignedPayload) { p.Binding = r.binding(t) }
		for i := range 4 {
			req := signed(t, cert.PrivateKey.(crypto.Signer), transport.OpLogin, login, bind)
			if i == 0 {
				first = req
			}
			resp, err := r.try(t, req)
			if err != nil {
				t.Fatal(err)
			}
			codes = append(codes, resp.Status)
			if resp.Status == transport.CodeReplayMemoryFull && resp.RetryAfter == 0 {
				t.Error("replay memory full without a retry-after hint")
			}
		}
		resp, err := r.try(t, first)
		wantStatus(t, "the first request again", resp, err, transport.CodeReplay)
		return first, codes
	}
	// Executed (a login without its PIN: wrong PIN), three times; the
	// fourth nonce finds alice's memory full.
	want := []transport.Code{transport.CodeWrongPIN, transport.CodeWrongPIN, transport.CodeWrongPIN, transport.CodeReplayMemoryFull}
	_, codes := send(e.alice)
	if !equalCodes(codes, want) {
		t.Fatalf("alice: %v, want %v", codes, want)
	}
	if got := e.handler.logins.Load(); got != 3 {
		t.Fatalf("the handler ran %d times, want 3", got)
	}
	// Bob's memory is his own: alice's full memory takes nothing of it.
	_, codes = send(bobCert)
	if !equalCodes(codes, want) {
		t.Fatalf("bob, after alice filled hers: %v, want %v", codes, want)
	}
	if l := e.limit(t, "nonces_per_identity"); l.Refused != 2 || l.InUse != 3 {
		t.Errorf("figures %+v, want 2 refusals and 3 in use", l)
	}
}

func equalCodes(a, b []transport.Code) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRequestMemory(t *testing.T) {
	// Alice holds 6 KiB of an unfinished request: a read buffer of
	// 1+1+2+4 = 8 KiB, all her share.
	hold := func(t *testing.T, e *env) *raw {
		alice := e.raw(t, e.alice)
		alice.hold(t, 6<<10)
		waitFor(t, "holding alice's 8 KiB", func() bool { return e.limit(t, "request_bytes").InUse == 8<<10 })
		return alice
	}
	t.Run("per identity", func(t *testing.T) {
		e := newEnvWith(t, func(s *transport.Server) { s.Limits.RequestBytesPerIdentity = 8 << 10 })
		alice := hold(t, e)
		resp, err := alice.try(t, pingRequest)
		wantStatus(t, "alice's next request", resp, err, transport.CodeIdentityMemory)
		resp, err = e.raw(t, e.newIdentity("bob")).try(t, pingRequest)
		wantStatus(t, "bob", resp, err, transport.CodeOK)
		if l := e.limit(t, "request_bytes_per_identity"); l.Refused != 1 || l.InUse != 8<<10 {
			t.Errorf("figures %+v", l)
		}
	})
	t.Run("all identities", func(t *testing.T) {
		e := newEnvWith(t, func(s *transport.Server) {
			s.Limits.RequestBytesPerIdentity, s.Limits.RequestBytes = -1, 8<<10
		})
		hold(t, e)
		resp, err := e.raw(t, e.newIdentity("bob")).try(t, pingRequest)
		wantStatus(t, "bob, with the server's request memory full", resp, err, transport.CodeServerMemory)
		if l := e.limit(t, "request_bytes"); l.Refused != 1 {
			t.Errorf("figures %+v", l)
		}
	})
}

// blackhole is a client socket that sends and never receives: a client
// that starts handshakes and never finishes them, as one sending from
// spoofed addresses does.
type blackhole struct {
	net.PacketConn
	once   sync.Once
	closed chan struct{}
}

func (b *blackhole) ReadFrom([]byte) (int, net.Addr, error) {
	<-b.closed
	return 0, nil, net.ErrClosed
}

func (b *blackhole) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.PacketConn.Close()
}

// flood starts n handshakes that never finish, from one socket, until the
// test ends.
func (e *env) flood(t *testing.T, n int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackhole{PacketConn: pc, closed: make(chan struct{})}
	tr := &quic.Transport{Conn: bh}
	raddr, _ := net.ResolveUDPAddr("udp", e.addr)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); bh.Close(); tr.Close() })
	tc := &tls.Config{Certificates: []tls.Certificate{e.alice}, RootCAs: e.ca.Pool, NextProtos: []string{transport.ALPN}, ServerName: "127.0.0.1"}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr.Dial(ctx, raddr, tc, &quic.Config{HandshakeIdleTimeout: time.Minute})
		}()
	}
}

func slowHandshakes(s *transport.Server) {
	q := transport.DefaultQUICConfig()
	q.HandshakeIdleTimeout = 2 * time.Minute // the flood's handshakes stay for the test
	s.QUICConfig = q
}

func TestHandshakeRetry(t *testing.T) {
	const threshold, n = 4, 40
	e := newEnvWith(t, func(s *transport.Server) {
		slowHandshakes(s)
		s.Limits.RetryHandshakes = threshold
	})
	e.flood(t, n)
	waitFor(t, "asking the flood for Retry", func() bool {
		l := e.limit(t, "retry_handshakes")
		if l.InUse > threshold {
			t.Fatalf("%v unvalidated handshakes in progress, over the threshold %d", l.InUse, threshold)
		}
		return l.InUse == threshold && l.Refused >= n-threshold
	})
	// A real client answers the Retry and is served.
	before := e.limit(t, "retry_handshakes").Refused
	c := e.dial(t, e.config(e.alice))
	if _, err := c.Hello(ctxT(t)); err != nil {
		t.Fatalf("a client during the flood: %v", err)
	}
	if l := e.limit(t, "retry_handshakes"); l.InUse != threshold || l.Refused == before {
		t.Errorf("figures %+v: the client should have been asked for a Retry, and the flood still hold %d", l, threshold)
	}
	if l := e.limit(t, "handshakes"); l.InUse != threshold {
		t.Errorf("%v handshakes in progress, want the flood's %d", l.InUse, threshold)
	}
}

func TestHandshakesLimit(t *testing.T) {
	const limit = 4
	e := newEnvWith(t, func(s *transport.Server) {
		slowHandshakes(s)
		s.Limits.RetryHandshakes, s.Limits.Handshakes = -1, limit
	})
	e.flood(t, limit)
	waitFor(t, "holding the flood's handshakes", func() bool { return e.limit(t, "handshakes").InUse == limit })
	c, err := client.Dial(ctxT(t), e.config(e.alice))
	if err == nil {
		defer c.Close()
		_, err = c.Hello(ctxT(t))
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("a connection over the handshake limit: %v, want CONNECTION_REFUSED", err)
	}
	if l := e.limit(t, "handshakes"); l.Refused == 0 {
		t.Errorf("figures %+v: no refusal counted", l)
	}
}
