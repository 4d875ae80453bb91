// Package rig runs a pscs server in a test's process for the PKCS #11
// module's tests: one remote card "mayor" (slot 1) of one simulated PIV
// card with no latency, delegated to "alice" with the virtual PIN [VPIN],
// a clock the test moves, and alice's configuration file for processes
// the test starts. Round trips measured against it are the network's
// alone.
package rig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// VPIN is alice's virtual PIN.
const VPIN = "1234"

// Rig is a running server. Its fields are for the test to act on the
// server (revoke, remove the card, move the clock).
type Rig struct {
	Server *server.Server
	Book   *policy.Book
	Pool   *rsc.Pool
	Member string // the card's member ID in Pool
	Config client.Config
	CA     *testpki.CA

	mu  sync.Mutex
	now time.Time

	log   *slog.Logger
	srv   *atomic.Pointer[server.Server]
	ts    *transport.Server
	stop  func() // stops serving and frees the port
	cards []server.Card
}

// vault opens the card's PIN (pivsim's default) with VPIN.
type vault struct{}

func (vault) OpenPIN(_ context.Context, _ string, vpin []byte) ([]byte, error) {
	if string(vpin) != VPIN {
		return nil, server.ErrWrongVPIN
	}
	return []byte("123456"), nil
}

// New starts a server; it stops when the test ends.
func New(t testing.TB) *Rig {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	r := &Rig{now: time.Now(), log: log}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Cards joining or leaving reach the delegates as events, as in pscsd.
	srv := new(atomic.Pointer[server.Server])
	r.srv = srv
	r.Pool = rsc.NewPool("mayor", rsc.Options{SameKeys: true, Logger: log, OnChange: func(int) {
		if s := srv.Load(); s != nil {
			s.CardChanged("mayor")
		}
	}})
	t.Cleanup(r.Pool.Close)
	sim, err := pivsim.New(pivsim.Config{Seed: []byte("pkcs11 rig"), Serial: 77})
	if err != nil {
		t.Fatal(err)
	}
	w := cards.NewWorker(cards.Direct(sim), log)
	t.Cleanup(func() { w.Close() })
	m, err := rsc.NewMember(ctx, "77", w, piv.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Pool.Add(m); err != nil {
		t.Fatal(err)
	}
	r.Member = "77"
	r.Book = policy.NewBook(r.clock)
	r.Book.Grant(policy.Delegation{ID: "d1", Owner: "mayor", Delegate: "alice", Card: "mayor",
		NotAfter: r.now.Add(time.Hour), MaxWrongVPIN: 3})
	r.cards = []server.Card{{Name: "mayor", Slot: 1, Pool: r.Pool}}
	r.Server = server.New(server.Config{Book: r.Book, Vault: vault{}, Logger: log, Cards: r.cards})
	srv.Store(r.Server)

	r.CA = testpki.NewCA("pkcs11 rig CA")
	alice := r.CA.Issue("alice", testpki.Options{})
	enroll := transport.NewStaticEnrollment()
	enroll.Add("alice", alice.Leaf)
	r.ts = &transport.Server{Handler: r.Server, Enrollment: enroll, Logger: log,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{r.CA.Issue("127.0.0.1", testpki.Options{Server: true})}}}
	addr := r.serve(t, "127.0.0.1:0")
	t.Cleanup(func() { r.stop() })
	r.Config = client.Config{Addr: addr, ServerName: "127.0.0.1", Certificate: alice, RootCAs: r.CA.Pool}
	return r
}

// serve serves on a UDP socket at addr and returns its address.
func (r *Rig) serve(t testing.TB, addr string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ts := r.ts
	go func() { defer close(done); ts.Serve(ctx, pc) }()
	r.stop = func() { cancel(); <-done; pc.Close() }
	return pc.LocalAddr().String()
}

// Restart stops the server as pscsd stops (its connections are closed
// with CodeShutdown) and starts a new one on the same port, with the same
// cards, delegations and enrolment, as pscsd restarted on the same state:
// every login is forgotten. It returns when the new server listens.
func (r *Rig) Restart(t testing.TB) {
	t.Helper()
	r.stop()
	r.Server = server.New(server.Config{Book: r.Book, Vault: vault{}, Logger: r.log, Cards: r.cards})
	r.srv.Store(r.Server)
	r.ts = &transport.Server{Handler: r.Server, Enrollment: r.ts.Enrollment, Logger: r.log, TLSConfig: r.ts.TLSConfig}
	r.serve(t, r.Config.Addr)
}

// DropConnections closes every connection and serves again on the same
// port with the same server, as when the network lost the connections:
// the server forgets the logins that were tied to them.
func (r *Rig) DropConnections(t testing.TB) {
	t.Helper()
	r.stop()
	r.ts = &transport.Server{Handler: r.Server, Enrollment: r.ts.Enrollment, Logger: r.log, TLSConfig: r.ts.TLSConfig}
	r.serve(t, r.Config.Addr)
}

func (r *Rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

// Advance moves the server's clock.
func (r *Rig) Advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// WriteConfig writes alice's configuration file (client.File) into dir,
// for a server at addr (empty: the rig's own address), and returns its
// path.
func (r *Rig) WriteConfig(t testing.TB, dir, addr string) string {
	t.Helper()
	if addr == "" {
		addr = r.Config.Addr
	}
	key, err := x509.MarshalPKCS8PrivateKey(r.Config.Certificate.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ca.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.CA.Cert.Raw}),
		"alice.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Config.Certificate.Certificate[0]}),
		"alice.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}
	conf, _ := json.Marshal(client.File{Server: addr, ServerName: "127.0.0.1", CA: "ca.pem", Certificate: "alice.pem", Key: "alice.key"})
	files["client.conf"] = conf
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "client.conf")
}
