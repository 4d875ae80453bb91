package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pscs/pscs/transport"
)

// grants are the delegations of the restore tests, granted the same way
// before and after a "restart".
func grants(b *Book) {
	b.Grant(Delegation{ID: "total", Delegate: "tom", Card: "mayor", Total: 2})
	b.Grant(Delegation{ID: "hourly", Delegate: "harry", Card: "mayor", PerHour: 2})
	b.Grant(Delegation{ID: "guess", Delegate: "gus", Card: "mayor"})
	b.Grant(Delegation{ID: "ceo", Delegate: "carol", Card: "ceo"})
	b.Grant(Delegation{ID: "ceo2", Delegate: "cid", Card: "ceo"})
}

// server is what the server does around a Book: every request's record
// keeps a mark taken after the request's changes.
type server struct {
	b     *Book
	marks []Mark
}

func (s *server) mark(delegation, card string) {
	if m, ok := s.b.Mark(delegation, card); ok {
		s.marks = append(s.marks, m)
	}
}

func (s *server) check(delegate, card, op string) error {
	d, err := s.b.Check(Request{Delegate: delegate, Card: card, Op: op})
	s.mark(d.ID, "")
	return err
}

func (s *server) wrong(id string) bool {
	locked := s.b.WrongVPIN(id)
	s.mark(id, "")
	return locked
}

// restart is a new Book with the same grants, restored from marks.
func restart(c *clock, marks []Mark) *Book {
	b := NewBook(c.now)
	grants(b)
	r := &Rebuild{Since: c.t.Add(-time.Hour)}
	for _, m := range marks {
		r.Add(m)
	}
	b.Restore(r)
	return b
}

// TestRestoreWhatWasSeen: issue 9's "what was seen", each across a restart
// of the Book from the marks its requests left.
func TestRestoreWhatWasSeen(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s := &server{b: NewBook(c.now)}
	grants(s.b)

	// A total of 2: two signatures, then refused.
	for i := range 2 {
		if err := s.check("tom", "mayor", "sign"); err != nil {
			t.Fatalf("signature %d: %v", i+1, err)
		}
	}
	// Two per hour: two signatures ten minutes apart.
	for i := range 2 {
		if err := s.check("harry", "mayor", "sign"); err != nil {
			t.Fatalf("hourly signature %d: %v", i+1, err)
		}
		c.t = c.t.Add(10 * time.Minute)
	}
	// 4 wrong vPINs.
	for range 4 {
		s.wrong("guess")
	}
	// ceo refused its registered PIN while carol signed.
	s.check("carol", "ceo", "sign")
	s.b.LockCard("ceo")
	s.mark("ceo", "")
	// 4 wrong owner passphrases for mayor.
	for range 4 {
		s.b.WrongPassphrase("mayor")
		s.mark("", "mayor")
	}

	b := restart(c, s.marks)
	s = &server{b: b, marks: s.marks}
	if err := s.check("tom", "mayor", "sign"); code(err) != transport.CodeLimitReached {
		t.Errorf("third signature on a total of 2 after a restart: %v, want limit reached", err)
	}
	if err := s.check("harry", "mayor", "sign"); code(err) != transport.CodeLimitReached {
		t.Errorf("third signature in the hour after a restart: %v, want limit reached", err)
	}
	if !s.wrong("guess") {
		t.Error("the fifth wrong vPIN, after a restart, does not lock")
	}
	if err := s.check("gus", "mayor", "login"); code(err) != transport.CodeLocked {
		t.Errorf("login after the lockout: %v, want locked", err)
	}
	for _, who := range []string{"carol", "cid"} {
		if err := s.check(who, "ceo", "login"); code(err) != transport.CodeLocked {
			t.Errorf("%s on the card that refused its PIN, after a restart: %v, want locked", who, err)
		}
	}
	if !b.WrongPassphrase("mayor") || !b.PassphraseLocked("mayor") {
		t.Error("the fifth wrong passphrase, after a restart, does not lock")
	}
	s.mark("", "mayor")

	// Restarted again, from all the marks: still all of it. The first
	// hourly signature leaves the window 60 minutes after it was made,
	// the second 10 minutes later.
	b = restart(c, s.marks)
	c.t = c.t.Add(40 * time.Minute)
	if b.Recent("hourly") != 2 {
		t.Errorf("%d signatures in the hour just before the first leaves it, want 2", b.Recent("hourly"))
	}
	c.t = c.t.Add(time.Millisecond)
	if _, err := b.Check(Request{Delegate: "harry", Card: "mayor", Op: "sign"}); err != nil {
		t.Errorf("an hour after the first signature: %v", err)
	}
	if _, err := b.Check(Request{Delegate: "harry", Card: "mayor", Op: "sign"}); code(err) != transport.CodeLimitReached {
		t.Errorf("again: %v, want limit reached", err)
	}
	for id, want := range map[string]State{"total": {Used: 2}, "guess": {WrongVPIN: 5, Locked: true}, "ceo": {Used: 1, Locked: true}, "ceo2": {Locked: true}} {
		if _, st, _ := b.Get(id); st.Used != want.Used || st.WrongVPIN != want.WrongVPIN || st.Locked != want.Locked {
			t.Errorf("%s: %+v, want %+v", id, st, want)
		}
	}
	if !b.PassphraseLocked("mayor") || b.PassphraseLocked("ceo") {
		t.Error("passphrase locks: mayor should be locked, ceo not")
	}
}

// TestRestoreUnlocks: what the owner did after a lock is restored too:
// an unlock, a new delegation on a card locked before it, a right vPIN or
// passphrase that cleared the wrong ones.
func TestRestoreUnlocks(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s := &server{b: NewBook(c.now)}
	grants(s.b)
	s.b.LockCard("ceo")
	s.mark("ceo", "")
	s.b.Unlock("ceo2")
	s.mark("ceo2", "")
	for range 3 {
		s.wrong("guess")
	}
	s.b.RightVPIN("guess")
	s.mark("guess", "")
	s.wrong("guess")
	s.b.WrongPassphrase("ceo")
	s.mark("", "ceo")
	s.b.RightPassphrase("ceo")
	s.mark("", "ceo")

	b := NewBook(c.now)
	grants(b)
	b.Grant(Delegation{ID: "ceo3", Delegate: "cal", Card: "ceo"}) // granted after the lock
	s.b.Grant(Delegation{ID: "ceo3", Delegate: "cal", Card: "ceo"})
	s.mark("ceo3", "")
	r := &Rebuild{}
	for _, m := range s.marks {
		r.Add(m)
	}
	b.Restore(r)
	for id, locked := range map[string]bool{"ceo": true, "ceo2": false, "ceo3": false, "guess": false} {
		if _, st, _ := b.Get(id); st.Locked != locked {
			t.Errorf("%s: locked %v, want %v", id, st.Locked, locked)
		}
	}
	if _, st, _ := b.Get("guess"); st.WrongVPIN != 1 {
		t.Errorf("wrong vPINs in a row: %d, want 1", st.WrongVPIN)
	}
	if s.b.WrongPassphrase("ceo"); b.PassphraseLocked("ceo") {
		t.Error("ceo's passphrase locked after a right one")
	}
	// Changes after the restore are newer than every restored mark.
	b.LockCard("mayor")
	m, _ := b.Mark("total", "")
	if m.Serial <= r.serial {
		t.Errorf("a change after the restore has number %d, not after the restored %d", m.Serial, r.serial)
	}
}

// TestRestoreOrderAndLoss: records reach the log in another order than
// their requests changed the Book, and a crash loses the records of
// requests in flight. The newest mark wins whatever the order, and no
// restored count is below what a mark that did reach the log shows.
func TestRestoreOrderAndLoss(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s := &server{b: NewBook(c.now)}
	grants(s.b)
	s.b.Grant(Delegation{ID: "busy", Delegate: "bea", Card: "mayor", PerHour: 50})
	var want []State
	for i := range 200 {
		c.t = c.t.Add(time.Second)
		switch i % 4 {
		case 0, 1:
			s.check("bea", "mayor", "sign")
		case 2:
			s.wrong("guess")
		case 3:
			if i%16 == 3 {
				s.b.RightVPIN("guess")
				s.mark("guess", "")
			}
		}
		_, st, _ := s.b.Get("busy")
		want = append(want, st)
	}
	_, guess, _ := s.b.Get("guess")
	for trial := range 20 {
		rng := rand.New(rand.NewPCG(uint64(trial), 9))
		marks := append([]Mark(nil), s.marks...)
		rng.Shuffle(len(marks), func(i, j int) { marks[i], marks[j] = marks[j], marks[i] })
		// A crash loses some records, those of requests in flight: never
		// the last one of each delegation (acknowledged in this test).
		newest := map[string]Mark{}
		for _, m := range s.marks {
			newest[m.Delegation] = m
		}
		var kept []Mark
		for _, m := range marks {
			if newest[m.Delegation] == m || rng.IntN(3) > 0 {
				kept = append(kept, m)
			}
		}
		b := NewBook(c.now)
		grants(b)
		b.Grant(Delegation{ID: "busy", Delegate: "bea", Card: "mayor", PerHour: 50})
		r := &Rebuild{Since: c.t.Add(-time.Hour)}
		for _, m := range kept {
			r.Add(m)
		}
		b.Restore(r)
		_, st, _ := b.Get("busy")
		if last := want[len(want)-1]; st.Used < last.Used {
			t.Errorf("trial %d: %d signatures restored, %d made", trial, st.Used, last.Used)
		}
		if got := b.Recent("busy"); got < min(50, s.b.Recent("busy")) {
			t.Errorf("trial %d: %d signatures in the hour restored, %d made", trial, got, s.b.Recent("busy"))
		}
		if _, g, _ := b.Get("guess"); g.WrongVPIN != guess.WrongVPIN {
			t.Errorf("trial %d: %d wrong vPINs restored, %d", trial, g.WrongVPIN, guess.WrongVPIN)
		}
	}
}

// TestRebuildHourWindow: a signature is restored with the time of the
// earliest mark that counts it, never earlier than it was made, and marks
// older than Since keep nothing.
func TestRebuildHourWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ms := func(d time.Duration) time.Time { return t0.Add(d * time.Millisecond) }
	for _, tc := range []struct {
		name  string
		since time.Time
		marks []Mark
		base  int
		times []time.Duration
	}{
		{"in order", time.Time{}, []Mark{{Used: 1, Time: ms(1)}, {Used: 3, Time: ms(5)}, {Used: 3, Time: ms(6)}},
			1, []time.Duration{1, 5, 5}},
		{"an earlier mark later", time.Time{}, []Mark{{Used: 3, Time: ms(5)}, {Used: 2, Time: ms(2)}, {Used: 1, Time: ms(4)}},
			1, []time.Duration{2, 2, 5}},
		{"old marks", ms(10), []Mark{{Used: 2, Time: ms(1)}, {Used: 4, Time: ms(12)}, {Used: 3, Time: ms(9)}, {Used: 1, Time: ms(20)}},
			4, []time.Duration{12}},
	} {
		r := &Rebuild{Since: tc.since}
		for _, m := range tc.marks {
			m.Delegation = "d"
			r.Add(m)
		}
		x := r.dels["d"]
		var got []time.Duration
		for _, v := range x.times {
			got = append(got, time.UnixMilli(v).Sub(t0))
		}
		if x.base != tc.base || fmt.Sprint(got) != fmt.Sprint(scale(tc.times)) {
			t.Errorf("%s: signatures from %d at %v, want from %d at %v", tc.name, x.base, got, tc.base, scale(tc.times))
		}
	}
}

func scale(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d * time.Millisecond
	}
	return out
}

// BenchmarkRebuildAdd is pscsd's cost at start per audit record that keeps
// a policy state: eight delegations signing, one mark a signature.
func BenchmarkRebuildAdd(b *testing.B) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ids := []string{"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"}
	r := &Rebuild{Since: t0}
	for i := range b.N {
		r.Add(Mark{Serial: uint64(i), Time: t0.Add(time.Duration(i) * time.Millisecond), Delegation: ids[i%8], Card: "mayor", Used: i/8 + 1})
	}
}

// BenchmarkMark is the server's added cost per audit record.
func BenchmarkMark(b *testing.B) {
	bk := NewBook(nil)
	bk.Grant(Delegation{ID: "d", Delegate: "alice", Card: "mayor", PerHour: 1000})
	for range b.N {
		bk.Mark("d", "")
	}
}
