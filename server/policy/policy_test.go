package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/pscs/pscs/transport"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func code(err error) transport.Code { return transport.CodeOf(err) }

func TestCheck(t *testing.T) {
	// Wednesday 2026-11-25, 10:00 UTC.
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	b := NewBook(c.now)
	b.Grant(Delegation{ID: "d1", Owner: "mayor", Delegate: "alice", Card: "mayor-card",
		NotBefore: c.t.Add(-time.Hour), NotAfter: c.t.Add(24 * time.Hour), Total: 3})
	b.Grant(Delegation{ID: "d2", Owner: "mayor", Delegate: "bob", Card: "mayor-card",
		Hours:   &Hours{Days: 1<<time.Monday | 1<<time.Tuesday | 1<<time.Wednesday, From: 9 * 60, To: 17 * 60},
		PerHour: 2, Documents: [][]byte{[]byte("doc-1")}})
	b.Grant(Delegation{ID: "d3", Owner: "ceo", Delegate: "carol", Card: "ceo-card", NotBefore: c.t.Add(time.Hour)})

	tests := []struct {
		name string
		req  Request
		want transport.Code
	}{
		{"no delegation", Request{Delegate: "mallory", Card: "mayor-card", Op: "sign"}, transport.CodeDenied},
		{"other card", Request{Delegate: "alice", Card: "ceo-card", Op: "sign"}, transport.CodeDenied},
		{"login", Request{Delegate: "alice", Card: "mayor-card", Op: "login"}, transport.CodeOK},
		{"sign 1", Request{Delegate: "alice", Card: "mayor-card", Op: "sign"}, transport.CodeOK},
		{"decrypt not granted", Request{Delegate: "alice", Card: "mayor-card", Op: "decrypt"}, transport.CodeDenied},
		{"sign 2", Request{Delegate: "alice", Card: "mayor-card", Op: "sign"}, transport.CodeOK},
		{"sign 3", Request{Delegate: "alice", Card: "mayor-card", Op: "sign"}, transport.CodeOK},
		{"sign 4: total reached", Request{Delegate: "alice", Card: "mayor-card", Op: "sign"}, transport.CodeLimitReached},
		{"not yet valid", Request{Delegate: "carol", Card: "ceo-card", Op: "login"}, transport.CodeOutsideWindow},
		{"document allowed", Request{Delegate: "bob", Card: "mayor-card", Op: "sign", Digest: []byte("doc-1")}, transport.CodeOK},
		{"document refused", Request{Delegate: "bob", Card: "mayor-card", Op: "sign", Digest: []byte("doc-2")}, transport.CodeDocumentRefused},
		{"second per hour", Request{Delegate: "bob", Card: "mayor-card", Op: "sign", Digest: []byte("doc-1")}, transport.CodeOK},
		{"third per hour", Request{Delegate: "bob", Card: "mayor-card", Op: "sign", Digest: []byte("doc-1")}, transport.CodeLimitReached},
	}
	for _, tt := range tests {
		_, err := b.Check(tt.req)
		if got := code(err); got != tt.want {
			t.Errorf("%s: %v (%v), want %v", tt.name, got, err, tt.want)
		}
	}
	// An hour later bob may sign again; at 18:00 he is outside his hours;
	// on Thursday too.
	c.t = c.t.Add(61 * time.Minute)
	if _, err := b.Check(Request{Delegate: "bob", Card: "mayor-card", Op: "sign", Digest: []byte("doc-1")}); err != nil {
		t.Errorf("an hour later: %v", err)
	}
	c.t = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	if _, err := b.Check(Request{Delegate: "bob", Card: "mayor-card", Op: "login"}); code(err) != transport.CodeOutsideWindow {
		t.Errorf("at 18:00: %v", err)
	}
	c.t = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if _, err := b.Check(Request{Delegate: "bob", Card: "mayor-card", Op: "login"}); code(err) != transport.CodeOutsideWindow {
		t.Errorf("on Thursday: %v", err)
	}
	// alice's delegation ended.
	c.t = time.Date(2026, 11, 26, 10, 0, 1, 0, time.UTC)
	if _, err := b.Check(Request{Delegate: "alice", Card: "mayor-card", Op: "login"}); code(err) != transport.CodeOutsideWindow {
		t.Errorf("after NotAfter: %v", err)
	}
}

func TestRevokeAndLock(t *testing.T) {
	b := NewBook(nil)
	b.Grant(Delegation{ID: "d", Delegate: "alice", Card: "card", MaxWrongVPIN: 3})
	req := Request{Delegate: "alice", Card: "card", Op: "sign"}
	for i := range 2 {
		if b.WrongVPIN("d") {
			t.Fatalf("locked after %d wrong virtual PINs", i+1)
		}
	}
	b.RightVPIN("d")
	for range 2 {
		b.WrongVPIN("d")
	}
	if !b.WrongVPIN("d") {
		t.Fatal("not locked after 3 wrong virtual PINs in a row")
	}
	if _, err := b.Check(req); code(err) != transport.CodeLocked {
		t.Errorf("locked delegation: %v", err)
	}
	b.Unlock("d")
	if _, err := b.Check(req); err != nil {
		t.Errorf("after unlock: %v", err)
	}
	b.Revoke("d")
	_, err := b.Check(req)
	if !errors.Is(err, &transport.Error{Code: transport.CodeRevoked}) {
		t.Errorf("revoked: %v", err)
	}
}

func TestHoursPastMidnight(t *testing.T) {
	h := Hours{Days: 1 << time.Friday, From: 22 * 60, To: 2 * 60}
	at := func(day, hour int) time.Time { return time.Date(2026, 11, day, hour, 0, 0, 0, time.UTC) } // 27th is a Friday
	for _, c := range []struct {
		t    time.Time
		want bool
	}{{at(27, 23), true}, {at(28, 1), true}, {at(28, 3), false}, {at(27, 21), false}, {at(28, 23), false}} {
		if got := h.allows(c.t); got != c.want {
			t.Errorf("%v: %v, want %v", c.t, got, c.want)
		}
	}
}

// TestWarrantyRaw: a delegation with warranty refuses raw signatures
// (CodeWarrantyRaw) without counting them, and allows document ones; one
// without warranty allows both.
func TestWarrantyRaw(t *testing.T) {
	b := NewBook(nil)
	b.Grant(Delegation{ID: "w", Owner: "mayor", Delegate: "alice", Card: "mayor", Warranty: true, Total: 1})
	b.Grant(Delegation{ID: "p", Owner: "mayor", Delegate: "bob", Card: "mayor"})
	for _, tt := range []struct {
		name string
		req  Request
		want transport.Code
	}{
		{"warranty, raw", Request{Delegate: "alice", Card: "mayor", Op: "sign", Raw: true}, transport.CodeWarrantyRaw},
		{"warranty, login", Request{Delegate: "alice", Card: "mayor", Op: "login"}, transport.CodeOK},
		{"warranty, document", Request{Delegate: "alice", Card: "mayor", Op: "sign"}, transport.CodeOK},
		{"without warranty, raw", Request{Delegate: "bob", Card: "mayor", Op: "sign", Raw: true}, transport.CodeOK},
	} {
		if _, err := b.Check(tt.req); code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, st, _ := b.Get("w"); st.Used != 1 {
		t.Errorf("warranty delegation used %d times, want 1: the refused raw signature is not counted", st.Used)
	}
}

// TestKeys: a delegation limited to keys allows those and refuses the
// others with CodeKeyNotDelegated, without counting them; Current is the
// delegation Check decides under (the live one over a revoked one).
func TestKeys(t *testing.T) {
	b := NewBook(nil)
	b.Grant(Delegation{ID: "d1", Delegate: "alice", Card: "eid", Ops: []string{"sign", "decrypt"}, Total: 2})
	b.Revoke("d1")
	b.Grant(Delegation{ID: "d2", Delegate: "alice", Card: "eid", Ops: []string{"sign", "decrypt"}, Total: 2, Keys: []string{"9f"}})
	if d, ok := b.Current("alice", "eid"); !ok || d.ID != "d2" || !d.AllowsKey("9f") || d.AllowsKey("81") {
		t.Errorf("Current = %+v, %v; want d2 allowing 9f only", d, ok)
	}
	if !(Delegation{}).AllowsKey("81") {
		t.Error("a delegation without keys does not allow every key")
	}
	for _, tc := range []struct {
		op, key string
		want    transport.Code
	}{
		{"sign", "81", transport.CodeKeyNotDelegated},
		{"decrypt", "81", transport.CodeKeyNotDelegated},
		{"login", "81", transport.CodeOK}, // login names no key
		{"sign", "9f", transport.CodeOK},
		{"sign", "", transport.CodeOK}, // an unknown key: refused later as no such key
		{"sign", "9f", transport.CodeLimitReached},
	} {
		if _, err := b.Check(Request{Delegate: "alice", Card: "eid", Op: tc.op, Key: tc.key}); code(err) != tc.want {
			t.Errorf("%s with %q: %v, want %v", tc.op, tc.key, err, tc.want)
		}
	}
	if _, ok := b.Current("bob", "eid"); ok {
		t.Error("Current found a delegation of bob")
	}
}

// TestCurrentPrefersUsable: of one delegate's delegations on a card, an
// expired or revoked one never shadows a usable one, whatever their IDs;
// Live finds the one a new grant would run beside.
func TestCurrentPrefersUsable(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	b := NewBook(func() time.Time { return now })
	b.Grant(Delegation{ID: "d1", Delegate: "alice", Card: "c", NotAfter: now.Add(-time.Hour)})      // expired
	b.Grant(Delegation{ID: "d2", Delegate: "alice", Card: "c"})                                     // revoked below
	b.Grant(Delegation{ID: "d4", Delegate: "alice", Card: "c", NotBefore: now.Add(24 * time.Hour)}) // pending
	b.Revoke("d2")
	if d, _ := b.Current("alice", "c"); d.ID != "d4" {
		t.Errorf("Current = %s, want the pending d4", d.ID)
	}
	if _, err := b.Check(Request{Delegate: "alice", Card: "c", Op: "sign"}); code(err) != transport.CodeOutsideWindow {
		t.Errorf("sign before the pending one starts: %v, want %v", err, transport.CodeOutsideWindow)
	}
	b.Grant(Delegation{ID: "d3", Delegate: "alice", Card: "c"})
	if d, _ := b.Current("alice", "c"); d.ID != "d3" {
		t.Errorf("Current = %s, want the usable d3", d.ID)
	}
	if _, err := b.Check(Request{Delegate: "alice", Card: "c", Op: "sign"}); err != nil {
		t.Errorf("sign under d3: %v", err)
	}
	if d, ok := b.Live("alice", "c", time.Time{}); !ok || d.ID != "d3" {
		t.Errorf("Live = %s %v, want d3", d.ID, ok)
	}
	b.Revoke("d3")
	b.Revoke("d4")
	if d, ok := b.Live("alice", "c", time.Time{}); ok {
		t.Errorf("Live = %s with every delegation revoked or expired", d.ID)
	}
	b.Grant(Delegation{ID: "d5", Delegate: "alice", Card: "c", NotAfter: now.Add(time.Hour)})
	if _, ok := b.Live("alice", "c", now.Add(2*time.Hour)); ok {
		t.Error("Live: d5 is over before a grant from two hours on")
	}
	if _, ok := b.Live("alice", "c", time.Time{}); !ok {
		t.Error("Live: d5 runs beside a grant from now")
	}
}
