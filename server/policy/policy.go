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
// CodeLimitReached, CodeDocumentRefused, CodeKeyNotDelegated (a key the
// delegation does not name), CodeWarrantyRaw, CodeLocked. Changes
// (revocation, new limits) take effect at the next Check, also for
// sessions that are already open: a Check is made on every request.
//
// # Durable state
//
// What a refusal depends on (signatures used in all and in the last hour,
// wrong virtual PINs in a row, lockouts, card locks, wrong owner
// passphrases in a row) changes in the Book as requests are decided, and
// must survive a restart or a crash. The Book does not write it anywhere:
// every change takes the next number of one series, and [Book.Mark] returns
// the state of a delegation and its card with that number, for the record
// of the request that the server writes to its audit log before it
// answers. At start, a [Rebuild] collects the marks read back from the log,
// in any order, and [Book.Restore] puts the newest state of each delegation
// and card back, after the delegations are granted. Since a mark is taken
// after the changes of its request, and every answer waits for its record,
// nothing a delegate was told (a signature, a wrong vPIN, "limit reached",
// "locked") is forgotten; a change whose record never reached the disk was
// never answered. A restart never unlocks anything, and restores no count
// lower than an acknowledged one; signatures of the last hour are restored
// with the time of the first mark that counted them, which is never
// earlier than the signature.
//
// # Concurrency
//
// A Book is safe for concurrent use.
package policy

import (
	"bytes"
	"maps"
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
	// Keys, if set, are the IDs of the only keys of the card the delegate
	// may use (profiles.Key.ID: "9c", "81"); empty: every key.
	Keys []string
}

// AllowsKey reports whether the delegation lets its delegate use key id.
func (d Delegation) AllowsKey(id string) bool {
	return len(d.Keys) == 0 || slices.Contains(d.Keys, id)
}

// State is what a delegation has been through.
type State struct {
	Revoked   bool
	RevokedAt time.Time
	WrongVPIN int // in a row
	Locked    bool
	Used      int         // signatures counted: allowed by Check
	recent    []time.Time // signatures of the last hour, with PerHour set
}

// MaxWrongPassphrases locks a card's registered PIN against new
// delegations after that many wrong owner passphrases in a row: someone
// holding the owner's key is guessing. Registering the PIN again clears it.
const MaxWrongPassphrases = 5

// Event is a bit set of what one request changed in a Book; the audit log
// keeps it with the request's [Mark] (server/audit Policy.Events), so that
// the log says what happened where the refusal code alone cannot (a
// CodeLocked from the lockout check or from the card refusing its PIN, the
// vPIN a PIN-always signature checked).
type Event uint64

// Events. Their values are part of the audit log's format.
const (
	EventCounted          Event = 1 << iota // a signature counted against the limits
	EventWrongVPIN                          // a wrong virtual PIN
	EventRightVPIN                          // a right virtual PIN: the wrong ones in a row cleared
	EventLocked                             // the delegation locked after wrong virtual PINs
	EventCardLocked                         // the card refused its registered PIN: every delegation on it locked
	EventUnlocked                           // unlocked by the owner
	EventRevoked                            // revoked
	EventGranted                            // granted
	EventWrongPassphrase                    // a wrong owner passphrase for the card
	EventRightPassphrase                    // a right owner passphrase, or the card's PIN registered again
	EventPassphraseLocked                   // the card's registered PIN locked against delegation
)

// Book holds the delegations and their state.
type Book struct {
	mu     sync.Mutex
	dels   map[string]*entry
	cards  map[string]*cardState
	clock  func() time.Time
	serial uint64 // number of the last change
}

type entry struct {
	d      Delegation
	s      State
	serial uint64 // number of the delegation's last change
}

// cardState is what a remote card has been through.
type cardState struct {
	lock      uint64 // number of the change that last locked every delegation on it; 0: never
	wrongPass int    // wrong owner passphrases in a row
}

// NewBook returns an empty Book; clock nil means time.Now.
func NewBook(clock func() time.Time) *Book {
	if clock == nil {
		clock = time.Now
	}
	return &Book{dels: map[string]*entry{}, cards: map[string]*cardState{}, clock: clock}
}

// changed gives e the next number of the series. b.mu is held.
func (b *Book) changed(e *entry) {
	b.serial++
	if e != nil {
		e.serial = b.serial
	}
}

func (b *Book) card(name string) *cardState {
	c := b.cards[name]
	if c == nil {
		c = &cardState{}
		b.cards[name] = c
	}
	return c
}

// Grant adds or replaces a delegation; the state of a replaced one is kept.
func (b *Book) Grant(d Delegation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[d.ID]
	if e != nil {
		e.d = d
	} else {
		e = &entry{d: d}
		b.dels[d.ID] = e
	}
	b.changed(e)
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
	b.changed(e)
	return true
}

// Unlock clears a lockout after wrong virtual PINs, or after the card
// refused its registered PIN (the owner's decision).
func (b *Book) Unlock(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return false
	}
	e.s.Locked, e.s.WrongVPIN = false, 0
	b.changed(e)
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

// Recent returns how many signatures of delegation id count against its
// per-hour limit now (0 without one).
func (b *Book) Recent(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return 0
	}
	e.pruneRecent(b.clock())
	return len(e.s.recent)
}

func (e *entry) pruneRecent(now time.Time) {
	cut := now.Add(-time.Hour)
	e.s.recent = slices.DeleteFunc(e.s.recent, func(t time.Time) bool { return t.Before(cut) })
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
	Op       string // "login", "sign", "decrypt" (decryptions and key agreements)
	Digest   []byte // for "sign": the digest of the document, if known
	// Key is the ID of the key a "sign" or "decrypt" uses; "" when the
	// request names no key of the card (refused later as no such key).
	Key string
	// Raw, for "sign": a bare signature (PKCS #11 signing of a digest),
	// which cannot carry the delegation notice; a delegation with
	// Warranty refuses it (CodeWarrantyRaw) and signs documents only.
	Raw bool
}

// current is the delegation of delegate on card that requests are decided
// under. b.mu is held.
func (b *Book) current(delegate, card string) *entry {
	// The same delegate may hold several delegations on one card (an old,
	// revoked or expired one and its successor; the administration grants
	// no second one while one is live, see [Book.Live]): decide under the
	// one usable now, else a pending one, else an expired one, else a
	// revoked one, first in ID order among equals, so that the answer
	// never depends on map order and an expired grant never shadows its
	// renewal.
	now := b.clock()
	var e *entry
	for _, x := range b.dels {
		if x.d.Delegate != delegate || x.d.Card != card {
			continue
		}
		if e == nil || rank(x, now) < rank(e, now) || rank(x, now) == rank(e, now) && x.d.ID < e.d.ID {
			e = x
		}
	}
	return e
}

// rank orders delegations for current: usable now, pending, expired,
// revoked.
func rank(e *entry, now time.Time) int {
	switch {
	case e.s.Revoked:
		return 3
	case !e.d.NotAfter.IsZero() && !now.Before(e.d.NotAfter):
		return 2
	case !e.d.NotBefore.IsZero() && now.Before(e.d.NotBefore):
		return 1
	}
	return 0
}

// Live returns a delegation of delegate on card that is neither revoked
// nor over by from (its NotAfter is zero or later): one a new grant from
// that time would run beside. The administration refuses such a second
// grant: two live delegations of one delegate on one card would leave it
// unclear whose window, limits and keys decide a request.
func (b *Book) Live(delegate, card string, from time.Time) (Delegation, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := b.clock(); from.Before(now) {
		from = now
	}
	for _, id := range slices.Sorted(maps.Keys(b.dels)) {
		x := b.dels[id]
		if x.d.Delegate == delegate && x.d.Card == card && !x.s.Revoked &&
			(x.d.NotAfter.IsZero() || x.d.NotAfter.After(from)) {
			return x.d, true
		}
	}
	return Delegation{}, false
}

// Current returns the delegation of delegate on card that [Book.Check]
// decides requests under (the first usable one in ID order).
func (b *Book) Current(delegate, card string) (Delegation, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.current(delegate, card); e != nil {
		return e.d, true
	}
	return Delegation{}, false
}

// Check decides a request: nil, or a *transport.Error naming the reason.
// It returns the delegation the decision was made under.
func (b *Book) Check(r Request) (Delegation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	e := b.current(r.Delegate, r.Card)
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
	if r.Key != "" && !d.AllowsKey(r.Key) {
		return d, transport.Errorf(transport.CodeKeyNotDelegated, "delegation %s does not allow key %s", d.ID, r.Key)
	}
	// Decryptions and key agreements count against the same limits as
	// signatures; the allowed documents concern signatures only.
	if r.Op != "sign" && r.Op != "decrypt" {
		return d, nil
	}
	if r.Op == "sign" && r.Raw && d.Warranty {
		return d, transport.Errorf(transport.CodeWarrantyRaw, "delegation %s has warranty: it signs documents only, with the delegation notice", d.ID)
	}
	if r.Op == "sign" && len(d.Documents) > 0 && !slices.ContainsFunc(d.Documents, func(doc []byte) bool { return bytes.Equal(doc, r.Digest) }) {
		return d, transport.Errorf(transport.CodeDocumentRefused, "delegation %s: document not allowed", d.ID)
	}
	if d.Total > 0 && e.s.Used >= d.Total {
		return d, transport.Errorf(transport.CodeLimitReached, "delegation %s: all %d signatures used", d.ID, d.Total)
	}
	if d.PerHour > 0 {
		e.pruneRecent(now)
		if len(e.s.recent) >= d.PerHour {
			return d, transport.Errorf(transport.CodeLimitReached, "delegation %s: %d signatures per hour", d.ID, d.PerHour)
		}
	}
	// The signature counts from the moment it is allowed, so that
	// concurrent requests cannot overrun a limit together.
	e.s.Used++
	if d.PerHour > 0 {
		e.s.recent = append(e.s.recent, now)
	}
	b.changed(e)
	return d, nil
}

// LockCard locks every delegation on card: its real PIN was refused by
// the card (the owner changed it), and no delegate may spend the card's
// tries until the owner registers the PIN again and unlocks.
func (b *Book) LockCard(card string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changed(nil)
	b.card(card).lock = b.serial
	for _, e := range b.dels {
		if e.d.Card == card {
			e.s.Locked = true
			e.serial = b.serial
		}
	}
}

// PassphraseLocked reports whether card's registered PIN is locked
// against new delegations after wrong owner passphrases.
func (b *Book) PassphraseLocked(card string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.cards[card]
	return c != nil && c.wrongPass >= MaxWrongPassphrases
}

// WrongPassphrase records a wrong owner passphrase for card and reports
// whether its registered PIN is now locked against delegation.
func (b *Book) WrongPassphrase(card string) (locked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.card(card)
	c.wrongPass++
	b.changed(nil)
	return c.wrongPass >= MaxWrongPassphrases
}

// RightPassphrase clears the wrong owner passphrases of card: a right one
// was given, or the card's PIN was registered again.
func (b *Book) RightPassphrase(card string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.cards[card]; c != nil && c.wrongPass != 0 {
		c.wrongPass = 0
		b.changed(nil)
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
	if e.s.WrongVPIN >= e.d.wrongVPINLimit() {
		e.s.Locked = true
	}
	b.changed(e)
	return e.s.Locked
}

// RightVPIN clears the count of wrong virtual PINs.
func (b *Book) RightVPIN(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.dels[id]; e != nil && e.s.WrongVPIN != 0 {
		e.s.WrongVPIN = 0
		b.changed(e)
	}
}

// Mark is the state of one delegation and of its remote card at one point
// of a Book's series of changes: what the audit record of a request keeps,
// so that [Book.Restore] can put it back.
type Mark struct {
	// Serial is the number of the Book's last change when the mark was
	// taken: of two marks, the one with the higher Serial is newer.
	Serial uint64
	// Time is when the mark was taken: every signature Used counts was
	// counted at or before it.
	Time time.Time
	// Events is what the request changed, as the server saw it; the Book
	// only keeps it.
	Events Event
	// Delegation is "" in a mark of a card alone.
	Delegation string
	Card       string
	Used       int
	WrongVPIN  int
	Locked     bool
	Revoked    bool
	// CardLock is the number of the change that last locked every
	// delegation on Card; 0: never.
	CardLock uint64
	// WrongPassphrase counts wrong owner passphrases in a row for Card.
	WrongPassphrase int
}

// Mark returns the state of delegation (if not "") and of its card, or of
// card alone; false if neither is known.
func (b *Book) Mark(delegation, card string) (Mark, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := Mark{Serial: b.serial, Time: b.clock(), Card: card}
	if e := b.dels[delegation]; delegation != "" && e != nil {
		m.Delegation, m.Card = delegation, e.d.Card
		m.Used, m.WrongVPIN, m.Locked, m.Revoked = e.s.Used, e.s.WrongVPIN, e.s.Locked, e.s.Revoked
	} else if card == "" {
		return Mark{}, false
	}
	if c := b.cards[m.Card]; c != nil {
		m.CardLock, m.WrongPassphrase = c.lock, c.wrongPass
	}
	return m, true
}

// MaxRebuiltPerHour bounds the signatures of the last hour a [Rebuild]
// keeps per delegation: per-hour limits up to this are restored exactly.
const MaxRebuiltPerHour = 1 << 17

// Rebuild collects marks read back from the audit log, in any order, for
// [Book.Restore]. Its memory is one mark per delegation and card, and one
// time per signature of the last hour. The zero value is ready to use; a
// Rebuild is not safe for concurrent use.
type Rebuild struct {
	// Since: signatures counted before it are out of every per-hour
	// window and not kept. Zero: all are kept. pscsd sets an hour ago.
	Since time.Time

	serial uint64
	dels   map[string]*rebuilt
	cards  map[string]Mark
}

type rebuilt struct {
	m Mark // the newest
	// times[i] is the time (Unix ms) by which signature base+i (counted
	// from 1) was made: the earliest mark that counted it.
	base  int
	times []int64
}

// Add takes one mark into account.
func (r *Rebuild) Add(m Mark) {
	if r.dels == nil {
		r.dels, r.cards = map[string]*rebuilt{}, map[string]Mark{}
	}
	r.serial = max(r.serial, m.Serial)
	if m.Card != "" {
		if c, ok := r.cards[m.Card]; !ok || m.Serial >= c.Serial {
			r.cards[m.Card] = m
		}
	}
	if m.Delegation == "" {
		return
	}
	x := r.dels[m.Delegation]
	if x == nil {
		x = &rebuilt{m: m, base: 1}
		r.dels[m.Delegation] = x
	} else if m.Serial >= x.m.Serial {
		x.m = m
	}
	x.count(m.Used, m.Time.UnixMilli(), r.Since)
}

// count records that signatures 1 to used were made by at.
func (x *rebuilt) count(used int, at int64, since time.Time) {
	if used < x.base {
		return // those are out of the window already
	}
	if !since.IsZero() && at < since.UnixMilli() {
		// Made before since: out of every window.
		x.times = x.times[min(used-x.base+1, len(x.times)):]
		x.base = used + 1
		return
	}
	end := x.base + len(x.times) // the first signature without a time
	for i := min(used, end-1) - x.base; i >= 0 && x.times[i] > at; i-- {
		x.times[i] = at // counted earlier than thought
	}
	for k := end; k <= used; k++ {
		x.times = append(x.times, at)
	}
	if len(x.times) > 2*MaxRebuiltPerHour { // now and then, not at every mark
		over := len(x.times) - MaxRebuiltPerHour
		x.times = append([]int64(nil), x.times[over:]...)
		x.base += over
	}
}

// Restore puts the newest state r collected back into b: for each
// delegation b holds (grant them first), the counts of signatures in all
// and in the last hour, the wrong virtual PINs in a row, the lockout and
// the revocation; for each card, the lock after it refused its PIN and
// the wrong owner passphrases. It never lowers a count b already has and
// never unlocks. The Book's series of changes continues after the newest
// mark.
func (b *Book) Restore(r *Rebuild) {
	if r == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.serial = max(b.serial, r.serial)
	for _, name := range slices.Sorted(maps.Keys(r.cards)) {
		m := r.cards[name]
		c := b.card(name)
		c.lock = max(c.lock, m.CardLock)
		c.wrongPass = max(c.wrongPass, m.WrongPassphrase)
	}
	now := b.clock()
	for id, e := range b.dels {
		var seen uint64
		if x := r.dels[id]; x != nil {
			m := x.m
			seen = m.Serial
			e.s.Used = max(e.s.Used, m.Used)
			e.s.WrongVPIN = max(e.s.WrongVPIN, m.WrongVPIN)
			e.s.Locked = e.s.Locked || m.Locked
			if m.Revoked && !e.s.Revoked {
				e.s.Revoked, e.s.RevokedAt = true, m.Time
			}
			if e.d.PerHour > 0 {
				cut := now.Add(-time.Hour)
				var recent []time.Time
				for _, ms := range x.times[max(0, len(x.times)-e.d.PerHour):] {
					if t := time.UnixMilli(ms); !t.Before(cut) {
						recent = append(recent, t)
					}
				}
				e.s.recent = append(recent, e.s.recent...)
			}
		}
		// Locked with its card after its newest mark (or with none).
		if c := b.cards[e.d.Card]; c != nil && c.lock > seen {
			e.s.Locked = true
		}
		e.serial = max(e.serial, seen)
	}
}
