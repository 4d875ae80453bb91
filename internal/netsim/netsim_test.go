package netsim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

var loopback = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}

// received is one datagram seen by the test server.
type received struct {
	from netip.AddrPort
	data []byte
}

// udpServer is the test's upstream server: it records every datagram and,
// if echo is set, sends it straight back to its source.
type udpServer struct {
	conn *net.UDPConn
	echo bool
	wg   sync.WaitGroup

	mu  sync.Mutex
	got []received
}

func newServer(t testing.TB, echo bool) *udpServer {
	t.Helper()
	c, err := net.ListenUDP("udp4", loopback)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	s := &udpServer{conn: c, echo: echo}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, received{from, bytes.Clone(buf[:n])})
			s.mu.Unlock()
			if s.echo {
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		s.wg.Wait()
	})
	return s
}

func (s *udpServer) addr() string { return s.conn.LocalAddr().String() }

func (s *udpServer) snapshot() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// waitFor polls cond until it holds or the timeout expires.
// hangGuard bounds the waits for what must happen: generous, for a loaded
// machine; no test measures with it.
const hangGuard = 30 * time.Second

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newProxy(t testing.TB, upstream string, cfg Config) *Proxy {
	t.Helper()
	p, err := New(upstream, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t testing.TB, p *Proxy) *net.UDPConn {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp4", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp4", loopback, ra)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func seqPacket(i int, size int) []byte {
	b := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

func seqOf(b []byte) int { return int(binary.BigEndian.Uint32(b)) }

// ping sends payload and waits for the identical payload to come back,
// returning the round-trip time. Other datagrams (late duplicates) are skipped.
func ping(c *net.UDPConn, payload []byte, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	if _, err := c.Write(payload); err != nil {
		return 0, err
	}
	if err := c.SetReadDeadline(start.Add(timeout)); err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, err
		}
		if bytes.Equal(buf[:n], payload) {
			return time.Since(start), nil
		}
	}
}

// measureRTT returns sorted RTTs of n sequential pings after one warm-up.
func measureRTT(t testing.TB, delay time.Duration, n int) []time.Duration {
	t.Helper()
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: delay})
	c := dial(t, p)
	if _, err := ping(c, []byte("warm-up"), hangGuard); err != nil {
		t.Fatal(err)
	}
	rtts := make([]time.Duration, 0, n)
	for i := range n {
		rtt, err := ping(c, seqPacket(i, 64), hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, rtt)
	}
	slices.Sort(rtts)
	return rtts
}

func TestDelayRTT(t *testing.T) {
	for _, delay := range []time.Duration{25 * time.Millisecond, 50 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			rtts := measureRTT(t, delay, 10)
			want := 2 * delay
			for _, r := range rtts {
				if r < want {
					t.Errorf("rtt %v below 2*Delay = %v", r, want)
				}
			}
			// The delay is a floor; what the machine adds on top is
			// logged, not judged (BenchmarkRTT measures it).
			med := rtts[len(rtts)/2]
			t.Logf("Delay=%v: want RTT %v, min %v, median %v (+%v), max %v",
				delay, want, rtts[0], med, med-want, rtts[len(rtts)-1])
		})
	}
}

// BenchmarkRTT reports the measured request/echo round trip through the proxy
// and its excess over 2*Delay.
func BenchmarkRTT(b *testing.B) {
	for _, delay := range []time.Duration{0, 25 * time.Millisecond, 50 * time.Millisecond} {
		b.Run("delay="+delay.String(), func(b *testing.B) {
			srv := newServer(b, true)
			p := newProxy(b, srv.addr(), Config{Delay: delay})
			c := dial(b, p)
			if _, err := ping(c, []byte("warm-up"), time.Second); err != nil {
				b.Fatal(err)
			}
			var total time.Duration
			i := 0
			for ; b.Loop(); i++ {
				rtt, err := ping(c, seqPacket(i, 64), hangGuard)
				if err != nil {
					b.Fatal(err)
				}
				total += rtt
			}
			mean := total / time.Duration(i)
			b.ReportMetric(float64(mean)/1e6, "rtt-ms")
			b.ReportMetric(float64(mean-2*delay)/1e6, "excess-ms")
		})
	}
}

func TestLossAll(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Loss: 1, Seed: 1})
	c := dial(t, p)
	for i := range 20 {
		if _, err := c.Write(seqPacket(i, 32)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, hangGuard, "20 packets at proxy", func() bool { return p.Stats().ClientToServer.Packets == 20 })
	time.Sleep(50 * time.Millisecond)
	if got := len(srv.snapshot()); got != 0 {
		t.Fatalf("server received %d packets with Loss=1", got)
	}
	st := p.Stats().ClientToServer
	if st.Dropped != 20 || st.Forwarded != 0 {
		t.Fatalf("stats %+v, want 20 dropped, 0 forwarded", st)
	}
}

// lossRun sends n packets through a proxy with Loss=0.5 and returns the
// sorted sequence numbers the server received and the proxy's drop count.
func lossRun(t *testing.T, seed uint64, n int) ([]int, uint64) {
	t.Helper()
	srv := newServer(t, false)
	p := newProxy(t, srv.addr(), Config{Loss: 0.5, Seed: seed})
	c := dial(t, p)
	for i := range n {
		if _, err := c.Write(seqPacket(i, 32)); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			time.Sleep(time.Millisecond) // stay well inside socket buffers
		}
	}
	waitFor(t, hangGuard, "all packets accounted for", func() bool {
		st := p.Stats().ClientToServer
		return st.Packets == uint64(n) && uint64(len(srv.snapshot())) == uint64(n)-st.Dropped
	})
	var seqs []int
	for _, r := range srv.snapshot() {
		seqs = append(seqs, seqOf(r.data))
	}
	slices.Sort(seqs)
	return seqs, p.Stats().ClientToServer.Dropped
}

func TestLossSeedReproducible(t *testing.T) {
	const n = 200
	a, da := lossRun(t, 42, n)
	b, db := lossRun(t, 42, n)
	c, dc := lossRun(t, 43, n)
	if da != db || !slices.Equal(a, b) {
		t.Fatalf("same seed, different outcome: dropped %d vs %d", da, db)
	}
	if slices.Equal(a, c) {
		t.Fatalf("seeds 42 and 43 dropped exactly the same packets")
	}
	if da < n/4 || da > 3*n/4 {
		t.Fatalf("Loss=0.5 dropped %d of %d", da, n)
	}
	t.Logf("seed 42: dropped %d/%d (twice), seed 43: dropped %d/%d", da, n, dc, n)
}

func TestDuplicate(t *testing.T) {
	srv := newServer(t, false)
	p := newProxy(t, srv.addr(), Config{Duplicate: 1, Seed: 3})
	c := dial(t, p)
	const n = 10
	for i := range n {
		if _, err := c.Write(seqPacket(i, 32)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, hangGuard, "duplicates at server", func() bool { return len(srv.snapshot()) == 2*n })
	count := map[int]int{}
	for _, r := range srv.snapshot() {
		count[seqOf(r.data)]++
	}
	for i := range n {
		if count[i] != 2 {
			t.Errorf("packet %d seen %d times, want 2", i, count[i])
		}
	}
	if st := p.Stats().ClientToServer; st.Duplicated != n || st.Forwarded != 2*n {
		t.Errorf("stats %+v", st)
	}
}

// inversions counts packets that arrive after a higher sequence number.
func inversions(got []received) int {
	inv, highest := 0, -1
	for _, r := range got {
		s := seqOf(r.data)
		if s < highest {
			inv++
		}
		highest = max(highest, s)
	}
	return inv
}

func TestReorder(t *testing.T) {
	const n = 50
	run := func(reorder float64) ([]received, Stats) {
		srv := newServer(t, false)
		p := newProxy(t, srv.addr(), Config{Delay: 20 * time.Millisecond, Reorder: reorder, Seed: 7})
		c := dial(t, p)
		for i := range n {
			if _, err := c.Write(seqPacket(i, 32)); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, hangGuard, "all packets", func() bool { return len(srv.snapshot()) == n })
		return srv.snapshot(), p.Stats()
	}

	got, st := run(0)
	if inv := inversions(got); inv != 0 || st.ClientToServer.Reordered != 0 {
		t.Fatalf("Reorder=0: %d inversions, %d reordered", inv, st.ClientToServer.Reordered)
	}
	got, st = run(0.3)
	inv := inversions(got)
	if inv == 0 || st.ClientToServer.Reordered == 0 {
		t.Fatalf("Reorder=0.3: %d inversions, %d reordered", inv, st.ClientToServer.Reordered)
	}
	t.Logf("Reorder=0.3: %d of %d held back, %d arrived after a later packet", st.ClientToServer.Reordered, n, inv)
}

func TestJitterBounds(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: 10 * time.Millisecond, Jitter: 20 * time.Millisecond, Seed: 9})
	c := dial(t, p)
	var lo, hi time.Duration
	for i := range 10 {
		rtt, err := ping(c, seqPacket(i, 32), hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		if rtt < 20*time.Millisecond {
			t.Fatalf("rtt %v below 2*Delay", rtt)
		}
		if i == 0 || rtt < lo {
			lo = rtt
		}
		hi = max(hi, rtt)
	}
	t.Logf("Delay=10ms Jitter=20ms: rtt range %v .. %v (model: 20ms .. 60ms)", lo, hi)
}

func TestRateLimit(t *testing.T) {
	srv := newServer(t, false)
	p := newProxy(t, srv.addr(), Config{RateBytesPerSec: 100_000})
	c := dial(t, p)
	start := time.Now()
	for i := range 20 {
		if _, err := c.Write(seqPacket(i, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, hangGuard, "20 packets", func() bool { return len(srv.snapshot()) == 20 })
	el := time.Since(start)
	// 20 kB at 100 kB/s is 200 ms on the wire.
	if el < 200*time.Millisecond { // a floor; a loaded machine may take longer
		t.Fatalf("20x1000 B at 100 kB/s took %v, want >= 200ms", el)
	}
	t.Logf("20x1000 B at 100 kB/s delivered in %v", el)
}

func TestLargePacket(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: time.Millisecond})
	c := dial(t, p)
	big := seqPacket(1, 60000)
	for i := range big[4:] {
		big[4+i] = byte(i)
	}
	if _, err := ping(c, big, hangGuard); err != nil {
		t.Fatalf("60000-byte datagram: %v", err)
	}
}

func TestSetConfigAtRuntime(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{})
	c := dial(t, p)
	if _, err := ping(c, []byte("a"), hangGuard); err != nil {
		t.Fatal(err)
	}
	p.SetConfig(Config{Loss: 1})
	if _, err := ping(c, []byte("b"), 100*time.Millisecond); err == nil {
		t.Fatal("ping succeeded with Loss=1")
	}
	p.SetConfig(Config{Delay: 30 * time.Millisecond, Loss: -3})
	if got := p.Config(); got.Loss != 0 || got.Delay != 30*time.Millisecond {
		t.Fatalf("Config() = %+v", got)
	}
	rtt, err := ping(c, []byte("c"), hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	if rtt < 60*time.Millisecond {
		t.Fatalf("rtt %v after SetConfig(Delay=30ms)", rtt)
	}
}

func TestRebind(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: 5 * time.Millisecond})
	c := dial(t, p)
	if _, err := ping(c, []byte("before"), time.Second); err != nil {
		t.Fatal(err)
	}
	p.Rebind()
	for i := range 3 {
		if _, err := ping(c, fmt.Appendf(nil, "after-%d", i), time.Second); err != nil {
			t.Fatalf("traffic stopped after Rebind: %v", err)
		}
	}
	got := srv.snapshot()
	before, after := got[0].from, got[len(got)-1].from
	if before == after {
		t.Fatalf("server saw the same source %v after Rebind", before)
	}
	for _, r := range got[1:] {
		if r.from != after {
			t.Fatalf("mixed sources after Rebind: %v and %v", r.from, after)
		}
	}
	if st := p.Stats(); st.Rebinds != 1 || st.Mappings != 1 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("server saw %v before and %v after Rebind", before, after)
}

func TestMappingsPerClient(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{})
	c1, c2 := dial(t, p), dial(t, p)
	for _, c := range []*net.UDPConn{c1, c2, c1} {
		if _, err := ping(c, []byte("x"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	got := srv.snapshot()
	if got[0].from == got[1].from || got[0].from != got[2].from {
		t.Fatalf("sources %v %v %v: want one per client", got[0].from, got[1].from, got[2].from)
	}
	if m := p.Stats().Mappings; m != 2 {
		t.Fatalf("Mappings = %d, want 2", m)
	}
}

func TestFlights(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: 10 * time.Millisecond})
	c := dial(t, p)
	for i := range 3 {
		if _, err := ping(c, seqPacket(i, 16), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if f := p.Flights(); f != 3 {
		t.Fatalf("3 request/response exchanges: Flights = %d, want 3", f)
	}

	p.ResetCounters()
	if f := p.Flights(); f != 0 {
		t.Fatalf("after ResetCounters: Flights = %d", f)
	}
	// A burst sent before any reply can arrive (RTT 100 ms) is one flight.
	p.SetConfig(Config{Delay: 50 * time.Millisecond})
	for i := range 5 {
		if _, err := c.Write(seqPacket(100+i, 16)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	for range 5 {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("reading burst echoes: %v", err)
		}
	}
	if f := p.Flights(); f != 1 {
		t.Fatalf("burst of 5: Flights = %d, want 1", f)
	}
	if _, err := c.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "next packet", func() bool { return p.Stats().ClientToServer.Packets >= 6 })
	if f := p.Flights(); f != 2 {
		t.Fatalf("packet after replies: Flights = %d, want 2", f)
	}
}

func TestRecordReplay(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: 30 * time.Millisecond})
	if err := p.Replay(); err == nil {
		t.Fatal("Replay with nothing recorded succeeded")
	}
	p.RecordFirstFlight(true)
	c := dial(t, p)
	flight := [][]byte{[]byte("ff-0"), []byte("ff-1"), []byte("ff-2")}
	for _, b := range flight {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, hangGuard, "first-flight echoes", func() bool { return p.Stats().ServerToClient.Forwarded == 3 })
	// Neither a second flight nor a second client is recorded.
	if _, err := ping(c, []byte("second-flight"), time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := ping(dial(t, p), []byte("other-client"), time.Second); err != nil {
		t.Fatal(err)
	}
	rec := p.Recorded()
	if !slices.EqualFunc(rec, flight, bytes.Equal) {
		t.Fatalf("recorded %q, want %q", rec, flight)
	}
	clientSrc := srv.snapshot()[0].from

	n0 := len(srv.snapshot())
	if err := p.Replay(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, hangGuard, "replayed packets", func() bool { return len(srv.snapshot()) == n0+3 })
	replayed := srv.snapshot()[n0:]
	for i, r := range replayed {
		if !bytes.Equal(r.data, flight[i]) {
			t.Errorf("replayed packet %d = %q, want %q", i, r.data, flight[i])
		}
		if r.from == clientSrc || r.from != replayed[0].from {
			t.Errorf("replayed packet %d from %v (client mapping %v)", i, r.from, clientSrc)
		}
	}
	waitFor(t, hangGuard, "replay replies", func() bool { return p.Stats().ReplayReplies == 3 })
	if st := p.Stats(); st.Replayed != 3 {
		t.Fatalf("Replayed = %d", st.Replayed)
	}
	t.Logf("first flight from %v replayed from %v", clientSrc, replayed[0].from)
}

func TestDisarmRecorder(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{})
	p.RecordFirstFlight(true)
	p.RecordFirstFlight(false)
	if _, err := ping(dial(t, p), []byte("x"), time.Second); err != nil {
		t.Fatal(err)
	}
	if len(p.Recorded()) != 0 {
		t.Fatal("recorded while disarmed")
	}
}

func TestConcurrentUse(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr(), Config{Delay: time.Millisecond, Jitter: time.Millisecond, Duplicate: 0.1, Reorder: 0.1, Loss: 0.05, Seed: 5})
	p.RecordFirstFlight(true)
	var wg sync.WaitGroup
	for g := range 4 {
		c := dial(t, p)
		wg.Go(func() {
			for i := range 50 {
				_, _ = ping(c, seqPacket(g*1000+i, 100), 50*time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			p.SetConfig(Config{Delay: time.Duration(i%3) * time.Millisecond, Seed: uint64(i)})
			_ = p.Stats()
			_ = p.Flights()
			if i%5 == 0 {
				p.Rebind()
				_ = p.Replay()
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	wg.Wait()
}

func TestCloseNoLeak(t *testing.T) {
	srv := newServer(t, true)
	base := runtime.NumGoroutine()

	p, err := New(srv.addr(), Config{Delay: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p.RecordFirstFlight(true)
	for i := range 3 {
		c := dial(t, p)
		for j := range 5 {
			if _, err := c.Write(seqPacket(i*10+j, 100)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, time.Second, "packets queued", func() bool { return p.Stats().ClientToServer.Packets == 15 })
	p.Rebind()
	if err := p.Replay(); err != nil {
		t.Fatal(err)
	}
	if n := runtime.NumGoroutine(); n <= base {
		t.Fatalf("expected proxy goroutines, have %d (base %d)", n, base)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Close waits for its goroutines; allow the runtime a moment to reap them.
	waitFor(t, hangGuard, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
	if err := p.Replay(); err == nil {
		t.Fatal("Replay after Close succeeded")
	}
	p.Rebind()
	p.SetConfig(Config{})
	if st := p.Stats(); st.ClientToServer.Packets != 15 {
		t.Fatalf("stats after close: %+v", st)
	}
	time.Sleep(600 * time.Millisecond) // queued packets must not be sent after Close
	// Only the 5 replayed datagrams (sent directly) may have reached the
	// server; the 15 delayed ones were discarded by Close.
	if n := len(srv.snapshot()); n != 5 {
		t.Fatalf("server received %d packets, want only the 5 replayed", n)
	}
}

// TestRoundTripsIgnoreSlowEnds: RoundTrips counts the chain of datagrams
// across the link, not time, so an end that takes long to answer (here a
// server that holds each answer for 2.5 round-trip times, as a loaded
// machine might) adds nothing, and a burst sent before any answer is one
// round trip.
func TestRoundTripsIgnoreSlowEnds(t *testing.T) {
	srv, err := net.ListenUDP("udp4", loopback)
	if err != nil {
		t.Fatal(err)
	}
	const delay = 20 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			time.Sleep(5 * delay) // the slow end: the model of a busy server, not synchronisation
			_, _ = srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { srv.Close(); <-done })
	p := newProxy(t, srv.LocalAddr().String(), Config{Delay: delay})
	c := dial(t, p)
	for i := range 3 {
		if _, err := ping(c, seqPacket(i, 16), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if rt := p.RoundTrips(); rt != 3 {
		t.Errorf("3 exchanges, one after the other, with a slow server: RoundTrips = %d, want 3 (Span %v)", rt, p.Span())
	}

	p.ResetCounters()
	if rt := p.RoundTrips(); rt != 0 {
		t.Errorf("after ResetCounters: RoundTrips = %d", rt)
	}
	for i := range 4 {
		if _, err := c.Write(seqPacket(10+i, 16)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for range 4 {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("reading the burst's echoes: %v", err)
		}
	}
	if rt := p.RoundTrips(); rt != 1 {
		t.Errorf("a burst of 4 sent before any answer: RoundTrips = %d, want 1", rt)
	}
}
