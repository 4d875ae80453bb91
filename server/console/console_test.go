package console

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"html"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// fakeServer is an in-memory Server for the console's own rules (links,
// sessions, CSRF, headers); the browser test in server/cmd/pscsd runs the
// console against pscsd itself.
type fakeServer struct {
	mu    sync.Mutex
	calls []string // owner:action
}

func (f *fakeServer) AdminAs(ctx context.Context, owner string, req *transport.AdminRequest, sec *transport.AdminSecret) (*transport.AdminResponse, error) {
	f.mu.Lock()
	f.calls = append(f.calls, owner+":"+req.Action+":"+server.ViaOf(ctx))
	f.mu.Unlock()
	if req.ID != "" && !strings.HasPrefix(req.ID, owner+"-") {
		return nil, transport.Errorf(transport.CodeNotOwner, "not yours")
	}
	return &transport.AdminResponse{ID: req.ID}, nil
}
func (f *fakeServer) CardsOf(owner string) []server.Card { return nil }
func (f *fakeServer) IsOwner(identity string) bool       { return identity == "alice" || identity == "bob" }
func (f *fakeServer) DelegationsOf(owner string) []transport.AdminDelegation {
	return nil
}
func (f *fakeServer) ShownTo(owner string) func(*audit.Record) bool {
	return func(r *audit.Record) bool { return r.Identity == owner }
}
func (f *fakeServer) CardOfDelegation(id string) (string, bool) { return "", false }

func (f *fakeServer) actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type site struct {
	c     *Console
	srv   *fakeServer
	clock *clock
	base  string
}

func newSite(t *testing.T, opts ...func(*Config)) *site {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca, err := server.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	_ = key
	auditFile := emptyAuditLog(t)
	clk := &clock{t: time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)}
	fs := &fakeServer{}
	cfg := Config{Server: fs, AuditFile: auditFile, Now: clk.now, SampleEvery: time.Hour}
	for _, o := range opts {
		o(&cfg)
	}
	c := New(cfg)
	ln, err := c.Listen("127.0.0.1:0", "", cert)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return &site{c: c, srv: fs, clock: clk, base: c.URL()}
}

// testMAC is an HMAC-SHA-256 audit MACer.
type testMAC []byte

func (k testMAC) MAC(label string, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(label))
	m.Write(data)
	return m.Sum(nil), nil
}

// emptyAuditLog writes a real audit log without records (what pscsd's
// audit package writes and verifies), for the console to read.
func emptyAuditLog(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	mac := testMAC("console test")
	l, err := audit.Open(path, mac, audit.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := audit.Verify(f, mac, nil); n != 0 || err != nil {
		t.Fatalf("the empty audit log: %d records, %v", n, err)
	}
	return path
}

func (s *site) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (s *site) link(t *testing.T, owner string) string {
	t.Helper()
	u, _, err := s.c.Link(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var (
	tokenField = regexp.MustCompile(`name="token" value="([^"]+)"`)
	csrfField  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

// login opens link with c, as a browser does: the page the link opens,
// then its form, posted from the console's origin. It returns the answer
// to the form, or to the link if it opened no form.
func (s *site) login(t *testing.T, c *http.Client, link string) *http.Response {
	t.Helper()
	resp, page := get(t, c, link)
	if resp.StatusCode != http.StatusOK {
		return resp
	}
	tok, csrf := tokenField.FindStringSubmatch(page), csrfField.FindStringSubmatch(page)
	if tok == nil || csrf == nil {
		t.Fatalf("the login page has no form:\n%s", page)
	}
	return s.postLogin(t, c, url.Values{"token": {html.UnescapeString(tok[1])}, "csrf": {html.UnescapeString(csrf[1])}}, s.base)
}

func (s *site) postLogin(t *testing.T, c *http.Client, form url.Values, origin string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.base+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestLinkOnceAndCookie(t *testing.T) {
	s := newSite(t)
	c := s.client()
	link := s.link(t, "alice")
	resp := s.login(t, c, link)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/cards" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var sc string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, CookieName+"=") {
			sc = v
		}
	}
	for _, want := range []string{CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("cookie %q lacks %s", sc, want)
		}
	}
	if strings.Contains(sc, "Domain=") {
		t.Errorf("a __Host- cookie with a Domain: %q", sc)
	}
	if resp, page := get(t, c, s.base+"/cards"); resp.StatusCode != http.StatusOK || !strings.Contains(page, "alice") {
		t.Fatalf("cards after login: %d", resp.StatusCode)
	}
	// Once only, even for the same browser.
	if resp := s.login(t, s.client(), link); resp.StatusCode != http.StatusForbidden {
		t.Errorf("second use: %d, want 403", resp.StatusCode)
	}
	if resp := s.login(t, c, link); resp.StatusCode != http.StatusForbidden {
		t.Errorf("second use in the same browser: %d, want 403", resp.StatusCode)
	}
	// Headers.
	resp, _ = get(t, c, s.base+"/cards")
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'", "script-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline script or eval: %q", csp)
	}
	for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
}

func TestLinkExpires(t *testing.T) {
	s := newSite(t)
	link := s.link(t, "alice")
	s.clock.add(2*time.Minute + time.Second)
	// (Refused as expired, or as unknown once the sweep forgot it.)
	if resp, page := get(t, s.client(), link); resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "pscs admin console") {
		t.Errorf("an expired link: %d", resp.StatusCode)
	}
	// Just in time works.
	link = s.link(t, "alice")
	s.clock.add(2*time.Minute - time.Second)
	if resp := s.login(t, s.client(), link); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a link before it expires: %d", resp.StatusCode)
	}
}

func TestTokenGuessingLocksOut(t *testing.T) {
	s := newSite(t)
	c := s.client()
	guess := func(i int) int {
		t.Helper()
		resp, _ := get(t, c, s.base+"/login?token=guess"+strings.Repeat("x", i))
		return resp.StatusCode
	}
	for i := range MaxBadTokens {
		if code := guess(i); code != http.StatusForbidden {
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	// Now even a good link is refused from this address, until the
	// lockout ends.
	if resp, _ := get(t, c, s.link(t, "alice")); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a good link during the lockout: %d, want 429", resp.StatusCode)
	}
	s.clock.add(BadTokenLockout + time.Second)
	if resp := s.login(t, c, s.link(t, "alice")); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the link after the lockout: %d", resp.StatusCode)
	}
	// Guessing by form counts as by link.
	for i := range MaxBadTokens {
		lc := s.client()
		_, page := get(t, lc, s.link(t, "alice"))
		csrf := csrfField.FindStringSubmatch(page)
		if csrf == nil {
			t.Fatalf("form guess %d: no login form:\n%s", i, page)
		}
		if resp := s.postLogin(t, lc, url.Values{"token": {fmt.Sprint("form guess ", i)}, "csrf": {csrf[1]}}, s.base); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("form guess %d: %d", i, resp.StatusCode)
		}
	}
	if resp := s.login(t, c, s.link(t, "alice")); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a good link after guessing by form: %d, want 429", resp.StatusCode)
	}
}

// TestGoodLinksNeverLockOut: only wrong tokens count; an owner's own good
// links neither count nor clear the count of wrong ones (else an owner
// could guess on between links of their own).
func TestGoodLinksNeverLockOut(t *testing.T) {
	s := newSite(t)
	for i := range 3 * MaxBadTokens {
		if resp := s.login(t, s.client(), s.link(t, "alice")); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("good login %d: %d, want 303", i, resp.StatusCode)
		}
	}
	c := s.client()
	for i := range MaxBadTokens - 1 {
		if resp, _ := get(t, c, s.base+"/login?token=guess"+strings.Repeat("x", i)); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("guess %d: %d", i, resp.StatusCode)
		}
		if resp := s.login(t, s.client(), s.link(t, "bob")); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("good login after guess %d: %d", i, resp.StatusCode)
		}
	}
	if resp, _ := get(t, c, s.base+"/login?token=last-guess"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the last guess: %d", resp.StatusCode)
	}
	if resp := s.login(t, s.client(), s.link(t, "alice")); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("after %d wrong tokens among good links: %d, want 429", MaxBadTokens, resp.StatusCode)
	}
	// Wrong tokens further apart than the window do not add up.
	s.clock.add(BadTokenLockout + time.Second)
	for i := range 2 * MaxBadTokens {
		if resp, _ := get(t, c, s.base+"/login?token=slow-guess"+strings.Repeat("x", i)); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("slow guess %d: %d", i, resp.StatusCode)
		}
		s.clock.add(BadTokenWindow/time.Duration(MaxBadTokens-1) + time.Second)
	}
	if resp := s.login(t, s.client(), s.link(t, "alice")); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after slow wrong tokens: %d, want 303", resp.StatusCode)
	}
}

// TestLoginCSRF: the login form is refused from another site, without
// its CSRF token or with another browser's, and such a refusal spends no
// link and counts towards no lockout.
func TestLoginCSRF(t *testing.T) {
	s := newSite(t)
	victim := s.client()
	link := s.link(t, "bob") // the attacker's own link
	attacker := s.client()
	_, page := get(t, attacker, link)
	tok, csrf := tokenField.FindStringSubmatch(page)[1], csrfField.FindStringSubmatch(page)[1]
	get(t, victim, s.base+"/cards") // the victim's browser has been here (no cookie of the login page)
	for _, tc := range []struct {
		name   string
		c      *http.Client
		form   url.Values
		origin string
	}{
		{"cross-site, no token", victim, url.Values{"token": {tok}}, "https://evil.example"},
		{"cross-site, the attacker's CSRF token", victim, url.Values{"token": {tok}, "csrf": {csrf}}, "https://evil.example"},
		{"same origin claimed, the attacker's CSRF token", victim, url.Values{"token": {tok}, "csrf": {csrf}}, s.base},
		{"no origin", attacker, url.Values{"token": {tok}, "csrf": {csrf}}, ""},
		{"no CSRF token", attacker, url.Values{"token": {tok}}, s.base},
		{"a wrong CSRF token", attacker, url.Values{"token": {tok}, "csrf": {"x" + csrf}}, s.base},
	} {
		for range MaxBadTokens {
			if resp := s.postLogin(t, tc.c, tc.form, tc.origin); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %d, want 403", tc.name, resp.StatusCode)
			}
		}
	}
	if _, page := get(t, victim, s.base+"/cards"); !strings.Contains(page, "not logged in") {
		t.Errorf("the victim's browser was logged in")
	}
	// The link was not spent, and nothing counted towards a lockout.
	if resp := s.postLogin(t, attacker, url.Values{"token": {tok}, "csrf": {csrf}}, s.base); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the link's own form afterwards: %d, want 303", resp.StatusCode)
	}
	// GET /login only shows the form: it logs nobody in; the form's
	// cookie is the session cookie's kind.
	c := s.client()
	resp, page := get(t, c, s.link(t, "alice"))
	sc := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != http.StatusOK || len(resp.Header.Values("Set-Cookie")) != 1 || !strings.HasPrefix(sc, LoginCookieName+"=") ||
		!strings.Contains(page, `action="/login"`) {
		t.Errorf("GET of a link: %d, cookies %q", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	for _, want := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("login cookie %q lacks %s", sc, want)
		}
	}
	if resp, _ := get(t, c, s.base+"/cards"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after only opening a link: %d, want 401", resp.StatusCode)
	}
}

func TestSessionExpiry(t *testing.T) {
	s := newSite(t)
	c := s.client()
	s.login(t, c, s.link(t, "alice"))
	s.clock.add(14 * time.Minute)
	if resp, _ := get(t, c, s.base+"/cards"); resp.StatusCode != http.StatusOK {
		t.Fatalf("within the idle limit: %d", resp.StatusCode)
	}
	s.clock.add(16 * time.Minute)
	if resp, _ := get(t, c, s.base+"/cards"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after the idle limit: %d, want 401", resp.StatusCode)
	}
	// Absolute: active every 10 minutes, still ended after 8 hours.
	c = s.client()
	s.login(t, c, s.link(t, "alice"))
	for range 47 {
		s.clock.add(10 * time.Minute)
		if resp, _ := get(t, c, s.base+"/cards"); resp.StatusCode != http.StatusOK {
			t.Fatalf("an active session ended early: %d", resp.StatusCode)
		}
	}
	s.clock.add(11 * time.Minute)
	if resp, _ := get(t, c, s.base+"/cards"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after 8 hours: %d, want 401", resp.StatusCode)
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	s := newSite(t)
	c := s.client()
	s.login(t, c, s.link(t, "alice"))
	_, page := get(t, c, s.base+"/delegations")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token")
	}
	post := func(form url.Values, origin, fetchSite string) int {
		req, _ := http.NewRequest(http.MethodPost, s.base+"/delegations/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if fetchSite != "" {
			req.Header.Set("Sec-Fetch-Site", fetchSite)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name              string
		form              url.Values
		origin, fetchSite string
		want              int
	}{
		{"no token", url.Values{"id": {"alice-1"}}, s.base, "", 403},
		{"wrong token", url.Values{"id": {"alice-1"}, "csrf": {"x" + m[1]}}, s.base, "", 403},
		{"other origin", url.Values{"id": {"alice-1"}, "csrf": {m[1]}}, "https://evil.example", "cross-site", 403},
		{"no origin, cross-site", url.Values{"id": {"alice-1"}, "csrf": {m[1]}}, "", "cross-site", 403},
		{"null origin, no fetch metadata", url.Values{"id": {"alice-1"}, "csrf": {m[1]}}, "null", "", 403},
		{"another owner's ID", url.Values{"id": {"bob-1"}, "csrf": {m[1]}}, s.base, "", 403},
		{"good", url.Values{"id": {"alice-1"}, "csrf": {m[1]}}, s.base, "", 200},
		{"good, null origin from the same origin", url.Values{"id": {"alice-2"}, "csrf": {m[1]}}, "null", "same-origin", 200},
	} {
		if got := post(tc.form, tc.origin, tc.fetchSite); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// Only the three that passed the checks reached the server, as alice,
	// marked as the console's.
	calls := s.srv.actions()
	if len(calls) != 3 {
		t.Fatalf("server calls %v", calls)
	}
	for _, call := range calls {
		if !strings.HasPrefix(call, "alice:revoke:console ") {
			t.Errorf("server call %q", call)
		}
	}
	// GET changes nothing.
	if resp, _ := get(t, c, s.base+"/delegations/revoke?id=alice-1"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET of a change: %d", resp.StatusCode)
	}
}

func TestClientCertificateLogin(t *testing.T) {
	ca, err := server.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := ca.IssueServer([]string{"127.0.0.1"})
	enroll := transport.NewStaticEnrollment()
	mk := func(name string) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		cert, err := ca.IssueClient(name, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		enroll.Add(name, cert)
		return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	}
	alice, carol := mk("alice"), mk("carol") // carol owns no card
	c := New(Config{Server: &fakeServer{}, CA: ca.Cert, Enrollment: enroll, AuditFile: emptyAuditLog(t), SampleEvery: time.Hour})
	ln, err := c.Listen("127.0.0.1:0", "", srvCert)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Serve(ctx, ln)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		want  int
	}{{"owner", []tls.Certificate{alice}, 200}, {"not an owner", []tls.Certificate{carol}, 401}, {"none", nil, 401}} {
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: tc.certs}}}
		resp, err := cl.Get(c.URL() + "/cards")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}

// TestDelegationFormDocuments: uploaded documents become their SHA-256,
// SHA-384 and SHA-512 digests, after the digests typed in; week days and hours are read.
func TestDelegationFormDocuments(t *testing.T) {
	var body strings.Builder
	w := multipart.NewWriter(&body)
	for k, v := range map[string]string{"card": "mayor", "delegate": "bob", "ops": "sign", "days": "1", "hours_from": "08:00",
		"hours_to": "18:30", "per_hour": "5", "total": "9", "warranty": "on", "not_after": "2027-01-05T08:00",
		"digests": strings.Repeat("ab", 32) + "\n"} {
		w.WriteField(k, v)
	}
	w.WriteField("days", "5")
	fw, _ := w.CreateFormFile("documents", "order.txt")
	fw.Write([]byte("Order 2026/117"))
	w.Close()
	r, _ := http.NewRequest(http.MethodPost, "https://console.test/delegations", strings.NewReader(body.String()))
	r.Header.Set("Content-Type", w.FormDataContentType())
	if err := r.ParseMultipartForm(1 << 20); err != nil {
		t.Fatal(err)
	}
	d, _, err := delegationForm(r)
	if err != nil {
		t.Fatal(err)
	}
	sum, sum384, sum512 := sha256.Sum256([]byte("Order 2026/117")), sha512.Sum384([]byte("Order 2026/117")), sha512.Sum512([]byte("Order 2026/117"))
	if len(d.Documents) != 4 || d.Documents[0][0] != 0xab || !bytes.Equal(d.Documents[1], sum[:]) ||
		!bytes.Equal(d.Documents[2], sum384[:]) || !bytes.Equal(d.Documents[3], sum512[:]) {
		t.Errorf("documents %x, want the digest typed in, then the file's SHA-256, SHA-384 and SHA-512", d.Documents)
	}
	r2, _ := http.NewRequest(http.MethodPost, "https://console.test/delegations",
		strings.NewReader("card=mayor&delegate=bob&ops=sign&not_before=2027-01-01T00:00&for=30d"))
	r2.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r2.ParseForm()
	if d2, _, err := delegationForm(r2); err != nil {
		t.Errorf("for=30d: %v", err)
	} else if d2.NotAfter != time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC).UnixMilli() {
		t.Errorf("for=30d: ends %d", d2.NotAfter)
	}
	if d.Days != 1<<1|1<<5 || d.From != 8*60 || d.To != 18*60+30 || d.PerHour != 5 || d.Total != 9 || !d.Warranty ||
		d.NotAfter != time.Date(2027, 1, 5, 8, 0, 0, 0, time.UTC).UnixMilli() {
		t.Errorf("delegation %+v", d)
	}
}

// loggedIn returns a client with a session of owner.
func (s *site) loggedIn(t *testing.T, owner string) *http.Client {
	t.Helper()
	c := s.client()
	if resp := s.login(t, c, s.link(t, owner)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login of %s: %d", owner, resp.StatusCode)
	}
	return c
}

// postForm posts form with the session's CSRF token, from the console's
// origin, and returns the status and page.
func (s *site) postForm(t *testing.T, c *http.Client, path string, form url.Values) (int, string) {
	t.Helper()
	_, page := get(t, c, s.base+"/cards")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token")
	}
	form.Set("csrf", m[1])
	req, _ := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var nonceField = regexp.MustCompile(`name="nonce" value="([^"]+)"`)

// TestNoncesBounded: a session keeps its MaxNonces newest form nonces:
// an older one is refused as a form sent already, and so is another
// session's.
func TestNoncesBounded(t *testing.T) {
	s := newSite(t)
	c := s.loggedIn(t, "alice")
	var nonces []string
	for range MaxNonces + 1 {
		_, page := get(t, c, s.base+"/delegations")
		m := nonceField.FindStringSubmatch(page)
		if m == nil {
			t.Fatal("no nonce on the delegations page")
		}
		nonces = append(nonces, m[1])
	}
	form := func(n string) url.Values {
		return url.Values{"nonce": {n}, "card": {"mayor"}, "delegate": {"bob"}, "ops": {"sign"}, "passphrase": {"a passphrase"}}
	}
	other := s.loggedIn(t, "alice")
	for _, tc := range []struct {
		name string
		c    *http.Client
		n    string
		want int
	}{
		// (Each answer carries a new nonce: the oldest kept goes first.)
		{"the oldest kept", c, nonces[1], http.StatusOK},
		{"the oldest, forgotten", c, nonces[0], http.StatusConflict},
		{"another session's", other, nonces[MaxNonces], http.StatusConflict},
		{"the newest", c, nonces[MaxNonces], http.StatusOK},
		{"the newest again", c, nonces[MaxNonces], http.StatusConflict},
	} {
		if code, _ := s.postForm(t, tc.c, "/delegations", form(tc.n)); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
}

// stream opens an event stream and reads its first event (or the
// refusal).
type stream struct {
	resp *http.Response
	r    *bufio.Reader
}

func (s *site) openStream(t *testing.T, c *http.Client, path string) (*stream, int) {
	t.Helper()
	resp, err := c.Get(s.base + path)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests && !strings.Contains(string(b), "Too many open pages") {
			t.Errorf("the refusal of a stream says %q", b)
		}
		return nil, resp.StatusCode
	}
	st := &stream{resp: resp, r: bufio.NewReader(resp.Body)}
	t.Cleanup(st.close)
	return st, resp.StatusCode
}

// next returns the stream's next line that is not empty; io.EOF when the
// server ended it.
func (st *stream) next() (string, error) {
	for {
		l, err := st.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if l = strings.TrimSpace(l); l != "" {
			return l, nil
		}
	}
}

func (st *stream) close() { st.resp.Body.Close() }

// TestStreamsBounded: a session has MaxStreams event streams at most; one
// more is refused with 429 (and /events/check says so), until one closes.
// Another session of the owner has its own.
func TestStreamsBounded(t *testing.T) {
	s := newSite(t)
	c := s.loggedIn(t, "alice")
	var open []*stream
	for i := range MaxStreams {
		path := "/events/cards"
		if i%2 == 1 {
			path = "/events/audit"
		}
		st, code := s.openStream(t, c, path)
		if code != http.StatusOK {
			t.Fatalf("stream %d: %d", i, code)
		}
		open = append(open, st)
	}
	if _, code := s.openStream(t, c, "/events/audit"); code != http.StatusTooManyRequests {
		t.Errorf("stream %d: %d, want 429", MaxStreams+1, code)
	}
	if resp, page := get(t, c, s.base+"/events/check"); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(page, "Too many open pages") {
		t.Errorf("/events/check with every stream open: %d %q", resp.StatusCode, page)
	}
	other := s.loggedIn(t, "alice")
	if _, code := s.openStream(t, other, "/events/cards"); code != http.StatusOK {
		t.Errorf("a stream of another session: %d", code)
	}
	// A closed stream frees its place (once the server sees it closed).
	open[0].close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, _ := get(t, c, s.base+"/events/check")
		if resp.StatusCode == http.StatusNoContent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/events/check 30 s after a stream closed: %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, code := s.openStream(t, c, "/events/cards"); code != http.StatusOK {
		t.Errorf("a stream after one closed: %d", code)
	}
	// Without a session, /events/check says so.
	if resp, _ := get(t, s.client(), s.base+"/events/check"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/events/check without a session: %d", resp.StatusCode)
	}
}

// TestSessionsPerOwnerBounded: an owner's MaxSessionsPerOwner+1-th session
// ends their oldest, and no other owner's.
func TestSessionsPerOwnerBounded(t *testing.T) {
	s := newSite(t)
	bob := s.loggedIn(t, "bob")
	var alice []*http.Client
	for range MaxSessionsPerOwner {
		alice = append(alice, s.loggedIn(t, "alice"))
		s.clock.add(time.Second)
	}
	st, code := s.openStream(t, alice[0], "/events/cards")
	if code != http.StatusOK {
		t.Fatalf("stream: %d", code)
	}
	st.next()
	alice = append(alice, s.loggedIn(t, "alice"))
	for i, c := range alice {
		want := http.StatusOK
		if i == 0 {
			want = http.StatusUnauthorized
		}
		if resp, _ := get(t, c, s.base+"/cards"); resp.StatusCode != want {
			t.Errorf("alice's session %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	if resp, _ := get(t, bob, s.base+"/cards"); resp.StatusCode != http.StatusOK {
		t.Errorf("bob's session: %d", resp.StatusCode)
	}
	// The ended session's stream ends.
	for {
		if _, err := st.next(); err != nil {
			break
		}
	}
}

// TestStreamKeepAlive: an idle stream gets keep-alive comments, and ends
// when its session does.
func TestStreamKeepAlive(t *testing.T) {
	s := newSite(t, func(c *Config) { c.KeepAlive = 20 * time.Millisecond })
	c := s.loggedIn(t, "alice")
	for _, path := range []string{"/events/cards", "/events/audit"} {
		st, code := s.openStream(t, c, path)
		if code != http.StatusOK {
			t.Fatalf("%s: %d", path, code)
		}
		n := 0
		for n < 2 {
			l, err := st.next()
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if l == ": keep-alive" {
				n++
			}
		}
	}
	st, _ := s.openStream(t, c, "/events/audit")
	if code, _ := s.postForm(t, c, "/logout", url.Values{}); code != http.StatusOK {
		t.Fatalf("logout: %d", code)
	}
	for {
		if _, err := st.next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the stream after logout: %v", err)
		}
	}
}

// TestExportNotCrossSite: an export (an audited administration) is not
// started by another site's page, whatever the cookie does.
func TestExportNotCrossSite(t *testing.T) {
	s := newSite(t)
	c := s.loggedIn(t, "alice")
	for _, tc := range []struct {
		fetchSite string
		want      int
	}{{"cross-site", 403}, {"same-site", 403}, {"same-origin", 200}, {"none", 200}, {"", 200}} {
		for _, f := range []string{"jsonl", "csv"} {
			req, _ := http.NewRequest(http.MethodGet, s.base+"/audit/export."+f, nil)
			if tc.fetchSite != "" {
				req.Header.Set("Sec-Fetch-Site", tc.fetchSite)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("export.%s with Sec-Fetch-Site %q: %d, want %d", f, tc.fetchSite, resp.StatusCode, tc.want)
			}
		}
	}
	if n := len(s.srv.actions()); n != 6 {
		t.Errorf("%d exports reached the server, want 6: %v", n, s.srv.actions())
	}
}

// TestClientCertificateCrossSite: requests that another site's page makes
// to the console (images, frames, fetches; the browser presents the
// owner's client certificate on them too) open no session, so that they
// do not end the owner's sessions past MaxSessionsPerOwner; a top-level
// navigation from another site (a link in a mail) opens one.
func TestClientCertificateCrossSite(t *testing.T) {
	ca, err := server.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := ca.IssueServer([]string{"127.0.0.1"})
	enroll := transport.NewStaticEnrollment()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.IssueClient("alice", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	enroll.Add("alice", cert)
	alice := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	c := New(Config{Server: &fakeServer{}, CA: ca.Cert, Enrollment: enroll, AuditFile: emptyAuditLog(t), SampleEvery: time.Hour})
	ln, err := c.Listen("127.0.0.1:0", "", srvCert)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Serve(ctx, ln)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{alice}}}
	defer tr.CloseIdleConnections()
	do := func(cookie *http.Cookie, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, c.URL()+"/cards", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := do(nil, map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"})
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName {
			session = ck
		}
	}
	if resp.StatusCode != 200 || session == nil {
		t.Fatalf("the owner's page: %d, session cookie %v", resp.StatusCode, session)
	}
	for i := range 2 * MaxSessionsPerOwner {
		dest := []string{"image", "iframe", "empty"}[i%3]
		r := do(nil, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": dest})
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("another site's %s request: %d, want 401", dest, r.StatusCode)
		}
	}
	// The session is still open: it answers, and no new one is opened.
	if r := do(session, map[string]string{"Sec-Fetch-Site": "same-origin"}); r.StatusCode != 200 || len(r.Cookies()) != 0 {
		t.Errorf("the owner's session after another site's requests: %d, cookies %v; want 200 and no new session", r.StatusCode, r.Cookies())
	}
	if r := do(nil, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}); r.StatusCode != 200 {
		t.Errorf("a link from another site: %d, want 200", r.StatusCode)
	}
}

// growingServer grants a delegation to a new delegate between any two
// readings of the delegations, as another session or pscs admin may.
type growingServer struct {
	fakeServer
	n int
}

func (g *growingServer) DelegationsOf(owner string) []transport.AdminDelegation {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	var ds []transport.AdminDelegation
	for i := range g.n {
		ds = append(ds, transport.AdminDelegation{ID: fmt.Sprintf("%s-%d", owner, i), Card: "mayor", Delegate: fmt.Sprintf("d%d", i)})
	}
	return ds
}

// TestDelegatesPageGrantedMeanwhile: the delegates page counts the
// delegations of one reading (it read them twice, and a delegate granted
// in between was no entry of the first: a nil dereference).
func TestDelegatesPageGrantedMeanwhile(t *testing.T) {
	c := New(Config{Server: &growingServer{}, AuditFile: emptyAuditLog(t), SampleEvery: time.Hour})
	dd := c.delegatesData(&session{owner: "alice"})
	if len(dd.Delegates) == 0 {
		t.Fatal("no delegates")
	}
	for _, d := range dd.Delegates {
		if d.Delegations != 1 || d.Active != 1 {
			t.Errorf("%s: %d delegations, %d active; want 1 and 1", d.Name, d.Delegations, d.Active)
		}
	}
}

// TestWrongTokensManyAddresses: wrong tokens from the addresses of one
// IPv6 /64 count together (one host has all of them), and a client of
// many addresses does not grow what the console keeps past MaxBadAddrs.
func TestWrongTokensManyAddresses(t *testing.T) {
	s := newSite(t)
	try := func(addr string) int {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, "/login?token=wrong", nil)
		r.RemoteAddr = net.JoinHostPort(addr, "443")
		w := httptest.NewRecorder()
		s.c.checkToken(w, r, "wrong", false)
		return w.Code
	}
	for i := range MaxBadTokens {
		if code := try(fmt.Sprintf("2001:db8::%x", i+1)); code != http.StatusForbidden {
			t.Fatalf("wrong token %d: %d", i, code)
		}
	}
	if code := try("2001:db8::ffff:1"); code != http.StatusTooManyRequests {
		t.Errorf("another address of the /64 after %d wrong tokens: %d, want 429", MaxBadTokens, code)
	}
	if code := try("2001:db8:0:1::1"); code != http.StatusForbidden {
		t.Errorf("another /64: %d, want 403", code)
	}
	for i := range MaxBadAddrs + 100 {
		try(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	s.c.mu.Lock()
	n := len(s.c.bad)
	s.c.mu.Unlock()
	if n > MaxBadAddrs {
		t.Errorf("%d addresses kept, want at most %d", n, MaxBadAddrs)
	}
}

// TestOriginDefaultPort: a console on port 443 (or named in capitals) takes
// its own pages' forms: browsers send Origin https://host, without :443
// and in lower case, and that must be the console's origin, or every
// POST, logging in included, is refused as another site's.
func TestOriginDefaultPort(t *testing.T) {
	c := New(Config{Server: &fakeServer{}, AuditFile: emptyAuditLog(t), SampleEvery: time.Hour})
	for _, tc := range []struct{ host, port, browser string }{
		{"pscs.example", "443", "https://pscs.example"},
		{"PSCS.Example", "443", "https://pscs.example"},
		{"pscs.example", "9443", "https://pscs.example:9443"},
		{"::1", "443", "https://[::1]"},
		{"::1", "9443", "https://[::1]:9443"},
	} {
		c.mu.Lock()
		c.base = origin(tc.host, tc.port)
		c.mu.Unlock()
		r := httptest.NewRequest(http.MethodPost, "/login", nil)
		r.Header.Set("Origin", tc.browser)
		if err := c.sameOrigin(r); err != nil {
			t.Errorf("console on %s port %s, a form of its page (Origin %s): %v", tc.host, tc.port, tc.browser, err)
		}
		r.Header.Set("Origin", "https://evil.example")
		if err := c.sameOrigin(r); err == nil {
			t.Errorf("console on %s port %s: another site's form taken", tc.host, tc.port)
		}
	}
}
