// Package rsc serves remote smart cards: a single remote card is one
// physical card, a parallel remote card is a pool of cards that take
// requests in turn, so that throughput grows with the number of cards and
// every card does its share.
//
// # Pools
//
// A [Pool] holds members ([Member]): each is one card with its own owner
// goroutine (cards.Worker) and its profile. Requests ([Pool.Do]) wait for
// a card; a member takes the next request as soon as it is free, so a
// pool of n cards serves n requests at a time. A request waits at most
// until its context ends.
//
// # Round robin
//
// When several cards are free, the request goes to the one that took a
// request longest ago (of cards that never took one, the first by ID): the
// pool counts the requests it gives out, and each member keeps the count
// at its last. So requests that come one after the other on idle cards go
// to the cards in turn, and n·k of them on n cards give each card exactly
// k. A busy card is skipped, never waited for, so throughput is kept; it
// keeps its old place, and takes the next request once free. A member is
// free again before the caller of its request has the answer, so a caller
// that makes its next request at once finds the card free. Under
// concurrency the share is as even as the cards' speeds allow: a card that
// is slower, or held longer by its requests, serves fewer.
//
// A request may be for some cards only ([Pool.DoOn]: a key that one card
// of a pool of different keys holds): it goes to those in turn, waits for
// one of them when all are busy, and does not keep the other requests,
// even its principal's later ones, from the other cards.
//
// # Fairness between principals
//
// Waiting requests are kept per principal (the delegate a request serves),
// and a free card takes the next one fairly across principals, not in
// their order of arrival: each waiting request gets a start tag, one more
// than the principal's previous request's, and never less than the tag of
// the request a card took last (start-time fair queueing with one unit per
// request). A free card takes the waiting request with the smallest tag;
// of equal tags, the one whose principal has fewest requests waiting, then
// that of the principal the card served last (it needs no reset), then
// the oldest. So principals that keep requests waiting are served in turn,
// one request each, and a principal with one request waiting, whatever
// the backlog of another, is served next, or after at most one request of
// each other principal: one delegate's flood delays another's
// request by the requests the cards are running, and at most one of the
// flood's more. Requests a card failed, waiting for another card, go
// before all others (see below).
//
// Memory is bounded twice. A principal may have [Options.PerPrincipal]
// requests waiting; beyond, its next request is refused at once with
// [ErrBusy], and no other principal's. All principals together may have
// [Options.QueueSize] requests waiting; beyond, every new request is
// refused with ErrBusy, which takes QueueSize/PerPrincipal principals at
// their share at once (with PerPrincipal = QueueSize, one principal can
// fill the queue alone). Requests a card failed count in both bounds,
// but are never refused: with them, a principal's and the pool's waiting
// requests exceed their bounds by at most one per member. The pool
// remembers a principal while it has requests waiting, and afterwards
// while its tag is ahead of the pool's, at most QueueSize such principals
// (beyond, it forgets them all, and they start again at the pool's tag).
//
// # Cards that fail
//
// A request that a card failed (connecting, the reset for a new principal,
// the transaction, an exchange, or an execution error the card answered:
// every error cards.Worker marks with cards.ErrCardFailed) runs again, from
// its start and with its own context, on another member: first on one that
// has not tried it, and only when every member has, on one that did (with
// a fresh connection). A request runs at most [MaxAttempts] times; it fails
// with [ErrNoCard], wrapping the last card's error, after that or when no
// member is left, and with its context's error, wrapping the card's, when
// its context ended meanwhile. A card that answered otherwise, even with an
// error status, answered: a wrong PIN in particular is never tried on
// another card, whose PIN tries it would spend.
//
// A card that disappeared (removed, its reader or the PC/SC service gone)
// also leaves the pool; one that failed otherwise stays and connects afresh
// for its next request. A card that comes back is added again with
// [Pool.Add] and serves at once.
//
// Every request runs inside one PC/SC transaction as a principal (the
// delegate it serves): a card is reset before a request of another
// principal than the one it served last, so no delegate rides on another's
// PIN (see cards.Worker.DoAs).
//
// # Keys
//
// A pool created with [Options.SameKeys] (a parallel remote card shown as
// one PKCS #11 slot) refuses a member whose public keys differ from the
// pool's: an application that read the slot's certificate expects every
// signature to verify under it. Without it, members may hold different
// keys, and each result travels with the [Member] that made it.
//
// Keys are numbered ([Pool.Key]) in the order the pool first saw them, and
// a number stays with its key while the pool lives: when a card's keys
// change, or a card leaves and comes back, no number comes to name another
// key. In a pool with SameKeys a key is its ID (a card's slot, "9c"), the
// same on every card; in a pool of different keys it is a card's key
// ([KeyRef]: the member's ID and the key's ID), so three cards each with a
// key in slot 9c have three numbers, and [Pool.Shown] lists every card's
// keys. A request with one of them goes to its card ([Holds], DoOn); one
// that any card with a key of that ID may serve (a document signature,
// which carries the certificate of the card that made it) goes to those
// cards in turn.
//
// # Cards that change
//
// Another program may change a card while the pool serves it (generate a
// new key in a slot, import a certificate, delete a key), and PC/SC tells
// only that the card was reset, when the program resets it. A member reads
// its card's keys again before a request whenever its worker connected
// anew since it read them (cards.Worker.Connections: the card was reset by
// another client, removed, or failed), and [Member.Reread] reads them when
// a request finds reason to (a signature that does not verify under the
// key it had); with [Options.CheckEvery], the pool also checks each card
// while it is idle. Keys that changed become the member's, the pool tells
// of it ([Options.OnChange]), and requests use them; in a pool with
// SameKeys and other cards, a card whose keys no longer match leaves the
// pool (its request goes to another card); the first card to join an
// empty pool sets the pool's keys, as at start.
//
// # Concurrency
//
// A Pool is safe for concurrent use.
package rsc

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/profiles"
)

// Errors of a pool.
var (
	ErrBusy      = errors.New("rsc: queue full")
	ErrNoCard    = errors.New("rsc: no card can serve this remote card")
	ErrClosed    = errors.New("rsc: remote card closed")
	ErrMixedKeys = errors.New("rsc: card holds other keys than the remote card's")
)

// Member is one card of a pool. Its methods are safe for concurrent use;
// Reread is for a request's function, which holds the card.
type Member struct {
	// ID names the card (its serial), stable across reinsertion.
	ID string
	// Reader is the reader the card is in, for logs; "" if unknown.
	Reader string
	// Worker owns the card.
	Worker *cards.Worker
	// Profile opens the card's application for every request.
	Profile profiles.Profile

	keys atomic.Pointer[[]profiles.Key]
	// read is the Worker's connection count when keys were read: a
	// request on a later connection reads them again.
	read atomic.Uint64
	pool atomic.Pointer[Pool]

	served atomic.Int64
	busy   atomic.Int64 // nanoseconds spent serving
}

// NewMember makes a member of the card w owns: it opens profile on the card
// and reads its keys.
func NewMember(ctx context.Context, id string, w *cards.Worker, profile profiles.Profile) (*Member, error) {
	m := &Member{ID: id, Worker: w, Profile: profile}
	err := w.Do(ctx, func(ctx context.Context, t cards.Transmitter) error {
		c, err := profile.Open(ctx, t)
		if err != nil {
			return err
		}
		keys, err := c.Keys(ctx)
		if err != nil {
			return err
		}
		m.setKeys(keys, w.Connections())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rsc: card %s: %w", id, err)
	}
	return m, nil
}

// setKeys makes keys, read on connection conn of the member's worker, the
// member's.
func (m *Member) setKeys(keys []profiles.Key, conn uint64) {
	m.keys.Store(&keys)
	m.read.Store(conn)
}

// Served is the number of requests the member ran.
func (m *Member) Served() int64 { return m.served.Load() }

// Busy is the time the member spent serving.
func (m *Member) Busy() time.Duration { return time.Duration(m.busy.Load()) }

// Keys returns the card's keys as last read: when it joined, and again
// whenever it may have changed (see the package documentation). The slice
// is shared: do not modify it.
func (m *Member) Keys() []profiles.Key {
	if p := m.keys.Load(); p != nil {
		return *p
	}
	return nil
}

// Key returns the member's key with ID id.
func (m *Member) Key(id string) (profiles.Key, bool) {
	for _, k := range m.Keys() {
		if k.ID == id {
			return k, true
		}
	}
	return profiles.Key{}, false
}

// Certificate returns the member's certificate for key id, or nil.
func (m *Member) Certificate(id string) *x509.Certificate {
	k, _ := m.Key(id)
	return k.Certificate
}

// Reread reads the card's keys again through card, the member's card as a
// request's function got it (inside the request's transaction), and makes
// them the member's if they changed: its pool numbers new keys, and tells of
// the change ([Options.OnChange]). A request whose signature does not verify
// under the key it had calls it (another program may have put a new key in
// the slot without resetting the card). It returns the keys and whether
// they changed. In a pool with [Options.SameKeys] and other cards, keys
// that no longer match the pool's fail with an error wrapping
// [ErrMixedKeys]: the member leaves the pool when the request ends, and
// the request goes to another card.
func (m *Member) Reread(ctx context.Context, card profiles.Card) ([]profiles.Key, bool, error) {
	keys, err := card.Keys(ctx)
	if err != nil {
		return nil, false, err
	}
	changed, err := m.rekey(keys, m.Worker.Connections())
	return keys, changed, err
}

// rekey makes keys, read on connection conn, the member's, and reports
// whether they differ from what it had.
func (m *Member) rekey(keys []profiles.Key, conn uint64) (bool, error) {
	old := m.Keys()
	if sameKeySet(old, keys) {
		m.read.Store(conn)
		return false, nil
	}
	p := m.pool.Load()
	if p == nil {
		m.setKeys(keys, conn)
		return true, nil
	}
	return true, p.rekey(m, old, keys, conn)
}

// Options configure a Pool. The zero value is usable.
type Options struct {
	// QueueSize bounds the requests waiting for a card, all principals
	// together; default 256.
	QueueSize int
	// PerPrincipal bounds the requests of one principal waiting for a
	// card, so that no principal fills the queue for the others; default
	// QueueSize/4 (64 with the default QueueSize), at least 1, at most
	// QueueSize.
	PerPrincipal int
	// SameKeys makes the pool refuse members whose keys differ.
	SameKeys bool
	// Logger receives membership changes; nil discards them.
	Logger *slog.Logger
	// OnChange, if set, is called after a card joined or left, or a card's
	// keys changed, with the number of cards now in the pool (pscsd tells
	// the delegates). It is called on no lock of the pool.
	OnChange func(members int)
	// CheckEvery, if set, is how often the pool checks each card for a
	// new connection of its worker since its keys were read (see "Cards
	// that change"), in a transaction that sends the card nothing unless
	// there was one, so that delegates learn of a change before their
	// next request. Zero: only requests check, before they run.
	CheckEvery time.Duration
}

// Pool is a remote card.
type Pool struct {
	name string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	members map[string]*memberRun
	keys    []crypto.PublicKey // the pool's keys, with SameKeys
	// ids are the keys the pool's cards had, in the order it first saw
	// them: a key's number (see Key).
	ids    []KeyRef
	closed bool
	// principals are the principals with requests waiting (in their
	// queue, or in retries), and those remembered for their tag (idle of
	// them); total counts the requests waiting, queued and retried.
	principals map[string]*principal
	idle       int
	total      int
	vtime      uint64 // the tag of the request a card took last
	seq        uint64 // requests admitted, for their order of arrival
	// retries are the requests a card failed, served before the queues.
	retries []*job
	// turns counts the requests given to members: a member's turn is the
	// count when it last took one, and the free member with the oldest
	// turn takes the next (see dispatchLocked).
	turns   uint64
	waiting atomic.Int64 // total, for Waiting without the lock

	// stopCheck ends the loop of Options.CheckEvery, which closes
	// checked; both nil without it.
	stopCheck, checked chan struct{}
}

// principal is what a pool keeps of one principal, under Pool.mu.
type principal struct {
	name    string
	queue   []*job // waiting for a card for the first time, tags ascending
	retried int    // its requests among the pool's retries
	next    uint64 // the tag its next request starts from, at least
}

func (pr *principal) waiting() int { return len(pr.queue) + pr.retried }

type memberRun struct {
	m    *Member
	stop chan struct{}
	done chan struct{}
	// signal tells the member's goroutine that assigned is set.
	signal chan struct{}

	// Under Pool.mu:
	last     string // the principal it served last
	busy     bool   // given a request it has not finished
	turn     uint64 // Pool.turns when it took its last request; 0: none yet
	assigned *job   // the request it is to run next, not yet started
}

func newRun(m *Member) *memberRun {
	return &memberRun{m: m, stop: make(chan struct{}), done: make(chan struct{}), signal: make(chan struct{}, 1)}
}

type job struct {
	ctx       context.Context
	principal string
	fn        func(ctx context.Context, card profiles.Card, m *Member) error
	// on reports whether a member may run the request (one holding the
	// key it names); nil: any member.
	on      func(m *Member) bool
	result  chan error
	claimed atomic.Bool // taken by a member, or given up by its caller

	// Under Pool.mu:
	tag, seq uint64
	tried    []*memberRun // the members whose card failed it, in order
	lastErr  error        // the last one's error
}

// failed is err for j, wrapping the last card failure if a card failed
// it.
func (j *job) failed(err error) error {
	if j.lastErr == nil {
		return err
	}
	return fmt.Errorf("%w: %w", err, j.lastErr)
}

// may reports whether r may run j.
func (j *job) may(r *memberRun) bool { return j.on == nil || j.on(r.m) }

// MaxAttempts bounds the runs of one request on cards that fail it.
const MaxAttempts = 4

// NewPool makes an empty pool.
func NewPool(name string, opts Options) *Pool {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.PerPrincipal <= 0 {
		opts.PerPrincipal = max(1, opts.QueueSize/4)
	}
	opts.PerPrincipal = min(opts.PerPrincipal, opts.QueueSize)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		name: name, opts: opts, log: log.With("rsc", name),
		members:    map[string]*memberRun{},
		principals: map[string]*principal{},
	}
	if opts.CheckEvery > 0 {
		p.stopCheck, p.checked = make(chan struct{}), make(chan struct{})
		go p.checkLoop()
	}
	return p
}

// checkLoop checks every card of the pool every Options.CheckEvery until
// the pool closes.
func (p *Pool) checkLoop() {
	defer close(p.checked)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-p.stopCheck; cancel() }()
	tick := time.NewTicker(p.opts.CheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.stopCheck:
			return
		case <-tick.C:
		}
		for _, m := range p.Members() {
			err := m.check(ctx)
			switch {
			case errors.Is(err, ErrMixedKeys):
				p.mu.Lock()
				if r := p.members[m.ID]; r != nil && r.m == m {
					p.mu.Unlock()
					p.removeRun(r)
				} else {
					p.mu.Unlock()
				}
			case err != nil && ctx.Err() == nil:
				p.log.Debug("card check failed", "card", m.ID, "reader", m.Reader, "err", err)
			}
		}
	}
}

// check reads the card's keys again if its worker connected anew since
// they were read, in a transaction that sends the card nothing otherwise
// (beginning it is how PC/SC tells of a reset by another client).
func (m *Member) check(ctx context.Context) error {
	return m.Worker.Do(ctx, func(ctx context.Context, t cards.Transmitter) error {
		n := m.Worker.Connections()
		if n == m.read.Load() {
			return nil
		}
		card, err := m.Profile.Open(ctx, t)
		if err != nil {
			return err
		}
		keys, err := card.Keys(ctx)
		if err != nil {
			return err
		}
		_, err = m.rekey(keys, n)
		return err
	})
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// Add makes m a member; it starts serving at once. A member with the same
// ID replaces the old one (a card that came back).
func (p *Pool) Add(m *Member) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	keys := m.Keys()
	if p.opts.SameKeys {
		pubs := publicKeys(keys)
		if p.keys == nil {
			p.keys = pubs
		} else if !sameKeys(p.keys, pubs) {
			p.mu.Unlock()
			return fmt.Errorf("%w: card %s in %s", ErrMixedKeys, m.ID, p.name)
		}
	}
	p.numberLocked(m.ID, keys)
	m.pool.Store(p)
	if old := p.members[m.ID]; old != nil {
		p.stopLocked(old)
	}
	r := newRun(m)
	p.members[m.ID] = r
	go p.serve(r)
	p.dispatchLocked()
	n := len(p.members)
	p.mu.Unlock()
	p.log.Info("card joined", "card", m.ID, "members", n)
	p.changed(n)
	return nil
}

func (p *Pool) changed(n int) {
	if p.opts.OnChange != nil {
		p.opts.OnChange(n)
	}
}

// Remove takes the member with id out of the pool; its request in progress
// finishes first.
func (p *Pool) Remove(id string) {
	p.mu.Lock()
	r := p.members[id]
	if r != nil {
		p.leaveLocked(r)
	}
	n := len(p.members)
	p.mu.Unlock()
	if r != nil {
		p.log.Info("card left", "card", id, "members", n)
		p.changed(n)
	}
}

// removeRun takes r out of the pool unless it was replaced meanwhile (the
// card came back under the same ID).
func (p *Pool) removeRun(r *memberRun) {
	p.mu.Lock()
	left := p.members[r.m.ID] == r
	if left {
		p.leaveLocked(r)
	}
	n := len(p.members)
	p.mu.Unlock()
	p.log.Info("card left", "card", r.m.ID, "members", n)
	if left {
		p.changed(n)
	}
}

// leaveLocked takes r, a member, out of the pool. When it was the last,
// the requests still waiting fail, in the same critical section, so that
// none fails while a card that joined meanwhile could serve it; otherwise
// the members that tried a request waiting for r may now take it again.
func (p *Pool) leaveLocked(r *memberRun) {
	delete(p.members, r.m.ID)
	p.stopLocked(r)
	if len(p.members) == 0 {
		p.failWaitingLocked(ErrNoCard)
		// The next card to join sets the pool's keys, as at start: a
		// card whose keys were changed while it was out is served again.
		p.keys = nil
	} else {
		p.failUnservableLocked()
		p.dispatchLocked()
	}
}

// servableLocked reports whether a member of the pool may run j.
func (p *Pool) servableLocked(j *job) bool {
	if j.on == nil {
		return len(p.members) > 0
	}
	for _, r := range p.members {
		if j.on(r.m) {
			return true
		}
	}
	return false
}

// stopLocked stops r's goroutine after its request in progress; a request
// given to r that it has not started waits again, before all others
// (unless its caller gave up on it meanwhile).
func (p *Pool) stopLocked(r *memberRun) {
	close(r.stop)
	j := r.assigned
	r.assigned = nil
	if j != nil && !j.claimed.Load() {
		p.retries = slices.Insert(p.retries, 0, j)
		p.principalLocked(j.principal).retried++
		p.addWaitingLocked(1)
	}
}

// dispatchLocked gives waiting requests to free members. Free members
// take them in turn: the one that took a request longest ago first (of
// those that never took one, by ID), each the request it would take
// (takeRetryLocked, then takeQueuedLocked). So when cards are idle,
// requests go to them in turn, each card taking one request of every n;
// a busy card is skipped, and takes its next request once it is free
// again, with its old turn, so that it catches up.
func (p *Pool) dispatchLocked() {
	if p.closed || p.total == 0 {
		return
	}
	free := make([]*memberRun, 0, len(p.members))
	for _, r := range p.members {
		if !r.busy {
			free = append(free, r)
		}
	}
	slices.SortFunc(free, func(a, b *memberRun) int {
		if c := cmp.Compare(a.turn, b.turn); c != 0 {
			return c
		}
		return strings.Compare(a.m.ID, b.m.ID)
	})
	for _, r := range free {
		if p.total == 0 {
			return
		}
		j := p.takeRetryLocked(r)
		if j == nil {
			j = p.takeQueuedLocked(r)
		}
		if j == nil {
			continue // none it may run
		}
		p.turns++
		r.turn, r.busy, r.last, r.assigned = p.turns, true, j.principal, j
		select {
		case r.signal <- struct{}{}:
		default:
		}
	}
}

// failUnservableLocked fails the waiting requests that no member may run
// (those for a card that left) with ErrNoCard.
func (p *Pool) failUnservableLocked() {
	servable := p.servableLocked
	p.retries = slices.DeleteFunc(p.retries, func(j *job) bool {
		if servable(j) {
			return false
		}
		j.result <- j.failed(ErrNoCard)
		p.addWaitingLocked(-1)
		pr := p.principals[j.principal]
		pr.retried--
		p.settleLocked(pr)
		return true
	})
	for _, pr := range p.principals {
		n := len(pr.queue)
		pr.queue = slices.DeleteFunc(pr.queue, func(j *job) bool {
			if servable(j) {
				return false
			}
			j.result <- ErrNoCard
			return true
		})
		if d := n - len(pr.queue); d > 0 {
			if len(pr.queue) == 0 {
				pr.queue = nil
			}
			p.addWaitingLocked(-d)
			p.settleLocked(pr)
		}
	}
}

// failWaitingLocked fails every request still waiting, err wrapping the
// last card failure of those that were tried.
func (p *Pool) failWaitingLocked(err error) {
	for _, j := range p.retries {
		j.result <- j.failed(err)
	}
	clear(p.retries)
	p.retries = p.retries[:0]
	for _, pr := range p.principals {
		for _, j := range pr.queue {
			j.result <- err
		}
	}
	clear(p.principals)
	p.idle, p.total = 0, 0
	p.waiting.Store(0)
}

// principalLocked returns the pool's record of name, made if need be.
func (p *Pool) principalLocked(name string) *principal {
	pr := p.principals[name]
	if pr == nil {
		pr = &principal{name: name, next: p.vtime}
		p.principals[name] = pr
	} else if pr.waiting() == 0 {
		p.idle--
	}
	return pr
}

// settleLocked keeps or forgets pr, whose requests waiting went down: a
// principal with none is remembered only while its next tag is ahead of
// the pool's, and at most QueueSize of them.
func (p *Pool) settleLocked(pr *principal) {
	if pr.waiting() > 0 {
		return
	}
	if pr.next <= p.vtime {
		delete(p.principals, pr.name)
		return
	}
	p.idle++
	if p.idle > p.opts.QueueSize {
		p.forgetIdleLocked(func(*principal) bool { return true })
	}
}

// forgetIdleLocked forgets the principals with no request waiting that
// drop reports.
func (p *Pool) forgetIdleLocked(drop func(*principal) bool) {
	for name, pr := range p.principals {
		if pr.waiting() == 0 && drop(pr) {
			delete(p.principals, name)
			p.idle--
		}
	}
}

// addWaitingLocked counts n more requests waiting (n < 0: fewer).
func (p *Pool) addWaitingLocked(n int) {
	p.total += n
	p.waiting.Store(int64(p.total))
}

// Members returns the current members.
func (p *Pool) Members() []*Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Member, 0, len(p.members))
	for _, r := range p.members {
		out = append(out, r.m)
	}
	slices.SortFunc(out, func(a, b *Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// KeyRef names a key of a pool by its ID on the card (a PIV slot, an
// OpenPGP key reference). In a pool with [Options.SameKeys] every card
// holds it, and Card is ""; in a pool of cards with different keys, Card
// is the ID of the member that holds it.
type KeyRef struct {
	Card string
	ID   string
}

// refLocked is the reference of key id of member card.
func (p *Pool) refLocked(card, id string) KeyRef {
	if p.opts.SameKeys {
		return KeyRef{ID: id}
	}
	return KeyRef{Card: card, ID: id}
}

// Key is the key numbered idx, without copying the member list: for the
// request path. In a pool with SameKeys it is the key of the pool's first
// card (by ID), every card's; in a pool of cards with different keys, the
// key of the card that holds it. Keys are numbered in the order the pool
// first saw them (a card's keys in the order its profile lists them), and
// a number stays with its key (its ID, and in a pool of different keys
// its card's ID) while the pool lives, so that a number a delegate holds
// never comes to name another key when a card's keys change or a card
// leaves and comes back: ok is false when no card of the pool has the
// number's key now (see KeyRef).
func (p *Pool) Key(idx int) (profiles.Key, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx < 0 || idx >= len(p.ids) {
		return profiles.Key{}, false
	}
	ref := p.ids[idx]
	if ref.Card != "" {
		r := p.members[ref.Card]
		if r == nil {
			return profiles.Key{}, false
		}
		return r.m.Key(ref.ID)
	}
	var first *Member
	for _, r := range p.members {
		if first == nil || r.m.ID < first.ID {
			first = r.m
		}
	}
	if first == nil {
		return profiles.Key{}, false
	}
	return first.Key(ref.ID)
}

// KeyRef returns the key numbered idx: ok is false when no card of the
// pool ever had a key with that number.
func (p *Pool) KeyRef(idx int) (KeyRef, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx < 0 || idx >= len(p.ids) {
		return KeyRef{}, false
	}
	return p.ids[idx], true
}

// KeyID returns the ID on the card of the key numbered idx (KeyRef's ID).
func (p *Pool) KeyID(idx int) (string, bool) {
	ref, ok := p.KeyRef(idx)
	return ref.ID, ok
}

// Holds returns a function for [Pool.DoOn] that accepts the members
// holding ref: in a pool with SameKeys, every member with a key of ref's
// ID; otherwise ref's card.
func Holds(ref KeyRef) func(m *Member) bool {
	return func(m *Member) bool {
		if ref.Card != "" && m.ID != ref.Card {
			return false
		}
		_, ok := m.Key(ref.ID)
		return ok
	}
}

// NumberedKey is a key a remote card shows, with its number (see
// [Pool.Key]) and the card that holds it (in a pool with SameKeys, "").
type NumberedKey struct {
	Number int
	Card   string
	profiles.Key
}

// Shown returns the keys a remote card shows, each under its number: in a
// pool with SameKeys the first card's (by ID), every card's; in a pool of
// cards with different keys every card's, each a key of its own, in
// Members order. Numbers of keys the pool had not seen are made.
func (p *Pool) Shown() []NumberedKey {
	ms := p.Members()
	if p.opts.SameKeys && len(ms) > 1 {
		ms = ms[:1]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []NumberedKey
	for _, m := range ms {
		keys := m.Keys()
		p.numberLocked(m.ID, keys)
		for _, k := range keys {
			ref := p.refLocked(m.ID, k.ID)
			card := ref.Card
			out = append(out, NumberedKey{Number: slices.Index(p.ids, ref), Card: card, Key: k})
		}
	}
	return out
}

// numberLocked numbers the keys of member card the pool has not seen yet.
func (p *Pool) numberLocked(card string, keys []profiles.Key) {
	for _, k := range keys {
		if ref := p.refLocked(card, k.ID); !slices.Contains(p.ids, ref) {
			p.ids = append(p.ids, ref)
		}
	}
}

// rekey makes keys, read on connection conn, m's instead of old, and tells
// of the change.
func (p *Pool) rekey(m *Member, old, keys []profiles.Key, conn uint64) error {
	p.mu.Lock()
	if p.opts.SameKeys {
		pubs := publicKeys(keys)
		alone := len(p.members) == 0 || len(p.members) == 1 && p.members[m.ID] != nil && p.members[m.ID].m == m
		switch {
		case alone || p.keys == nil:
			p.keys = pubs
		case !sameKeys(p.keys, pubs):
			p.mu.Unlock()
			p.log.Error("card's keys changed: they no longer match the other cards' of the remote card, the card leaves it",
				"card", m.ID, "reader", m.Reader, "keys", describeKeys(keys))
			return fmt.Errorf("%w: card %s in %s: its keys changed", ErrMixedKeys, m.ID, p.name)
		}
	}
	m.setKeys(keys, conn)
	p.numberLocked(m.ID, keys)
	// Requests for a key the card no longer holds fail, and another card
	// may now take others.
	p.failUnservableLocked()
	p.dispatchLocked()
	n := len(p.members)
	p.mu.Unlock()
	p.log.Warn("card's keys changed: read again", "card", m.ID, "reader", m.Reader,
		"before", describeKeys(old), "now", describeKeys(keys))
	p.changed(n)
	return nil
}

// describeKeys names keys for the log: ID, algorithm and the certificate's
// subject.
func describeKeys(keys []profiles.Key) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", k.ID, k.Algorithm)
		if k.Certificate != nil {
			fmt.Fprintf(&b, " %q", k.Certificate.Subject.CommonName)
		}
		if der, err := x509.MarshalPKIXPublicKey(k.Public); err == nil {
			sum := sha256.Sum256(der)
			fmt.Fprintf(&b, " %x", sum[:4])
		}
	}
	return b.String()
}

// sameKeySet reports whether a and b are the same keys: IDs, public keys,
// certificates and PIN policies.
func sameKeySet(a, b []profiles.Key) bool {
	return slices.EqualFunc(a, b, func(x, y profiles.Key) bool {
		if x.ID != y.ID || x.Algorithm != y.Algorithm || x.PINPolicy != y.PINPolicy || x.Label != y.Label ||
			(x.Certificate == nil) != (y.Certificate == nil) {
			return false
		}
		if x.Certificate != nil && !x.Certificate.Equal(y.Certificate) {
			return false
		}
		e, ok := x.Public.(interface{ Equal(crypto.PublicKey) bool })
		return ok && e.Equal(y.Public)
	})
}

// Len is the number of members.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

// Waiting is the number of requests waiting for a card, of every
// principal: those no card took yet, and those a card failed, waiting for
// another.
func (p *Pool) Waiting() int { return int(p.waiting.Load()) }

// Close stops every member after its request in progress; requests still
// waiting fail with ErrClosed.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.stopCheck != nil {
		close(p.stopCheck)
	}
	runs := make([]*memberRun, 0, len(p.members))
	for id, r := range p.members {
		p.stopLocked(r)
		runs = append(runs, r)
		delete(p.members, id)
	}
	p.mu.Unlock()
	for _, r := range runs {
		<-r.done
	}
	if p.checked != nil {
		<-p.checked
	}
	p.mu.Lock()
	p.failWaitingLocked(ErrClosed)
	p.mu.Unlock()
}

// Do runs fn on the next card of the pool in turn (see "Round robin"),
// for principal, inside one transaction, with the card's profile opened.
// fn's error is returned as it is. Do returns ErrBusy at once when principal has [Options.PerPrincipal]
// requests waiting, or the pool [Options.QueueSize], ctx's error when ctx
// ends before a card takes the request, and ErrNoCard when every card
// that could run it left or failed it (see the package documentation): fn
// may then have run up to [MaxAttempts] times, each time from its start on
// a card that failed before it answered.
func (p *Pool) Do(ctx context.Context, principal string, fn func(ctx context.Context, card profiles.Card, m *Member) error) error {
	return p.DoOn(ctx, principal, nil, fn)
}

// DoOn is [Pool.Do] on the cards that on accepts only: those holding the
// key a request names, in a pool whose cards hold different keys (see
// [Pool.Holds]). on is called with the pool locked, and must only look
// at the member (its ID, its keys). A request that no card of the pool
// may run fails with ErrNoCard, at once, or when the last card that may
// run it leaves. Requests go to the cards on accepts in turn, as [Pool.Do]'s
// go to every card; a request waiting for a busy card it may run does not
// keep others from the cards that are free.
func (p *Pool) DoOn(ctx context.Context, principal string, on func(m *Member) bool, fn func(ctx context.Context, card profiles.Card, m *Member) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Enqueue under the lock that Close and the last member's leaving
	// take, so a request never waits in a queue nobody serves.
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return ErrClosed
	case len(p.members) == 0:
		p.mu.Unlock()
		return ErrNoCard
	case p.total >= p.opts.QueueSize:
		// Requests a card failed count against the bounds: a card that
		// fails at once must not let the queue grow without end.
		p.mu.Unlock()
		return ErrBusy
	}
	if pr := p.principals[principal]; pr != nil && pr.waiting() >= p.opts.PerPrincipal {
		p.mu.Unlock()
		return ErrBusy
	}
	if on != nil && !p.servableLocked(&job{on: on}) {
		p.mu.Unlock()
		return fmt.Errorf("%w: none of its cards holds the key", ErrNoCard)
	}
	j := &job{ctx: ctx, principal: principal, fn: fn, on: on, result: make(chan error, 1)}
	pr := p.principalLocked(principal)
	j.tag = max(pr.next, p.vtime)
	pr.next = j.tag + 1
	p.seq++
	j.seq = p.seq
	pr.queue = append(pr.queue, j)
	p.addWaitingLocked(1)
	p.dispatchLocked()
	p.mu.Unlock()
	select {
	case err := <-j.result:
		return err
	case <-ctx.Done():
		// Once a card has taken it, it runs to its end: wait for that.
		if j.claimed.CompareAndSwap(false, true) {
			p.drop(j)
			return ctx.Err()
		}
		return <-j.result
	}
}

// drop takes j, given up by its caller, out of its principal's queue or
// the retries, wherever it waits.
func (p *Pool) drop(j *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.principals[j.principal]
	if pr == nil {
		return // no longer waiting
	}
	if i := slices.Index(pr.queue, j); i >= 0 {
		pr.queue = slices.Delete(pr.queue, i, i+1)
	} else if i := slices.Index(p.retries, j); i >= 0 {
		p.retries = slices.Delete(p.retries, i, i+1)
		pr.retried--
	} else {
		return
	}
	p.addWaitingLocked(-1)
	p.settleLocked(pr)
}

// Each runs fn on every card of the pool in turn (those present when it
// starts, in Members order), for principal, each inside its own
// transaction; it stops at the first error. It is for administration that
// concerns every card (checking that they share a PIN); requests go
// through Do.
func (p *Pool) Each(ctx context.Context, principal string, fn func(ctx context.Context, card profiles.Card, m *Member) error) error {
	for _, m := range p.Members() {
		if err := p.run(m, &job{ctx: ctx, principal: principal, fn: fn}); err != nil {
			return err
		}
	}
	return nil
}

// gone reports whether err means the card is no longer there.
func gone(err error) bool {
	return errors.Is(err, cards.ErrCardRemoved) || errors.Is(err, cards.ErrNoCard) ||
		errors.Is(err, cards.ErrNoReader) || errors.Is(err, cards.ErrServiceUnavailable) ||
		errors.Is(err, cards.ErrClosed)
}

// serve is a member's loop: run the requests dispatchLocked gives it.
// A member is free again, and may be given the next request, before the
// caller of the request it ran has the answer: a caller that makes its
// next request at once finds the card free.
func (p *Pool) serve(r *memberRun) {
	defer close(r.done)
	for {
		j := p.next(r)
		if j == nil {
			return
		}
		// The caller may have given up while it waited.
		ran := j.claimed.CompareAndSwap(false, true)
		var err error
		if ran {
			err = p.run(r.m, j)
		}
		left := err != nil && (gone(err) || errors.Is(err, ErrMixedKeys))
		if left {
			p.log.Warn("card gone during a request", "card", r.m.ID, "err", err)
			p.removeRun(r)
		}
		retry := err != nil && (left || errors.Is(err, cards.ErrCardFailed))
		if retry && !left {
			p.log.Warn("card failed a request; another card takes it", "card", r.m.ID, "err", err)
		}
		p.mu.Lock()
		r.busy = false
		if retry {
			p.requeueLocked(j, r, err)
		} else {
			p.dispatchLocked()
		}
		p.mu.Unlock()
		if ran && !retry {
			j.result <- err
		}
		if left {
			return
		}
	}
}

// next waits for the request dispatchLocked gives r. It returns nil once
// r is stopped (a request given meanwhile went back: stopLocked).
func (p *Pool) next(r *memberRun) *job {
	for {
		p.mu.Lock()
		select {
		case <-r.stop:
			p.mu.Unlock()
			return nil
		default:
		}
		if j := r.assigned; j != nil {
			r.assigned = nil
			p.mu.Unlock()
			return j
		}
		p.mu.Unlock()
		select {
		case <-r.stop:
			return nil
		case <-r.signal:
		}
	}
}

// takeQueuedLocked takes the waiting request with the smallest tag; of
// equal tags, that of the principal with fewest requests waiting, then
// that of the principal r served last, then the oldest. Requests their
// callers gave up are dropped.
func (p *Pool) takeQueuedLocked(r *memberRun) *job {
	var best *principal
	var bi int // the index of best's request r takes
	for _, pr := range p.principals {
		if len(pr.queue) > 0 && pr.queue[0].claimed.Load() {
			// Given up (drop, which its caller is about to call, will
			// not find them).
			pr.queue = slices.DeleteFunc(pr.queue, func(j *job) bool {
				if j.claimed.Load() {
					p.addWaitingLocked(-1)
					return true
				}
				return false
			})
			p.settleLocked(pr)
		}
		// Its first request r may run: one for another card waits
		// for that card, and does not hold back the principal's others.
		i := slices.IndexFunc(pr.queue, func(j *job) bool { return j.may(r) && !j.claimed.Load() })
		if i >= 0 && (best == nil || p.before(r, pr, pr.queue[i], best, best.queue[bi])) {
			best, bi = pr, i
		}
	}
	if best == nil {
		return nil
	}
	j := best.queue[bi]
	best.queue = slices.Delete(best.queue, bi, bi+1)
	if len(best.queue) == 0 {
		best.queue = nil // let go of the array
	}
	p.addWaitingLocked(-1)
	if j.tag > p.vtime {
		p.vtime = j.tag
		p.forgetIdleLocked(func(pr *principal) bool { return pr.next <= p.vtime })
	}
	p.settleLocked(best)
	return j
}

// before reports whether request ja of a goes before jb of b, for r.
func (p *Pool) before(r *memberRun, a *principal, ja *job, b *principal, jb *job) bool {
	switch {
	case ja.tag != jb.tag:
		return ja.tag < jb.tag
	case a.waiting() != b.waiting():
		return a.waiting() < b.waiting()
	case (a.name == r.last) != (b.name == r.last):
		return a.name == r.last
	}
	return ja.seq < jb.seq
}

// takeRetryLocked takes from the retries the first request r may run: one
// r has not tried, or one that every member has tried already (r's next
// connection is a fresh one). Requests their callers gave up are dropped.
func (p *Pool) takeRetryLocked(r *memberRun) *job {
	for i := 0; i < len(p.retries); i++ {
		j := p.retries[i]
		if j.claimed.Load() {
			continue // drop, which its caller is about to call, takes it out
		}
		if !j.may(r) {
			continue
		}
		if slices.Contains(j.tried, r) && p.untriedLocked(j) {
			continue // another card first
		}
		p.retries = slices.Delete(p.retries, i, i+1)
		p.addWaitingLocked(-1)
		pr := p.principals[j.principal]
		pr.retried--
		p.settleLocked(pr)
		return j
	}
	return nil
}

// untriedLocked reports whether a member of the pool that may run j has
// not tried it.
func (p *Pool) untriedLocked(j *job) bool {
	for _, m := range p.members {
		if j.may(m) && !slices.Contains(j.tried, m) {
			return true
		}
	}
	return false
}

// requeueLocked hands j, which r's card failed with err, to the next
// member that may take it, or fails it when it ran MaxAttempts times or
// no member that may run it is left.
func (p *Pool) requeueLocked(j *job, r *memberRun, err error) {
	j.tried = append(j.tried, r)
	j.lastErr = err
	switch {
	case j.ctx.Err() != nil:
		// Too late for another card.
		j.result <- fmt.Errorf("%w: %w", j.ctx.Err(), err)
	case p.closed:
		j.result <- fmt.Errorf("%w: %w", ErrClosed, err)
	case len(p.members) == 0, len(j.tried) >= MaxAttempts, !p.servableLocked(j):
		j.result <- fmt.Errorf("%w: %w", ErrNoCard, err)
	default:
		j.claimed.Store(false) // up for grabs again
		p.retries = append(p.retries, j)
		p.principalLocked(j.principal).retried++
		p.addWaitingLocked(1)
	}
	p.dispatchLocked()
}

func (p *Pool) run(m *Member, j *job) error {
	start := time.Now()
	defer func() {
		m.served.Add(1)
		m.busy.Add(int64(time.Since(start)))
	}()
	return m.Worker.DoAs(j.ctx, j.principal, func(ctx context.Context, t cards.Transmitter) error {
		card, err := m.Profile.Open(ctx, t)
		if err != nil {
			return fmt.Errorf("rsc: card %s: open: %w", m.ID, err)
		}
		if n := m.Worker.Connections(); n != m.read.Load() {
			// A connection made since the keys were read: the card
			// may have been reset by a program that changed it.
			keys, err := card.Keys(ctx)
			if err != nil {
				return fmt.Errorf("rsc: card %s: reading its keys again: %w", m.ID, err)
			}
			if _, err := m.rekey(keys, n); err != nil {
				return err
			}
		} else if kc, ok := card.(profiles.KeyCache); ok {
			kc.UseKeys(m.Keys()) // read on this connection already
		}
		return j.fn(ctx, card, m)
	})
}

func publicKeys(ks []profiles.Key) []crypto.PublicKey {
	out := make([]crypto.PublicKey, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.Public)
	}
	return out
}

func sameKeys(a, b []crypto.PublicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		e, ok := a[i].(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !e.Equal(b[i]) {
			return false
		}
	}
	return true
}
