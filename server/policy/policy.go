// Package policy decides whether a delegate may do what it asks with an
// owner's remote card: the delegations owners grant, with their operations,
// validity windows, weekly hours, limits, allowed documents, warranty flag,
// revocation and virtual-PIN lockout.
//
// # Decisions
//
// [Book.Check] answers every request with nil or a *transport.Error whose
// code names the reason: CodeDenied (no delegation of this delegate for this
// remote card and operation), CodeRevoked, CodeOutsideWindow,
// CodeLimitReached, CodeDocumentRefused, CodeLocked. Changes (revocation,
// new limits) take effect at the next Check, also for sessions that are
// already open: a Check is made on every request.
//
// # Concurrency
//
// A Book is safe for concurrent use.
package policy

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/pscs/pscs/transport"
)

// Hours is a weekly window: Days is a bit set (1 << time.Sunday …), From
// and To are minutes after midnight in Location; To <= From means the
// window runs past midnight.
type Hours struct {
	Days     uint8
	From, To int
	Location *time.Location // nil: UTC
}

func (h Hours) allows(t time.Time) bool {
	loc := h.Location
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	minute := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	if h.To > h.From {
		return h.Days&(1<<day) != 0 && minute >= h.From && minute < h.To
	}
	// Past midnight: the evening part belongs to day, the morning part to
	// the day before.
	if minute >= h.From {
		return h.Days&(1<<day) != 0
	}
	if minute < h.To {
		return h.Days&(1<<((day+6)%7)) != 0
	}
	return false
}

// Delegation lets one delegate use one remote card of an owner.
type Delegation struct {
	ID       string
	Owner    string
	Delegate string // the delegate's enrolled identity
	Card     string // the remote card (pool) name
	// Ops are the operations allowed ("sign", "decrypt"); empty: sign only.
	Ops []string
	// NotBefore and NotAfter bound the delegation; zero: unbounded.
	NotBefore, NotAfter time.Time
	// Hours, if set, limits use to weekly hours.
	Hours *Hours
	// PerHour and Total limit signatures; zero: no limit.
	PerHour, Total int
	// Documents, if set, are the only digests the delegate may sign.
	Documents [][]byte
	// Warranty: signatures made under this delegation carry a visible
	// delegation notice where the format allows it.
	Warranty bool
	// MaxWrongVPIN locks the delegation after that many wrong virtual
	// PINs in a row; zero means 5.
	MaxWrongVPIN int
}

// State is what a delegation has been through.
type State struct {
	Revoked   bool
	RevokedAt time.Time
	WrongVPIN int // in a row
	Locked    bool
	Used      int         // signatures made
	recent    []time.Time // signatures of the last hour
}

// Book holds the delegations and their state.
type Book struct {
	mu    sync.Mutex
	dels  map[string]*entry
	clock func() time.Time
}

type entry struct {
	d Delegation
	s State
}

// NewBook returns an empty Book; clock nil means time.Now.
func NewBook(clock func() time.Time) *Book {
	if clock == nil {
		clock = time.Now
	}
	return &Book{dels: map[string]*entry{}, clock: clock}
}

// Grant adds or replaces a delegation; the state of a replaced one is kept.
func (b *Book) Grant(d Delegation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.dels[d.ID]; e != nil {
		e.d = d
		return
	}
	b.dels[d.ID] = &entry{d: d}
}

// Revoke revokes a delegation at once.
func (b *Book) Revoke(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return false
	}
	e.s.Revoked, e.s.RevokedAt = true, b.clock()
	return true
}

// Unlock clears a lockout after wrong virtual PINs (the owner's decision).
func (b *Book) Unlock(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return false
	}
	e.s.Locked, e.s.WrongVPIN = false, 0
	return true
}

// Get returns a delegation and its state.
func (b *Book) Get(id string) (Delegation, State, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return Delegation{}, State{}, false
	}
	return e.d, e.s, true
}

// For returns the delegations of delegate, in ID order.
func (b *Book) For(delegate string) []Delegation {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Delegation
	for _, e := range b.dels {
		if e.d.Delegate == delegate {
			out = append(out, e.d)
		}
	}
	slices.SortFunc(out, func(a, b Delegation) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// All returns every delegation with its state, in ID order.
func (b *Book) All() ([]Delegation, []State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.dels))
	for id := range b.dels {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ds, ss := make([]Delegation, len(ids)), make([]State, len(ids))
	for i, id := range ids {
		e := b.dels[id]
		ds[i], ss[i] = e.d, e.s
		ss[i].recent = nil
	}
	return ds, ss
}

// Find returns the delegation of delegate on card.
func (b *Book) Find(delegate, card string) (Delegation, bool) {
	for _, d := range b.For(delegate) {
		if d.Card == card {
			return d, true
		}
	}
	return Delegation{}, false
}

// Request is what a delegate asks.
type Request struct {
	Delegate string
	Card     string
	Op       string // "login", "sign", "decrypt"
	Digest   []byte // for "sign": the digest of the document, if known
}

// Check decides a request: nil, or a *transport.Error naming the reason.
// It returns the delegation the decision was made under.
func (b *Book) Check(r Request) (Delegation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	// The same delegate may hold several delegations on one card (an old,
	// revoked one and its successor): decide under the first usable one in
	// ID order, so that the answer never depends on map order.
	var e *entry
	for _, x := range b.dels {
		if x.d.Delegate != r.Delegate || x.d.Card != r.Card {
			continue
		}
		switch {
		case e == nil,
			e.s.Revoked && !x.s.Revoked,
			e.s.Revoked == x.s.Revoked && x.d.ID < e.d.ID:
			e = x
		}
	}
	if e == nil {
		return Delegation{}, transport.Errorf(transport.CodeDenied, "no delegation of %s on %s", r.Delegate, r.Card)
	}
	d := e.d
	switch {
	case e.s.Revoked:
		return d, transport.Errorf(transport.CodeRevoked, "delegation %s revoked", d.ID)
	case e.s.Locked:
		return d, transport.Errorf(transport.CodeLocked, "delegation %s locked after wrong virtual PINs", d.ID)
	case !d.NotBefore.IsZero() && now.Before(d.NotBefore):
		return d, transport.Errorf(transport.CodeOutsideWindow, "delegation %s starts %s", d.ID, d.NotBefore.UTC().Format(time.RFC3339))
	case !d.NotAfter.IsZero() && !now.Before(d.NotAfter):
		return d, transport.Errorf(transport.CodeOutsideWindow, "delegation %s ended %s", d.ID, d.NotAfter.UTC().Format(time.RFC3339))
	case d.Hours != nil && !d.Hours.allows(now):
		return d, transport.Errorf(transport.CodeOutsideWindow, "delegation %s: outside its weekly hours", d.ID)
	}
	if r.Op == "login" {
		return d, nil
	}
	ops := d.Ops
	if len(ops) == 0 {
		ops = []string{"sign"}
	}
	if !slices.Contains(ops, r.Op) {
		return d, transport.Errorf(transport.CodeDenied, "delegation %s does not allow %s", d.ID, r.Op)
	}
	if r.Op != "sign" {
		return d, nil
	}
	if len(d.Documents) > 0 && !slices.ContainsFunc(d.Documents, func(doc []byte) bool { return bytes.Equal(doc, r.Digest) }) {
		return d, transport.Errorf(transport.CodeDocumentRefused, "delegation %s: document not allowed", d.ID)
	}
	if d.Total > 0 && e.s.Used >= d.Total {
		return d, transport.Errorf(transport.CodeLimitReached, "delegation %s: all %d signatures used", d.ID, d.Total)
	}
	if d.PerHour > 0 {
		cut := now.Add(-time.Hour)
		e.s.recent = slices.DeleteFunc(e.s.recent, func(t time.Time) bool { return t.Before(cut) })
		if len(e.s.recent) >= d.PerHour {
			return d, transport.Errorf(transport.CodeLimitReached, "delegation %s: %d signatures per hour", d.ID, d.PerHour)
		}
	}
	// The signature counts from the moment it is allowed, so that
	// concurrent requests cannot overrun a limit together.
	e.s.Used++
	e.s.recent = append(e.s.recent, now)
	return d, nil
}

// LockCard locks every delegation on card: its real PIN was refused by
// the card (the owner changed it), and no delegate may spend the card's
// tries until the owner registers the PIN again and unlocks.
func (b *Book) LockCard(card string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.dels {
		if e.d.Card == card {
			e.s.Locked = true
		}
	}
}

// WrongVPIN records a wrong virtual PIN and reports whether the delegation
// is now locked.
func (b *Book) WrongVPIN(id string) (locked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return false
	}
	e.s.WrongVPIN++
	max := e.d.MaxWrongVPIN
	if max == 0 {
		max = 5
	}
	if e.s.WrongVPIN >= max {
		e.s.Locked = true
	}
	return e.s.Locked
}

// RightVPIN clears the count of wrong virtual PINs.
func (b *Book) RightVPIN(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.dels[id]; e != nil {
		e.s.WrongVPIN = 0
	}
}
