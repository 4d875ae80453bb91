package console

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/rsc"
)

// historyLen is how many utilisation samples the charts keep per card.
const historyLen = 90

// live samples the remote cards and tells the live pages of changes.
type live struct {
	c *Console

	mu      sync.Mutex
	pools   map[string]*rsc.Pool          // the cards pages asked for, by name
	prev    map[string]memberSample       // by card/member
	members map[string][]memberState      // the last sample, by card
	history map[string][]float64          // pool utilisation per sample, by card
	pins    map[string][]profiles.PINInfo // PIN labels, by card/member
	counts  map[string]map[string]int     // PIN tries left by card/member, PIN ID; -1 unknown
	sampled time.Time
	newPool bool                   // a pool was tracked since the PIN counters were read
	subs    map[chan struct{}]bool // audit pages
	cards   map[chan struct{}]bool // cards pages
}

type memberSample struct {
	served int64
	busy   time.Duration
	at     time.Time
}

// memberState is one card of a remote card as the cards page shows it.
type memberState struct {
	ID          string
	Busy        float64 // share of the last sample interval spent serving
	Served      int64
	LatencyMS   float64 // mean time per request over the last interval; 0: none
	AllLatency  float64 // mean time per request since pscsd started, ms
	PINs        []pinState
	PINsUnknown bool
}

type pinState struct {
	ID, Label string
	Tries     int // -1 unknown
	Blocked   bool
}

func newLive(c *Console) *live {
	return &live{c: c, pools: map[string]*rsc.Pool{}, prev: map[string]memberSample{}, members: map[string][]memberState{},
		history: map[string][]float64{}, pins: map[string][]profiles.PINInfo{}, counts: map[string]map[string]int{},
		subs: map[chan struct{}]bool{}, cards: map[chan struct{}]bool{}}
}

// track makes sure cards are sampled.
func (l *live) track(cards []server.Card) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cards {
		if _, ok := l.pools[c.Name]; !ok {
			l.newPool = true
		}
		l.pools[c.Name] = c.Pool
	}
}

func (l *live) run(ctx context.Context) {
	t := time.NewTicker(l.c.cfg.SampleEvery)
	defer t.Stop()
	var lastPINs time.Time
	for {
		l.mu.Lock()
		newPool := l.newPool
		l.newPool = false
		l.mu.Unlock()
		if newPool || time.Since(lastPINs) >= l.c.cfg.PINEvery {
			l.readPINs(ctx)
			lastPINs = time.Now()
		}
		l.sample(time.Now())
		l.c.sweep(l.c.cfg.Now())
		l.notify(l.cards)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample takes every tracked pool's state.
func (l *live) sample(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, p := range l.pools {
		var ms []memberState
		var busySum float64
		for _, m := range p.Members() {
			key := name + "/" + m.ID
			cur := memberSample{served: m.Served(), busy: m.Busy(), at: now}
			st := memberState{ID: m.ID, Served: cur.served}
			if cur.served > 0 {
				st.AllLatency = float64(cur.busy.Microseconds()) / 1000 / float64(cur.served)
			}
			if prev, ok := l.prev[key]; ok && now.After(prev.at) {
				st.Busy = min(1, float64(cur.busy-prev.busy)/float64(now.Sub(prev.at)))
				if n := cur.served - prev.served; n > 0 {
					st.LatencyMS = float64((cur.busy - prev.busy).Microseconds()) / 1000 / float64(n)
				}
			}
			l.prev[key] = cur
			for _, info := range l.pins[key] {
				ps := pinState{ID: info.ID, Label: info.Label, Tries: -1}
				if n, ok := l.counts[key][info.ID]; ok {
					ps.Tries, ps.Blocked = n, n == 0
				}
				st.PINs = append(st.PINs, ps)
			}
			st.PINsUnknown = len(st.PINs) == 0
			busySum += st.Busy
			ms = append(ms, st)
		}
		sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
		l.members[name] = ms
		u := 0.0
		if len(ms) > 0 {
			u = busySum / float64(len(ms))
		}
		h := append(l.history[name], u)
		if len(h) > historyLen {
			h = h[len(h)-historyLen:]
		}
		l.history[name] = h
	}
	l.sampled = now
}

// readPINs asks every card of every tracked pool for its PIN counters,
// which spends no try.
func (l *live) readPINs(ctx context.Context) {
	l.mu.Lock()
	pools := make(map[string]*rsc.Pool, len(l.pools))
	for k, v := range l.pools {
		pools[k] = v
	}
	l.mu.Unlock()
	for name, p := range pools {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.Each(cctx, "console", func(ctx context.Context, card profiles.Card, m *rsc.Member) error {
			pins := card.PINs()
			counts := map[string]int{}
			for _, pi := range pins {
				st, err := card.PINStatus(ctx, pi.ID)
				if err != nil {
					continue
				}
				counts[pi.ID] = st.Retries
				if st.Blocked {
					counts[pi.ID] = 0
				}
			}
			l.mu.Lock()
			l.pins[name+"/"+m.ID], l.counts[name+"/"+m.ID] = pins, counts
			l.mu.Unlock()
			return nil
		})
		cancel()
		if err != nil {
			l.c.log.Debug("console: PIN counters not read", "card", name, "err", err)
		}
	}
}

// cardView is one remote card on the cards page.
type cardView struct {
	Name      string
	Slot      uint64
	Present   int
	Waiting   int
	Members   []memberState
	Sampled   string
	NoMembers bool
}

// view returns the state of cards as last sampled (sampling them now if
// they were never sampled).
func (l *live) view(cards []server.Card) []cardView {
	l.track(cards)
	l.mu.Lock()
	fresh := false
	for _, c := range cards {
		if _, ok := l.members[c.Name]; !ok {
			fresh = true
		}
	}
	l.mu.Unlock()
	if fresh {
		l.sample(time.Now())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []cardView
	for _, c := range cards {
		v := cardView{Name: c.Name, Slot: c.Slot, Present: c.Pool.Len(), Waiting: c.Pool.Waiting(),
			Members: l.members[c.Name], Sampled: l.sampled.UTC().Format("15:04:05 UTC")}
		v.NoMembers = len(v.Members) == 0
		out = append(out, v)
	}
	return out
}

// utilisation returns the pool utilisation history of card.
func (l *live) utilisation(card string) []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]float64(nil), l.history[card]...)
}

func (l *live) subscribe(set func(*live) map[chan struct{}]bool) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	set(l)[ch] = true
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(set(l), ch)
		l.mu.Unlock()
	}
}

func (l *live) notify(set map[chan struct{}]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range set {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Appended tells the live audit pages that the audit log has new records.
func (c *Console) Appended() { c.live.notify(c.live.subs) }

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }
