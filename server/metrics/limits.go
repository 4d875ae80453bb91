package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Limit is one resource limit's figures (pscsd takes them from
// transport.Server.LimitStats).
type Limit struct {
	// Name is a constant of the server code, e.g.
	// "connections_per_identity".
	Name string
	// Code is the protocol's refusal code for the limit, 0 for none.
	Code uint32
	// Limit is the configured value; negative: none.
	Limit float64
	// InUse is the use now (for a limit of each identity, the highest
	// among identities).
	InUse float64
	// Refused counts the refusals since the start.
	Refused int64
}

var (
	limitDesc = prometheus.NewDesc("pscs_limit",
		"A resource limit's configured value (negative: none).", []string{"limit"}, nil)
	limitInUseDesc = prometheus.NewDesc("pscs_limit_in_use",
		"A resource limit's use now; for a limit of each identity, the highest among identities.", []string{"limit"}, nil)
	limitRefusalsDesc = prometheus.NewDesc("pscs_limit_refusals_total",
		"Refusals by a resource limit, with its refusal code (\"0\": refused by QUIC).", []string{"limit", "code"}, nil)
)

// limitCollector reads the figures at each scrape.
type limitCollector struct{ source func() []Limit }

func (c limitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- limitDesc
	ch <- limitInUseDesc
	ch <- limitRefusalsDesc
}

func (c limitCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.source() {
		name := clean(l.Name)
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, l.Limit, name)
		ch <- prometheus.MustNewConstMetric(limitInUseDesc, prometheus.GaugeValue, l.InUse, name)
		ch <- prometheus.MustNewConstMetric(limitRefusalsDesc, prometheus.CounterValue, float64(l.Refused), name, strconv.FormatUint(uint64(l.Code), 10))
	}
}

// AddLimits exposes the figures that source returns, read at every
// scrape: pscs_limit{limit}, pscs_limit_in_use{limit} and
// pscs_limit_refusals_total{limit, code}. source must be cheap, safe for
// concurrent use, and return a fixed set of names. Call it once.
func (m *Metrics) AddLimits(source func() []Limit) {
	m.reg.MustRegister(limitCollector{source})
}
