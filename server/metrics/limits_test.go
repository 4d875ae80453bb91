package metrics

import "testing"

func TestLimits(t *testing.T) {
	m := New()
	srv := newServer(t, m)
	var refused int64 = 3
	m.AddLimits(func() []Limit {
		return []Limit{
			{Name: "connections_per_identity", Code: 21, Limit: 16, InUse: 2, Refused: refused},
			{Name: "handshakes", Limit: -1, InUse: 7},
		}
	})
	fams := scrape(t, srv)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pscs_limit", map[string]string{"limit": "connections_per_identity"}, 16},
		{"pscs_limit_in_use", map[string]string{"limit": "connections_per_identity"}, 2},
		{"pscs_limit_refusals_total", map[string]string{"limit": "connections_per_identity", "code": "21"}, 3},
		{"pscs_limit", map[string]string{"limit": "handshakes"}, -1},
		{"pscs_limit_in_use", map[string]string{"limit": "handshakes"}, 7},
		{"pscs_limit_refusals_total", map[string]string{"limit": "handshakes", "code": "0"}, 0},
	} {
		s := find(t, fams, c.name, c.labels)
		got := s.GetGauge().GetValue()
		if s.GetCounter() != nil {
			got = s.GetCounter().GetValue()
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Read at every scrape.
	refused = 5
	fams = scrape(t, srv)
	if got := find(t, fams, "pscs_limit_refusals_total", map[string]string{"limit": "connections_per_identity", "code": "21"}).GetCounter().GetValue(); got != 5 {
		t.Errorf("after more refusals: %v, want 5", got)
	}
}
