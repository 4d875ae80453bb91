package main

// Floods against a real pscsd (pscsd --demo on private ports, in its own
// process), each with a second, honest delegate signing throughout on a
// remote card of its own ("ceo"), while the flood comes from the demo
// delegate (whose remote card is "mayor") or from nobody at all. Each
// reports pscsd's RSS (VmRSS) idle, at its peak and after the flood has
// settled (-flood.settle, 60 s), the honest delegate's p50/p99 signing
// time unloaded and under the flood, and every refusal it got.
//
//	go test -run '^$' -bench Flood -benchtime 1x ./server/cmd/pscsd
//
// The sizes are flags (the benchmark runs once: -benchtime 1x):
// -flood.handshakes (20,000), -flood.requests (1,000,000), -flood.hold
// (how long the held streams stay, 20 s), -flood.settle (60 s),
// -flood.limits FILE (pscsd --demo --limits FILE).

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/transport"
)

var (
	floodHandshakes = flag.Int("flood.handshakes", 20000, "BenchmarkFlood/handshakes: handshakes started and never finished")
	floodRequests   = flag.Int("flood.requests", 1_000_000, "BenchmarkFlood/requests: requests sent by the flooding delegate")
	floodHold       = flag.Duration("flood.hold", 20*time.Second, "BenchmarkFlood/streams: how long the flood holds its streams")
	floodSettle     = flag.Duration("flood.settle", 60*time.Second, "how long after the flood pscsd's RSS is measured")
	floodLimits     = flag.String("flood.limits", "", "a JSON file of limits for pscsd --demo --limits (default: pscsd's defaults)")
	floodUnloaded   = flag.Int("flood.unloaded", 100, "signatures of the honest delegate without a flood, for its unloaded p50/p99")
)

// demoServer is pscsd --demo running in a state directory of its own.
type demoServer struct {
	cmd     *exec.Cmd
	state   string
	metrics string // host:port of /metrics
	log     logBuffer
	flooder client.Config // the demo delegate: "mayor"
	vpin    []byte
}

func startFloodDemo(b *testing.B) *demoServer {
	b.Helper()
	bin := buildPSCSD(b)
	d := &demoServer{state: filepath.Join(b.TempDir(), "state")}
	args := []string{"--demo", "--state", d.state}
	if *floodLimits != "" {
		abs, _ := filepath.Abs(*floodLimits)
		args = append(args, "--limits", abs)
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		d.cmd.Process.Signal(os.Interrupt)
		d.cmd.Wait()
		if b.Failed() {
			b.Logf("pscsd said:\n%s", d.log.String())
		}
	})
	conf := filepath.Join(d.state, "demo", "client.conf")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if m := regexp.MustCompile(`metrics and health: http://([^/]+)/metrics`).FindStringSubmatch(d.log.String()); m != nil {
			d.metrics = m[1]
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("pscsd --demo not ready after 2 minutes:\n%s", d.log.String())
		}
	}
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		b.Fatal(err)
	}
	d.flooder = cfg
	vpin, err := os.ReadFile(filepath.Join(d.state, "demo", "vpin"))
	if err != nil {
		b.Fatal(err)
	}
	d.vpin = []byte(strings.TrimSpace(string(vpin)))
	return d
}

// rss is pscsd's resident set size, in bytes.
func (d *demoServer) rss() int64 {
	s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// limitRefusals reads pscs_limit_refusals_total from /metrics.
func (d *demoServer) limitRefusals(b *testing.B) string {
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "pscs_limit_refusals_total{") && !strings.HasSuffix(l, " 0") {
			out = append(out, strings.TrimPrefix(l, "pscs_limit_refusals_total"))
		}
	}
	return strings.Join(out, " ")
}

// procMemory is pscsd's RSS by kind (anonymous, file, shared memory) and
// its thread count, from /proc.
func (d *demoServer) procMemory() string {
	s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	var out []string
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "RssAnon:" || f[0] == "RssFile:" || f[0] == "RssShmem:" || f[0] == "Threads:") {
			out = append(out, strings.Join(f, " "))
		}
	}
	return strings.Join(out, ", ")
}

// goMemory reads pscsd's Go memory figures from /metrics (go_memstats_*,
// in MiB): what the heap holds, what is free in it, what went back to
// the system, the stacks and all the runtime took from the system.
func (d *demoServer) goMemory() string {
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch name := strings.TrimPrefix(f[0], "go_memstats_"); name {
		case "heap_alloc_bytes", "heap_inuse_bytes", "heap_idle_bytes", "heap_released_bytes", "stack_inuse_bytes", "sys_bytes", "next_gc_bytes":
			v, _ := strconv.ParseFloat(f[1], 64)
			out = append(out, fmt.Sprintf("%s %.1f", strings.TrimSuffix(name, "_bytes"), v/(1<<20)))
		}
	}
	return strings.Join(out, ", ")
}

// honest enrolls a second delegate through the demo owner's
// administration requests (issue, register the "ceo" card's PIN,
// delegate it), logs it in and returns its client.
func (d *demoServer) honest(b *testing.B) *client.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ownerCfg, err := client.LoadConfig(filepath.Join(d.state, "demo", "owner", "client.conf"))
	if err != nil {
		b.Fatal(err)
	}
	owner, err := client.Dial(ctx, ownerCfg)
	if err != nil {
		b.Fatal(err)
	}
	defer owner.Close()
	pass, err := os.ReadFile(filepath.Join(d.state, "demo", "owner", "passphrase"))
	if err != nil {
		b.Fatal(err)
	}
	passphrase := []byte(strings.TrimSpace(string(pass)))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	var issued transport.AdminResponse
	if err := owner.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminIssue, Name: "honest", PublicKey: pub}, nil, &issued); err != nil {
		b.Fatal("issue:", err)
	}
	secret, _ := transport.Marshal(&transport.AdminSecret{PIN: []byte(demoPIN), Passphrase: passphrase})
	if err := owner.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "ceo"}, secret, nil); err != nil {
		b.Fatal("register-pin:", err)
	}
	secret, _ = transport.Marshal(&transport.AdminSecret{Passphrase: passphrase})
	var del transport.AdminResponse
	if err := owner.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminDelegate,
		Delegation: &transport.AdminDelegation{Delegate: "honest", Card: "ceo"}}, secret, &del); err != nil {
		b.Fatal("delegate:", err)
	}
	cfg := ownerCfg
	cfg.Certificate = tls.Certificate{Certificate: [][]byte{issued.Certificate}, PrivateKey: key}
	cfg.SessionCache = nil
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if _, err := c.Login(ctx, 2, []byte(del.VPIN)); err != nil {
		b.Fatal("honest login:", err)
	}
	return c
}

// signer is the honest delegate signing one signature after another.
type signer struct {
	c        *client.Client
	mu       sync.Mutex
	times    []time.Duration
	refusals map[string]int
}

func (s *signer) sign() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.c.Sign(ctx, &transport.SignRequest{Slot: 2, Key: 1, Mechanism: 0x1044, Data: []byte("an honest document")})
	d := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.refusals == nil {
			s.refusals = map[string]int{}
		}
		var te *transport.Error
		if errors.As(err, &te) {
			s.refusals[fmt.Sprintf("%d %v", te.Code, te.Code)]++
		} else {
			s.refusals[err.Error()]++
		}
		return
	}
	s.times = append(s.times, d)
}

// run signs until stop is closed.
func (s *signer) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
			s.sign()
		}
	}
}

func (s *signer) percentiles() (p50, p99 time.Duration, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := slices.Clone(s.times)
	slices.Sort(t)
	if len(t) == 0 {
		return 0, 0, 0
	}
	return t[len(t)*50/100], t[min(len(t)-1, len(t)*99/100)], len(t)
}

func (s *signer) busy() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.refusals {
		if strings.HasPrefix(k, "18 ") {
			n += v
		}
	}
	return n
}

// floodRun runs flood against a fresh pscsd with the honest delegate
// signing, and reports the figures.
func floodRun(b *testing.B, flood func(b *testing.B, d *demoServer) string) {
	d := startFloodDemo(b)
	h := &signer{c: d.honest(b)}
	for range 5 { // warm
		h.sign()
	}
	// Idle: what pscsd holds with nothing to do, once it has had the
	// time to return its start's garbage (two checks of releaseMemory).
	time.Sleep(2*releaseEvery + time.Second)
	idle := d.rss()
	b.Logf("pscsd's Go memory idle (MiB): %s; %s", d.goMemory(), d.procMemory())
	for range *floodUnloaded {
		h.sign()
	}
	u50, u99, _ := h.percentiles()
	unloadedRefusals := fmt.Sprint(h.refusals)
	h.times, h.refusals = nil, nil

	var peak atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), d.rss()))
			select {
			case <-sampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	stop := make(chan struct{})
	signed := make(chan struct{})
	go func() { defer close(signed); h.run(stop) }()
	b.ResetTimer()
	start := time.Now()
	what := flood(b, d)
	took := time.Since(start)
	b.StopTimer()
	close(stop)
	<-signed
	close(sampling)
	<-sampled
	end := time.Now()
	p50, p99, n := h.percentiles()
	b.Logf("pscsd's Go memory at the flood's end (MiB): %s; %s", d.goMemory(), d.procMemory())
	time.Sleep(time.Until(end.Add(*floodSettle)))
	after := d.rss()
	b.Logf("pscsd's Go memory %v after (MiB): %s; %s", *floodSettle, d.goMemory(), d.procMemory())

	const mib = 1 << 20
	b.ReportMetric(float64(idle)/mib, "idle-MiB")
	b.ReportMetric(float64(peak.Load())/mib, "peak-MiB")
	b.ReportMetric(float64(after)/mib, "after-MiB")
	b.ReportMetric(float64(u99.Microseconds())/1000, "unloaded-p99-ms")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(h.busy()), "honest-busy")
	b.Logf("%s in %v", what, took.Round(time.Millisecond))
	b.Logf("pscsd RSS: idle %.1f MiB, peak %.1f MiB, %v after the flood %.1f MiB (goals: < 512 MiB; < 2× idle = %.1f MiB)",
		float64(idle)/mib, float64(peak.Load())/mib, *floodSettle, float64(after)/mib, 2*float64(idle)/mib)
	b.Logf("honest delegate: unloaded p50 %v p99 %v (refusals %s); under the flood %d signatures, p50 %v p99 %v (goal p99 < %v); refusals %v",
		u50.Round(time.Microsecond), u99.Round(time.Microsecond), unloadedRefusals, n, p50.Round(time.Microsecond), p99.Round(time.Microsecond),
		2*u99.Round(time.Microsecond), h.refusals)
	b.Logf("pscsd's limit refusals: %s", d.limitRefusals(b))
}

// BenchmarkFlood: the three floods of issue 9.
func BenchmarkFlood(b *testing.B) {
	b.Run("handshakes", func(b *testing.B) { floodRun(b, handshakeFlood) })
	b.Run("streams", func(b *testing.B) { floodRun(b, floodStreams) })
	b.Run("requests", func(b *testing.B) { floodRun(b, floodSignedRequests) })
}

// sink is a client socket that sends and never receives: a client that
// starts handshakes it never finishes, as one from spoofed addresses.
type sink struct {
	net.PacketConn
	once   sync.Once
	closed chan struct{}
}

func (s *sink) ReadFrom([]byte) (int, net.Addr, error) {
	<-s.closed
	return 0, nil, net.ErrClosed
}

func (s *sink) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.PacketConn.Close()
}

// handshakeFlood starts -flood.handshakes QUIC handshakes and never
// finishes one: each dial sends its Initial packets (a TLS ClientHello)
// for 200 ms, sees no answer, and is dropped without a word to pscsd.
func handshakeFlood(b *testing.B, d *demoServer) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &sink{PacketConn: pc, closed: make(chan struct{})}
	tr := &quic.Transport{Conn: s}
	defer func() { s.Close(); tr.Close() }()
	raddr, _ := net.ResolveUDPAddr("udp", d.flooder.Addr)
	tc := &tls.Config{Certificates: []tls.Certificate{d.flooder.Certificate}, RootCAs: d.flooder.RootCAs,
		NextProtos: []string{transport.ALPN}, ServerName: d.flooder.ServerName}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for range *floodHandshakes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			tr.Dial(ctx, raddr, tc, &quic.Config{HandshakeIdleTimeout: time.Minute})
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d unfinished handshakes", *floodHandshakes)
}

// floodStreams opens as many connections as the demo delegate may (and a
// few more), and on each as many streams as the identity may have, each
// with 60 KiB of a request never finished; it holds them -flood.hold.
func floodStreams(b *testing.B, d *demoServer) string {
	const conns = transport.DefaultConnectionsPerIdentity + 4
	ctx, cancel := context.WithTimeout(context.Background(), *floodHold)
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	defer func() { tr.Close(); pc.Close() }()
	raddr, _ := net.ResolveUDPAddr("udp", d.flooder.Addr)
	tc := &tls.Config{Certificates: []tls.Certificate{d.flooder.Certificate}, RootCAs: d.flooder.RootCAs,
		NextProtos: []string{transport.ALPN}, ServerName: d.flooder.ServerName}
	var opened, reset atomic.Int64
	var wg sync.WaitGroup
	chunk := make([]byte, 60<<10)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qc, err := tr.Dial(ctx, raddr, tc, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 5 * time.Second})
			if err != nil {
				return
			}
			defer qc.CloseWithError(0, "")
			// As many as the identity may hold, on each connection: all
			// but StreamsPerIdentity of them are refused, once. (Opening
			// new streams for those refused, again and again, is another
			// flood: of stream churn; the rate limit bounds what it gets
			// read, not what it costs QUIC.)
			for range transport.DefaultStreamsPerIdentity {
				st, err := qc.OpenStreamSync(ctx)
				if err != nil {
					break
				}
				opened.Add(1)
				wg.Add(1)
				go func() {
					defer wg.Done()
					st.SetWriteDeadline(time.Now().Add(*floodHold))
					if _, err := st.Write(chunk); err != nil {
						var se *quic.StreamError
						if errors.As(err, &se) {
							reset.Add(1)
						}
					}
				}()
			}
			<-ctx.Done()
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d connections of one identity, %d streams opened with 60 KiB each and held %v (%d reset by pscsd)",
		conns, opened.Load(), *floodHold, reset.Load())
}

// floodSignedRequests has the demo delegate, logged in, send
// -flood.requests signed signature requests as fast as it can, 256 at a
// time (the unfinished requests it may have) over 4 connections.
func floodSignedRequests(b *testing.B, d *demoServer) string {
	ctx := context.Background()
	const conns, each = 4, transport.DefaultStreamsPerIdentity / 4
	var next atomic.Int64
	var mu sync.Mutex
	codes := map[transport.Code]int{}
	var wg sync.WaitGroup
	for range conns {
		cfg := d.flooder
		cfg.Retries = -1
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Login(ctx, 1, d.vpin); err != nil {
			b.Fatal("flooder login:", err)
		}
		for range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := map[transport.Code]int{}
				for next.Add(1) <= int64(*floodRequests) {
					_, err := c.Sign(ctx, &transport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1044, Data: []byte("flood")})
					local[transport.CodeOf(err)]++
				}
				mu.Lock()
				for k, v := range local {
					codes[k] += v
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	var parts []string
	for k, v := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", v, k))
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d signed requests from one delegate (answers by code: %s)", *floodRequests, strings.Join(parts, " "))
}
