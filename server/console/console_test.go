package console

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
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

func newSite(t *testing.T) *site {
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
	auditFile := filepath.Join(t.TempDir(), "audit.log")
	os.WriteFile(auditFile, nil, 0o600)
	clk := &clock{t: time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)}
	fs := &fakeServer{}
	c := New(Config{Server: fs, AuditFile: auditFile, Now: clk.now, SampleEvery: time.Hour})
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
	resp, _ := get(t, c, link)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/cards" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	sc := resp.Header.Get("Set-Cookie")
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
	if resp, _ := get(t, s.client(), link); resp.StatusCode != http.StatusForbidden {
		t.Errorf("second use: %d, want 403", resp.StatusCode)
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
	if resp, _ := get(t, s.client(), link); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a link before it expires: %d", resp.StatusCode)
	}
}

func TestTokenGuessingLocksOut(t *testing.T) {
	s := newSite(t)
	c := s.client()
	for i := range MaxBadTokens {
		if resp, _ := get(t, c, s.base+"/login?token=guess"+strings.Repeat("x", i)); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("guess %d: %d", i, resp.StatusCode)
		}
	}
	// Now even a good link is refused from this address, until the lockout ends.
	link := s.link(t, "alice")
	if resp, _ := get(t, c, link); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a good link during the lockout: %d, want 429", resp.StatusCode)
	}
	s.clock.add(BadTokenLockout + time.Second)
	if resp, _ := get(t, c, s.link(t, "alice")); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the link after the lockout: %d", resp.StatusCode)
	}
}

func TestSessionExpiry(t *testing.T) {
	s := newSite(t)
	c := s.client()
	get(t, c, s.link(t, "alice"))
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
	get(t, c, s.link(t, "alice"))
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
	get(t, c, s.link(t, "alice"))
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
	c := New(Config{Server: &fakeServer{}, CA: ca.Cert, Enrollment: enroll, AuditFile: filepath.Join(t.TempDir(), "audit"), SampleEvery: time.Hour})
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
