package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// LatencyBuckets are the histogram bucket upper bounds, in seconds, used by
// pscs_request_seconds and pscs_card_seconds: 1 ms to 10 s.
var LatencyBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

const (
	// maxLabelValues is how many distinct values one label of one metric
	// keeps before folding new ones into otherValue.
	maxLabelValues = 256
	// maxLabelLen is the longest label value kept, in bytes.
	maxLabelLen = 64
	// otherValue replaces label values past maxLabelValues.
	otherValue = "_other"
	// noneValue replaces an empty label value.
	noneValue = "_none"
)

// Metrics records pscsd's operational metrics into its own registry and
// serves them, with a health endpoint, through Handler. The zero value is not
// usable; call New. Safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.CounterVec
	requestSecs   *prometheus.HistogramVec
	refusals      *prometheus.CounterVec
	queueDepth    *prometheus.GaugeVec
	cardsPresent  *prometheus.GaugeVec
	cardSecs      *prometheus.HistogramVec
	cardBusy      *prometheus.CounterVec
	connections   prometheus.Gauge
	healthCheckOK *prometheus.GaugeVec

	// Cardinality guards, one per (metric family, label).
	opLabel, codeLabel               *labelGuard
	histOpLabel                      *labelGuard
	reasonLabel                      *labelGuard
	queueCardLabel, presentCardLabel *labelGuard
	opCardLabel, opMemberLabel       *labelGuard
	healthCheckLabel                 *labelGuard
	healthTimeout                    time.Duration
	checksMu                         sync.Mutex
	checks                           map[string]*check
	handler                          http.Handler
}

// New returns a Metrics with every pscs_* family registered in a fresh
// registry, together with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pscs_requests_total",
			Help: "Protocol requests answered, by operation and numeric result code (\"0\" is ok).",
		}, []string{"op", "code"}),
		requestSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pscs_request_seconds",
			Help:    "Time to answer a protocol request, by operation.",
			Buckets: LatencyBuckets,
		}, []string{"op"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pscs_refusals_total",
			Help: "Requests refused, by reason (revoked, outside_window, limit, wrong_vpin, locked, denied, replay, bad_signature, ...).",
		}, []string{"reason"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pscs_queue_depth",
			Help: "Operations waiting for a remote card.",
		}, []string{"card"}),
		cardsPresent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pscs_cards_present",
			Help: "Physical cards present behind a remote card.",
		}, []string{"card"}),
		cardSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pscs_card_seconds",
			Help:    "Latency of one operation on one physical card of a remote card.",
			Buckets: LatencyBuckets,
		}, []string{"card", "member"}),
		cardBusy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pscs_card_busy_seconds_total",
			Help: "Time a physical card spent busy; its rate is the card's utilisation.",
		}, []string{"card", "member"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pscs_connections",
			Help: "Open transport connections.",
		}),
		healthCheckOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pscs_health_check_ok",
			Help: "1 if the health check passed on the last /healthz request, else 0.",
		}, []string{"check"}),

		opLabel:          newLabelGuard(),
		codeLabel:        newLabelGuard(),
		histOpLabel:      newLabelGuard(),
		reasonLabel:      newLabelGuard(),
		queueCardLabel:   newLabelGuard(),
		presentCardLabel: newLabelGuard(),
		opCardLabel:      newLabelGuard(),
		opMemberLabel:    newLabelGuard(),
		healthCheckLabel: newLabelGuard(),
		healthTimeout:    HealthTimeout,
		checks:           make(map[string]*check),
	}
	m.reg.MustRegister(
		m.requests, m.requestSecs, m.refusals,
		m.queueDepth, m.cardsPresent, m.cardSecs, m.cardBusy,
		m.connections, m.healthCheckOK,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", m.serveHealth)
	mux.Handle("/", http.NotFoundHandler())
	m.handler = mux
	return m
}

// Registry returns the registry the metrics live in, for a caller that wants
// to add its own collectors. The same label rules apply to them.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request records one answered protocol request: op is the operation name (a
// constant of the server code), code the protocol's numeric result code, d the
// time taken to answer. It counts pscs_requests_total{op, code} and observes
// pscs_request_seconds{op}.
func (m *Metrics) Request(op string, code uint32, d time.Duration) {
	m.requests.WithLabelValues(
		m.opLabel.value(op),
		m.codeLabel.value(strconv.FormatUint(uint64(code), 10)),
	).Inc()
	m.requestSecs.WithLabelValues(m.histOpLabel.value(op)).Observe(seconds(d))
}

// Refusal counts one refused request in pscs_refusals_total{reason}. reason
// is a short constant name such as "revoked", "outside_window", "limit",
// "wrong_vpin", "locked", "denied", "replay" or "bad_signature".
func (m *Metrics) Refusal(reason string) {
	m.refusals.WithLabelValues(m.reasonLabel.value(reason)).Inc()
}

// QueueDepth sets pscs_queue_depth{card}, the number of operations waiting
// for the remote card named card (a configured name).
func (m *Metrics) QueueDepth(card string, n int) {
	m.queueDepth.WithLabelValues(m.queueCardLabel.value(card)).Set(float64(n))
}

// CardsPresent sets pscs_cards_present{card}, the number of physical cards
// present behind the remote card named card (a configured name).
func (m *Metrics) CardsPresent(card string, n int) {
	m.cardsPresent.WithLabelValues(m.presentCardLabel.value(card)).Set(float64(n))
}

// CardOp records one operation of duration d on the physical card member
// (a configured member name) of the remote card card: it observes
// pscs_card_seconds{card, member} and adds d to
// pscs_card_busy_seconds_total{card, member}. A negative d counts as zero.
func (m *Metrics) CardOp(card, member string, d time.Duration) {
	c, mem := m.opCardLabel.value(card), m.opMemberLabel.value(member)
	s := seconds(d)
	m.cardSecs.WithLabelValues(c, mem).Observe(s)
	m.cardBusy.WithLabelValues(c, mem).Add(s)
}

// Connections sets pscs_connections, the number of open transport
// connections.
func (m *Metrics) Connections(n int) {
	m.connections.Set(float64(n))
}

// ForgetCard deletes every series labelled with the remote card card, for use
// when a configuration reload removes it. The name stops counting towards
// the label limit.
func (m *Metrics) ForgetCard(card string) {
	c := clean(card)
	m.queueDepth.DeleteLabelValues(c)
	m.cardsPresent.DeleteLabelValues(c)
	m.cardSecs.DeletePartialMatch(prometheus.Labels{"card": c})
	m.cardBusy.DeletePartialMatch(prometheus.Labels{"card": c})
	m.queueCardLabel.forget(c)
	m.presentCardLabel.forget(c)
	m.opCardLabel.forget(c)
}

// Handler serves GET /metrics (Prometheus exposition) and GET /healthz, and
// 404 for anything else. Mount it on an admin listener bound to loopback.
// Every call returns the same handler.
func (m *Metrics) Handler() http.Handler { return m.handler }

// seconds converts d to seconds, clamping negative durations to zero so a
// clock step can never make a counter go down (which would panic).
func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

// labelGuard bounds the distinct values of one label of one metric family.
type labelGuard struct {
	mu   sync.RWMutex
	seen map[string]struct{}
}

func newLabelGuard() *labelGuard {
	return &labelGuard{seen: make(map[string]struct{})}
}

// value returns v cleaned, or otherValue once maxLabelValues distinct values
// have been seen and v is not one of them.
func (g *labelGuard) value(v string) string {
	v = clean(v)
	g.mu.RLock()
	_, ok := g.seen[v]
	g.mu.RUnlock()
	if ok {
		return v
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.seen[v]; ok {
		return v
	}
	if len(g.seen) >= maxLabelValues {
		return otherValue
	}
	g.seen[v] = struct{}{}
	return v
}

func (g *labelGuard) forget(v string) {
	g.mu.Lock()
	delete(g.seen, v)
	g.mu.Unlock()
}

// clean makes v a valid, short label value: invalid UTF-8 is replaced (the
// client library panics on it), values are cut to maxLabelLen bytes on a rune
// boundary, and the empty string becomes noneValue.
func clean(v string) string {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	if len(v) > maxLabelLen {
		cut := maxLabelLen
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	if v == "" {
		return noneValue
	}
	return v
}
