package console

import (
	"bytes"
	"context"
	"crypto/x509"
	"embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pscs/pscs/internal/docdigest"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/transport"
)

//go:embed web
var webFS embed.FS

var pages = map[string]*template.Template{}

var funcs = template.FuncMap{
	"pct": pct,
	"ms": func(f float64) string {
		if f == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f ms", f)
	},
	"tries": func(p pinState) string {
		switch {
		case p.Tries < 0:
			return "not reported"
		case p.Blocked:
			return "blocked"
		case p.Tries == 1:
			return "1 try left"
		}
		return fmt.Sprintf("%d tries left", p.Tries)
	},
	"join": strings.Join,
	"when": func(ms int64) string {
		if ms == 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC")
	},
	"days":    daysText,
	"hhmm":    func(m uint16) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) },
	"weekday": func(i int) string { return weekdays[i] },
	"seq": func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		return s
	},
}

var weekdays = []string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}

func daysText(d uint8) string {
	var out []string
	for i := range 7 {
		if d&(1<<i) != 0 {
			out = append(out, weekdays[i][:3])
		}
	}
	return strings.Join(out, ", ")
}

func init() {
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/fragments.html"))
	names, _ := fs.Glob(webFS, "web/page-*.html")
	for _, n := range names {
		t := template.Must(template.Must(layout.Clone()).ParseFS(webFS, n))
		pages[strings.TrimSuffix(strings.TrimPrefix(n, "web/page-"), ".html")] = t
	}
}

// securityHeaders go on every response.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Strict-Transport-Security", "max-age=31536000")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

// Handler is the console's HTTP handler.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("GET /{$}", c.auth(func(w http.ResponseWriter, r *http.Request, s *session) {
		http.Redirect(w, r, "/cards", http.StatusSeeOther)
	}))
	mux.HandleFunc("GET /cards", c.auth(c.cardsPage))
	mux.HandleFunc("GET /delegations", c.auth(c.delegationsPage))
	mux.HandleFunc("POST /delegations", c.auth(c.post(c.createDelegation)))
	mux.HandleFunc("POST /delegations/revoke", c.auth(c.post(c.byID(transport.AdminRevoke))))
	mux.HandleFunc("POST /delegations/unlock", c.auth(c.post(c.byID(transport.AdminUnlock))))
	mux.HandleFunc("GET /delegates", c.auth(c.delegatesPage))
	mux.HandleFunc("POST /delegates/issue", c.auth(c.post(c.issue)))
	mux.HandleFunc("POST /delegates/enroll", c.auth(c.post(c.enroll)))
	mux.HandleFunc("GET /audit", c.auth(c.auditPage))
	mux.HandleFunc("POST /audit/verify", c.auth(c.post(c.verifyPage)))
	mux.HandleFunc("GET /audit/export.jsonl", c.auth(c.exportFile("jsonl")))
	mux.HandleFunc("GET /audit/export.csv", c.auth(c.exportFile("csv")))
	mux.HandleFunc("GET /charts", c.auth(c.chartsPage))
	mux.HandleFunc("GET /events/cards", c.auth(c.cardEvents))
	mux.HandleFunc("GET /events/audit", c.auth(c.auditEvents))
	mux.HandleFunc("GET /events/check", c.auth(c.eventsCheck))
	mux.HandleFunc("POST /logout", c.auth(c.post(c.logout)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			w.Header().Set("Cache-Control", "no-store")
		}
		mux.ServeHTTP(w, r)
	})
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, s *session)

// auth runs h with the request's session, or answers 401 with the way to
// log in.
func (c *Console) auth(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.sessionOf(w, r)
		if s == nil {
			c.errorPage(w, r, http.StatusUnauthorized, "You are not logged in, or your session ended. Open a new one-time link from: pscs admin console")
			return
		}
		h(w, r, s)
	}
}

// post checks a state change (POST, origin, CSRF token) before h.
func (c *Console) post(h sessionHandler) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if err := c.checkPost(r, s); err != nil {
			c.log.Warn("console: change refused", "owner", s.owner, "session", s.tag, "path", r.URL.Path, "why", err.Error())
			c.errorPage(w, r, http.StatusForbidden, "Refused: "+err.Error()+". Reload the page and try again.")
			return
		}
		h(w, r, s)
	}
}

// pageData is what every page's template gets.
type pageData struct {
	Owner string
	CSRF  string
	Page  string
	Title string
	Data  any
	Error string
	Done  string
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, s *session, data any) {
	c.renderMsg(w, r, status, page, s, data, "", "")
}

func (c *Console) renderMsg(w http.ResponseWriter, r *http.Request, status int, page string, s *session, data any, errMsg, done string) {
	t, ok := pages[page]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	pd := pageData{Page: page, Data: data, Error: errMsg, Done: done, Title: titles[page]}
	if s != nil {
		pd.Owner, pd.CSRF = s.owner, s.csrf
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", pd); err != nil {
		c.log.Error("console: page", "page", page, "err", err)
		http.Error(w, "page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

var titles = map[string]string{"login": "Log in", "cards": "Cards", "delegations": "Delegations", "delegates": "Delegates", "audit": "Audit log",
	"charts": "Charts", "error": "Console", "loggedout": "Logged out", "granted": "Delegation granted", "issued": "Certificate issued",
	"verified": "Audit log verification"}

func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.renderMsg(w, r, status, "error", nil, nil, msg, "")
}

// adminStatus is the HTTP status of an administration refusal.
func adminStatus(err error) int {
	switch transport.CodeOf(err) {
	case transport.CodeNotOwner:
		return http.StatusForbidden
	case transport.CodeUnknown:
		return http.StatusNotFound
	case transport.CodeMalformed, transport.CodeWrongPIN, transport.CodeNoPIN, transport.CodeExists:
		return http.StatusBadRequest
	case transport.CodeInternal:
		return http.StatusInternalServerError
	}
	return http.StatusConflict
}

// adminMessage says what refused an administration.
func adminMessage(err error) string {
	var te *transport.Error
	if errors.As(err, &te) {
		msg := fmt.Sprintf("Refused (code %d, %s)", te.Code, te.Code)
		if te.Message != "" {
			msg += ": " + te.Message
		}
		return msg
	}
	return "Refused: " + err.Error()
}

// admin runs req as s's owner through the server's administration path,
// marked as coming through this console session.
func (c *Console) admin(ctx context.Context, s *session, req *transport.AdminRequest, sec *transport.AdminSecret) (*transport.AdminResponse, error) {
	return c.cfg.Server.AdminAs(server.WithVia(ctx, "console "+s.tag), s.owner, req, sec)
}

// The cards page.

func (c *Console) cardsPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, http.StatusOK, "cards", s, c.live.view(c.cfg.Server.CardsOf(s.owner)))
}

// tooManyStreams is the answer to an event stream past MaxStreams.
var tooManyStreams = fmt.Sprintf("Too many open pages: this session follows %d live pages at most. Close one, then reload this page.", MaxStreams)

// sse starts an event stream of s, counted against MaxStreams until
// done is called.
func (c *Console) sse(w http.ResponseWriter, s *session) (f http.Flusher, done func(), ok bool) {
	f, ok = w.(http.Flusher)
	if !ok {
		http.Error(w, "no streaming", http.StatusInternalServerError)
		return nil, nil, false
	}
	if !c.openStream(s) {
		c.log.Info("console: event stream refused: too many open", "owner", s.owner, "session", s.tag)
		http.Error(w, tooManyStreams, http.StatusTooManyRequests)
		return nil, nil, false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return f, func() { c.closeStream(s) }, true
}

// eventsCheck says why a live page's stream failed (its script asks;
// EventSource does not tell the status): 401 (by auth) when the session
// ended, 429 when it has MaxStreams open, 204 otherwise.
func (c *Console) eventsCheck(w http.ResponseWriter, r *http.Request, s *session) {
	c.mu.Lock()
	full := s.streams >= MaxStreams
	c.mu.Unlock()
	if full {
		http.Error(w, tooManyStreams, http.StatusTooManyRequests)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// keepAlive sends an SSE comment, which EventSource ignores, so that an
// idle stream is not dropped by a proxy.
func keepAlive(w io.Writer, f http.Flusher) error {
	if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
		return err
	}
	f.Flush()
	return nil
}

// sendEvent sends one server-sent event whose data is HTML on one line.
func sendEvent(w io.Writer, f http.Flusher, name, id string, data []byte) error {
	data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r"), nil), []byte("\n"), []byte(" "))
	if id != "" {
		if _, err := fmt.Fprintf(w, "id: %s\n", id); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		return err
	}
	f.Flush()
	return nil
}

func (c *Console) cardEvents(w http.ResponseWriter, r *http.Request, s *session) {
	f, done, ok := c.sse(w, s)
	if !ok {
		return
	}
	defer done()
	ch, stop := c.live.subscribe(func(l *live) map[chan struct{}]bool { return l.cards })
	defer stop()
	ka := time.NewTicker(c.cfg.KeepAlive)
	defer ka.Stop()
	t := pages["cards"]
	for {
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, "cardrows", c.live.view(c.cfg.Server.CardsOf(s.owner))); err != nil {
			return
		}
		if sendEvent(w, f, "cards", "", b.Bytes()) != nil {
			return
		}
		if !c.wait(r.Context(), w, f, ch, ka.C, s) {
			return
		}
	}
}

// wait waits for ch, sending a keep-alive comment at each tick of ka; it
// reports false when the stream is to end (the request's context ended,
// the client is gone, or s ended).
func (c *Console) wait(ctx context.Context, w io.Writer, f http.Flusher, ch <-chan struct{}, ka <-chan time.Time, s *session) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-s.ended:
			return false
		case <-ch:
			select {
			case <-s.ended:
				return false
			default:
				return true
			}
		case <-ka:
			if keepAlive(w, f) != nil {
				return false
			}
		}
	}
}

// The delegations page.

type delegationsData struct {
	Delegations []transport.AdminDelegation
	Cards       []cardKeys
	Known       []string
	Nonce       string
	// Granted, on the answer to the form: the new delegation and its vPIN.
	ID, VPIN string
}

type cardKeys struct {
	Name string
	Keys []string
}

func (c *Console) delegationsData(s *session) *delegationsData {
	d := &delegationsData{Delegations: c.cfg.Server.DelegationsOf(s.owner), Nonce: c.newNonce(s), Known: c.known(s.owner)}
	for _, card := range c.cfg.Server.CardsOf(s.owner) {
		ck := cardKeys{Name: card.Name}
		if ms := card.Pool.Members(); len(ms) > 0 {
			for _, k := range ms[0].Keys() {
				ck.Keys = append(ck.Keys, k.ID)
			}
		}
		d.Cards = append(d.Cards, ck)
	}
	return d
}

// known lists the identities owner deals with: the delegates of the
// delegations on their cards, and those they enrolled here.
func (c *Console) known(owner string) []string {
	var out []string
	for _, d := range c.cfg.Server.DelegationsOf(owner) {
		out = append(out, d.Delegate)
	}
	out = append(out, c.enrolledBy(owner)...)
	slices.Sort(out)
	return slices.Compact(out)
}

func (c *Console) delegationsPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, http.StatusOK, "delegations", s, c.delegationsData(s))
}

// delegationForm reads the create form into a delegation and the owner's
// passphrase.
func delegationForm(r *http.Request) (*transport.AdminDelegation, []byte, error) {
	f := r.PostForm
	d := &transport.AdminDelegation{Card: f.Get("card"), Delegate: strings.TrimSpace(f.Get("delegate")), Ops: f["ops"], Warranty: f.Get("warranty") == "on"}
	if d.Card == "" || d.Delegate == "" {
		return nil, nil, errors.New("choose a card and name the delegate")
	}
	if len(d.Ops) == 0 {
		return nil, nil, errors.New("choose at least one operation")
	}
	for k := range strings.SplitSeq(f.Get("keys"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			d.Keys = append(d.Keys, k)
		}
	}
	d.Keys = append(d.Keys, f["key"]...)
	slices.Sort(d.Keys)
	d.Keys = slices.Compact(d.Keys)
	for _, p := range []struct {
		name string
		v    *int64
	}{{"not_before", &d.NotBefore}, {"not_after", &d.NotAfter}} {
		if s := f.Get(p.name); s != "" {
			t, err := time.Parse(timeInput, s)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: give a date and time (UTC)", strings.ReplaceAll(p.name, "_", " "))
			}
			*p.v = t.UnixMilli()
		}
	}
	if s := strings.TrimSpace(f.Get("for")); s != "" {
		if d.NotAfter != 0 {
			return nil, nil, errors.New("give an end or a duration, not both")
		}
		dur, err := parseLasts(s)
		if err != nil {
			return nil, nil, err
		}
		begin := time.Now()
		if d.NotBefore != 0 {
			begin = time.UnixMilli(d.NotBefore)
		}
		d.NotAfter = begin.Add(dur).UnixMilli()
	}
	if days := f["days"]; len(days) > 0 {
		for _, s := range days {
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i > 6 {
				return nil, nil, fmt.Errorf("days: %q is no week day", s)
			}
			d.Days |= 1 << i
		}
		d.From, d.To = 0, 24*60
		for _, p := range []struct {
			name string
			v    *uint16
		}{{"hours_from", &d.From}, {"hours_to", &d.To}} {
			if s := f.Get(p.name); s != "" {
				t, err := time.Parse("15:04", s)
				if err != nil {
					return nil, nil, fmt.Errorf("hours: HH:MM")
				}
				*p.v = uint16(t.Hour()*60 + t.Minute())
			}
		}
	} else if f.Get("hours_from") != "" || f.Get("hours_to") != "" {
		return nil, nil, errors.New("daily hours need week days")
	}
	for _, p := range []struct {
		name string
		v    *uint32
	}{{"per_hour", &d.PerHour}, {"total", &d.Total}} {
		if s := strings.TrimSpace(f.Get(p.name)); s != "" {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: a whole number", strings.ReplaceAll(p.name, "_", " "))
			}
			*p.v = uint32(n)
		}
	}
	for line := range strings.Lines(f.Get("digests")) {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			return nil, nil, fmt.Errorf("document digest %q: not hexadecimal", line)
		}
		d.Documents = append(d.Documents, b)
	}
	if r.MultipartForm != nil {
		for _, fh := range r.MultipartForm.File["documents"] {
			// Each digest a document signature may use, as
			// `pscs admin delegate -documents` allows a file.
			file, err := fh.Open()
			if err != nil {
				return nil, nil, err
			}
			sums, err := docdigest.Of(file)
			file.Close()
			if err != nil {
				return nil, nil, err
			}
			d.Documents = append(d.Documents, sums...)
		}
	}
	return d, []byte(f.Get("passphrase")), nil
}

// parseLasts reads a delegation's duration: "30d", "12h", "1h30m".
func parseLasts(s string) (time.Duration, error) {
	bad := fmt.Errorf("lasts: %q is no duration (30d, 12h, 90m)", s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil || days == 0 {
			return 0, bad
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

func (c *Console) createDelegation(w http.ResponseWriter, r *http.Request, s *session) {
	if !c.useNonce(s, r.PostFormValue("nonce")) {
		c.renderMsg(w, r, http.StatusConflict, "delegations", s, c.delegationsData(s),
			"This form was sent already (a reload?): nothing was granted again, and a virtual PIN is shown only once.", "")
		return
	}
	d, pass, err := delegationForm(r)
	if err != nil {
		c.renderMsg(w, r, http.StatusBadRequest, "delegations", s, c.delegationsData(s), err.Error(), "")
		return
	}
	defer clear(pass)
	resp, err := c.admin(r.Context(), s, &transport.AdminRequest{Action: transport.AdminDelegate, Card: d.Card, Delegation: d},
		&transport.AdminSecret{Passphrase: pass})
	if err != nil {
		c.renderMsg(w, r, adminStatus(err), "delegations", s, c.delegationsData(s), adminMessage(err), "")
		return
	}
	dd := c.delegationsData(s)
	dd.ID, dd.VPIN = resp.ID, resp.VPIN
	c.render(w, r, http.StatusOK, "granted", s, dd)
}

func (c *Console) byID(action string) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		id := r.PostFormValue("id")
		_, err := c.admin(r.Context(), s, &transport.AdminRequest{Action: action, ID: id}, nil)
		if err != nil {
			c.renderMsg(w, r, adminStatus(err), "delegations", s, c.delegationsData(s), adminMessage(err), "")
			return
		}
		verb := map[string]string{transport.AdminRevoke: "revoked", transport.AdminUnlock: "unlocked"}[action]
		c.renderMsg(w, r, http.StatusOK, "delegations", s, c.delegationsData(s), "", "Delegation "+id+" "+verb+".")
	}
}

// The delegates page.

type delegateView struct {
	Name        string
	Delegations int
	Active      int
}

type delegatesData struct {
	Delegates []delegateView
	// Issued, on the answer to the issue form.
	Name, Certificate, CA string
}

func (c *Console) delegatesData(s *session) *delegatesData {
	// One reading of the delegations: one granted meanwhile (by another
	// session, or pscs admin) names a delegate the first did not know.
	ds := c.cfg.Server.DelegationsOf(s.owner)
	counts := map[string]*delegateView{}
	names := c.enrolledBy(s.owner)
	for _, d := range ds {
		names = append(names, d.Delegate)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, n := range names {
		counts[n] = &delegateView{Name: n}
	}
	for _, d := range ds {
		v := counts[d.Delegate]
		v.Delegations++
		if !d.Revoked {
			v.Active++
		}
	}
	dd := &delegatesData{}
	for _, n := range names {
		dd.Delegates = append(dd.Delegates, *counts[n])
	}
	return dd
}

func (c *Console) delegatesPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, http.StatusOK, "delegates", s, c.delegatesData(s))
}

// pemInput reads a PEM block of type typ from the form's text field or
// file field name.
func pemInput(r *http.Request, name, typ string) ([]byte, error) {
	data := []byte(r.PostFormValue(name))
	if r.MultipartForm != nil {
		if fhs := r.MultipartForm.File[name+"_file"]; len(fhs) > 0 {
			f, err := fhs[0].Open()
			if err != nil {
				return nil, err
			}
			data, err = io.ReadAll(io.LimitReader(f, 64<<10))
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("give a PEM %s", strings.ToLower(typ))
	}
	return b.Bytes, nil
}

func (c *Console) issue(w http.ResponseWriter, r *http.Request, s *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	der, err := pemInput(r, "public_key", "PUBLIC KEY")
	if err != nil {
		c.renderMsg(w, r, http.StatusBadRequest, "delegates", s, c.delegatesData(s), "Public key: "+err.Error(), "")
		return
	}
	resp, err := c.admin(r.Context(), s, &transport.AdminRequest{Action: transport.AdminIssue, Name: name, PublicKey: der}, nil)
	if err != nil {
		c.renderMsg(w, r, adminStatus(err), "delegates", s, c.delegatesData(s), adminMessage(err), "")
		return
	}
	c.noteEnrolled(s.owner, name)
	dd := c.delegatesData(s)
	dd.Name = name
	dd.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.Certificate}))
	dd.CA = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.CA}))
	c.render(w, r, http.StatusOK, "issued", s, dd)
}

func (c *Console) enroll(w http.ResponseWriter, r *http.Request, s *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	der, err := pemInput(r, "certificate", "CERTIFICATE")
	if err == nil {
		_, err = x509.ParseCertificate(der)
	}
	if err != nil {
		c.renderMsg(w, r, http.StatusBadRequest, "delegates", s, c.delegatesData(s), "Certificate: "+err.Error(), "")
		return
	}
	if _, err := c.admin(r.Context(), s, &transport.AdminRequest{Action: transport.AdminEnroll, Name: name, Certificate: der}, nil); err != nil {
		c.renderMsg(w, r, adminStatus(err), "delegates", s, c.delegatesData(s), adminMessage(err), "")
		return
	}
	c.noteEnrolled(s.owner, name)
	c.renderMsg(w, r, http.StatusOK, "delegates", s, c.delegatesData(s), "", name+" enrolled.")
}

// The audit page.

type auditData struct {
	Filter   filter
	Query    string
	Rows     []row
	Last     uint64
	Cards    []string
	Known    []string
	More     bool
	Verified *verification
}

// maxRows bounds the audit page's table: the newest records.
const maxRows = 500

func (c *Console) auditData(s *session, f filter) (*auditData, error) {
	ad := &auditData{Filter: f, Query: f.query(), Known: c.known(s.owner)}
	for _, card := range c.cfg.Server.CardsOf(s.owner) {
		ad.Cards = append(ad.Cards, card.Name)
	}
	var last uint64
	err := c.records(s.owner, 0, filter{}, func(w row) error {
		last = w.Seq
		if f.match(&w) {
			ad.Rows = append(ad.Rows, w)
		}
		return nil
	})
	if len(ad.Rows) > maxRows {
		ad.Rows, ad.More = ad.Rows[len(ad.Rows)-maxRows:], true
	}
	slices.Reverse(ad.Rows) // newest first
	ad.Last = last
	return ad, err
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		ad, _ := c.auditData(s, filter{})
		c.renderMsg(w, r, http.StatusBadRequest, "audit", s, ad, err.Error(), "")
		return
	}
	ad, err := c.auditData(s, f)
	if err != nil {
		c.log.Error("console: reading the audit log", "err", err)
		c.renderMsg(w, r, http.StatusInternalServerError, "audit", s, ad, "The audit log could not be read.", "")
		return
	}
	c.render(w, r, http.StatusOK, "audit", s, ad)
}

func (c *Console) verifyPage(w http.ResponseWriter, r *http.Request, s *session) {
	e, err := c.export(c.viaCtx(r.Context(), s), s.owner)
	ad, _ := c.auditData(s, filter{})
	if err != nil {
		c.renderMsg(w, r, adminStatus(err), "audit", s, ad, adminMessage(err), "")
		return
	}
	v := c.verify(s.owner, e)
	ad.Verified = &v
	c.render(w, r, http.StatusOK, "audit", s, ad)
}

func (c *Console) viaCtx(ctx context.Context, s *session) context.Context {
	return server.WithVia(ctx, "console "+s.tag)
}

func (c *Console) exportFile(format string) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		// An export is an audited administration (it adds a record): a
		// GET, for the browser's download, but not one another site's
		// page starts (besides the SameSite cookie, Sec-Fetch-Site, which
		// no page can set; "none" is an address typed in).
		if fs := r.Header.Get("Sec-Fetch-Site"); fs == "cross-site" || fs == "same-site" {
			c.log.Warn("console: export refused", "owner", s.owner, "session", s.tag, "sec-fetch-site", fs)
			c.errorPage(w, r, http.StatusForbidden, "Refused: an export is started from the console's own pages.")
			return
		}
		f, err := parseFilter(r.URL.Query())
		if err != nil {
			c.errorPage(w, r, http.StatusBadRequest, err.Error())
			return
		}
		e, err := c.export(c.viaCtx(r.Context(), s), s.owner)
		if err != nil {
			c.errorPage(w, r, adminStatus(err), adminMessage(err))
			return
		}
		var b bytes.Buffer
		if err := c.writeExport(&b, e, f, format); err != nil {
			c.errorPage(w, r, http.StatusInternalServerError, "The export failed.")
			return
		}
		ct := map[string]string{"jsonl": "application/jsonl; charset=utf-8", "csv": "text/csv; charset=utf-8"}[format]
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="pscs-audit-%s.%s"`, time.Now().UTC().Format("20060102T150405Z"), format))
		w.Write(b.Bytes())
	}
}

func (c *Console) auditEvents(w http.ResponseWriter, r *http.Request, s *session) {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		after, _ = strconv.ParseUint(id, 10, 64)
	}
	fl, done, ok := c.sse(w, s)
	if !ok {
		return
	}
	defer done()
	ch, stop := c.live.subscribe(func(l *live) map[chan struct{}]bool { return l.subs })
	defer stop()
	ka := time.NewTicker(c.cfg.KeepAlive)
	defer ka.Stop()
	t := pages["audit"]
	for {
		var rows []row
		last := after
		if err := c.records(s.owner, after, filter{}, func(w row) error {
			last = w.Seq
			if f.match(&w) {
				rows = append(rows, w)
			}
			return nil
		}); err != nil {
			return
		}
		after = last
		for _, w2 := range rows {
			var b bytes.Buffer
			if err := t.ExecuteTemplate(&b, "auditrow", w2); err != nil {
				return
			}
			if sendEvent(w, fl, "record", strconv.FormatUint(w2.Seq, 10), b.Bytes()) != nil {
				return
			}
		}
		if !c.wait(r.Context(), w, fl, ch, ka.C, s) {
			return
		}
	}
}

// The charts page.

type chartsData struct {
	PerHour     template.HTML
	Latency     template.HTML
	Utilisation template.HTML
	Hours       []string
	Table       []hourRow
	Buckets     []bucketRow
	Signed      int
	Pools       []poolRow
}

type hourRow struct {
	Card   string
	Counts []int
	Total  int
}

type bucketRow struct {
	Label string
	Count int
}

type poolRow struct {
	Card    string
	Now     string
	Average string
}

func (c *Console) chartsPage(w http.ResponseWriter, r *http.Request, s *session) {
	now := time.Now()
	cd := newChartData(now)
	if err := c.records(s.owner, 0, filter{}, func(w row) error { cd.add(w, now); return nil }); err != nil {
		c.log.Error("console: reading the audit log", "err", err)
	}
	data := &chartsData{Hours: cd.Hours, Signed: cd.Signed}
	var ss []series
	for _, card := range cd.Cards {
		v := make([]float64, 24)
		for i, n := range cd.PerHour[card] {
			v[i] = float64(n)
		}
		ss = append(ss, series{Name: card, Values: v})
		data.Table = append(data.Table, hourRow{Card: card, Counts: cd.PerHour[card], Total: cd.TotalHour[card]})
	}
	count := func(f float64) string { return strconv.Itoa(int(f)) }
	data.PerHour = barChart("per-hour", "Signatures per hour per card, last 24 hours (UTC)",
		fmt.Sprintf("%d signatures in the last 24 hours; the table below gives the figures.", cd.Signed), "signatures", cd.Hours, ss, count)
	var labels []string
	lat := make([]float64, len(latencyBuckets))
	for i := range latencyBuckets {
		labels = append(labels, bucketLabel(i))
		lat[i] = float64(cd.Latency[i])
		data.Buckets = append(data.Buckets, bucketRow{Label: bucketLabel(i), Count: cd.Latency[i]})
	}
	data.Latency = barChart("latency", "Signing latency, last 24 hours", "How many signatures took how long, from request to answer, as the audit log records.",
		"signatures", labels, []series{{Name: "signatures", Values: lat}}, count)
	cards := c.cfg.Server.CardsOf(s.owner)
	c.live.view(cards)
	var us []series
	for _, card := range cards {
		h := c.live.utilisation(card.Name)
		us = append(us, series{Name: card.Name, Values: h})
		pr := poolRow{Card: card.Name, Now: "–", Average: "–"}
		if len(h) > 0 {
			sum := 0.0
			for _, v := range h {
				sum += v
			}
			pr.Now, pr.Average = pct(h[len(h)-1]), pct(sum/float64(len(h)))
		}
		data.Pools = append(data.Pools, pr)
	}
	data.Utilisation = lineChart("utilisation", "Pool utilisation",
		fmt.Sprintf("The share of time each remote card's cards spent serving, sampled every %s, the last %d samples.", c.cfg.SampleEvery, historyLen),
		historyLen, us)
	c.render(w, r, http.StatusOK, "charts", s, data)
}

func urlEscape(s string) string { return url.QueryEscape(s) }
