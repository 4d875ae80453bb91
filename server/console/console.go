package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// Server is what the console needs of pscsd's server (*server.Server).
type Server interface {
	AdminAs(ctx context.Context, owner string, req *transport.AdminRequest, sec *transport.AdminSecret) (*transport.AdminResponse, error)
	CardsOf(owner string) []server.Card
	IsOwner(identity string) bool
	DelegationsOf(owner string) []transport.AdminDelegation
	ShownTo(owner string) func(*audit.Record) bool
	CardOfDelegation(id string) (string, bool)
}

// Identifier names the identity a client certificate is enrolled to
// (*transport.StaticEnrollment).
type Identifier interface {
	Identify(ctx context.Context, cert *x509.Certificate) (*transport.Identity, error)
}

// Config configures a Console.
type Config struct {
	Server Server
	// AuditFile is the audit log the audit pages and charts read.
	AuditFile string
	// CA is pscsd's CA: it verifies owners' client certificates and the
	// checkpoint certificate of exports. Nil: no client certificate login.
	CA *x509.Certificate
	// Enrollment identifies owners by their client certificates.
	Enrollment Identifier
	Logger     *slog.Logger
	// TokenTTL is how long a one-time link works; default 2 minutes.
	TokenTTL time.Duration
	// IdleTimeout ends a session without requests; default 15 minutes.
	IdleTimeout time.Duration
	// MaxSession ends any session; default 8 hours.
	MaxSession time.Duration
	// SampleEvery is how often the cards' state is sampled and sent to
	// the cards page; default 2 seconds.
	SampleEvery time.Duration
	// PINEvery is how often the cards' PIN counters are read (a card
	// transaction each, which spends no try); default 30 seconds.
	PINEvery time.Duration
	// KeepAlive is how often an idle event stream gets a comment, so that
	// proxies and browsers keep it open; default 20 seconds.
	KeepAlive time.Duration
	// Now is the console's clock; nil: time.Now. (Tests.)
	Now func() time.Time
}

// Wrong one-time tokens from one client address: the MaxBadTokens-th
// within BadTokenWindow has the address refused for BadTokenLockout. Only
// wrong tokens (unknown, used or expired) count; a good one neither
// counts nor clears the count, so that an owner's own links do not let
// them guess on.
const (
	MaxBadTokens    = 5
	BadTokenWindow  = 15 * time.Minute
	BadTokenLockout = 5 * time.Minute
	// MaxBadAddrs bounds the client addresses whose wrong tokens are
	// counted (an IPv6 address counts by its /64): past it, a new
	// address's wrong tokens are refused but not counted, so that a
	// client of many addresses does not grow the console without end
	// (links are 256-bit random: the lockout slows nobody who could
	// guess one).
	MaxBadAddrs = 4096
)

// Bounds of what one session or owner holds.
const (
	// MaxNonces bounds a session's unused one-time form nonces: a new one
	// past it forgets the oldest (whose form is then refused as sent).
	MaxNonces = 32
	// MaxStreams bounds a session's open event streams (live pages): one
	// more is refused with 429.
	MaxStreams = 6
	// MaxSessionsPerOwner bounds an owner's sessions: a new one past it
	// ends the oldest.
	MaxSessionsPerOwner = 16
)

// maxForm bounds a form's body (documents to digest included).
const maxForm = 64 << 20

// CookieName is the session cookie's name.
const CookieName = "__Host-pscs-session"

// LoginCookieName is the cookie of the login form's CSRF token, set by
// the page a one-time link opens.
const LoginCookieName = "__Host-pscs-login"

// Console is the web console. Make it with New; it is safe for concurrent
// use.
type Console struct {
	cfg  Config
	log  *slog.Logger
	base string // https://host:port, once serving

	mu       sync.Mutex
	tokens   map[[32]byte]token    // by SHA-256 of the token
	sessions map[[32]byte]*session // by SHA-256 of the session ID
	bad      map[string]*badTokens // by client IP
	enrolled map[string][]string   // owner -> identities enrolled or issued through the console

	live *live
}

type token struct {
	owner   string
	expires time.Time
}

type session struct {
	owner    string
	tag      string // a short tag of the session ID's digest, for the log
	csrf     string
	created  time.Time
	lastSeen time.Time
	nonces   [][32]byte    // unused one-time form nonces, by SHA-256, oldest first
	streams  int           // open event streams
	ended    chan struct{} // closed when the session ends: its streams end
}

type badTokens struct {
	times []time.Time // wrong tokens within BadTokenWindow, oldest first
	until time.Time   // refused until then
}

// New makes a Console.
func New(cfg Config) *Console {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 2 * time.Minute
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.MaxSession == 0 {
		cfg.MaxSession = 8 * time.Hour
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PINEvery == 0 {
		cfg.PINEvery = 30 * time.Second
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 20 * time.Second
	}
	c := &Console{cfg: cfg, log: cfg.Logger, tokens: map[[32]byte]token{}, sessions: map[[32]byte]*session{},
		bad: map[string]*badTokens{}, enrolled: map[string][]string{}}
	c.live = newLive(c)
	return c
}

// SetServer gives the console its server, when the server is made after
// the console (whose Link the server's administration calls). Call it
// before Serve.
func (c *Console) SetServer(s Server) { c.cfg.Server = s }

func digest(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Link makes a one-time link that opens a session of owner; it is what
// the administration action "console" answers.
func (c *Console) Link(_ context.Context, owner string) (string, time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base == "" {
		return "", time.Time{}, errors.New("console: not serving")
	}
	t := randomToken()
	exp := c.cfg.Now().Add(c.cfg.TokenTTL)
	c.tokens[digest(t)] = token{owner: owner, expires: exp}
	return c.base + "/login?token=" + url.QueryEscape(t), exp, nil
}

// Listen opens the console's TCP listener on addr, with TLS on cert; the
// console's links name the listener's address (as host, the name given in
// host if not empty: the name the certificate carries).
func (c *Console) Listen(addr, host string, cert tls.Certificate) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if host == "" {
		host, _, _ = net.SplitHostPort(ln.Addr().String())
	}
	c.mu.Lock()
	c.base = origin(host, port)
	c.mu.Unlock()
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if c.cfg.CA != nil {
		pool := x509.NewCertPool()
		pool.AddCert(c.cfg.CA)
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tls.NewListener(ln, tc), nil
}

// origin is the console's origin (RFC 6454) at host and port, as browsers
// serialize it in the Origin header of its pages' forms: the host in lower
// case, and no port when it is HTTPS's default, 443.
func origin(host, port string) string {
	host = strings.ToLower(host)
	if port == "443" {
		if strings.Contains(host, ":") {
			return "https://[" + host + "]"
		}
		return "https://" + host
	}
	return "https://" + net.JoinHostPort(host, port)
}

// URL is the console's address, once Listen was called.
func (c *Console) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base
}

// Serve serves the console on ln (from Listen) until ctx ends.
func (c *Console) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:    slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go c.live.run(ctx)
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	err := hs.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// loginPage answers a one-time link: a page with the form that logs in
// (POST /login). Opening the link uses nothing, so that a mail scanner
// fetching it does not spend it, and a page of another site cannot log a
// browser into a session of the attacker's (login CSRF): the form carries
// a token that only the console's own page has, beside its cookie.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("token")
	tok, ok := c.checkToken(w, r, t, false)
	if !ok {
		return
	}
	lc := randomToken()
	http.SetCookie(w, &http.Cookie{Name: LoginCookieName, Value: lc, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.TokenTTL.Seconds()) + 1})
	c.render(w, r, http.StatusOK, "login", nil, &loginData{Owner: tok.owner, Token: t, CSRF: lc})
}

type loginData struct {
	Owner, Token, CSRF string
}

// login consumes a one-time token and makes a session: the form of
// loginPage, from the console's own origin, with its CSRF token.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	err := c.sameOrigin(r)
	if err == nil {
		err = r.ParseForm()
	}
	if err == nil {
		ck, cerr := r.Cookie(LoginCookieName)
		if cerr != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(ck.Value)) != 1 {
			err = errors.New("missing or wrong login CSRF token")
		}
	}
	if err != nil {
		c.log.Warn("console: login refused", "addr", clientIP(r), "why", err.Error())
		c.errorPage(w, r, http.StatusForbidden, "Refused: "+err.Error()+". Open your one-time link again.")
		return
	}
	tok, ok := c.checkToken(w, r, r.PostFormValue("token"), true)
	if !ok {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: LoginCookieName, Value: "", Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	c.startSession(w, tok.owner, "link")
	http.Redirect(w, r, "/cards", http.StatusSeeOther)
}

// checkToken looks t up, and uses it if use; a wrong token counts
// towards the address's lockout, and answers the refusal.
func (c *Console) checkToken(w http.ResponseWriter, r *http.Request, t string, use bool) (token, bool) {
	ip := clientIP(r)
	addr := badKey(ip)
	now := c.cfg.Now()
	c.mu.Lock()
	b := c.bad[addr]
	if b != nil && now.Before(b.until) {
		c.mu.Unlock()
		c.log.Warn("console: login refused: too many wrong links from this address", "addr", ip)
		c.errorPage(w, r, http.StatusTooManyRequests, "Too many wrong links from your address: try again later.")
		return token{}, false
	}
	d := digest(t)
	tok, ok := c.tokens[d]
	if use {
		delete(c.tokens, d) // once, whatever follows
	}
	if !ok || now.After(tok.expires) {
		if b == nil && len(c.bad) < MaxBadAddrs {
			b = &badTokens{}
			c.bad[addr] = b
		}
		if b != nil {
			b.times = append(recentBad(b.times, now), now)
			if len(b.times) >= MaxBadTokens {
				b.until, b.times = now.Add(BadTokenLockout), nil
			}
		}
		c.mu.Unlock()
		reason := "unknown or already used"
		if ok {
			reason = "expired"
		}
		c.log.Warn("console: one-time link refused", "reason", reason, "addr", ip)
		c.errorPage(w, r, http.StatusForbidden, "This link is "+reason+". Ask for a new one with: pscs admin console")
		return token{}, false
	}
	c.mu.Unlock()
	return tok, true
}

// recentBad drops the times before BadTokenWindow.
func recentBad(times []time.Time, now time.Time) []time.Time {
	for len(times) > 0 && now.Sub(times[0]) > BadTokenWindow {
		times = times[1:]
	}
	return times
}

// badKey is the key of an address's wrong tokens: an IPv6 address's /64
// (one host has all of it), an IPv4 address itself.
func badKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Unmap().Is4() {
		return ip
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

func clientIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// startSession sets the cookie of a new session of owner.
func (c *Console) startSession(w http.ResponseWriter, owner, how string) *session {
	id := randomToken()
	d := digest(id)
	now := c.cfg.Now()
	s := &session{owner: owner, tag: hex.EncodeToString(d[:4]), csrf: randomToken(), created: now, lastSeen: now, ended: make(chan struct{})}
	c.mu.Lock()
	for {
		var oldest [32]byte
		var first *session
		n := 0
		for k, x := range c.sessions {
			if x.owner != owner {
				continue
			}
			n++
			if first == nil || x.created.Before(first.created) {
				oldest, first = k, x
			}
		}
		if n < MaxSessionsPerOwner {
			break
		}
		c.endLocked(oldest)
		c.log.Info("console: session ended: the owner opened too many", "owner", owner, "session", first.tag, "max", MaxSessionsPerOwner)
	}
	c.sessions[d] = s
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.MaxSession.Seconds())})
	c.log.Info("console: session opened", "owner", owner, "session", s.tag, "by", how)
	return s
}

// sessionOf returns the request's live session, or nil; with a verified
// client certificate of an owner and no session, it opens one.
func (c *Console) sessionOf(w http.ResponseWriter, r *http.Request) *session {
	if ck, err := r.Cookie(CookieName); err == nil {
		d := digest(ck.Value)
		now := c.cfg.Now()
		c.mu.Lock()
		s := c.sessions[d]
		if s != nil && (now.Sub(s.lastSeen) > c.cfg.IdleTimeout || now.Sub(s.created) > c.cfg.MaxSession) {
			c.endLocked(d)
			s = nil
		}
		if s != nil {
			s.lastSeen = now
		}
		c.mu.Unlock()
		if s != nil {
			return s
		}
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && c.cfg.Enrollment != nil && certMayOpen(r) {
		id, err := c.cfg.Enrollment.Identify(r.Context(), r.TLS.PeerCertificates[0])
		if err == nil && c.cfg.Server.IsOwner(id.ID) {
			return c.startSession(w, id.ID, "client certificate")
		}
	}
	return nil
}

// certMayOpen reports whether a request with an owner's client
// certificate and no session may open one: a page of the console's own
// (or an address typed in), or a top-level navigation. A browser presents
// the certificate it was told to use for the console on every request to
// it, those another site's page starts too (an image, a frame, a fetch),
// which must not open sessions: each would end the owner's oldest past
// MaxSessionsPerOwner.
func certMayOpen(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "none", "same-origin":
		return true
	}
	return r.Header.Get("Sec-Fetch-Dest") == "document" && r.Header.Get("Sec-Fetch-Mode") == "navigate"
}

// endLocked ends the session of digest d, if any, and its event streams.
func (c *Console) endLocked(d [32]byte) {
	if s, ok := c.sessions[d]; ok {
		delete(c.sessions, d)
		close(s.ended)
	}
}

// logout ends the request's session.
func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if ck, err := r.Cookie(CookieName); err == nil {
		c.mu.Lock()
		c.endLocked(digest(ck.Value))
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	c.log.Info("console: session closed", "owner", s.owner, "session", s.tag)
	c.render(w, r, http.StatusOK, "loggedout", nil, nil)
}

// sameOrigin checks that a POST comes from a page of the console's own
// origin.
func (c *Console) sameOrigin(r *http.Request) error {
	if r.Method != http.MethodPost {
		return errors.New("a change is a POST")
	}
	// The Origin header names the page's origin; under Referrer-Policy
	// no-referrer browsers send "null" instead, and then Sec-Fetch-Site,
	// which no page can set, says whether the form is the console's own.
	o := r.Header.Get("Origin")
	sameSite := r.Header.Get("Sec-Fetch-Site") == "same-origin"
	if o != c.URL() && !((o == "null" || o == "") && sameSite) {
		return fmt.Errorf("origin %q is not the console's", o)
	}
	return nil
}

// checkPost checks a state change: a POST, from the console's own origin,
// with the session's CSRF token.
func (c *Console) checkPost(r *http.Request, s *session) error {
	if err := c.sameOrigin(r); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxForm)
	if err := r.ParseMultipartForm(8 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return fmt.Errorf("form: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
		return errors.New("missing or wrong CSRF token")
	}
	return nil
}

// newNonce makes a one-time form nonce of s; past MaxNonces, the oldest
// is forgotten.
func (c *Console) newNonce(s *session) string {
	n := randomToken()
	c.mu.Lock()
	s.nonces = append(s.nonces, digest(n))
	if len(s.nonces) > MaxNonces {
		s.nonces = slices.Delete(s.nonces, 0, len(s.nonces)-MaxNonces)
	}
	c.mu.Unlock()
	return n
}

// useNonce reports whether n is an unused form nonce of s, and uses it.
func (c *Console) useNonce(s *session, n string) bool {
	d := digest(n)
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(s.nonces, d)
	if i < 0 {
		return false
	}
	s.nonces = slices.Delete(s.nonces, i, i+1)
	return true
}

// openStream counts an event stream of s, or reports that s has
// MaxStreams open already (or ended); closeStream uncounts it.
func (c *Console) openStream(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.streams >= MaxStreams {
		return false
	}
	s.streams++
	return true
}

func (c *Console) closeStream(s *session) {
	c.mu.Lock()
	s.streams--
	c.mu.Unlock()
}

// noteEnrolled remembers an identity owner enrolled through the console.
func (c *Console) noteEnrolled(owner, name string) {
	c.mu.Lock()
	c.enrolled[owner] = append(c.enrolled[owner], name)
	c.mu.Unlock()
}

func (c *Console) enrolledBy(owner string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.enrolled[owner]...)
}

// sweep forgets expired tokens, sessions and lockouts.
func (c *Console) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, t := range c.tokens {
		if now.After(t.expires) {
			delete(c.tokens, d)
		}
	}
	for d, s := range c.sessions {
		if now.Sub(s.lastSeen) > c.cfg.IdleTimeout || now.Sub(s.created) > c.cfg.MaxSession {
			c.endLocked(d)
		}
	}
	for ip, b := range c.bad {
		if b.times = recentBad(b.times, now); len(b.times) == 0 && !now.Before(b.until) {
			delete(c.bad, ip)
		}
	}
}
