package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/transport"
)

// TestConsoleBrowser drives the owners' web console of `pscsd --demo` in
// Debian's chromium (headless, through chromedp): the demo owner logs in
// with a one-time link, issues a certificate to a new delegate, grants it
// a delegation and sees the vPIN once, the delegate signs through the Go
// client and the audit page shows the signature without a reload, the
// owner verifies and exports the log and revokes in the page, and the
// delegate's next request is refused. Owner B (the demo's clerk) sees none
// of it and can do none of it, also by crafted requests; changes without
// the CSRF token are refused; axe-core finds no serious or critical
// accessibility violation on any page. A session's seventh live page
// says "too many open pages", and a live page says its session ended at
// logout. Screenshots of every page are kept in $PSCS_ARTIFACTS/console
// (make test sets bin/artifacts; else bin/artifacts of the module).
func TestConsoleBrowser(t *testing.T) {
	browser := findChromium(t)
	axe := axeSource(t)
	artifacts := os.Getenv("PSCS_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join("..", "..", "..", "bin", "artifacts")
	}
	artifacts, err := filepath.Abs(artifacts)
	if err != nil {
		t.Fatal(err)
	}
	artifacts = filepath.Join(artifacts, "console")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	d := startConsoleDemo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ownerConf := filepath.Join(d.state, "demo", "owner", "client.conf")
	clerkConf := filepath.Join(d.state, "demo", "clerk", "client.conf")
	link := consoleLink(ctx, t, ownerConf)
	base := link[:strings.Index(link, "/login")]
	spki := serverSPKI(t, base, filepath.Join(d.state, "demo", "owner", "ca.pem"))

	// The browser: a fresh profile, nothing fetched from Google's hosts,
	// pscsd's server key (and only it) trusted.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki), chromedp.WindowSize(1280, 1000),
	}
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	// The browser starts with the first run, and lives as long as its
	// context: this one, without a timeout of its own.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}

	shotIn := func(tab context.Context, name string) {
		t.Helper()
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(artifacts, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
	shot := func(name string) { t.Helper(); shotIn(bctx, name) }
	a11y := func(page string) {
		t.Helper()
		_, err := chromedp.Run(bctx, chromedp.Evaluate[chromedp.Void](axe, chromedp.EvalIgnoreExceptions))
		if err != nil {
			t.Fatalf("axe-core into %s: %v", page, err)
		}
		out, err := chromedp.Run(bctx, chromedp.Evaluate[string](`axe.run(document, {resultTypes: ["violations"]}).then(r => JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5)}))))`,
			chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("axe-core on %s: %v", page, err)
		}
		var vs []struct {
			ID, Impact, Help string
			Nodes            []string
		}
		if err := json.Unmarshal([]byte(out), &vs); err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			if v.Impact == "serious" || v.Impact == "critical" {
				t.Errorf("axe-core, %s page: %s violation %s: %s (%v)", page, v.Impact, v.ID, v.Help, v.Nodes)
			} else {
				t.Logf("axe-core, %s page: %s violation %s: %s (%v)", page, v.Impact, v.ID, v.Help, v.Nodes)
			}
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	value := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Value(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("value of %s: %v", sel, err)
		}
		return s
	}
	evalInt := func(expr string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return n
	}
	location := func() string {
		u, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(bctx, 90*time.Second)
		defer scancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			if png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
				p := filepath.Join(artifacts, "failed-"+strings.ReplaceAll(what, " ", "-")+".png")
				os.WriteFile(p, png, 0o644)
				t.Logf("screenshot of the failure: %s", p)
			}
			page, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("%s: %v (at %s, showing:\n%.2000s)", what, err, location(), page)
		}
	}

	// The one-time link opens a page whose form logs in and leaves no
	// token in the address.
	run("link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#login-button")))
	if got := text("#login-owner"); got != demoOwner {
		t.Errorf("the link's page names %q", got)
	}
	shot("0-login")
	a11y("login")
	run("login", chromedp.Click(chromedp.CSS("#login-button")), chromedp.WaitVisible(chromedp.CSS("#owner")))
	if u := location(); u != base+"/cards" || strings.Contains(u, "token") {
		t.Errorf("after login the browser is at %s, want %s/cards", u, base)
	}
	if got := text("#owner"); got != demoOwner {
		t.Errorf("logged in as %q", got)
	}
	// The cards, live: the mayor's three cards, and PIN counters as the
	// cards report them appear without a reload.
	run("cards", chromedp.WaitVisible(chromedp.CSS("#present-mayor")),
		chromedp.Poll[chromedp.Void](`document.querySelector("#cards").textContent.includes("tries left")`, chromedp.WithPollingTimeout(60*time.Second)))
	if s := text("#cards"); !strings.Contains(s, "3 cards present") || !strings.Contains(s, "ceo") || strings.Contains(s, "clerk") {
		t.Errorf("cards page: %q", s)
	}
	shot("1-cards")
	a11y("cards")
	// The link works once.
	if code := plainGet(t, link); code != http.StatusForbidden {
		t.Errorf("the link used a second time: %d, want 403", code)
	}

	// Issue a certificate to a new delegate, in the page.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	run("delegates", chromedp.Navigate(base+"/delegates"), chromedp.WaitVisible(chromedp.CSS("#issue")))
	a11y("delegates")
	run("issue", chromedp.SendKeys(chromedp.CSS("#issue-name"), "web-delegate"),
		chromedp.SetValue(chromedp.CSS("#public_key"), pubPEM),
		chromedp.Submit(chromedp.CSS("#issue")), chromedp.WaitVisible(chromedp.CSS("#cert-out")))
	certPEM, caPEM := value("#cert-out"), value("#ca-out")
	shot("2-issued")
	delegateConf := writeIdentity(t, key, certPEM, caPEM, d.udp)

	// Grant it a delegation with the form; the vPIN is shown once.
	pass, err := os.ReadFile(filepath.Join(d.state, "demo", "owner", "passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	run("delegations", chromedp.Navigate(base+"/delegations"), chromedp.WaitVisible(chromedp.CSS("#new-delegation")))
	a11y("delegations")
	run("grant",
		chromedp.SetValue(chromedp.CSS("#card"), "mayor"),
		chromedp.SendKeys(chromedp.CSS("#delegate"), "web-delegate"),
		chromedp.SendKeys(chromedp.CSS("#keys"), "9a"),
		chromedp.SendKeys(chromedp.CSS("#for"), "30d"),
		chromedp.SendKeys(chromedp.CSS("#per_hour"), "100"),
		chromedp.SendKeys(chromedp.CSS("#total"), "50"),
		chromedp.SendKeys(chromedp.CSS("#passphrase"), strings.TrimSpace(string(pass))),
		chromedp.Click(chromedp.CSS("#grant")),
		chromedp.WaitVisible(chromedp.CSS("#vpin")))
	vpin, id := text("#vpin"), text("#granted-id")
	if !regexp.MustCompile(`^\d{8}$`).MatchString(vpin) || !strings.HasPrefix(id, "d-") {
		t.Fatalf("granted %q with vPIN %q", id, vpin)
	}
	shot("3-granted")
	// A reload shows no vPIN (and grants nothing twice).
	run("reload", chromedp.Reload(), chromedp.WaitReady(chromedp.CSS("body")))
	body := text("body")
	if strings.Contains(body, vpin) {
		t.Errorf("the vPIN is shown again after a reload")
	}
	run("delegations again", chromedp.Navigate(base+"/delegations"), chromedp.WaitVisible(chromedp.CSS("#delegations")))
	body = text("body")
	if strings.Contains(body, vpin) || strings.Count(body, "web-delegate") < 1 {
		t.Errorf("the delegations page shows the vPIN, or not the delegation")
	}
	if n := evalInt(`document.querySelectorAll("#delegations tbody tr").length`); n != 2 {
		t.Errorf("the delegations page lists %d delegations, want 2 (the demo's and the new one; a reload granted nothing)", n)
	}
	shot("4-delegations")

	// The audit page is open; the delegate signs; the record appears
	// without a reload.
	run("audit", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("#records")),
		chromedp.Poll[chromedp.Void](`document.querySelector("#records").getAttribute("data-live") === "on"`, chromedp.WithPollingTimeout(30*time.Second)))
	a11y("audit")
	dc := dialAs(ctx, t, delegateConf)
	if _, err := dc.Login(ctx, 1, []byte(vpin)); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1044, Data: []byte("signed while the owner watches")}); err != nil {
		t.Fatal(err)
	}
	run("live record", chromedp.Poll[chromedp.Void](fmt.Sprintf(`Array.from(document.querySelectorAll("#records tbody tr.new")).some(tr => tr.textContent.includes(%q) && tr.textContent.includes("sign") && tr.textContent.includes("allowed"))`, id),
		chromedp.WithPollingTimeout(30*time.Second)))
	shot("5-audit-live")
	// Verify the chain and checkpoints in the page; export both formats.
	run("verify", chromedp.Click(chromedp.CSS("#verify")), chromedp.WaitVisible(chromedp.CSS("#verification")))
	if s := text("#verification"); !strings.Contains(s, "The audit log verifies") {
		t.Errorf("verification: %s", s)
	}
	shot("6-audit-verified")
	for _, f := range []string{"jsonl", "csv"} {
		got, err := chromedp.Run(bctx, chromedp.Evaluate[string](`fetch("/audit/export.`+f+`?outcome=allowed").then(r => r.text())`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("export %s: %v", f, err)
		}
		if !strings.Contains(got, id) || !strings.Contains(got, "web-delegate") {
			t.Errorf("export %s lacks the signature:\n%.500s", f, got)
		}
		if f == "csv" && !strings.HasPrefix(got, "seq,time,identity,op,") {
			t.Errorf("CSV export starts %.80q", got)
		}
	}
	// A filter: the refused records only, none of them the signature.
	run("filter", chromedp.Navigate(base+"/audit?outcome=refused&delegate=web-delegate"), chromedp.WaitVisible(chromedp.CSS("#records")))
	if s := text("#records tbody"); strings.Contains(s, "allowed") {
		t.Errorf("the refused-only filter shows allowed records: %s", s)
	}

	// The charts.
	run("charts", chromedp.Navigate(base+"/charts"), chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	if charts := evalInt(`document.querySelectorAll("svg.chart").length`); charts != 3 {
		t.Errorf("%d charts, want 3", charts)
	}
	shot("7-charts")
	a11y("charts")

	// Crafted requests: without the CSRF token, from another origin, and
	// by owner B with A's IDs.
	a := newSession(ctx, t, ownerConf)
	if code := a.post("/delegations/revoke", url.Values{"id": {id}}, base, false); code != http.StatusForbidden {
		t.Errorf("a revoke without the CSRF token: %d, want 403", code)
	}
	if code := a.post("/delegations/revoke", url.Values{"id": {id}}, "https://evil.example", true); code != http.StatusForbidden {
		t.Errorf("a revoke from another origin: %d, want 403", code)
	}
	b := newSession(ctx, t, clerkConf)
	for _, p := range []string{"/cards", "/delegations", "/audit", "/delegates", "/charts", "/audit/export.jsonl", "/audit/export.csv"} {
		code, page := b.get(p)
		if code != http.StatusOK || strings.Contains(page, "mayor") || strings.Contains(page, id) || strings.Contains(page, "web-delegate") {
			t.Errorf("owner B's %s (%d) shows owner A's card, delegation or delegate", p, code)
		}
	}
	if code := b.post("/delegations/revoke", url.Values{"id": {id}}, base, true); code != http.StatusForbidden {
		t.Errorf("owner B revoking A's delegation: %d, want 403", code)
	}
	if code := b.post("/delegations/unlock", url.Values{"id": {id}}, base, true); code != http.StatusForbidden {
		t.Errorf("owner B unlocking A's delegation: %d, want 403", code)
	}
	if code := b.post("/delegations", url.Values{"nonce": {b.nonce()}, "card": {"mayor"}, "delegate": {"web-delegate"}, "ops": {"sign"},
		"passphrase": {"whatever-passphrase"}}, base, true); code != http.StatusForbidden {
		t.Errorf("owner B delegating A's card: %d, want 403", code)
	}
	// B's audit page now holds B's own refused attempts (naming nothing
	// of A's), and nothing of A's, also filtered on A's card.
	if code, page := b.get("/audit"); code != http.StatusOK || strings.Contains(page, demoOwner) || strings.Contains(page, "web-delegate") ||
		strings.Contains(page, id) || strings.Contains(page, "mayor") || !strings.Contains(page, "admin:revoke") {
		t.Errorf("owner B's audit page after the crafted requests: %d, %.3000s", code, page)
	}
	if code, page := b.get("/audit?card=mayor"); code != http.StatusOK || strings.Contains(page, demoOwner) || strings.Contains(page, "web-delegate") ||
		strings.Contains(page, id) {
		t.Errorf("owner B filtering on A's card: %d, %.3000s", code, page)
	}
	// None of it changed anything: the delegate still signs.
	if _, err := dc.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1044, Data: []byte("still allowed")}); err != nil {
		t.Fatalf("after the crafted requests: %v", err)
	}

	// The owner revokes in the page; the delegate's next request is refused.
	run("revoke", chromedp.Navigate(base+"/delegations"), chromedp.WaitVisible(chromedp.CSS("#delegations")),
		chromedp.Click(chromedp.CSS(`button[aria-label="Revoke `+id+`"]`)), chromedp.WaitVisible(chromedp.CSS("#done")))
	if s := text("#d-" + id + " .state"); !strings.Contains(s, "revoked") {
		t.Errorf("after revoking, the delegation shows %q", s)
	}
	shot("8-revoked")
	_, err = dc.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1044, Data: []byte("after the revocation")})
	if code := transport.CodeOf(err); code != transport.CodeRevoked && code != transport.CodeNoSuchSlot {
		t.Errorf("a signature after the revocation: %v, want refused as revoked", err)
	}
	// The console's administrations are in the log like the CLI's, marked
	// as the console's.
	run("audit again", chromedp.Navigate(base+"/audit?delegate="+demoOwner), chromedp.WaitVisible(chromedp.CSS("#records")))
	if s := text("#records tbody"); !strings.Contains(s, "admin:revoke") || !strings.Contains(s, "admin:delegate") ||
		!strings.Contains(s, "admin:issue") || !strings.Contains(s, "console ") {
		t.Errorf("the owner's records lack the console's administrations: %.600s", s)
	}

	// A session's live pages are bounded: with six event streams open in
	// this tab (the audit page's and five more), a seventh live page, in a
	// second tab, says so on its status line, and goes live once they
	// close; at logout it says that the session ended.
	run("six streams", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("#records")),
		chromedp.Poll[chromedp.Void](`document.querySelector("#records").getAttribute("data-live") === "on"`, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Evaluate[chromedp.Void](`window.extra = []; for (let i = 0; i < 5; i++) window.extra.push(new EventSource("/events/cards"));`),
		// (One refused while the server had not yet seen a former page's
		// stream closed is opened again.)
		chromedp.Poll[chromedp.Void](`(window.extra = window.extra.map(e => e.readyState === EventSource.CLOSED ? new EventSource("/events/cards") : e)).every(e => e.readyState === EventSource.OPEN)`,
			chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(500*time.Millisecond)))
	tab2, closeTab2 := chromedp.NewContext(bctx)
	defer closeTab2()
	// The tab opens with its first run, and lives as long as its context:
	// this one, without a timeout of its own.
	if err := chromedp.Do(tab2); err != nil {
		t.Fatalf("a second tab: %v", err)
	}
	inTab2 := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(tab2, 90*time.Second)
		defer scancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			page, _ := chromedp.Run(tab2, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("second tab, %s: %v (showing:\n%.2000s)", what, err, page)
		}
	}
	status := func(state string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector("#live-status").getAttribute("data-state") === %q`, state),
			chromedp.WithPollingTimeout(60*time.Second))
	}
	inTab2("a seventh live page", chromedp.Navigate(base+"/cards"), chromedp.WaitVisible(chromedp.CSS("#cards")), status("too-many"))
	statusText := func() string {
		sctx, scancel := context.WithTimeout(tab2, 30*time.Second)
		defer scancel()
		s, _ := chromedp.Run(sctx, chromedp.Evaluate[string](`document.querySelector("#live-status").textContent`))
		return s
	}
	if s := statusText(); !strings.Contains(s, "Too many open pages") {
		t.Errorf("the seventh page's status line: %q", s)
	}
	shotIn(tab2, "9-too-many-pages")
	run("close five streams", chromedp.Evaluate[chromedp.Void](`window.extra.forEach(e => e.close())`))
	inTab2("the seventh page, live", status("live"))

	// Owner B in the browser, after A logs out.
	run("logout", chromedp.Click(chromedp.CSS(".who button")), chromedp.WaitNotPresent(chromedp.CSS("#owner")))
	inTab2("the session ended", status("ended"))
	if s := statusText(); !strings.Contains(s, "Session ended") {
		t.Errorf("the live page's status line after logout: %q", s)
	}
	shotIn(tab2, "10-session-ended")
	closeTab2()
	run("login B", chromedp.Navigate(consoleLink(ctx, t, clerkConf)), chromedp.WaitVisible(chromedp.CSS("#login-button")),
		chromedp.Click(chromedp.CSS("#login-button")), chromedp.WaitVisible(chromedp.CSS("#present-clerk")))
	if s := text("#cards"); strings.Contains(s, "mayor") || strings.Contains(s, "ceo") {
		t.Errorf("owner B's cards page shows A's cards: %s", s)
	}
	shot("11-owner-b")

	// No secret in pscsd's log: neither the vPIN, nor the passphrase, nor
	// a one-time link (checked at cleanup too).
	if l := d.log(); strings.Contains(l, vpin) || strings.Contains(l, strings.TrimSpace(string(pass))) {
		t.Errorf("pscsd's log holds the vPIN or the owner's passphrase")
	}
}

// findChromium returns Debian's chromium; without it the test fails when
// PSCS_REQUIRE_BROWSER=1 (make test, CI) and is skipped otherwise.
func findChromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("PSCS_REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium is missing (bash .ci/deps installs it) and PSCS_REQUIRE_BROWSER=1")
	}
	t.Skip("SKIPPED: no chromium (bash .ci/deps installs it); make test requires it")
	return ""
}

// axeSource returns axe-core's script, from npm's package installed by
// .ci/deps (or here) in $PSCS_NPM_CACHE, default ~/.cache/pscs/npm.
func axeSource(t *testing.T) string {
	dir := os.Getenv("PSCS_NPM_CACHE")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(home, ".cache", "pscs", "npm")
	}
	p := filepath.Join(dir, "node_modules", "axe-core", "axe.min.js")
	if _, err := os.Stat(p); err != nil {
		out, err := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "axe-core@"+axeVersion).CombinedOutput()
		if err != nil {
			t.Fatalf("installing axe-core from npm: %v\n%s", err, out)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// axeVersion is the axe-core that .ci/deps installs.
const axeVersion = "4.10.3"

type consoleDemo struct {
	state, udp string
	log        func() string // pscsd's log so far
}

// startConsoleDemo runs pscsd --demo (simulated cards at no latency) until the
// test ends.
func startConsoleDemo(t *testing.T) *consoleDemo {
	bin := buildPSCSD(t)
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--demo", "--state", state, "--card-latency", "none")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(log.String(), "token=") {
			t.Errorf("pscsd's log holds a one-time link")
		}
		if t.Failed() {
			t.Logf("pscsd said:\n%s", log.String())
		}
	})
	conf := filepath.Join(state, "demo", "client.conf")
	waitForFile(t, conf)
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	return &consoleDemo{state: state, udp: cfg.Addr, log: func() string { mu.Lock(); defer mu.Unlock(); return log.String() }}
}

// consoleLink asks for a one-time link as `pscs admin console` does.
func consoleLink(ctx context.Context, t *testing.T, conf string) string {
	t.Helper()
	c := dialAs(ctx, t, conf)
	defer c.Close()
	var resp transport.AdminResponse
	if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminConsole}, nil, &resp); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.ConsoleURL, "https://127.0.0.1:") || resp.ConsoleExpires <= time.Now().UnixMilli() {
		t.Fatalf("console link %q until %d", resp.ConsoleURL, resp.ConsoleExpires)
	}
	return resp.ConsoleURL
}

func dialAs(ctx context.Context, t *testing.T, conf string) *client.Client {
	t.Helper()
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serverSPKI is the base64 SHA-256 of the console's server key, checked
// against pscsd's CA: what chromium's --ignore-certificate-errors-spki-list
// trusts.
func serverSPKI(t *testing.T, base, caFile string) string {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("CA %s: %v", caFile, err)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// writeIdentity writes a client configuration for key and its certificate.
func writeIdentity(t *testing.T, key *ecdsa.PrivateKey, certPEM, caPEM, addr string) string {
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"identity.pem": []byte(certPEM), "ca.pem": []byte(caPEM),
		"identity.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "client.conf")
	if err := writeClientConf(conf, addr, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	return conf
}

func insecureClient(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// plainGet gets u without cookies and returns the status.
func plainGet(t *testing.T, u string) int {
	resp, err := insecureClient(nil).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// httpSession is a console session outside the browser, for crafted
// requests.
type httpSession struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var (
	tokenField = regexp.MustCompile(`name="token" value="([^"]+)"`)
	csrfField  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

// newSession logs in with a one-time link as a browser does: the page the
// link opens, then its form.
func newSession(ctx context.Context, t *testing.T, conf string) *httpSession {
	link := consoleLink(ctx, t, conf)
	jar, _ := cookiejar.New(nil)
	s := &httpSession{t: t, base: link[:strings.Index(link, "/login")], c: insecureClient(jar)}
	code, page := s.get(strings.TrimPrefix(link, s.base))
	tok, csrf := tokenField.FindStringSubmatch(page), csrfField.FindStringSubmatch(page)
	if code != http.StatusOK || tok == nil || csrf == nil {
		t.Fatalf("the link: %d, no login form", code)
	}
	if code := s.post("/login", url.Values{"token": {html.UnescapeString(tok[1])}, "csrf": {html.UnescapeString(csrf[1])}}, s.base, false); code != http.StatusSeeOther {
		t.Fatalf("login: %d", code)
	}
	_, page = s.get("/cards")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the cards page")
	}
	s.csrf = m[1]
	return s
}

func (s *httpSession) get(path string) (int, string) {
	resp, err := s.c.Get(s.base + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// nonce is a fresh one-time form nonce of the delegations page.
func (s *httpSession) nonce() string {
	_, page := s.get("/delegations")
	m := regexp.MustCompile(`name="nonce" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		s.t.Fatal("no nonce on the delegations page")
	}
	return m[1]
}

// post sends a form from origin, with the CSRF token or not.
func (s *httpSession) post(path string, form url.Values, origin string, withCSRF bool) int {
	if withCSRF {
		form.Set("csrf", s.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestConsoleTwoOwners runs the console of `pscsd --demo` without a
// browser: owner A grants, in the console's form, a delegation with an
// uploaded document, which its delegate then signs with SHA-384 (and
// SHA-512), another document being refused; owner B (the demo's clerk)
// sees nothing of A's cards, delegations or records through the pages,
// the exports (filtered on A's card and delegate or not) and the event
// streams, and A's delegation's ID, A's card or A's form nonce get B
// nothing but refusals, which change nothing.
func TestConsoleTwoOwners(t *testing.T) {
	d := startConsoleDemo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := newSession(ctx, t, filepath.Join(d.state, "demo", "owner", "client.conf"))
	b := newSession(ctx, t, filepath.Join(d.state, "demo", "clerk", "client.conf"))
	pass, err := os.ReadFile(filepath.Join(d.state, "demo", "owner", "passphrase"))
	if err != nil {
		t.Fatal(err)
	}

	// A issues a certificate to a new delegate and grants it a
	// delegation of the document.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	code, page := a.postForm("/delegates/issue", map[string]string{"name": "doc-delegate",
		"public_key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))}, nil)
	certOut := regexp.MustCompile(`(?s)id="cert-out"[^>]*>(.*?)</textarea>`).FindStringSubmatch(page)
	caOut := regexp.MustCompile(`(?s)id="ca-out"[^>]*>(.*?)</textarea>`).FindStringSubmatch(page)
	if code != http.StatusOK || certOut == nil || caOut == nil {
		t.Fatalf("issue: %d\n%.2000s", code, page)
	}
	delegateConf := writeIdentity(t, key, html.UnescapeString(certOut[1]), html.UnescapeString(caOut[1]), d.udp)
	doc := []byte("Order 2026/117: ten reams of paper\n")
	code, page = a.postForm("/delegations", map[string]string{"nonce": a.nonce(), "card": "mayor", "delegate": "doc-delegate", "ops": "sign",
		"keys": "9a", "for": "1d", "passphrase": strings.TrimSpace(string(pass))}, map[string][]byte{"order.txt": doc})
	vpin := regexp.MustCompile(`<output id="vpin">(\d{8})</output>`).FindStringSubmatch(page)
	id := regexp.MustCompile(`<code id="granted-id">(d-[0-9a-f]+)</code>`).FindStringSubmatch(page)
	if code != http.StatusOK || vpin == nil || id == nil {
		t.Fatalf("grant: %d\n%.2000s", code, page)
	}

	dc := dialAs(ctx, t, delegateConf)
	if _, err := dc.Login(ctx, 1, []byte(vpin[1])); err != nil {
		t.Fatal(err)
	}
	sign := func(h crypto.Hash, data []byte) error {
		hh := h.New()
		hh.Write(data)
		mech := map[crypto.Hash]uint64{crypto.SHA256: p11.CKMSHA256, crypto.SHA384: p11.CKMSHA384, crypto.SHA512: p11.CKMSHA512}[h]
		_, err := dc.SignDocument(ctx, &transport.SignDocumentRequest{Slot: 1, Key: 1, Hash: mech, Digest: hh.Sum(nil)}, nil)
		return err
	}
	for _, h := range []crypto.Hash{crypto.SHA384, crypto.SHA512, crypto.SHA256} {
		if err := sign(h, doc); err != nil {
			t.Errorf("the document allowed in the console, signed with %v: %v", h, err)
		}
	}
	if err := sign(crypto.SHA384, []byte("another order")); transport.CodeOf(err) != transport.CodeDocumentRefused {
		t.Errorf("another document, SHA-384: %v, want code %d", err, transport.CodeDocumentRefused)
	}

	// B's crafted requests with A's IDs: refused, and nothing changes.
	for _, p := range []string{"/delegations/revoke", "/delegations/unlock"} {
		if code := b.post(p, url.Values{"id": {id[1]}}, b.base, true); code != http.StatusForbidden {
			t.Errorf("owner B's %s of A's delegation: %d, want 403", p, code)
		}
	}
	if code, _ := b.postForm("/delegations", map[string]string{"nonce": b.nonce(), "card": "mayor", "delegate": "doc-delegate", "ops": "sign",
		"passphrase": strings.TrimSpace(string(pass))}, map[string][]byte{"order.txt": doc}); code != http.StatusForbidden {
		t.Errorf("owner B granting A's card (with A's passphrase): %d, want 403", code)
	}
	if code, _ := b.postForm("/delegations", map[string]string{"nonce": a.nonce(), "card": "clerk", "delegate": "doc-delegate", "ops": "sign",
		"passphrase": "whatever passphrase"}, nil); code != http.StatusConflict {
		t.Errorf("owner B with a form nonce of A's: %d, want 409", code)
	}
	if err := sign(crypto.SHA384, doc); err != nil {
		t.Errorf("after owner B's attempts, A's delegate: %v", err)
	}

	// What B sees: pages, exports and streams, filtered on A's card and
	// delegate or not; B's own refused attempts are there, naming
	// nothing of A's.
	leaks := func(s string) bool {
		return strings.Contains(s, id[1]) || strings.Contains(s, "doc-delegate") || strings.Contains(s, demoOwner) || strings.Contains(s, "mayor")
	}
	for _, p := range []string{"/cards", "/delegations", "/delegates", "/charts", "/audit", "/audit/export.jsonl", "/audit/export.csv",
		"/audit/export.jsonl?card=mayor", "/audit/export.csv?delegate=doc-delegate", "/audit/export.jsonl?delegate=" + demoOwner} {
		code, page := b.get(p)
		if code != http.StatusOK || leaks(page) {
			t.Errorf("owner B's %s (%d) shows something of owner A's:\n%.3000s", p, code, page)
		}
		if p == "/audit" && !strings.Contains(page, "admin:revoke") {
			t.Errorf("owner B's audit page lacks B's own refused revoke")
		}
	}
	for _, p := range []string{"/audit?card=mayor", "/audit?delegate=doc-delegate"} {
		code, page := b.get(p)
		if code != http.StatusOK || strings.Contains(page, id[1]) || strings.Contains(page, "<td>doc-delegate") || strings.Contains(page, "admin:delegate") {
			t.Errorf("owner B's %s (%d) shows A's records:\n%.3000s", p, code, page)
		}
	}
	// The audit stream from the start: every record B may see, up to
	// B's own refused unlock (the last of B's attempts before it).
	events := b.stream(ctx, "/events/audit?after=0")
	for {
		line, err := events.ReadString('\n')
		if err != nil {
			t.Fatalf("owner B's audit stream ended before B's own records: %v", err)
		}
		if leaks(line) {
			t.Errorf("owner B's audit stream shows owner A's: %.500s", line)
		}
		if strings.Contains(line, "admin:unlock") {
			break
		}
	}
	cards := b.stream(ctx, "/events/cards")
	for {
		line, err := cards.ReadString('\n')
		if err != nil {
			t.Fatalf("owner B's cards stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			if leaks(line) || !strings.Contains(line, "clerk") {
				t.Errorf("owner B's cards stream: %.500s", line)
			}
			break
		}
	}
	// A sees B's attempts on nothing of A's, and A's own records.
	if code, page := a.get("/audit/export.jsonl?delegate=doc-delegate"); code != http.StatusOK || !strings.Contains(page, id[1]) {
		t.Errorf("owner A's export lacks A's delegate's signatures: %d", code)
	}
}

// postForm posts a multipart form (fields, and files by name in the
// field "documents") with the CSRF token, from the console's origin, and
// returns the status and page.
func (s *httpSession) postForm(path string, fields map[string]string, files map[string][]byte) (int, string) {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	w.WriteField("csrf", s.csrf)
	for name, data := range files {
		fw, _ := w.CreateFormFile("documents", name)
		fw.Write(data)
	}
	w.Close()
	req, _ := http.NewRequest(http.MethodPost, s.base+path, &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Origin", s.base)
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stream opens an event stream, closed when the test ends.
func (s *httpSession) stream(ctx context.Context, path string) *bufio.Reader {
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	c := *s.c
	c.Timeout = 0 // a stream lasts; ctx ends it
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("%s: %d", path, resp.StatusCode)
	}
	return bufio.NewReader(resp.Body)
}
