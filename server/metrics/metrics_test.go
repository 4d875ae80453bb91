package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// newServer starts m's handler on a loopback-only listener.
func newServer(t testing.TB, m *Metrics) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(m.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics as text and parses it.
func scrape(t *testing.T, srv *httptest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// find returns the metric of family name whose labels are exactly labels.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("family %s missing from exposition", name)
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return m
	}
	t.Fatalf("series %s%v missing", name, labels)
	return nil
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func bucketCount(t *testing.T, h *dto.Histogram, le float64) uint64 {
	t.Helper()
	for _, b := range h.GetBucket() {
		if near(b.GetUpperBound(), le) {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket le=%g", le)
	return 0
}

func TestExposition(t *testing.T) {
	m := New()
	srv := newServer(t, m)

	m.Request("sign", 0, 3*time.Millisecond)
	m.Request("sign", 0, 200*time.Millisecond)
	m.Request("sign", 101, 2*time.Second)
	m.Request("decrypt", 0, -time.Second) // clock step: counts as 0
	m.Refusal("revoked")
	m.Refusal("revoked")
	m.Refusal("wrong_vpin")
	m.QueueDepth("pool-a", 7)
	m.QueueDepth("pool-a", 3)
	m.CardsPresent("pool-a", 2)
	m.CardOp("pool-a", "reader-1", 40*time.Millisecond)
	m.CardOp("pool-a", "reader-1", 60*time.Millisecond)
	m.CardOp("pool-a", "reader-2", 5*time.Second)
	m.Connections(12)
	m.Connections(9)

	fams := scrape(t, srv)

	for _, c := range []struct {
		op, code string
		want     float64
	}{{"sign", "0", 2}, {"sign", "101", 1}, {"decrypt", "0", 1}} {
		got := find(t, fams, "pscs_requests_total", map[string]string{"op": c.op, "code": c.code}).GetCounter().GetValue()
		if got != c.want {
			t.Errorf("pscs_requests_total{op=%s,code=%s} = %v, want %v", c.op, c.code, got, c.want)
		}
	}

	h := find(t, fams, "pscs_request_seconds", map[string]string{"op": "sign"}).GetHistogram()
	if h.GetSampleCount() != 3 || !near(h.GetSampleSum(), 2.203) {
		t.Errorf("pscs_request_seconds{op=sign} count=%d sum=%v, want 3, 2.203", h.GetSampleCount(), h.GetSampleSum())
	}
	if len(h.GetBucket()) != len(LatencyBuckets)+1 { // +Inf
		t.Errorf("got %d buckets, want %d", len(h.GetBucket()), len(LatencyBuckets)+1)
	}
	for le, want := range map[float64]uint64{0.001: 0, 0.005: 1, 0.1: 1, 0.25: 2, 1: 2, 2.5: 3, 10: 3} {
		if got := bucketCount(t, h, le); got != want {
			t.Errorf("pscs_request_seconds{op=sign} le=%g: %d, want %d", le, got, want)
		}
	}
	hd := find(t, fams, "pscs_request_seconds", map[string]string{"op": "decrypt"}).GetHistogram()
	if hd.GetSampleCount() != 1 || hd.GetSampleSum() != 0 {
		t.Errorf("negative duration: count=%d sum=%v", hd.GetSampleCount(), hd.GetSampleSum())
	}

	if got := find(t, fams, "pscs_refusals_total", map[string]string{"reason": "revoked"}).GetCounter().GetValue(); got != 2 {
		t.Errorf("refusals revoked = %v", got)
	}
	if got := find(t, fams, "pscs_refusals_total", map[string]string{"reason": "wrong_vpin"}).GetCounter().GetValue(); got != 1 {
		t.Errorf("refusals wrong_vpin = %v", got)
	}
	if got := find(t, fams, "pscs_queue_depth", map[string]string{"card": "pool-a"}).GetGauge().GetValue(); got != 3 {
		t.Errorf("queue depth = %v", got)
	}
	if got := find(t, fams, "pscs_cards_present", map[string]string{"card": "pool-a"}).GetGauge().GetValue(); got != 2 {
		t.Errorf("cards present = %v", got)
	}
	ch := find(t, fams, "pscs_card_seconds", map[string]string{"card": "pool-a", "member": "reader-1"}).GetHistogram()
	if ch.GetSampleCount() != 2 || !near(ch.GetSampleSum(), 0.1) || bucketCount(t, ch, 0.05) != 1 {
		t.Errorf("card seconds reader-1: count=%d sum=%v", ch.GetSampleCount(), ch.GetSampleSum())
	}
	if got := find(t, fams, "pscs_card_busy_seconds_total", map[string]string{"card": "pool-a", "member": "reader-1"}).GetCounter().GetValue(); !near(got, 0.1) {
		t.Errorf("busy reader-1 = %v", got)
	}
	if got := find(t, fams, "pscs_card_busy_seconds_total", map[string]string{"card": "pool-a", "member": "reader-2"}).GetCounter().GetValue(); !near(got, 5) {
		t.Errorf("busy reader-2 = %v", got)
	}
	if got := find(t, fams, "pscs_connections", map[string]string{}).GetGauge().GetValue(); got != 9 {
		t.Errorf("connections = %v", got)
	}

	// Types as declared.
	for name, typ := range map[string]dto.MetricType{
		"pscs_requests_total":          dto.MetricType_COUNTER,
		"pscs_request_seconds":         dto.MetricType_HISTOGRAM,
		"pscs_refusals_total":          dto.MetricType_COUNTER,
		"pscs_queue_depth":             dto.MetricType_GAUGE,
		"pscs_cards_present":           dto.MetricType_GAUGE,
		"pscs_card_seconds":            dto.MetricType_HISTOGRAM,
		"pscs_card_busy_seconds_total": dto.MetricType_COUNTER,
		"pscs_connections":             dto.MetricType_GAUGE,
	} {
		if got := fams[name].GetType(); got != typ {
			t.Errorf("%s type %v, want %v", name, got, typ)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("go runtime collector missing")
	}

	// Plain text check on the raw exposition too.
	_, body := get(t, srv.URL+"/metrics")
	for _, line := range []string{
		`pscs_requests_total{code="101",op="sign"} 1`,
		`pscs_connections 9`,
		`pscs_card_busy_seconds_total{card="pool-a",member="reader-2"} 5`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}

	// ForgetCard removes the card's series.
	m.ForgetCard("pool-a")
	fams = scrape(t, srv)
	for _, name := range []string{"pscs_queue_depth", "pscs_cards_present", "pscs_card_seconds", "pscs_card_busy_seconds_total"} {
		if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
			t.Errorf("%s still has %d series after ForgetCard", name, len(f.GetMetric()))
		}
	}
}

func TestRouting(t *testing.T) {
	srv := newServer(t, New())
	for _, p := range []string{"/", "/metricsx", "/healthz/x", "/debug/pprof/"} {
		if code, _ := get(t, srv.URL+p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	resp, err := http.Post(srv.URL+"/metrics", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /metrics: %d, want 404", resp.StatusCode)
	}
}

func TestLabelGuard(t *testing.T) {
	m := New()
	srv := newServer(t, m)
	m.Refusal("")
	m.Refusal("bad\xff\xfeutf8")
	m.Refusal(strings.Repeat("é", 100)) // 200 bytes
	for i := 0; i < maxLabelValues+50; i++ {
		m.Refusal(fmt.Sprintf("r%d", i))
	}
	fams := scrape(t, srv)
	f := fams["pscs_refusals_total"]
	if n := len(f.GetMetric()); n != maxLabelValues+1 {
		t.Errorf("%d refusal series, want %d (cap + _other)", n, maxLabelValues+1)
	}
	find(t, fams, "pscs_refusals_total", map[string]string{"reason": noneValue})
	find(t, fams, "pscs_refusals_total", map[string]string{"reason": "bad\uFFFDutf8"})
	find(t, fams, "pscs_refusals_total", map[string]string{"reason": strings.Repeat("é", maxLabelLen/2)})
	// 3 odd values + 253 r-values fill the cap; 53 fold into _other.
	if got := find(t, fams, "pscs_refusals_total", map[string]string{"reason": otherValue}).GetCounter().GetValue(); got != 53 {
		t.Errorf("_other = %v, want 53", got)
	}
	// A value already admitted keeps its own series.
	m.Refusal("r0")
	fams = scrape(t, srv)
	if got := find(t, fams, "pscs_refusals_total", map[string]string{"reason": "r0"}).GetCounter().GetValue(); got != 2 {
		t.Errorf("r0 = %v, want 2", got)
	}
}

func TestHealthz(t *testing.T) {
	m := New()
	srv := newServer(t, m)

	// No checks: healthy.
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("no checks: %d %q", code, body)
	}

	var vaultErr error
	var mu sync.Mutex
	m.AddCheck("vault", func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return vaultErr
	})
	m.AddCheck("audit", func(ctx context.Context) error { return nil })
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("passing checks: %d %q", code, body)
	}

	mu.Lock()
	vaultErr = errors.New("open /secret/vault.key: PIN 1234 rejected")
	mu.Unlock()
	code, body := get(t, srv.URL+"/healthz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("failing check: status %d", code)
	}
	if body != "unhealthy: vault\n" {
		t.Errorf("failing check body %q", body)
	}
	if strings.Contains(body, "1234") || strings.Contains(body, "secret") {
		t.Errorf("body leaks the check's error: %q", body)
	}

	fams := scrape(t, srv)
	if got := find(t, fams, "pscs_health_check_ok", map[string]string{"check": "vault"}).GetGauge().GetValue(); got != 0 {
		t.Errorf("health_check_ok vault = %v", got)
	}
	if got := find(t, fams, "pscs_health_check_ok", map[string]string{"check": "audit"}).GetGauge().GetValue(); got != 1 {
		t.Errorf("health_check_ok audit = %v", got)
	}

	// A panicking check fails, and the server survives.
	m.AddCheck("vault", nil) // removed
	m.AddCheck("boom", func(ctx context.Context) error { panic("x") })
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusServiceUnavailable || body != "unhealthy: boom\n" {
		t.Errorf("panicking check: %d %q", code, body)
	}
	m.AddCheck("boom", nil)
	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("after removal: %d %q", code, body)
	}
}

func TestHealthzTimeout(t *testing.T) {
	m := New()
	srv := newServer(t, m)
	// Honours ctx.
	m.AddCheck("slow", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Minute):
			return nil
		}
	})
	stuckRuns := addStuck(t, m)
	m.AddCheck("fine", func(ctx context.Context) error { return nil })

	start := time.Now()
	code, body := get(t, srv.URL+"/healthz")
	el := time.Since(start)
	if code != http.StatusServiceUnavailable || body != "unhealthy: slow stuck\n" {
		t.Errorf("hanging checks: %d %q", code, body)
	}
	// Answered while "stuck" still runs: at the timeout, never before it
	// (how soon after it is BenchmarkHealthzStuck's).
	if el < HealthTimeout {
		t.Errorf("answered after %v, before the %v timeout", el, HealthTimeout)
	}

	// "stuck" is still running from the first request: it is not started
	// again (no goroutine pile-up) and fails without a wait of its own.
	m.AddCheck("slow", nil)
	code, body = get(t, srv.URL+"/healthz")
	if code != http.StatusServiceUnavailable || body != "unhealthy: stuck\n" {
		t.Errorf("second request: %d %q", code, body)
	}
	if n := stuckRuns.Load(); n != 1 {
		t.Errorf("the stuck check ran %d times, want once", n)
	}
}

// BenchmarkHealthzStuck measures /healthz while a check from an earlier
// request still hangs: it is not run again, and the answer does not wait
// for it (TestHealthzTimeout checks that it is not run again).
func BenchmarkHealthzStuck(b *testing.B) {
	m := New()
	srv := newServer(b, m)
	addStuck(b, m)
	get(b, srv.URL+"/healthz") // starts it, and waits HealthTimeout
	for b.Loop() {
		if code, _ := get(b, srv.URL+"/healthz"); code != http.StatusServiceUnavailable {
			b.Fatalf("status %d, want 503", code)
		}
	}
}

// addStuck adds check "stuck", which ignores ctx entirely until the test
// ends, and returns the count of its runs.
func addStuck(t testing.TB, m *Metrics) *atomic.Int32 {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	runs := new(atomic.Int32)
	m.AddCheck("stuck", func(ctx context.Context) error {
		runs.Add(1)
		<-release
		return nil
	})
	return runs
}

func TestConcurrent(t *testing.T) {
	m := New()
	srv := newServer(t, m)
	m.AddCheck("ok", func(ctx context.Context) error { return nil })

	const workers, per = 8, 500
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			card := fmt.Sprintf("pool-%d", w%2)
			for i := 0; i < per; i++ {
				m.Request("sign", uint32(i%2), time.Millisecond)
				m.Refusal("limit")
				m.QueueDepth(card, i)
				m.CardsPresent(card, w)
				m.CardOp(card, "r", time.Millisecond)
				m.Connections(i)
				if i%100 == 0 {
					m.AddCheck(fmt.Sprintf("c%d", w), func(ctx context.Context) error { return nil })
				}
			}
		}()
	}
	// Scrape and probe health while writers run.
	for i := 0; i < 3; i++ {
		scrape(t, srv)
		if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
			t.Errorf("healthz during load: %d", code)
		}
	}
	wg.Wait()

	fams := scrape(t, srv)
	total := find(t, fams, "pscs_requests_total", map[string]string{"op": "sign", "code": "0"}).GetCounter().GetValue() +
		find(t, fams, "pscs_requests_total", map[string]string{"op": "sign", "code": "1"}).GetCounter().GetValue()
	if total != workers*per {
		t.Errorf("requests total %v, want %d", total, workers*per)
	}
	if got := find(t, fams, "pscs_refusals_total", map[string]string{"reason": "limit"}).GetCounter().GetValue(); got != workers*per {
		t.Errorf("refusals %v", got)
	}
	busy := find(t, fams, "pscs_card_busy_seconds_total", map[string]string{"card": "pool-0", "member": "r"}).GetCounter().GetValue()
	if !near(busy, float64(workers/2*per)*0.001) {
		t.Errorf("busy pool-0 = %v", busy)
	}
}

func TestSeparateRegistries(t *testing.T) {
	a, b := New(), New()
	a.Connections(1)
	b.Connections(2)
	sa, sb := newServer(t, a), newServer(t, b)
	if got := find(t, scrape(t, sa), "pscs_connections", map[string]string{}).GetGauge().GetValue(); got != 1 {
		t.Errorf("a = %v", got)
	}
	if got := find(t, scrape(t, sb), "pscs_connections", map[string]string{}).GetGauge().GetValue(); got != 2 {
		t.Errorf("b = %v", got)
	}
}
