// Package rig runs a pscs server in a test's process, for every test that
// needs a server with cards and a client of it: the server's own tests,
// the PKCS #11 module's and its applications'.
//
// [New] starts the usual one: one remote card "mayor" (slot 1) of one
// simulated PIV card with no latency, delegated to "alice" with the
// virtual PIN [VPIN], a clock the test moves, and alice's configuration
// file for processes the test starts. Round trips measured against it are
// the network's alone. [Start] starts one shaped by [Options] (more cards,
// latency, other delegates, an auditor); [Serve], [Member] and [Vault] are
// its parts, for tests that build a server of their own.
package rig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
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
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// VPIN is alice's virtual PIN in a rig from [New].
const VPIN = "1234"

// CardPIN is the simulated cards' PIN (pivsim's default).
const CardPIN = "123456"

// Delegate is an identity the rig enrolls, with its delegation on the
// rig's remote card opened by VPIN. The rig fills in the delegation's
// Delegate, Owner ("mayor") and Card ("mayor").
type Delegate struct {
	Name       string
	VPIN       string
	Delegation policy.Delegation
}

// Options shape a rig from [Start]. The zero value is no card, slot 0,
// no delegates and the real clock; [New] uses [Default].
type Options struct {
	Cards int    // simulated PIV cards in the remote card (0: none, the test adds its own)
	Seed  string // the cards' seeds: Seed, then Seed+"1", Seed+"2", …
	// OneSeed gives every card Seed: the same keys (for SameKeys).
	OneSeed bool
	Serial  uint32 // the first card's serial (0: pivsim's own)
	Latency pivsim.Latency
	Slots   map[pivsim.Slot]pivsim.SlotConfig // nil: pivsim.DefaultSlots
	// SameKeys makes the remote card a parallel one (rsc.Options.SameKeys).
	SameKeys bool
	// Chain is the remote card's server.Card.Chain.
	Chain []*x509.Certificate
	Slot  uint64 // the remote card's slot
	// Delegates are enrolled and granted in order; the first is the
	// rig's Config.
	Delegates []Delegate
	Audit     server.Auditor // nil: none
	Logger    *slog.Logger   // nil: discarded
	// Clock makes the server's clock one the test moves with
	// [Rig.Advance]; without it, the real clock.
	Clock bool
}

// Default is the rig of [New].
func Default() Options {
	return Options{Cards: 1, Seed: "pkcs11 rig", Serial: 77, SameKeys: true, Slot: 1, Clock: true,
		Delegates: []Delegate{{Name: "alice", VPIN: VPIN, Delegation: policy.Delegation{ID: "d1", MaxWrongVPIN: 3}}}}
}

// Rig is a running server. Its fields are for the test to act on the
// server (revoke, remove the card, move the clock).
type Rig struct {
	Server *server.Server
	Book   *policy.Book
	Pool   *rsc.Pool
	Member string         // the first card's member ID in Pool: its serial with Options.Serial, else "card0"
	Sims   []*pivsim.Card // the cards, in order
	Resets atomic.Int64   // card resets, all cards together
	Vault  *Vault
	Enroll *transport.StaticEnrollment
	CA     *testpki.CA
	Addr   string
	Certs  map[string]tls.Certificate // the delegates' certificates
	Config client.Config              // the first delegate's

	mu    sync.Mutex
	now   time.Time
	moved bool // Options.Clock

	log    *slog.Logger
	srv    *atomic.Pointer[server.Server] // for the pool's card events
	config server.Config                  // for Restart
	tls    *tls.Config
	stop   func() // stops serving and frees the port
}

// New starts the rig of [Default]; it stops when the test ends.
func New(t testing.TB) *Rig {
	t.Helper()
	return Start(t, Default())
}

// Start starts a rig shaped by o; it stops when the test ends.
func Start(t testing.TB, o Options) *Rig {
	t.Helper()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Rig{now: time.Now(), Vault: NewVault(), Enroll: transport.NewStaticEnrollment(),
		CA: testpki.NewCA("rig CA"), Certs: map[string]tls.Certificate{}, log: log, srv: new(atomic.Pointer[server.Server])}
	clock := time.Now
	if o.Clock {
		clock, r.moved = r.clock, true
	}
	r.Book = policy.NewBook(clock)
	// Cards joining or leaving reach the delegates as events, as in pscsd.
	srv := r.srv
	r.Pool = rsc.NewPool("mayor", rsc.Options{SameKeys: o.SameKeys, Logger: log, OnChange: func(int) {
		if s := srv.Load(); s != nil {
			s.CardChanged("mayor")
		}
	}})
	t.Cleanup(r.Pool.Close)
	for i := range o.Cards {
		seed := o.Seed
		if i > 0 && !o.OneSeed {
			seed = fmt.Sprint(o.Seed, i)
		}
		var serial uint32
		if o.Serial != 0 {
			serial = o.Serial + uint32(i)
		}
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(seed), Serial: serial, Latency: o.Latency, Slots: o.Slots})
		if err != nil {
			t.Fatal(err)
		}
		r.Sims = append(r.Sims, sim)
		id := fmt.Sprint("card", i)
		if o.Serial != 0 {
			id = fmt.Sprint(sim.Serial())
		}
		if i == 0 {
			r.Member = id
		}
		if err := r.Pool.Add(Member(t, id, CountResets{sim, &r.Resets}, log)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range o.Delegates {
		r.Delegate(d)
	}
	r.config = server.Config{Book: r.Book, Vault: r.Vault, Audit: o.Audit, Logger: log,
		Cards: []server.Card{{Name: "mayor", Slot: o.Slot, Pool: r.Pool, Chain: o.Chain}}}
	r.Server = server.New(r.config)
	srv.Store(r.Server)
	r.tls = serverTLS(r.CA)
	r.Addr, r.stop = serveAt(t, r.Server, r.Enroll, r.tls, log, "127.0.0.1:0")
	t.Cleanup(func() { r.stop() })
	if len(o.Delegates) > 0 {
		r.Config = r.ClientConfig(o.Delegates[0].Name)
	}
	return r
}

// Delegate enrolls d.Name with a new certificate, grants its delegation
// on the remote card and puts its VPIN in the vault; it returns the
// certificate. With [Options.Clock], a delegation with no NotAfter ends an
// hour after the rig's start.
func (r *Rig) Delegate(d Delegate) tls.Certificate {
	cert := r.CA.Issue(d.Name, testpki.Options{})
	r.Enroll.Add(d.Name, cert.Leaf)
	g := d.Delegation
	g.Owner, g.Delegate, g.Card = "mayor", d.Name, "mayor"
	if g.NotAfter.IsZero() && r.moved {
		g.NotAfter = r.now.Add(time.Hour)
	}
	r.Book.Grant(g)
	r.Vault.Add(g.ID, d.VPIN, CardPIN)
	r.Certs[d.Name] = cert
	return cert
}

// ClientConfig is the client configuration of an enrolled delegate.
func (r *Rig) ClientConfig(name string) client.Config {
	return client.Config{Addr: r.Addr, ServerName: "127.0.0.1", Certificate: r.Certs[name], RootCAs: r.CA.Pool}
}

// Dial connects a client with cert; it closes when the test ends.
func (r *Rig) Dial(t testing.TB, cert tls.Certificate) *client.Client {
	t.Helper()
	return Dial(t, client.Config{Addr: r.Addr, Certificate: cert, RootCAs: r.CA.Pool})
}

// Dial connects a client with cfg, within 20 s; it closes when the test
// ends.
func Dial(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Restart stops the server as pscsd stops (its connections are closed
// with CodeShutdown) and starts a new one on the same port, with the same
// cards, delegations and enrolment, as pscsd restarted on the same state:
// every login is forgotten. It returns when the new server listens.
func (r *Rig) Restart(t testing.TB) {
	t.Helper()
	r.stop()
	r.Server = server.New(r.config)
	r.srv.Store(r.Server)
	_, r.stop = serveAt(t, r.Server, r.Enroll, r.tls, r.log, r.Addr)
}

// DropConnections closes every connection and serves again on the same
// port with the same server, as when the network lost the connections:
// the server forgets the logins that were tied to them.
func (r *Rig) DropConnections(t testing.TB) {
	t.Helper()
	r.stop()
	_, r.stop = serveAt(t, r.Server, r.Enroll, r.tls, r.log, r.Addr)
}

// Serve serves h over QUIC on a private loopback port, with a server
// certificate from ca, to the identities enroll knows; it returns the
// address. It stops when the test ends.
func Serve(t testing.TB, h transport.Handler, enroll transport.Enrollment, ca *testpki.CA, log *slog.Logger) string {
	t.Helper()
	addr, stop := serveAt(t, h, enroll, serverTLS(ca), log, "127.0.0.1:0")
	t.Cleanup(stop)
	return addr
}

// serverTLS is the server's TLS configuration: a certificate from ca for
// 127.0.0.1.
func serverTLS(ca *testpki.CA) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{ca.Issue("127.0.0.1", testpki.Options{Server: true})}}
}

// serveAt serves h on a UDP socket at addr; it returns the socket's
// address and the function that stops serving and frees the port.
func serveAt(t testing.TB, h transport.Handler, enroll transport.Enrollment, tc *tls.Config, log *slog.Logger, addr string) (string, func()) {
	t.Helper()
	ts := &transport.Server{Handler: h, Enrollment: enroll, Logger: log, TLSConfig: tc}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ts.Serve(ctx, pc) }()
	return pc.LocalAddr().String(), func() { cancel(); <-done; pc.Close() }
}

// Member makes a pool member of a card in the test's hand (a PIV card)
// through a worker of its own; the worker stops when the test ends. A nil
// log discards.
func Member(t testing.TB, id string, card Card, log *slog.Logger) *rsc.Member {
	t.Helper()
	return MemberOf(t, id, cards.Direct(card), log)
}

// MemberOf is [Member] of a card that open connects to (a reader of
// pcscd, a card that fails on purpose).
func MemberOf(t testing.TB, id string, open cards.Opener, log *slog.Logger) *rsc.Member {
	t.Helper()
	return ProfileMember(t, id, open, piv.Profile{}, log)
}

// ProfileMember is [MemberOf] a card of another profile than PIV (an
// internal/memcard card: cards.Direct(card), card.Profile()).
func ProfileMember(t testing.TB, id string, open cards.Opener, profile profiles.Profile, log *slog.Logger) *rsc.Member {
	t.Helper()
	w := cards.NewWorker(open, log)
	t.Cleanup(func() { w.Close() })
	m, err := rsc.NewMember(context.Background(), id, w, profile)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Card is a card a test holds in its hand (a simulated one).
type Card interface {
	cards.Transmitter
	Reset()
}

// CountResets counts the resets of a simulated card in N.
type CountResets struct {
	*pivsim.Card
	N *atomic.Int64
}

// Reset counts, then resets the card.
func (c CountResets) Reset() { c.N.Add(1); c.Card.Reset() }

// Vault is a server.PINVault for tests: the real PIN per delegation,
// opened by comparing the virtual PIN. (pscsd's vault keeps only
// ciphertext.)
type Vault struct {
	mu        sync.Mutex
	vpin, pin map[string]string
	limit     bool
}

// NewVault returns an empty vault.
func NewVault() *Vault {
	return &Vault{vpin: map[string]string{}, pin: map[string]string{}}
}

// OpenPIN implements server.PINVault.
func (v *Vault) OpenPIN(_ context.Context, d string, vpin []byte) ([]byte, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.limit {
		return nil, server.ErrGuessLimit
	}
	if want, ok := v.vpin[d]; !ok || want != string(vpin) {
		return nil, server.ErrWrongVPIN
	}
	return []byte(v.pin[d]), nil
}

// Add seals pin for delegation d under vpin.
func (v *Vault) Add(d, vpin, pin string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.vpin[d], v.pin[d] = vpin, pin
}

// SetLimit makes the vault refuse every opening as a TPM at its guess
// limit does (server.ErrGuessLimit), or not.
func (v *Vault) SetLimit(on bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.limit = on
}

func (r *Rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

// Advance moves the server's clock (with [Options.Clock]).
func (r *Rig) Advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// WriteConfig writes the first delegate's configuration file
// (client.File) into dir, for a server at addr (empty: the rig's own
// address), and returns its path.
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
