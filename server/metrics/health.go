package metrics

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// HealthTimeout is how long /healthz waits for its checks.
const HealthTimeout = time.Second

var (
	errCheckPanicked = errors.New("health check panicked")
	errCheckBusy     = errors.New("health check still running from an earlier request")
)

type check struct {
	name    string
	fn      func(ctx context.Context) error
	running atomic.Bool
}

// AddCheck registers a health check under name (a configured, constant
// name: it appears in the /healthz body and in pscs_health_check_ok). A check
// passes when it returns nil within HealthTimeout; it must honour ctx. A
// later AddCheck with the same name replaces the earlier one; a nil check
// removes it.
//
// The error a check returns is never shown: /healthz lists only names.
// A check that panics counts as failed. A check still running from an
// earlier /healthz request is not started again, and counts as failed, so a
// check that hangs costs at most one goroutine.
func (m *Metrics) AddCheck(name string, check func(ctx context.Context) error) {
	m.checksMu.Lock()
	defer m.checksMu.Unlock()
	if check == nil {
		delete(m.checks, name)
		m.healthCheckOK.DeleteLabelValues(clean(name))
		m.healthCheckLabel.forget(clean(name))
		return
	}
	m.checks[name] = newCheck(name, check)
}

func newCheck(name string, fn func(ctx context.Context) error) *check {
	return &check{name: name, fn: fn}
}

// runChecks runs every registered check concurrently and returns the sorted
// names of those that failed or did not finish within the timeout.
func (m *Metrics) runChecks(ctx context.Context) []string {
	m.checksMu.Lock()
	checks := make([]*check, 0, len(m.checks))
	for _, c := range m.checks {
		checks = append(checks, c)
	}
	m.checksMu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, m.healthTimeout)
	defer cancel()

	type result struct {
		name string
		err  error
	}
	// Buffered so that a check finishing after the timeout never blocks.
	results := make(chan result, len(checks))
	pending := make(map[string]bool, len(checks))
	for _, c := range checks {
		pending[c.name] = true
		if !c.running.CompareAndSwap(false, true) {
			results <- result{c.name, errCheckBusy}
			continue
		}
		go func() {
			defer c.running.Store(false)
			results <- result{c.name, runOne(ctx, c.fn)}
		}()
	}

	var failed []string
wait:
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.name)
			if r.err != nil {
				failed = append(failed, r.name)
			}
		case <-ctx.Done():
			break wait
		}
	}
	for name := range pending {
		failed = append(failed, name)
	}
	sort.Strings(failed)

	bad := make(map[string]bool, len(failed))
	for _, n := range failed {
		bad[n] = true
	}
	for _, c := range checks {
		v := 1.0
		if bad[c.name] {
			v = 0
		}
		m.healthCheckOK.WithLabelValues(m.healthCheckLabel.value(c.name)).Set(v)
	}
	return failed
}

// runOne calls fn, turning a panic into an error.
func runOne(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if recover() != nil {
			err = errCheckPanicked
		}
	}()
	return fn(ctx)
}

func (m *Metrics) serveHealth(w http.ResponseWriter, r *http.Request) {
	failed := m.runChecks(r.Context())
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if len(failed) == 0 {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("unhealthy: " + strings.Join(failed, " ") + "\n"))
}
