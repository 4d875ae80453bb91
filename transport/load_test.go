package transport_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pscs/pscs/internal/israce"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/transport"
)

// The load test runs the server in a child process (this test binary, run
// as TestLoadServerProcess), so that its memory is the server's alone.

const loadServerEnv = "PSCS_LOAD_SERVER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(loadServerEnv); dir != "" {
		if err := loadServer(dir); err != nil {
			fmt.Fprintln(os.Stderr, "load server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// loadServer is the child: it serves with the certificates in dir, prints
// its address, and answers each "mem" line on standard input with its heap
// in use after a GC, its RSS, its open connections and goroutines.
func loadServer(dir string) error {
	srvCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	if err != nil {
		return err
	}
	clientPEM, _ := os.ReadFile(filepath.Join(dir, "client.pem"))
	block, _ := pem.Decode(clientPEM)
	if block == nil {
		return fmt.Errorf("no client certificate")
	}
	clientCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	enroll := transport.NewStaticEnrollment()
	enroll.Add("alice", clientCert)
	// One identity opens all the connections: what is measured is a
	// connection's memory, not the limit of one identity's connections.
	srv := &transport.Server{Handler: newHandler(), Enrollment: enroll,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}},
		Limits:    transport.Limits{ConnectionsPerIdentity: -1}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, pc)
	fmt.Printf("addr %s\n", pc.LocalAddr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "mem" {
			return nil
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("mem %d %d %d %d\n", ms.HeapInuse, rss(), srv.ActiveConnections(), runtime.NumGoroutine())
	}
	return nil
}

func rss() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestThousandConnections opens 1,000 connections that each make a request
// and then stay idle; the server keeps serving a delegate who logs in and
// signs, and its memory per idle connection is measured. Under the race
// detector (some ten times the CPU and memory per connection) it opens 200,
// so that it stays light on a loaded 2-core machine; make test runs it
// again without the race detector, with 1,000.
func TestThousandConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	n := 1000
	if israce.Enabled {
		n = 200
	}
	dir := t.TempDir()
	ca := testpki.NewCA("load CA")
	srvCert := ca.Issue("pscsd", testpki.Options{Server: true})
	alice := ca.Issue("alice", testpki.Options{})
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvCert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", srvCert.Certificate[0])
	writePEM(t, filepath.Join(dir, "server.key"), "PRIVATE KEY", keyDER)
	writePEM(t, filepath.Join(dir, "client.pem"), "CERTIFICATE", alice.Certificate[0])

	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), loadServerEnv+"="+dir)
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		child.Process.Kill()
		child.Wait()
	}()
	out := bufio.NewScanner(stdout)
	readLine := func(prefix string) []string {
		t.Helper()
		for out.Scan() {
			if f := strings.Fields(out.Text()); len(f) > 0 && f[0] == prefix {
				return f[1:]
			}
		}
		t.Fatalf("child process: no %q line", prefix)
		return nil
	}
	addr := readLine("addr")[0]
	mem := func() (heap, rss, conns int64) {
		t.Helper()
		io.WriteString(stdin, "mem\n")
		f := readLine("mem")
		heap, _ = strconv.ParseInt(f[0], 10, 64)
		rss, _ = strconv.ParseInt(f[1], 10, 64)
		conns, _ = strconv.ParseInt(f[2], 10, 64)
		return
	}
	heap0, rss0, _ := mem()

	// One UDP socket and QUIC transport for all client connections.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	tlsConf := &tls.Config{Certificates: []tls.Certificate{alice}, RootCAs: ca.Pool,
		NextProtos: []string{transport.ALPN}, ServerName: "127.0.0.1"}
	qconf := &quic.Config{MaxIdleTimeout: 2 * time.Minute, KeepAlivePeriod: 20 * time.Second,
		HandshakeIdleTimeout: 30 * time.Second}
	ping, _ := transport.Marshal(&transport.Request{Version: transport.ProtocolVersion, Op: transport.OpPing})

	conns := make([]*quic.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, n)
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			qc, err := tr.Dial(ctx, raddr, tlsConf, qconf)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = qc
			st, err := qc.OpenStreamSync(ctx)
			if err != nil {
				errs <- err
				return
			}
			st.Write(ping)
			st.Close()
			b, err := io.ReadAll(st)
			var resp transport.Response
			if err == nil {
				err = transport.Unmarshal(b, &resp)
			}
			if err == nil && resp.Status != transport.CodeOK {
				err = fmt.Errorf("ping: status %v", resp.Status)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("connection failed: %v", err)
	}
	setup := time.Since(start)
	defer func() {
		for _, qc := range conns {
			if qc != nil {
				qc.CloseWithError(0, "")
			}
		}
	}()
	heap1, rss1, active := mem()
	if active != int64(n) {
		t.Errorf("the server has %d connections open, want %d", active, n)
	}

	// The server keeps serving: a delegate logs in and signs.
	e := &env{ca: ca, addr: addr, alice: alice, handler: nil}
	c := e.dial(t, e.config(alice))
	login(t, c)
	for range 10 {
		if _, err := c.Sign(ctxT(t), &transport.SignRequest{Slot: 1, Key: 2, Mechanism: 0x1041, Data: make([]byte, 32)}); err != nil {
			t.Fatalf("signing with %d connections open: %v", n, err)
		}
	}
	t.Logf("%d connections opened and pinged in %v; server heap %d -> %d bytes (%.1f KiB per idle connection), RSS %d -> %d (%.1f KiB per connection)",
		n, setup.Round(time.Millisecond), heap0, heap1, float64(heap1-heap0)/float64(n)/1024, rss0, rss1, float64(rss1-rss0)/float64(n)/1024)
}
