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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// memVault is the shared rig's vault: the real PIN per delegation,
// opened by comparing the virtual PIN.
type memVault = testrig.Vault

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
	resets *atomic.Int64 // card resets, all cards together
	alice  tls.Certificate
	bob    tls.Certificate
	shared *testrig.Rig
}

// cardLatency and cardSlots are the simulated cards' latency and key
// layout in new rigs; in tests, zero and nil (pivsim.DefaultSlots).
var (
	cardLatency pivsim.Latency
	cardSlots   map[pivsim.Slot]pivsim.SlotConfig
)

// newRig serves the remote card "mayor" (slot 7) of cards simulated cards
// to alice (virtual PIN 2718, five wrong ones allowed) and bob (3141, one
// signature), on the shared test rig.
func newRig(t testing.TB, cards int, aud ...server.Auditor) *rig {
	t.Helper()
	return startRig(t, cards, false, aud...)
}

// newSameKeysRig is newRig of a parallel remote card whose cards hold the
// same keys (rsc.Options.SameKeys: the cards are simulated with one seed).
func newSameKeysRig(t testing.TB, cards int) *rig {
	t.Helper()
	return startRig(t, cards, true)
}

func startRig(t testing.TB, cards int, sameKeys bool, aud ...server.Auditor) *rig {
	t.Helper()
	r := &rig{audit: &memAudit{}}
	var auditor server.Auditor = r.audit
	if len(aud) > 0 {
		auditor = aud[0]
	}
	s := testrig.Start(t, testrig.Options{Cards: cards, Seed: "server", Latency: cardLatency, Slots: cardSlots, Slot: 7, Audit: auditor,
		SameKeys: sameKeys, OneSeed: sameKeys,
		Delegates: []testrig.Delegate{
			{Name: "alice", VPIN: "2718", Delegation: policy.Delegation{ID: "d-alice", MaxWrongVPIN: 5}},
			{Name: "bob", VPIN: "3141", Delegation: policy.Delegation{ID: "d-bob", Total: 1}},
		}})
	r.shared, r.srv, r.book, r.sims, r.pool, r.ca, r.enroll, r.vault, r.addr, r.resets =
		s, s.Server, s.Book, s.Sims, s.Pool, s.CA, s.Enroll, s.Vault, s.Addr, &s.Resets
	r.alice, r.bob = s.Certs["alice"], s.Certs["bob"]
	return r
}

// delegate enrolls a new identity, name, with a certificate of its own
// and a delegation of its own ("d-"+name, no limits) on the rig's remote
// card, opened with the virtual PIN vpin; it returns the certificate.
func (r *rig) delegate(name, vpin string) tls.Certificate {
	return r.shared.Delegate(testrig.Delegate{Name: name, VPIN: vpin, Delegation: policy.Delegation{ID: "d-" + name, MaxWrongVPIN: 5}})
}

// countResets counts the resets of a simulated card.
type countResets = testrig.CountResets

func member(t testing.TB, id string, sim countResets) *rsc.Member {
	t.Helper()
	return testrig.Member(t, id, sim, nil)
}

func (r *rig) dial(t testing.TB, cert tls.Certificate) *client.Client {
	t.Helper()
	return r.shared.Dial(t, cert)
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
