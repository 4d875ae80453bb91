package server_test

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/policy"
	ptransport "github.com/pscs/pscs/transport"
)

// restartable is a rig whose audit log is a real audit.Log on disk; next
// is the rig after a restart: a new server, Book and cards, with the same
// delegations granted and the policy state rebuilt from the log, as pscsd
// does at start.
type restartable struct {
	*rig
	path    string
	log     *audit.Log
	grants  []policy.Delegation
	certs   map[string]tls.Certificate
	records *teeAudit
}

// teeAudit is the server's AuditLog that also keeps what the server asked
// of it (Anchor is not written).
type teeAudit struct {
	server.AuditLog
	mu   sync.Mutex
	recs []*server.AuditRecord
}

func (a *teeAudit) Record(ctx context.Context, r *server.AuditRecord) error {
	a.mu.Lock()
	a.recs = append(a.recs, r)
	a.mu.Unlock()
	return a.AuditLog.Record(ctx, r)
}

func newRestartable(t *testing.T, grants ...policy.Delegation) *restartable {
	t.Helper()
	r := &restartable{path: filepath.Join(t.TempDir(), "audit.log"), grants: grants, certs: map[string]tls.Certificate{}}
	r.start(t, nil)
	return r
}

func (r *restartable) start(t *testing.T, rb *policy.Rebuild) {
	t.Helper()
	opts := audit.Options{NoSync: true}
	if rb != nil {
		opts.Scan = func(rec *audit.Record) {
			if m, ok := server.PolicyMark(rec); ok {
				rb.Add(m)
			}
		}
	}
	log, err := audit.Open(r.path, hmacKey("restore"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	r.log = log
	r.records = &teeAudit{AuditLog: server.AuditLog{Log: log}}
	r.rig = newRig(t, 1, r.records)
	for _, d := range r.grants {
		r.book.Grant(d)
		r.vault.Add(d.ID, "1111", "123456")
		cert := r.ca.Issue(d.Delegate, testpki.Options{})
		r.enroll.Add(d.Delegate, cert.Leaf)
		r.certs[d.Delegate] = cert
	}
	if rb != nil {
		r.book.Restore(rb)
	}
}

func (r *restartable) restart(t *testing.T) {
	t.Helper()
	r.log.Close()
	r.start(t, &policy.Rebuild{Since: time.Now().Add(-time.Hour)})
}

// TestPolicyStateFromTheLog: issue 9's "what was seen", through the
// server, over QUIC, with the state rebuilt from a real audit log after
// each restart.
func TestPolicyStateFromTheLog(t *testing.T) {
	sign := &ptransport.SignRequest{Slot: 7, Key: 10, Mechanism: 0x1045, Data: []byte("x")}
	t.Run("total", func(t *testing.T) {
		r := newRestartable(t)
		c := r.dial(t, r.bob) // d-bob: Total 1
		c.Login(ctx(t), 7, []byte("3141"))
		if _, err := c.Sign(ctx(t), sign); err != nil {
			t.Fatal(err)
		}
		r.restart(t)
		c = r.dial(t, r.bob)
		if _, err := c.Login(ctx(t), 7, []byte("3141")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sign(ctx(t), sign); !isCode(err, ptransport.CodeLimitReached) {
			t.Errorf("second signature on a total of 1, after a restart: %v, want limit reached", err)
		}
	})
	t.Run("per hour", func(t *testing.T) {
		r := newRestartable(t, policy.Delegation{ID: "d-hal", Delegate: "hal", Card: "mayor", PerHour: 2})
		for range 2 {
			c := r.dial(t, r.certs["hal"])
			c.Login(ctx(t), 7, []byte("1111"))
			if _, err := c.Sign(ctx(t), sign); err != nil {
				t.Fatal(err)
			}
			r.restart(t)
		}
		c := r.dial(t, r.certs["hal"])
		c.Login(ctx(t), 7, []byte("1111"))
		if _, err := c.Sign(ctx(t), sign); !isCode(err, ptransport.CodeLimitReached) {
			t.Errorf("third signature in the hour, after restarts: %v, want limit reached", err)
		}
		if n := r.book.Recent("d-hal"); n != 2 {
			t.Errorf("%d signatures in the hour restored, want 2", n)
		}
	})
	t.Run("vPIN lockout", func(t *testing.T) {
		r := newRestartable(t)
		for range 4 {
			c := r.dial(t, r.alice) // d-alice: 5 wrong vPINs lock
			if _, err := c.Login(ctx(t), 7, []byte("0000")); !isCode(err, ptransport.CodeWrongPIN) {
				t.Fatalf("wrong vPIN: %v", err)
			}
			r.restart(t)
		}
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("0000")); !isCode(err, ptransport.CodeLocked) {
			t.Errorf("fifth wrong vPIN, across restarts: %v, want locked", err)
		}
		r.restart(t)
		c = r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); !isCode(err, ptransport.CodeLocked) {
			t.Errorf("the right vPIN after the lockout and a restart: %v, want locked", err)
		}
	})
	t.Run("card lock", func(t *testing.T) {
		r := newRestartable(t)
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		chg := append([]byte{0x00, 0x24, 0x00, 0x80, 0x10}, []byte("123456\xff\xff777777\xff\xff")...)
		if rsp, err := r.sims[0].Transmit(context.Background(), chg); err != nil || rsp[0] != 0x90 {
			t.Fatalf("changing the card's PIN: %X, %v", rsp, err)
		}
		if _, err := c.Sign(ctx(t), &ptransport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")}); !isCode(err, ptransport.CodeLocked) {
			t.Fatalf("sign with a stale real PIN: %v, want locked", err)
		}
		r.restart(t)
		for _, who := range []struct {
			name string
			vpin string
		}{{"alice", "2718"}, {"bob", "3141"}} {
			c := r.dial(t, map[string]tls.Certificate{"alice": r.alice, "bob": r.bob}[who.name])
			if _, err := c.Login(ctx(t), 7, []byte(who.vpin)); !isCode(err, ptransport.CodeLocked) {
				t.Errorf("%s on the card that refused its PIN, after a restart: %v, want locked", who.name, err)
			}
		}
	})
}

// TestAuditRecordsSayWhatHappened: the records' Policy says what each
// request changed where the refusal code cannot, and which records ask to
// be anchored.
func TestAuditRecordsSayWhatHappened(t *testing.T) {
	r := newRestartable(t, policy.Delegation{ID: "d-lim", Delegate: "lim", Card: "mayor", Total: 10})
	c := r.dial(t, r.alice)
	c.Login(ctx(t), 7, []byte("0000"))
	c.Login(ctx(t), 7, []byte("2718"))
	c.Sign(ctx(t), &ptransport.SignRequest{Slot: 7, Key: 10, Mechanism: 0x1045, Data: []byte("x")})
	l := r.dial(t, r.certs["lim"])
	l.Login(ctx(t), 7, []byte("1111"))
	l.Sign(ctx(t), &ptransport.SignRequest{Slot: 7, Key: 10, Mechanism: 0x1045, Data: []byte("x")})
	chg := append([]byte{0x00, 0x24, 0x00, 0x80, 0x10}, []byte("123456\xff\xff777777\xff\xff")...)
	r.sims[0].Transmit(context.Background(), chg)
	c.Sign(ctx(t), &ptransport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")})
	c.Sign(ctx(t), &ptransport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1044, Data: []byte("x")})
	r.log.Close()

	type rec struct {
		op         string
		code       ptransport.Code
		events     policy.Event
		delegation string
	}
	want := []rec{
		{"login", ptransport.CodeWrongPIN, policy.EventWrongVPIN, "d-alice"},
		{"login", 0, policy.EventRightVPIN, "d-alice"},
		{"sign", 0, policy.EventCounted, "d-alice"},
		{"login", 0, policy.EventRightVPIN, "d-lim"},
		{"sign", 0, policy.EventCounted, "d-lim"},
		{"sign", ptransport.CodeLocked, policy.EventCounted | policy.EventCardLocked, "d-alice"},
		{"sign", ptransport.CodeLocked, 0, "d-alice"}, // the lock, before the card
	}
	var got []rec
	log, err := audit.Open(r.path, hmacKey("restore"), audit.Options{NoSync: true, Scan: func(a *audit.Record) {
		m, ok := server.PolicyMark(a)
		if !ok {
			t.Errorf("record %d (%s) keeps no policy state", a.Seq, a.Op)
			return
		}
		got = append(got, rec{a.Op, ptransport.Code(a.Decision), m.Events, a.Delegation})
		if a.Op == "sign" && a.Decision == 0 && m.Used == 0 {
			t.Errorf("record %d: a signature with no use counted", a.Seq)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	log.Close()
	if len(got) != len(want) {
		t.Fatalf("records %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: %+v, want %+v", i+1, got[i], want[i])
		}
	}
	// Anchored: what a later refusal depends on.
	wantAnchor := []bool{true, false, false, false, true, true, false}
	for i, a := range r.records.recs {
		if i < len(wantAnchor) && a.Anchor != wantAnchor[i] {
			t.Errorf("record %d (%s %v): anchor %v, want %v", i+1, a.Op, a.Code, a.Anchor, wantAnchor[i])
		}
	}
}

// TestPassphraseLockFromRecords: five wrong owner passphrases lock the
// card's registered PIN against delegation; a Book rebuilt from the
// records keeps the lock, and registering the PIN again clears it.
func TestPassphraseLockFromRecords(t *testing.T) {
	r := newAdminRig(t)
	pass := []byte("owner passphrase")
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"},
		&ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("register-pin: %v", code)
	}
	r.enroll.Add("bob", r.ca.Issue("bob", testpki.Options{}).Leaf)
	del := &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}}
	rebuilt := func() *policy.Book {
		b := policy.NewBook(nil)
		rb := &policy.Rebuild{}
		r.audit.mu.Lock()
		for _, a := range r.audit.records {
			if a.Policy != nil {
				rb.Add(*a.Policy)
			}
		}
		r.audit.mu.Unlock()
		b.Restore(rb)
		return b
	}
	for i := range policy.MaxWrongPassphrases {
		if _, code := adminDo(t, r.owner, del, &ptransport.AdminSecret{Passphrase: []byte("wrong passphrase")}); code != ptransport.CodeWrongPIN {
			t.Fatalf("wrong passphrase %d: %v", i+1, code)
		}
		if locked := rebuilt().PassphraseLocked("mayor"); locked != (i+1 == policy.MaxWrongPassphrases) {
			t.Errorf("after %d wrong passphrases, rebuilt: locked %v", i+1, locked)
		}
	}
	if _, code := adminDo(t, r.owner, del, &ptransport.AdminSecret{Passphrase: pass}); code != ptransport.CodeLocked {
		t.Errorf("the right passphrase after %d wrong ones: %v, want locked", policy.MaxWrongPassphrases, code)
	}
	r.audit.mu.Lock()
	last := r.audit.records[len(r.audit.records)-2] // the fifth wrong one
	r.audit.mu.Unlock()
	if want := policy.EventWrongPassphrase | policy.EventPassphraseLocked; last.Policy == nil || last.Policy.Events != want || !last.Anchor {
		t.Errorf("the record of the fifth wrong passphrase: %+v, anchor %v; want events %v, anchored", last.Policy, last.Anchor, want)
	}
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"},
		&ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("register-pin again: %v", code)
	}
	if rebuilt().PassphraseLocked("mayor") {
		t.Error("rebuilt after the PIN was registered again: still locked")
	}
	if _, code := adminDo(t, r.owner, del, &ptransport.AdminSecret{Passphrase: pass}); code != 0 {
		t.Errorf("delegating after the PIN was registered again: %v", code)
	}
}
