package netsim

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	maxPacket      = 64 << 10           // read buffer size; larger than any UDP payload
	maxQueued      = 1 << 16            // packets held in the delay queue before tail-dropping
	maxRateBacklog = time.Second        // how far the rate-limited wire may fall behind
	minReorderHold = time.Millisecond   // hold-back floor for Config.Reorder
	replayIdle     = 5 * time.Second    // replay socket lifetime after its last reply
	errSleep       = time.Millisecond   // pause after repeated non-fatal read errors
	sockBuf        = 4 << 20            // requested kernel socket buffer size
	streamC2S      = 0x6a09e667f3bcc908 // PCG stream constant, client->server
	streamS2C      = 0xbb67ae8584caa73b // PCG stream constant, server->client
)

// Config describes the simulated link. The same conditions apply to each
// direction independently. Out-of-range values are clamped: negative
// durations and rates to 0, probabilities to [0, 1].
//
// Config is a plain value and safe to copy; a Proxy never retains a pointer
// to the caller's Config.
type Config struct {
	// Delay is the one-way delay added to every packet in each direction;
	// the round-trip time grows by 2*Delay.
	Delay time.Duration
	// Jitter adds a uniformly distributed extra delay in [0, Jitter) to
	// each packet. Jitter alone can reorder packets.
	Jitter time.Duration
	// Loss is the probability that a packet is dropped, per direction.
	Loss float64
	// Duplicate is the probability that a packet is delivered twice.
	Duplicate float64
	// Reorder is the probability that a packet is held back by an extra
	// max(Delay/2, Jitter, 1ms) so that packets sent after it overtake it.
	Reorder float64
	// Seed seeds all random decisions (math/rand/v2 PCG). The same seed and
	// the same packet sequence yield the same decisions.
	Seed uint64
	// RateBytesPerSec caps the bandwidth of each direction; 0 means
	// unlimited. Packets queue behind each other on the capped wire.
	RateBytesPerSec int
}

func (c Config) clamped() Config {
	clampP := func(p float64) float64 {
		if !(p > 0) { // also catches NaN
			return 0
		}
		if p > 1 {
			return 1
		}
		return p
	}
	c.Delay = max(c.Delay, 0)
	c.Jitter = max(c.Jitter, 0)
	c.Loss = clampP(c.Loss)
	c.Duplicate = clampP(c.Duplicate)
	c.Reorder = clampP(c.Reorder)
	c.RateBytesPerSec = max(c.RateBytesPerSec, 0)
	return c
}

// reorderHold is how long a packet selected for reordering is held back.
func (c Config) reorderHold() time.Duration {
	return max(c.Delay/2, c.Jitter, minReorderHold)
}

// DirStats counts the traffic of one direction. It is a plain value, safe to
// copy and to use from any goroutine.
type DirStats struct {
	Packets        uint64 // datagrams received by the proxy
	Bytes          uint64 // payload bytes received by the proxy
	Forwarded      uint64 // datagrams sent on, duplicates included
	ForwardedBytes uint64 // payload bytes sent on, duplicates included
	Dropped        uint64 // datagrams dropped by Config.Loss
	Duplicated     uint64 // datagrams selected for duplication
	Reordered      uint64 // datagrams held back by Config.Reorder
	Overflow       uint64 // datagrams tail-dropped because a queue was full
	SendErrors     uint64 // datagrams the kernel refused to send
}

// Stats is a snapshot of the proxy counters, returned by [Proxy.Stats].
// It is a plain value and safe to copy.
type Stats struct {
	ClientToServer DirStats
	ServerToClient DirStats
	Mappings       int    // client mappings currently open (not reset by ResetCounters)
	Rebinds        int    // calls to Rebind
	Replayed       uint64 // datagrams re-sent by Replay
	ReplayReplies  uint64 // datagrams received (and discarded) on replay sockets
}

type direction int

const (
	c2s direction = iota
	s2c
)

// mapping is the state of one client address. conn and recording are
// guarded by Proxy.mu; client is immutable.
type mapping struct {
	client    netip.AddrPort
	conn      *net.UDPConn
	recording bool
}

type packet struct {
	at   time.Time
	seq  uint64
	dir  direction
	m    *mapping
	data []byte
	// depth is the number of one-way trips in the longest chain of
	// datagrams that could have caused this one (see Proxy.RoundTrips);
	// gen is the ResetCounters generation it was counted in.
	depth int
	gen   uint64
}

// packetHeap orders packets by release time, then arrival order.
type packetHeap []*packet

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(*packet)) }
func (h *packetHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return x
}

// Proxy is a UDP proxy with simulated network conditions; see the package
// documentation for the model. Create it with [New].
//
// A Proxy is safe for concurrent use: all methods may be called from any
// goroutine at any time, also while traffic is flowing.
type Proxy struct {
	upstream *net.UDPAddr
	ln       *net.UDPConn
	addr     string

	mu               sync.Mutex
	cfg              Config
	rng              [2]*rand.Rand
	wireFree         [2]time.Time // when the rate-limited wire of each direction is idle
	mappings         map[netip.AddrPort]*mapping
	stats            Stats
	flights          int
	replySinceFlight bool
	firstC2S         time.Time // first client datagram since the last reset
	lastS2C          time.Time // last server datagram delivered since then
	gen              uint64    // incremented by ResetCounters
	// depth[d] is the greatest depth of the datagrams of direction d
	// delivered since the last reset (see RoundTrips).
	depth       [2]int
	recordArmed bool
	recorded    [][]byte
	replayConns map[*net.UDPConn]struct{}
	queue       packetHeap
	seq         uint64
	closed      bool

	wake      chan struct{} // buffered(1): the queue head changed
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// New starts a proxy listening on 127.0.0.1 with a kernel-chosen port,
// forwarding to upstream, the server's UDP address ("host:port").
// The returned Proxy must be closed with [Proxy.Close].
func New(upstream string, cfg Config) (*Proxy, error) {
	up, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, fmt.Errorf("netsim: resolve upstream %q: %w", upstream, err)
	}
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("netsim: listen: %w", err)
	}
	_ = ln.SetReadBuffer(sockBuf)
	_ = ln.SetWriteBuffer(sockBuf)
	p := &Proxy{
		upstream:         up,
		ln:               ln,
		addr:             ln.LocalAddr().String(),
		mappings:         make(map[netip.AddrPort]*mapping),
		replayConns:      make(map[*net.UDPConn]struct{}),
		replySinceFlight: true,
		wake:             make(chan struct{}, 1),
		done:             make(chan struct{}),
	}
	p.setConfigLocked(cfg)
	p.wg.Add(2)
	go p.readClients()
	go p.schedule()
	return p, nil
}

// Addr returns the address clients should send to, e.g. "127.0.0.1:40123".
func (p *Proxy) Addr() string { return p.addr }

// Config returns the current (clamped) configuration.
func (p *Proxy) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// SetConfig changes the link conditions for packets arriving from now on and
// reseeds the random streams from cfg.Seed. Packets already queued keep their
// release times.
func (p *Proxy) SetConfig(cfg Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setConfigLocked(cfg)
}

func (p *Proxy) setConfigLocked(cfg Config) {
	p.cfg = cfg.clamped()
	p.rng[c2s] = rand.New(rand.NewPCG(p.cfg.Seed, streamC2S))
	p.rng[s2c] = rand.New(rand.NewPCG(p.cfg.Seed, streamS2C))
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Mappings = len(p.mappings)
	return s
}

// Flights returns the number of client flights since New or the last
// ResetCounters (see the package documentation).
func (p *Proxy) Flights() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flights
}

// Span is the time from the first client datagram since the last
// ResetCounters to the last server datagram delivered to the client: how
// long an exchange kept the link busy, as the client saw it.
func (p *Proxy) Span() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstC2S.IsZero() || p.lastS2C.Before(p.firstC2S) {
		return 0
	}
	return p.lastS2C.Sub(p.firstC2S)
}

// RoundTrips is the number of round trips an exchange cost since the last
// ResetCounters: the longest chain of datagrams, each sent after the one
// before it was delivered, in round trips.
//
// Every datagram gets a depth when it reaches the proxy: one more than the
// deepest datagram the proxy has delivered to its sender since the reset
// (so a client's first datagram has depth 1, the server's answer 2, a
// client datagram sent after that answer arrived 3). RoundTrips is the
// deepest server datagram delivered, halved and rounded up.
// Acknowledgements the client sends after the last answer do not count; a
// server datagram sent after the answer (a keepalive) would, so measure
// exchanges well inside the keepalive period. Datagrams counted before the
// reset do not count after it.
//
// Unlike [Proxy.Span], the count does not grow when either end is slow to
// answer (a loaded machine, the race detector, a card that takes its
// time): it grows only when a datagram was sent after another had crossed
// the link. A datagram that did not need the one delivered before it, but
// was sent after it all the same, still counts: with a Delay of 100 ms
// that takes a sender stalled for 200 ms.
func (p *Proxy) RoundTrips() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return (p.depth[s2c] + 1) / 2
}

// ResetCounters zeroes the flight counter and all Stats counters; the next
// client datagram starts flight 1.
func (p *Proxy) ResetCounters() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flights = 0
	p.replySinceFlight = true
	p.gen++
	p.depth = [2]int{}
	p.stats = Stats{}
	p.firstC2S, p.lastS2C = time.Time{}, time.Time{}
}

// RecordFirstFlight arms (on) or disarms (off) the first-flight recorder.
// When armed, the next new client mapping's first flight is recorded,
// replacing any previous recording, and the recorder disarms itself.
// Turning it off also stops a recording in progress; what has been recorded
// so far is kept for Replay.
func (p *Proxy) RecordFirstFlight(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recordArmed = on
	if !on {
		for _, m := range p.mappings {
			m.recording = false
		}
	}
}

// Recorded returns copies of the datagrams currently recorded for Replay.
func (p *Proxy) Recorded() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.recorded))
	for i, b := range p.recorded {
		out[i] = bytes.Clone(b)
	}
	return out
}

// Replay sends the recorded first-flight datagrams to the upstream server
// again, in their original order, from a fresh socket (new source port),
// bypassing the simulated conditions. Replies are read and discarded in the
// background. It returns an error if nothing has been recorded, if the proxy
// is closed, or if a send fails.
func (p *Proxy) Replay() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return net.ErrClosed
	}
	pkts := p.recorded
	if len(pkts) == 0 {
		p.mu.Unlock()
		return errors.New("netsim: replay: nothing recorded")
	}
	c, err := p.dialUpstream()
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("netsim: replay: %w", err)
	}
	p.replayConns[c] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go p.drainReplay(c)

	for _, b := range pkts {
		if _, err := c.Write(b); err != nil {
			return fmt.Errorf("netsim: replay: %w", err)
		}
		p.mu.Lock()
		p.stats.Replayed++
		p.mu.Unlock()
	}
	return nil
}

// Rebind simulates a NAT rebinding: every client mapping gets a new upstream
// socket (new source port) and the old socket is closed. New client mappings
// created later are unaffected (they get fresh sockets anyway).
func (p *Proxy) Rebind() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for _, m := range p.mappings {
		c, err := p.dialUpstream()
		if err != nil {
			continue // keep the old socket rather than lose the client
		}
		old := m.conn
		m.conn = c
		p.wg.Add(1)
		go p.readUpstream(m, c)
		_ = old.Close()
	}
	p.stats.Rebinds++
}

// Close stops the proxy: it closes every socket, discards queued packets and
// waits for all goroutines started by the proxy to return. It is idempotent;
// later calls return the result of the first.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		var conns []*net.UDPConn
		for _, m := range p.mappings {
			conns = append(conns, m.conn)
		}
		for c := range p.replayConns {
			conns = append(conns, c)
		}
		p.queue = nil
		p.mu.Unlock()

		close(p.done)
		p.closeErr = p.ln.Close()
		for _, c := range conns {
			_ = c.Close()
		}
		p.wg.Wait()
	})
	return p.closeErr
}

func (p *Proxy) dialUpstream() (*net.UDPConn, error) {
	c, err := net.DialUDP("udp", nil, p.upstream)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(sockBuf)
	_ = c.SetWriteBuffer(sockBuf)
	return c, nil
}

// readClients reads datagrams from clients and queues them upstream.
func (p *Proxy) readClients() {
	defer p.wg.Done()
	buf := make([]byte, maxPacket)
	prevErr := false
	for {
		n, from, err := p.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if prevErr {
				time.Sleep(errSleep) // never spin on a persistent error
			}
			prevErr = true
			continue
		}
		prevErr = false
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		m := p.mappings[from]
		if m == nil {
			c, err := p.dialUpstream()
			if err != nil {
				p.stats.ClientToServer.SendErrors++
				p.mu.Unlock()
				continue
			}
			m = &mapping{client: from, conn: c}
			if p.recordArmed {
				p.recordArmed = false
				m.recording = true
				p.recorded = nil
			}
			p.mappings[from] = m
			p.wg.Add(1)
			go p.readUpstream(m, c)
		}
		p.enqueueLocked(c2s, m, bytes.Clone(buf[:n]))
		p.mu.Unlock()
	}
}

// readUpstream reads the server's datagrams arriving on one upstream socket
// of mapping m and queues them towards the client. It returns when c is
// closed (by Rebind or Close).
func (p *Proxy) readUpstream(m *mapping, c *net.UDPConn) {
	defer p.wg.Done()
	buf := make([]byte, maxPacket)
	prevErr := false
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A connected UDP socket reports ICMP errors (e.g. ECONNREFUSED
			// while the server is not listening) once per ICMP message.
			if prevErr {
				time.Sleep(errSleep)
			}
			prevErr = true
			continue
		}
		prevErr = false
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.enqueueLocked(s2c, m, bytes.Clone(buf[:n]))
		p.mu.Unlock()
	}
}

func (p *Proxy) dirStats(d direction) *DirStats {
	if d == c2s {
		return &p.stats.ClientToServer
	}
	return &p.stats.ServerToClient
}

// enqueueLocked applies the link model to one arriving datagram. p.mu is held.
func (p *Proxy) enqueueLocked(d direction, m *mapping, data []byte) {
	now := time.Now()
	cfg := p.cfg
	r := p.rng[d]
	// Always draw the same number of values so that decisions for the n-th
	// packet do not depend on earlier outcomes.
	uLoss, uDup, uReorder, uJit, uJitDup := r.Float64(), r.Float64(), r.Float64(), r.Float64(), r.Float64()

	st := p.dirStats(d)
	st.Packets++
	st.Bytes += uint64(len(data))
	depth := 1 + p.depth[1-d] // the sender has seen datagrams up to that depth
	if d == c2s {
		if p.firstC2S.IsZero() {
			p.firstC2S = now
		}
		if p.replySinceFlight {
			p.flights++
			p.replySinceFlight = false
		}
		if m.recording {
			p.recorded = append(p.recorded, data) // data is never modified
		}
	}

	if uLoss < cfg.Loss {
		st.Dropped++
		return
	}
	base := now
	if cfg.RateBytesPerSec > 0 {
		start := now
		if p.wireFree[d].After(now) {
			start = p.wireFree[d] // queue behind earlier packets on the wire
		}
		if start.Sub(now) > maxRateBacklog {
			st.Overflow++
			return
		}
		tx := time.Duration(int64(len(data)) * int64(time.Second) / int64(cfg.RateBytesPerSec))
		base = start.Add(tx)
		p.wireFree[d] = base
	}
	jitter := func(u float64) time.Duration { return time.Duration(u * float64(cfg.Jitter)) }

	at := base.Add(cfg.Delay + jitter(uJit))
	if uReorder < cfg.Reorder {
		at = at.Add(cfg.reorderHold())
		st.Reordered++
	}
	if !p.pushLocked(&packet{at: at, dir: d, m: m, data: data, depth: depth, gen: p.gen}) {
		st.Overflow++
		return
	}
	if uDup < cfg.Duplicate {
		st.Duplicated++
		if !p.pushLocked(&packet{at: base.Add(cfg.Delay + jitter(uJitDup)), dir: d, m: m, data: data, depth: depth, gen: p.gen}) {
			st.Overflow++
		}
	}
}

// pushLocked queues pk and wakes the scheduler if pk is the new head.
func (p *Proxy) pushLocked(pk *packet) bool {
	if len(p.queue) >= maxQueued {
		return false
	}
	pk.seq = p.seq
	p.seq++
	heap.Push(&p.queue, pk)
	if p.queue[0] == pk {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// schedule releases queued packets at their release times.
func (p *Proxy) schedule() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var due []*packet
	for {
		p.mu.Lock()
		now := time.Now()
		due = due[:0]
		for len(p.queue) > 0 && !p.queue[0].at.After(now) {
			due = append(due, heap.Pop(&p.queue).(*packet))
		}
		wait := time.Duration(-1)
		if len(p.queue) > 0 {
			wait = p.queue[0].at.Sub(now)
		}
		p.mu.Unlock()

		if len(due) > 0 {
			for i, pk := range due {
				p.deliver(pk)
				due[i] = nil
			}
			continue // sending took time; look at the clock again
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-p.done:
			timer.Stop()
			return
		case <-p.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (p *Proxy) deliver(pk *packet) {
	p.mu.Lock()
	c := pk.m.conn // the current socket: Rebind applies to queued packets too
	if pk.gen == p.gen && pk.depth > p.depth[pk.dir] {
		// Before the write, as below: the receiver may answer at once.
		p.depth[pk.dir] = pk.depth
	}
	if pk.dir == s2c {
		// Update flight and recording state before the write: the client
		// may react to this datagram before the write call even returns.
		p.replySinceFlight = true
		pk.m.recording = false
		p.lastS2C = time.Now()
	}
	p.mu.Unlock()

	var err error
	if pk.dir == c2s {
		_, err = c.Write(pk.data)
	} else {
		_, err = p.ln.WriteToUDPAddrPort(pk.data, pk.m.client)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.dirStats(pk.dir)
	if err != nil {
		st.SendErrors++
		return
	}
	st.Forwarded++
	st.ForwardedBytes += uint64(len(pk.data))
}

// drainReplay reads and discards replies on a replay socket until it has
// been idle for replayIdle or the proxy is closed.
func (p *Proxy) drainReplay(c *net.UDPConn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.replayConns, c)
		p.mu.Unlock()
		_ = c.Close()
	}()
	buf := make([]byte, maxPacket)
	for {
		_ = c.SetReadDeadline(time.Now().Add(replayIdle))
		_, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
				return
			}
			select {
			case <-p.done:
				return
			case <-time.After(errSleep):
			}
			continue
		}
		p.mu.Lock()
		p.stats.ReplayReplies++
		p.mu.Unlock()
	}
}
