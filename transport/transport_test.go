package transport_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/transport"
)

// testHandler is a small server: one remote card (slot 1) with one P-256
// key (handle 2), virtual PIN "1234", zero latency.
type testHandler struct {
	key      *ecdsa.PrivateKey
	signs    atomic.Int64
	logins   atomic.Int64
	early    atomic.Int64 // logins that arrived as 0-RTT early data
	evidence sync.Map     // nonce -> evidence bytes
	// onSign, if set, runs after a signature is made, before it is returned.
	onSign func(call *transport.Call)
}

type loginKey struct{}

func newHandler() *testHandler {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &testHandler{key: k}
}

func (h *testHandler) catalogue() *transport.Catalogue {
	return &transport.Catalogue{Tag: []byte{1}, Slots: []transport.Slot{{
		ID: 1, Description: "test card", Present: true, Cards: 1,
		Token: transport.TokenInfo{Label: "Mayor", Serial: "0001", MinPIN: 4, MaxPIN: 8},
		Objects: []transport.Object{{Handle: 2, Attributes: map[uint64]any{
			0x0000: uint64(3),             // CKA_CLASS: private key
			0x0100: uint64(3),             // CKA_KEY_TYPE: EC
			0x0003: "Mayor's signing key", // CKA_LABEL
			0x0102: []byte{0x01},          // CKA_ID
			0x0108: true,                  // CKA_SIGN
		}}},
		Mechanisms: []transport.Mechanism{{Type: 0x1041, MinKey: 256, MaxKey: 384}}, // CKM_ECDSA
	}}}
}

func (h *testHandler) Handle(ctx context.Context, call *transport.Call) (any, error) {
	switch call.Op {
	case transport.OpHello:
		return &transport.HelloResponse{Server: "test", Time: time.Now().UnixMilli(), Identity: call.Conn.Identity.ID, Catalogue: h.catalogue()}, nil
	case transport.OpPing:
		return nil, nil
	case transport.OpLogin:
		var req transport.LoginRequest
		if err := call.Decode(&req); err != nil {
			return nil, err
		}
		h.logins.Add(1)
		if call.Early {
			h.early.Add(1)
		}
		if req.Slot != 1 {
			return nil, transport.Errorf(transport.CodeNoSuchSlot, "slot %d", req.Slot)
		}
		if string(call.Secret) != "1234" {
			return nil, transport.Errorf(transport.CodeWrongPIN, "")
		}
		call.Conn.SetValue(loginKey{}, true)
		return &transport.LoginResponse{Catalogue: h.catalogue()}, nil
	case transport.OpSign:
		var req transport.SignRequest
		if err := call.Decode(&req); err != nil {
			return nil, err
		}
		if call.Conn.Value(loginKey{}) == nil {
			return nil, transport.Errorf(transport.CodeNotLoggedIn, "")
		}
		if req.Key != 2 {
			return nil, transport.Errorf(transport.CodeNoSuchKey, "")
		}
		h.signs.Add(1)
		h.evidence.Store(string(call.Nonce), call.Evidence)
		sig, err := ecdsa.SignASN1(rand.Reader, h.key, req.Data)
		if err != nil {
			return nil, err
		}
		if h.onSign != nil {
			h.onSign(call)
		}
		return &transport.SignResponse{Signature: sig}, nil
	case transport.OpLogout:
		call.Conn.SetValue(loginKey{}, nil)
		return nil, nil
	}
	return nil, transport.ErrUnsupported
}

// env is a server on loopback with a CA and an enrolled delegate.
type env struct {
	ca      *testpki.CA
	server  *transport.Server
	handler *testHandler
	addr    string
	alice   tls.Certificate
	stop    func()
	enroll  *transport.StaticEnrollment
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with configure called on the server before it
// starts.
func newEnvWith(t testing.TB, configure func(*transport.Server)) *env {
	t.Helper()
	e := &env{ca: testpki.NewCA("pscs test CA"), handler: newHandler(), enroll: transport.NewStaticEnrollment()}
	e.alice = e.ca.Issue("alice", testpki.Options{})
	e.enroll.Add("alice", e.alice.Leaf)
	srvCert := e.ca.Issue("pscsd", testpki.Options{Server: true})
	e.server = &transport.Server{
		Handler:    e.handler,
		Enrollment: e.enroll,
		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{srvCert}},
	}
	if configure != nil {
		configure(e.server)
	}
	e.start(t, "127.0.0.1:0")
	return e
}

// start serves on addr (127.0.0.1:0 for a new port).
func (e *env) start(t testing.TB, addr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e.addr = pc.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.server.Serve(ctx, pc)
	}()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			pc.Close()
		})
	}
	t.Cleanup(e.stop)
}

func (e *env) config(cert tls.Certificate) client.Config {
	return client.Config{Addr: e.addr, Certificate: cert, RootCAs: e.ca.Pool, Name: "transport test"}
}

func (e *env) dial(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	return rig.Dial(t, cfg)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func signAndCheck(t testing.TB, c *client.Client, h *testHandler) {
	t.Helper()
	digest := sha256.Sum256([]byte("a document"))
	resp, err := c.Sign(ctxT(t), &transport.SignRequest{Slot: 1, Key: 2, Mechanism: 0x1041, Data: digest[:]})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(&h.key.PublicKey, digest[:], resp.Signature) {
		t.Fatal("signature does not verify")
	}
}

func TestHelloLoginSign(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config(e.alice))
	ctx := ctxT(t)
	hello, err := c.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hello.Identity != "alice" || hello.Catalogue == nil || len(hello.Catalogue.Slots) != 1 {
		t.Fatalf("Hello = %+v", hello)
	}
	obj := hello.Catalogue.Slots[0].Objects[0]
	if obj.Attributes[0x0003] != "Mayor's signing key" || obj.Attributes[0x0108] != true || obj.Attributes[0x0000] != uint64(3) {
		t.Errorf("attributes did not survive the wire: %#v", obj.Attributes)
	}
	if _, err := c.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 2, Data: make([]byte, 32)}); !errors.Is(err, &transport.Error{Code: transport.CodeNotLoggedIn}) {
		t.Errorf("Sign before Login: %v, want not logged in", err)
	}
	if _, err := c.Login(ctx, 1, []byte("9999")); !errors.Is(err, &transport.Error{Code: transport.CodeWrongPIN}) {
		t.Errorf("Login with a wrong PIN: %v", err)
	}
	lr, err := c.Login(ctx, 1, []byte("1234"))
	if err != nil || lr.Catalogue == nil {
		t.Fatalf("Login: %v, %+v", err, lr)
	}
	for range 3 {
		signAndCheck(t, c, e.handler)
	}
	if err := c.Logout(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// The evidence the handler got is the COSE_Sign1 the client made, and
	// verifies under alice's key.
	n := 0
	e.handler.evidence.Range(func(_, v any) bool {
		n++
		if _, err := transport.VerifyPayload(v.([]byte), e.alice.Leaf.PublicKey); err != nil {
			t.Errorf("evidence does not verify: %v", err)
		}
		return true
	})
	if n != 3 {
		t.Errorf("%d pieces of evidence, want 3", n)
	}
}

func TestConcurrentRequestsShareOneConnection(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config(e.alice))
	if _, err := c.Login(ctxT(t), 1, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			signAndCheck(t, c, e.handler)
		}()
	}
	wg.Wait()
	if got := e.server.Stats().Connections.Load(); got != 1 {
		t.Errorf("%d connections, want 1", got)
	}
}

// TestConnectionRefusals: each way of failing to be a known, valid client
// has its own code.
func TestConnectionRefusals(t *testing.T) {
	e := newEnv(t)
	other := testpki.NewCA("another CA")
	cases := []struct {
		name string
		cert tls.Certificate
		want transport.Code
	}{
		{"unknown certificate, same CA", e.ca.Issue("mallory", testpki.Options{}), transport.CodeNotEnrolled},
		{"unknown certificate, other CA", other.Issue("mallory", testpki.Options{}), transport.CodeNotEnrolled},
		{"expired certificate", e.expired(t), transport.CodeCertExpired},
		{"not yet valid certificate", e.future(t), transport.CodeCertExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, err := client.Dial(ctxT(t), e.config(c.cert))
			if err == nil {
				defer cl.Close()
				_, err = cl.Hello(ctxT(t))
			}
			if !errors.Is(err, &transport.Error{Code: c.want}) {
				t.Errorf("got %v, want code %d (%v)", err, c.want, c.want)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		tc := &tls.Config{RootCAs: e.ca.Pool, NextProtos: []string{transport.ALPN}, ServerName: "127.0.0.1"}
		qc, err := quic.DialAddr(ctxT(t), e.addr, tc, nil)
		if err == nil {
			// The client's side of the handshake ends before the server
			// has checked its (missing) certificate.
			var st *quic.Stream
			if st, err = qc.OpenStreamSync(ctxT(t)); err == nil {
				st.Write([]byte{0xa0})
				st.Close()
				_, err = io.ReadAll(st)
			}
		}
		var te *quic.TransportError
		// TLS alert 116, certificate_required (RFC 8446, 6.2), as QUIC
		// CRYPTO_ERROR 0x0100+116.
		if !errors.As(err, &te) || te.ErrorCode != 0x100+116 {
			t.Errorf("got %v, want CRYPTO_ERROR 0x174 (certificate_required)", err)
		}
	})
	if got := e.server.Stats().Refused.Load(); got < 4 {
		t.Errorf("server counted %d refusals, want 4", got)
	}
}

func (e *env) expired(t *testing.T) tls.Certificate {
	c := e.ca.Issue("old alice", testpki.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	e.enroll.Add("old alice", c.Leaf)
	return c
}

func (e *env) future(t *testing.T) tls.Certificate {
	c := e.ca.Issue("future alice", testpki.Options{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
	e.enroll.Add("future alice", c.Leaf)
	return c
}

// raw is a connection where the test writes requests byte by byte.
type raw struct {
	qc *quic.Conn
}

func (e *env) raw(t *testing.T, cert tls.Certificate) *raw {
	t.Helper()
	return e.rawCached(t, cert, nil)
}

// rawCached is raw with a TLS session cache, to resume connections.
func (e *env) rawCached(t *testing.T, cert tls.Certificate, cache tls.ClientSessionCache) *raw {
	t.Helper()
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: e.ca.Pool, NextProtos: []string{transport.ALPN}, ServerName: "127.0.0.1", ClientSessionCache: cache}
	qc, err := quic.DialAddr(ctxT(t), e.addr, tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return &raw{qc: qc}
}

func (r *raw) send(t *testing.T, b []byte) *transport.Response {
	t.Helper()
	st, err := r.qc.OpenStreamSync(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	st.Write(b)
	st.Close()
	out, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	var resp transport.Response
	if err := transport.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	return &resp
}

func (r *raw) binding(t *testing.T) []byte {
	st := r.qc.ConnectionState().TLS
	b, err := st.ExportKeyingMaterial(transport.BindingLabel, nil, transport.BindingSize)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signed builds a signed request.
func signed(t *testing.T, signer crypto.Signer, op transport.Op, body any, mutate func(*transport.SignedPayload)) []byte {
	t.Helper()
	b, _ := transport.Marshal(body)
	p := &transport.SignedPayload{Op: op, Nonce: make([]byte, transport.NonceSize), Time: time.Now().UnixMilli(), Body: b}
	rand.Read(p.Nonce)
	if mutate != nil {
		mutate(p)
	}
	s, err := transport.SignPayload(signer, p)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := transport.Marshal(&transport.Request{Version: transport.ProtocolVersion, Op: op, Signed: s})
	return req
}

// TestRequestRefusals: bad signatures, replays, stale times, wrong binding
// and malformed requests, each with its own code, and none executed.
func TestRequestRefusals(t *testing.T) {
	e := newEnv(t)
	r := e.raw(t, e.alice)
	key := e.alice.PrivateKey.(crypto.Signer)
	bind := func(p *transport.SignedPayload) { p.Binding = r.binding(t) }
	login := &transport.LoginRequest{Slot: 1}
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	good := signed(t, key, transport.OpLogin, login, bind)
	if resp := r.send(t, good); resp.Status != transport.CodeWrongPIN {
		t.Fatalf("a well-formed login without the PIN: %v, want wrong PIN (the handler ran)", resp.Status)
	}
	before := e.handler.logins.Load()
	garbage, _ := transport.Marshal(&transport.Request{Version: 1, Op: transport.OpLogin, Signed: []byte{0xd2, 0x84, 0x40}})
	unsignedSign, _ := transport.Marshal(&transport.Request{Version: 1, Op: transport.OpSign, Body: []byte{0xa0}})
	unknownOp, _ := transport.Marshal(&transport.Request{Version: 1, Op: 999})
	otherOp := signed(t, key, transport.OpSign, login, bind)
	otherOpReq := func() []byte {
		var req transport.Request
		transport.Unmarshal(otherOp, &req)
		req.Op = transport.OpLogin
		b, _ := transport.Marshal(&req)
		return b
	}()
	cases := []struct {
		name string
		req  []byte
		want transport.Code
	}{
		{"replayed request", good, transport.CodeReplay},
		{"signed by another key", signed(t, stranger, transport.OpLogin, login, bind), transport.CodeBadSignature},
		{"signature over another operation", otherOpReq, transport.CodeBadSignature},
		{"time an hour ago", signed(t, key, transport.OpLogin, login, func(p *transport.SignedPayload) {
			bind(p)
			p.Time -= time.Hour.Milliseconds()
		}), transport.CodeStale},
		{"time in an hour", signed(t, key, transport.OpLogin, login, func(p *transport.SignedPayload) {
			bind(p)
			p.Time += time.Hour.Milliseconds()
		}), transport.CodeStale},
		{"bound to another connection", signed(t, key, transport.OpLogin, login, func(p *transport.SignedPayload) {
			p.Binding = make([]byte, transport.BindingSize)
		}), transport.CodeBadBinding},
		{"unbound on a full handshake", signed(t, key, transport.OpLogin, login, nil), transport.CodeBadBinding},
		{"short nonce", signed(t, key, transport.OpLogin, login, func(p *transport.SignedPayload) {
			bind(p)
			p.Nonce = p.Nonce[:4]
		}), transport.CodeMalformed},
		{"garbage signature", garbage, transport.CodeMalformed},
		{"not CBOR", []byte("hello, pscs"), transport.CodeMalformed},
		{"sign without a signature", unsignedSign, transport.CodeSignatureRequired},
		{"unknown operation", unknownOp, transport.CodeUnsupported},
		{"over the size limit", make([]byte, transport.MaxRequestSize+1), transport.CodeTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := r.send(t, c.req).Status; got != c.want {
				t.Errorf("status %d (%v), want %d (%v)", got, got, c.want, c.want)
			}
		})
	}
	if got := e.handler.logins.Load(); got != before {
		t.Errorf("refused requests reached the handler %d times", got-before)
	}
	if e.server.Stats().Replays.Load() != 1 {
		t.Errorf("replays counted: %d, want 1", e.server.Stats().Replays.Load())
	}
}

// TestReplayFromAnotherConnection: a signed request captured on one
// connection and sent again on another is refused.
func TestReplayFromAnotherConnection(t *testing.T) {
	e := newEnv(t)
	key := e.alice.PrivateKey.(crypto.Signer)
	r1 := e.raw(t, e.alice)
	req := signed(t, key, transport.OpLogin, &transport.LoginRequest{Slot: 1}, func(p *transport.SignedPayload) { p.Binding = r1.binding(t) })
	r1.send(t, req)
	r2 := e.raw(t, e.alice)
	if got := r2.send(t, req).Status; got != transport.CodeReplay {
		t.Errorf("replay on a second connection: %v, want replay", got)
	}
}

// TestEvents: the server pushes events on its stream.
func TestEvents(t *testing.T) {
	e := newEnv(t)
	var conn atomic.Pointer[transport.Conn]
	e.handler.onSign = func(call *transport.Call) { conn.Store(call.Conn) }
	c := e.dial(t, e.config(e.alice))
	c.Login(ctxT(t), 1, []byte("1234"))
	signAndCheck(t, c, e.handler)
	if err := conn.Load().Notify(&transport.Event{Kind: transport.EventRevoked, Slot: 1, Message: "revoked by the owner"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-c.Events():
		if ev.Kind != transport.EventRevoked || ev.Slot != 1 {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}

// TestLostConnectionNotDuplicated: the connection dies after the server ran
// a signature but before the answer left; the client sends the request again
// and gets the first answer; the signature was made once.
func TestLostConnectionNotDuplicated(t *testing.T) {
	e := newEnv(t)
	var once sync.Once
	e.handler.onSign = func(call *transport.Call) {
		once.Do(func() { call.Conn.Close(transport.CodeShutdown, "lost") })
	}
	c := e.dial(t, e.config(e.alice))
	if _, err := c.Login(ctxT(t), 1, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	// The new connection needs a login too: the server keeps logins per
	// connection. The first Sign's retry lands on a fresh connection where
	// the original already ran, so the server hands back its outcome.
	signAndCheck(t, c, e.handler)
	if got := e.handler.signs.Load(); got != 1 {
		t.Errorf("the handler signed %d times, want 1", got)
	}
}

// TestServerRestart: the server goes away and comes back on the same port;
// the client reconnects by itself.
func TestServerRestart(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config(e.alice))
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	addr := e.addr
	e.stop()
	e.start(t, addr)
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping after a server restart: %v", err)
	}
}

// TestIdleTimeoutAndKeepalive: without keepalives an idle connection times
// out and the next request reconnects by itself; with them it stays up.
func TestIdleTimeoutAndKeepalive(t *testing.T) {
	for _, keepalive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepalive), func(t *testing.T) {
			e := newEnv(t)
			qconf := &quic.Config{MaxIdleTimeout: time.Second}
			if keepalive {
				qconf.KeepAlivePeriod = 100 * time.Millisecond
			}
			cfg := e.config(e.alice)
			cfg.QUICConfig = qconf
			c := e.dial(t, cfg)
			if err := c.Ping(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			before := e.server.Stats().Connections.Load()
			time.Sleep(2500 * time.Millisecond)
			if err := c.Ping(ctxT(t)); err != nil {
				t.Fatalf("Ping after 2.5 s idle: %v", err)
			}
			after := e.server.Stats().Connections.Load()
			if keepalive && after != before {
				t.Errorf("with keepalives the client reconnected (%d connections, then %d)", before, after)
			}
			if !keepalive && after <= before {
				t.Errorf("without keepalives the idle connection did not time out (%d connections)", after)
			}
		})
	}
}

// TestServerPinning: a client that pins the server's key reaches it without
// a CA; a wrong pin, or a server from another CA, is refused.
func TestServerPinning(t *testing.T) {
	e := newEnv(t)
	srvCert := e.server.TLSConfig.Certificates[0].Leaf
	pin := sha256.Sum256(srvCert.RawSubjectPublicKeyInfo)

	cfg := e.config(e.alice)
	cfg.RootCAs, cfg.ServerSPKI = nil, pin[:]
	c := e.dial(t, cfg)
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("pinned server: %v", err)
	}

	wrong := sha256.Sum256([]byte("another key"))
	cfg.ServerSPKI = wrong[:]
	if c, err := client.Dial(ctxT(t), cfg); err == nil {
		err = c.Ping(ctxT(t))
		c.Close()
		if err == nil {
			t.Error("a wrong pin was accepted")
		}
	}

	cfg = e.config(e.alice)
	cfg.RootCAs = testpki.NewCA("another CA").Pool
	if c, err := client.Dial(ctxT(t), cfg); err == nil {
		err = c.Ping(ctxT(t))
		c.Close()
		if err == nil {
			t.Error("a server from another CA was accepted")
		}
	}
}
