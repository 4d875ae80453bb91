package server_test

// Cards that another program changes while pscsd serves them, and what a
// card's errors leave in pscsd's log. The cards are simulators in process,
// so no reset tells pscsd of the change: it learns of it from the card's
// answers (cards behind pcscd, reset by the program that changed them, are
// in server/rsc's TestKeysReadAgainAfterReset and pscsd's
// TestCardChangesUnderPSCSD).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/swapcard"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// logRecords is a slog.Handler that keeps every record, with the
// attributes of the logger it came through.
type logRecords struct {
	mu    *sync.Mutex
	recs  *[]map[string]string
	attrs []slog.Attr
}

func newLogRecords() *logRecords {
	return &logRecords{mu: &sync.Mutex{}, recs: &[]map[string]string{}}
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message, "level": r.Level.String()}
	for _, a := range l.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	*l.recs = append(*l.recs, m)
	l.mu.Unlock()
	return nil
}

func (l *logRecords) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecords{mu: l.mu, recs: l.recs, attrs: append(append([]slog.Attr{}, l.attrs...), as...)}
}

func (l *logRecords) WithGroup(string) slog.Handler { return l }

// find returns the first record with message msg.
func (l *logRecords) find(msg string) (map[string]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range *l.recs {
		if r["msg"] == msg {
			return r, true
		}
	}
	return nil, false
}

func (l *logRecords) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range *l.recs {
		b.WriteString(r["level"] + " " + r["msg"])
		for k, v := range r {
			if k != "msg" && k != "level" {
				b.WriteString(" " + k + "=" + v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// watchedCard is a card whose contents change under pscsd (swapcard), and
// that counts its signatures (GENERAL AUTHENTICATE) and, when answer is
// set, answers them with that status word.
type watchedCard struct {
	*swapcard.Card
	signs  atomic.Int64
	answer atomic.Pointer[[]byte]
}

func (c *watchedCard) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if len(cmd) > 1 && cmd[1] == 0x87 {
		c.signs.Add(1)
		if sw := c.answer.Load(); sw != nil {
			return bytes.Clone(*sw), nil
		}
	}
	return c.Card.Transmit(ctx, cmd)
}

// changeRig serves one changing card as the remote card "mayor" (slot 7),
// delegated to alice (vPIN 2718), over QUIC, with pscsd's log kept.
type changeRig struct {
	card  *watchedCard
	audit *memAudit
	logs  *logRecords
	addr  string
	ca    *testpki.CA
	alice tls.Certificate
}

func newChangeRig(t *testing.T, sim *pivsim.Card) *changeRig {
	t.Helper()
	r := &changeRig{card: &watchedCard{Card: swapcard.New(sim)}, audit: &memAudit{}, logs: newLogRecords(), ca: testpki.NewCA("change CA")}
	log := slog.New(r.logs)
	var srv atomic.Pointer[server.Server]
	pool := rsc.NewPool("mayor", rsc.Options{Logger: log, OnChange: func(int) {
		if s := srv.Load(); s != nil {
			s.CardChanged("mayor")
		}
	}})
	t.Cleanup(pool.Close)
	w := cards.NewWorker(cards.Direct(r.card), log)
	t.Cleanup(func() { w.Close() })
	m, err := rsc.NewMember(context.Background(), "card", w, piv.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Add(m); err != nil {
		t.Fatal(err)
	}
	book := policy.NewBook(nil)
	book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5})
	vault := testrig.NewVault()
	vault.Add("d-alice", "2718", "123456")
	s := server.New(server.Config{Book: book, Vault: vault, Audit: r.audit, Logger: log,
		Cards: []server.Card{{Name: "mayor", Slot: 7, Pool: pool}}})
	srv.Store(s)
	enroll := transport.NewStaticEnrollment()
	r.alice = r.ca.Issue("alice", testpki.Options{})
	enroll.Add("alice", r.alice.Leaf)
	r.addr = testrig.Serve(t, s, enroll, r.ca, log)
	return r
}

// login dials as alice, reads the catalogue and logs in to slot 7.
func (r *changeRig) login(t *testing.T) (*client.Client, *transport.Catalogue) {
	t.Helper()
	c, err := client.Dial(ctx(t), client.Config{Addr: r.addr, Certificate: r.alice, RootCAs: r.ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	return c, hello.Catalogue
}

// changeSim is a card of the changing kind: serial 9100, PIN 123456, the
// keys of seed in slots.
func changeSim(t *testing.T, seed string, slots ...pivsim.Slot) *pivsim.Card {
	t.Helper()
	layout := map[pivsim.Slot]pivsim.SlotConfig{}
	for _, s := range slots {
		layout[s] = pivsim.SlotConfig{Algorithm: pivsim.ECCP256}
	}
	sim, err := pivsim.New(pivsim.Config{Seed: []byte(seed), Serial: 9100, Slots: layout})
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

// slotEvent waits for a slot event of slot 7 on c and returns its tag.
func slotEvent(t *testing.T, c *client.Client) []byte {
	t.Helper()
	for {
		select {
		case ev := <-c.Events():
			if ev.Kind == transport.EventSlot && ev.Slot == 7 {
				return ev.Tag
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no slot event for slot 7 within 10 s")
			return nil
		}
	}
}

// object returns the object with handle h of slot 7 in cat.
func object(cat *transport.Catalogue, h uint64) (transport.Object, bool) {
	for _, s := range cat.Slots {
		if s.ID != 7 {
			continue
		}
		for _, o := range s.Objects {
			if o.Handle == h {
				return o, true
			}
		}
	}
	return transport.Object{}, false
}

// TestSignatureUnderAChangedKey: another program puts a new key in slot 9A
// of a card pscsd serves, and no reset tells pscsd. The card's next
// signature does not verify under the key pscsd read: pscsd reads the
// card's keys again, checks the signature under the new key and returns it
// (the card signs once), with the new certificate; the delegate gets a
// slot event, and its catalogue shows the new certificate.
func TestSignatureUnderAChangedKey(t *testing.T) {
	before, after := changeSim(t, "change", pivsim.SlotAuthentication), changeSim(t, "changed", pivsim.SlotAuthentication)
	r := newChangeRig(t, before)
	c, cat := r.login(t)
	doc := []byte("signed across a change of key")
	digest := sha256.Sum256(doc)
	sign := func() *transport.SignResponse {
		t.Helper()
		resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: doc}) // CKM_ECDSA_SHA256, 9A
		if err != nil {
			t.Fatalf("sign: %v\npscsd's log:\n%s", err, r.logs)
		}
		verifyRaw(t, resp.Certificate, digest[:], resp.Signature)
		return resp
	}
	if resp := sign(); !bytes.Equal(resp.Certificate, before.Certificate(pivsim.SlotAuthentication).Raw) {
		t.Fatal("the first signature does not come with the card's certificate")
	}

	r.card.Swap(after)
	signs := r.card.signs.Load()
	if resp := sign(); !bytes.Equal(resp.Certificate, after.Certificate(pivsim.SlotAuthentication).Raw) {
		t.Error("the signature after the change does not come with the new certificate")
	}
	if n := r.card.signs.Load() - signs; n != 1 {
		t.Errorf("the card signed %d times for one request, want 1: the signature is checked under the new key, not made again", n)
	}
	tag := slotEvent(t, c)
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(hello.Catalogue.Tag, cat.Tag) || !bytes.Equal(hello.Catalogue.Tag, tag) {
		t.Errorf("catalogue tag %x (before the change %x, in the event %x): want the event's, new", hello.Catalogue.Tag, cat.Tag, tag)
	}
	if o, ok := object(hello.Catalogue, 3); !ok || !bytes.Equal(o.Attributes[0x11].([]byte), after.Certificate(pivsim.SlotAuthentication).Raw) {
		t.Error("the catalogue does not show the new certificate of 9A (handle 3)")
	}
	if rec, ok := r.logs.find("card's keys changed: read again"); !ok || rec["card"] != "card" {
		t.Errorf("no log record of the change: %v\n%s", rec, r.logs)
	}
	sign() // and the next, on the keys read again
}

// TestKeyGoneAfterCardChange: another program deletes the key of slot 9A
// from a card pscsd serves. A signature with 9A is refused with code 117,
// and audited; 9D keeps its handle (the card's first key now), and signs;
// the catalogue no longer shows 9A.
func TestKeyGoneAfterCardChange(t *testing.T) {
	before := changeSim(t, "gone", pivsim.SlotAuthentication, pivsim.SlotKeyManagement)
	after := changeSim(t, "gone", pivsim.SlotKeyManagement)
	r := newChangeRig(t, before)
	c, cat := r.login(t)
	for _, h := range []uint64{1, 4} {
		if _, ok := object(cat, h); !ok {
			t.Fatalf("no object %d (9A and 9D private keys) in the catalogue", h)
		}
	}
	doc := []byte("a key that went away")
	digest := sha256.Sum256(doc)
	r.card.Swap(after)

	_, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: doc})
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.CodeKeyGone {
		t.Fatalf("signature with the deleted key 9A: %v, want code %d", err, transport.CodeKeyGone)
	}
	r.audit.mu.Lock()
	last := r.audit.records[len(r.audit.records)-1]
	r.audit.mu.Unlock()
	if last.Code != transport.CodeKeyGone || last.Op != "sign" || last.Delegation != "d-alice" || last.Evidence == nil {
		t.Errorf("audit record of the refusal: %+v, want a signed sign request of d-alice refused with 117", last)
	}
	if rec, ok := r.logs.find("a request names a key the card no longer has"); !ok || rec["key"] != "9a" {
		t.Errorf("no log record of the missing key: %v", rec)
	}
	slotEvent(t, c)

	resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 4, Mechanism: 0x1044, Data: doc}) // 9D
	if err != nil {
		t.Fatalf("signature with 9D, still on the card: %v", err)
	}
	verifyRaw(t, resp.Certificate, digest[:], resp.Signature)
	if !bytes.Equal(resp.Certificate, after.Certificate(pivsim.SlotKeyManagement).Raw) {
		t.Error("9D's signature does not come with 9D's certificate")
	}
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := object(hello.Catalogue, 1); ok {
		t.Error("the catalogue still shows the deleted key 9A")
	}
	if o, ok := object(hello.Catalogue, 4); !ok || !bytes.Equal(o.Attributes[0x102].([]byte), []byte{2}) {
		t.Errorf("9D's private key in the new catalogue: %+v, %v; want handle 4, CKA_ID 02 as before", o, ok)
	}
}

// TestCardErrorsInTheLog: a card that refuses a signature with a status
// word leaves in pscsd's log the operation, the remote card and the card,
// the status word and the driver's conclusion; the delegate gets the code
// and the status word, nothing of the driver's.
func TestCardErrorsInTheLog(t *testing.T) {
	r := newChangeRig(t, changeSim(t, "errors", pivsim.SlotAuthentication))
	c, _ := r.login(t)
	sw := []byte{0x69, 0x85} // conditions of use not satisfied
	r.card.answer.Store(&sw)
	_, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")})
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.CodeCardError {
		t.Fatalf("sign on a card that refuses: %v, want code %d", err, transport.CodeCardError)
	}
	if te.Message != "card status 6985" {
		t.Errorf("the delegate's message %q, want only the status word", te.Message)
	}
	rec, ok := r.logs.find("card error")
	if !ok {
		t.Fatalf("no card error in pscsd's log:\n%s", r.logs)
	}
	for k, want := range map[string]string{"op": "sign with 9a", "card": "mayor", "member": "card", "sw": "6985"} {
		if rec[k] != want {
			t.Errorf("log %s=%q, want %q", k, rec[k], want)
		}
	}
	if !strings.Contains(rec["err"], "piv: sign with 9a") || !strings.Contains(rec["err"], "conditions of use not satisfied") {
		t.Errorf("log err=%q: want the driver's conclusion", rec["err"])
	}
}

// TestRegisterPINTriesLeft: register-pin with a wrong PIN tells the owner
// how many tries the card has left.
func TestRegisterPINTriesLeft(t *testing.T) {
	r := newAdminRig(t)
	secret, _ := transport.Marshal(&transport.AdminSecret{PIN: []byte("654321"), Passphrase: []byte("owner passphrase")})
	err := r.owner.Do(ctx(t), transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: "mayor"}, secret, nil)
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.CodePINCheck {
		t.Fatalf("register-pin with a wrong PIN: %v, want code %d", err, transport.CodePINCheck)
	}
	if !strings.Contains(te.Message, "2 tries left") || r.sim.PINRetries() != 2 {
		t.Errorf("message %q with %d tries left on the card: want it to say 2 tries left", te.Message, r.sim.PINRetries())
	}
}
