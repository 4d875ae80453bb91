package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
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

// memVault is a PINVault for tests: the real PIN per delegation, opened by
// comparing the virtual PIN. (pscsd's vault keeps only ciphertext.)
type memVault struct {
	mu        sync.Mutex
	vpin, pin map[string]string
	limit     bool // refuse as a TPM at its guess limit (ErrGuessLimit)
}

func (v *memVault) OpenPIN(_ context.Context, d string, vpin []byte) ([]byte, error) {
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

func (v *memVault) add(d, vpin, pin string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.vpin[d], v.pin[d] = vpin, pin
}

type memAudit struct {
	mu      sync.Mutex
	records []*server.AuditRecord
}

func (a *memAudit) Record(_ context.Context, r *server.AuditRecord) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.records = append(a.records, r)
	return nil
}

func (a *memAudit) codes() []transport.Code {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []transport.Code
	for _, r := range a.records {
		out = append(out, r.Code)
	}
	return out
}

type rig struct {
	srv    *server.Server
	book   *policy.Book
	audit  *memAudit
	sims   []*pivsim.Card
	pool   *rsc.Pool // the remote card "mayor"
	ca     *testpki.CA
	enroll *transport.StaticEnrollment
	vault  *memVault
	addr   string
	resets atomic.Int64 // card resets, all cards together
	alice  tls.Certificate
	bob    tls.Certificate
	cancel func()
}

// cardLatency and cardSlots are the simulated cards' latency and key
// layout in new rigs; in tests, zero and nil (pivsim.DefaultSlots).
var (
	cardLatency pivsim.Latency
	cardSlots   map[pivsim.Slot]pivsim.SlotConfig
)

func newRig(t testing.TB, cards int, aud ...server.Auditor) *rig {
	t.Helper()
	r := &rig{book: policy.NewBook(nil), audit: &memAudit{}, ca: testpki.NewCA("rig CA")}
	pool := rsc.NewPool("mayor", rsc.Options{})
	t.Cleanup(pool.Close)
	r.pool = pool
	for i := range cards {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(fmt.Sprint("server", i)), Latency: cardLatency, Slots: cardSlots})
		if err != nil {
			t.Fatal(err)
		}
		r.sims = append(r.sims, sim)
		pool.Add(member(t, fmt.Sprint("card", i), countResets{sim, &r.resets}))
	}
	r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5})
	r.book.Grant(policy.Delegation{ID: "d-bob", Owner: "mayor", Delegate: "bob", Card: "mayor", Total: 1})
	r.vault = &memVault{vpin: map[string]string{"d-alice": "2718", "d-bob": "3141"},
		pin: map[string]string{"d-alice": "123456", "d-bob": "123456"}}
	var auditor server.Auditor = r.audit
	if len(aud) > 0 {
		auditor = aud[0]
	}
	r.srv = server.New(server.Config{Book: r.book, Vault: r.vault, Audit: auditor,
		Cards: []server.Card{{Name: "mayor", Slot: 7, Pool: pool}}})

	r.enroll = transport.NewStaticEnrollment()
	r.alice = r.ca.Issue("alice", testpki.Options{})
	r.bob = r.ca.Issue("bob", testpki.Options{})
	r.enroll.Add("alice", r.alice.Leaf)
	r.enroll.Add("bob", r.bob.Leaf)
	ts := &transport.Server{Handler: r.srv, Enrollment: r.enroll,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{r.ca.Issue("pscsd", testpki.Options{Server: true})}}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = pc.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ts.Serve(ctx, pc) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	return r
}

// delegate enrolls a new identity, name, with a certificate of its own
// and a delegation of its own ("d-"+name, no limits) on the rig's remote
// card, opened with the virtual PIN vpin; it returns the certificate.
func (r *rig) delegate(name, vpin string) tls.Certificate {
	cert := r.ca.Issue(name, testpki.Options{})
	r.enroll.Add(name, cert.Leaf)
	r.book.Grant(policy.Delegation{ID: "d-" + name, Owner: "mayor", Delegate: name, Card: "mayor", MaxWrongVPIN: 5})
	r.vault.add("d-"+name, vpin, "123456")
	return cert
}

// countResets counts the resets of a simulated card.
type countResets struct {
	*pivsim.Card
	n *atomic.Int64
}

func (c countResets) Reset() { c.n.Add(1); c.Card.Reset() }

func member(t testing.TB, id string, sim countResets) *rsc.Member {
	t.Helper()
	w := cards.NewWorker(cards.Direct(sim), nil)
	t.Cleanup(func() { w.Close() })
	m, err := rsc.NewMember(context.Background(), id, w, piv.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *rig) dial(t testing.TB, cert tls.Certificate) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx(t), client.Config{Addr: r.addr, Certificate: cert, RootCAs: r.ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func isCode(err error, code transport.Code) bool {
	return errors.Is(err, &transport.Error{Code: code})
}

// verifyRaw checks a PKCS #11 ECDSA signature (r||s) with a DER certificate.
func verifyRaw(t *testing.T, certDER, digest, sig []byte) {
	t.Helper()
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		t.Fatal(err)
	}
	pub := cert.PublicKey.(*ecdsa.PublicKey)
	n := len(sig) / 2
	if !ecdsa.Verify(pub, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
		t.Error("signature does not verify under the returned certificate")
	}
}

func TestDelegateSigns(t *testing.T) {
	r := newRig(t, 2)
	c := r.dial(t, r.alice)
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(hello.Catalogue.Slots) != 1 || hello.Catalogue.Slots[0].ID != 7 || hello.Catalogue.Slots[0].Cards != 2 {
		t.Fatalf("catalogue: %+v", hello.Catalogue)
	}
	slot := hello.Catalogue.Slots[0]
	if len(slot.Objects) < 8 || len(slot.Mechanisms) == 0 {
		t.Errorf("slot has %d objects and %d mechanisms", len(slot.Objects), len(slot.Mechanisms))
	}
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	doc := []byte("The mayor approves the 2027 budget.")
	digest := sha256.Sum256(doc)
	for range 4 {
		resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: doc}) // CKM_ECDSA_SHA256, 9A
		if err != nil {
			t.Fatal(err)
		}
		verifyRaw(t, resp.Certificate, digest[:], resp.Signature)
	}
	// Both cards of the parallel remote card served.
	for i, sim := range r.sims {
		if sim.PINRetries() != 3 {
			t.Errorf("card %d: PIN retries %d", i, sim.PINRetries())
		}
	}
	if got := r.audit.codes(); len(got) != 5 {
		t.Errorf("audit has %d records (%v), want login + 4 signatures", len(got), got)
	}
}

// TestWrongVPINsNeverReachTheCard: a thousand wrong virtual PINs lock the
// delegation and never cost the card a try; the owner unlocks it.
func TestWrongVPINsNeverReachTheCard(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	locked := 0
	for i := range 1000 {
		_, err := c.Login(ctx(t), 7, []byte(fmt.Sprintf("%04d", i))) // 0000-0999: never 2718
		switch {
		case isCode(err, transport.CodeWrongPIN):
		case isCode(err, transport.CodeLocked):
			locked++
		default:
			t.Fatalf("wrong vPIN %d: %v", i, err)
		}
	}
	if locked != 1000-4 {
		t.Errorf("%d refusals as locked, want %d (locked at the 5th wrong vPIN)", locked, 996)
	}
	if got := r.sims[0].PINRetries(); got != 3 {
		t.Fatalf("the card's PIN retry counter moved to %d", got)
	}
	if _, err := c.Login(ctx(t), 7, []byte("2718")); !isCode(err, transport.CodeLocked) {
		t.Errorf("right vPIN on a locked delegation: %v", err)
	}
	r.book.Unlock("d-alice")
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Errorf("after the owner unlocked: %v", err)
	}
}

func TestRevocationDuringSession(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	req := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")}
	if _, err := c.Sign(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	r.srv.Revoke("d-alice")
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeRevoked) {
		t.Errorf("the very next request after revocation: %v, want revoked", err)
	}
	select {
	case ev := <-c.Events():
		if ev.Kind != transport.EventRevoked || ev.Slot != 7 {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Error("no revocation event")
	}
}

func TestLimitsAndRefusals(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.bob)
	req := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")}
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeNotLoggedIn) {
		t.Errorf("sign before login: %v", err)
	}
	if _, err := c.Login(ctx(t), 7, []byte("3141")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeLimitReached) {
		t.Errorf("second signature of a one-signature delegation: %v", err)
	}
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 9, Key: 1, Mechanism: 0x1044, Data: []byte("x")}); !isCode(err, transport.CodeNoSuchSlot) {
		t.Errorf("unknown slot: %v", err)
	}
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x9999, Data: []byte("x")}); !isCode(err, transport.CodeMechanism) {
		t.Errorf("unknown mechanism: %v", err)
	}
	// The owner moves the delegation to tomorrow: refused at once, on the
	// open session.
	r.book.Grant(policy.Delegation{ID: "d-bob", Delegate: "bob", Card: "mayor", NotBefore: time.Now().Add(24 * time.Hour)})
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeOutsideWindow) {
		t.Errorf("outside the validity window: %v", err)
	}
	codes := r.audit.codes()
	if len(codes) < 5 || codes[0] != transport.CodeNotLoggedIn {
		t.Errorf("audit codes %v", codes)
	}
}

// TestParallelWrongVPINs: guesses in parallel, on several connections,
// cannot outrun the lockout.
func TestParallelWrongVPINs(t *testing.T) {
	r := newRig(t, 1)
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for c := range 4 {
		cl := r.dial(t, r.alice)
		for g := range 25 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := cl.Login(ctx(t), 7, []byte(fmt.Sprintf("9%03d", c*100+g)))
				if isCode(err, transport.CodeWrongPIN) {
					wrong.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if got := wrong.Load(); got > 4 {
		t.Errorf("%d guesses were checked before the lockout, want at most 4", got)
	}
	if _, st, _ := r.book.Get("d-alice"); !st.Locked {
		t.Error("the delegation is not locked")
	}
}

// TestLogoutEndsSigning: after logout, no key signs, not even one that
// needs no PIN on the card (9E).
func TestLogoutEndsSigning(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	req := &transport.SignRequest{Slot: 7, Key: 10, Mechanism: 0x1045, Data: []byte("x")} // 9E, P-384
	if _, err := c.Sign(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout(ctx(t), 7); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeNotLoggedIn) {
		t.Errorf("9E after logout: %v, want not logged in", err)
	}
	// A mechanism for another key type is refused.
	c.Login(ctx(t), 7, []byte("2718"))
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1044, Data: []byte("x")}); !isCode(err, transport.CodeMechanism) {
		t.Errorf("ECDSA on the RSA key 9C: %v, want mechanism", err)
	}
}

// TestChangedRealPINLocksTheCard: when the card refuses the registered real
// PIN (the owner changed it), delegations on the card lock after one try,
// so delegates cannot run the card's counter down.
func TestChangedRealPINLocksTheCard(t *testing.T) {
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	// The owner changes the card's PIN behind pscsd's back.
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	chg := append([]byte{0x00, 0x24, 0x00, 0x80, 0x10}, []byte("123456\xff\xff777777\xff\xff")...)
	if rsp, err := r.sims[0].Transmit(context.Background(), chg); err != nil || rsp[0] != 0x90 {
		t.Fatalf("changing the card's PIN: %X, %v", rsp, err)
	}
	req := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")}
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeLocked) {
		t.Errorf("sign with a stale real PIN: %v, want locked", err)
	}
	if _, err := c.Sign(ctx(t), req); !isCode(err, transport.CodeLocked) {
		t.Errorf("sign again: %v, want locked", err)
	}
	if got := r.sims[0].PINRetries(); got != 2 {
		t.Errorf("the card lost %d tries, want 1", 3-got)
	}
}
