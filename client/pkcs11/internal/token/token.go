// Package token is the pure-Go core of the pscs PKCS #11 module: remote
// cards as slots and tokens, their objects and mechanisms, sessions, login
// with the virtual PIN, and signing through the pscs client. The c-shared
// module (client/pkcs11) only converts C arguments and calls a [Module].
//
// # Round trips
//
// Everything but login, logout and signing is answered locally, from the
// catalogue the server sends (transport.Catalogue): slot, token, object,
// attribute and mechanism calls, finding objects, digests and random
// numbers. The catalogue is fetched once when the module starts and
// whenever the server announces a change, comes back with every login, and
// is kept between processes by a [CatalogueStore], so a new process can
// answer C_GetSlotList before the server has said anything. A signature is
// one request; a login another.
//
// # Errors
//
// Every error is an [RV] or wraps one (see [RVOf]). Refusals of the server
// become the return values applications understand: a wrong virtual PIN is
// CKR_PIN_INCORRECT, a locked delegation CKR_PIN_LOCKED, a revoked or
// expired delegation or a reached limit CKR_FUNCTION_REJECTED, a card gone
// CKR_DEVICE_REMOVED (CKR_TOKEN_NOT_PRESENT outside a session), and a
// server that does not answer within [Options.Timeout] CKR_DEVICE_ERROR.
//
// # Concurrency
//
// A Module is safe for concurrent use. Calls on different sessions run in
// parallel, including their requests to the server; calls on one session
// are serialised.
package token

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"hash"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pscs/pscs/transport"
)

// Backend is what the module needs of a connection to pscsd;
// *client.Client implements it.
type Backend interface {
	Hello(ctx context.Context) (*transport.HelloResponse, error)
	Login(ctx context.Context, slot uint64, vpin []byte) (*transport.LoginResponse, error)
	Sign(ctx context.Context, req *transport.SignRequest) (*transport.SignResponse, error)
	// SignWithPIN signs with a key that needs the virtual PIN with every
	// signature (CKA_ALWAYS_AUTHENTICATE).
	SignWithPIN(ctx context.Context, req *transport.SignRequest, vpin []byte) (*transport.SignResponse, error)
	Logout(ctx context.Context, slot uint64) error
	Events() <-chan *transport.Event
	Close() error
}

// CatalogueStore keeps the last catalogue between processes.
type CatalogueStore interface {
	// Load returns the stored catalogue, or an error if there is none.
	Load() (*transport.Catalogue, error)
	Save(*transport.Catalogue) error
}

// Options configure a Module.
type Options struct {
	// Connect connects to the server. New calls it in the background; if
	// it fails, the next call that needs the server calls it again.
	Connect func(ctx context.Context) (Backend, error)
	// Timeout bounds each wait for the server; zero means 20 seconds.
	Timeout time.Duration
	// Store keeps the catalogue between processes; nil: none.
	Store CatalogueStore
	// Logger receives what went wrong behind a return value; nil: nothing.
	Logger *slog.Logger
	// Rand is the source of C_GenerateRandom; nil: crypto/rand.
	Rand io.Reader
	// Unconfigured, with Connect nil, is the description of the one slot
	// (with no token) the module offers: what the person must configure.
	Unconfigured string
}

// Module is the state of one initialised PKCS #11 library: between
// C_Initialize ([New]) and C_Finalize ([Module.Finalize]).
type Module struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context // ends at Finalize
	cancel context.CancelFunc

	dialMu    sync.Mutex    // one Connect at a time
	connected chan struct{} // closed when the first Connect returned
	refreshMu sync.Mutex    // one Hello at a time

	mu          sync.Mutex
	backend     Backend
	finalized   bool
	cat         *transport.Catalogue
	catReady    chan struct{} // closed once a catalogue is known or the first fetch failed
	catClosed   bool
	lastFetch   time.Time
	slots       map[uint64]*slot
	sessions    map[uint64]*session
	nextSession uint64
	pending     map[uint64]bool // slots with an event not yet reported
	changed     chan struct{}   // closed and replaced at every event
}

// slot is a remote card as a PKCS #11 slot. A slot once seen stays in the
// slot list; its token is present while the catalogue offers it and a card
// can serve it.
type slot struct {
	id      uint64
	info    transport.Slot
	offered bool // in the current catalogue
	objects []*object
	mechs   map[uint64]MechanismInfo
	raw     []byte // the slot's catalogue entry, to notice changes

	loginMu  sync.Mutex // one login or logout at a time
	loggedIn bool
	locked   bool      // the server said the delegation is locked
	vpin     vpinState // what the server said of the vPIN (pinflags.go)
	gen      uint64    // incremented when the token goes away: its sessions end
}

func (s *slot) present() bool { return s.offered && s.info.Present }

// session is a PKCS #11 session.
type session struct {
	mu      sync.Mutex // serialises the session's calls
	handle  uint64
	slot    *slot
	gen     uint64
	rw      bool
	find    []uint64 // handles left to return; nil: no search
	finding bool
	sign    *signOp
	digest  hash.Hash
}

// New initialises the module and starts connecting in the background.
func New(opts Options) *Module {
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Module{opts: opts, log: log, ctx: ctx, cancel: cancel, connected: make(chan struct{}),
		catReady: make(chan struct{}), slots: map[uint64]*slot{}, sessions: map[uint64]*session{},
		pending: map[uint64]bool{}, changed: make(chan struct{})}
	if opts.Store != nil {
		if cat, err := opts.Store.Load(); err == nil && cat != nil {
			m.mu.Lock()
			m.setCatalogueLocked(cat, false)
			m.mu.Unlock()
		}
	}
	if opts.Connect == nil && opts.Unconfigured != "" {
		m.unconfigured(opts.Unconfigured) // unconfigured.go
		return m
	}
	go m.start()
	return m
}

// start connects, fetches the catalogue and follows the server's events.
func (m *Module) start() {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	_, err := m.connect(ctx)
	close(m.connected)
	if err == nil {
		err = m.refresh(ctx)
	}
	cancel()
	if err != nil {
		m.log.Warn("pscs: no catalogue from the server", "err", err)
		m.mu.Lock()
		m.lastFetch = time.Now() // a failed attempt: none again within 5 s
		m.readyLocked()
		m.mu.Unlock()
	}
}

// watch refreshes the catalogue when the server announces a change.
func (m *Module) watch(b Backend) {
	for {
		select {
		case <-m.ctx.Done():
			return
		case ev := <-b.Events():
			m.log.Debug("pscs: event", "kind", ev.Kind, "slot", ev.Slot)
			switch ev.Kind {
			case transport.EventShutdown:
				continue
			case transport.EventRevoked, transport.EventSlot:
				m.slotEvent(ev.Slot, ev.Kind == transport.EventRevoked)
			}
			ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
			if err := m.refresh(ctx); err != nil {
				m.log.Warn("pscs: catalogue refresh", "err", err)
			}
			cancel()
		}
	}
}

// slotEvent reports an event of slot id to C_WaitForSlotEvent; with
// logout, the server ended the slot's login (a revoked delegation).
func (m *Module) slotEvent(id uint64, logout bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[id]
	if s == nil || m.finalized {
		return
	}
	if logout {
		s.loggedIn = false
	}
	m.pending[id] = true
	close(m.changed)
	m.changed = make(chan struct{})
}

// connect returns the backend, connecting if there is none.
func (m *Module) connect(ctx context.Context) (Backend, error) {
	m.dialMu.Lock()
	defer m.dialMu.Unlock()
	m.mu.Lock()
	b, done := m.backend, m.finalized
	m.mu.Unlock()
	if done {
		return nil, ErrNotInitialized
	}
	if b != nil {
		return b, nil
	}
	if m.opts.Connect == nil {
		return nil, &rvError{ErrDeviceError, errors.New("no server configured")}
	}
	b, err := m.opts.Connect(ctx)
	if err != nil {
		return nil, remoteError(err, false)
	}
	m.mu.Lock()
	if m.finalized {
		m.mu.Unlock()
		b.Close()
		return nil, ErrNotInitialized
	}
	m.backend = b
	m.mu.Unlock()
	// The server's events are followed from the first connection, whichever
	// call made it.
	go m.watch(b)
	return b, nil
}

// conn waits for the background connection, or connects again if it
// failed.
func (m *Module) conn(ctx context.Context) (Backend, error) {
	select {
	case <-m.connected:
	case <-ctx.Done():
		return nil, &rvError{ErrDeviceError, ctx.Err()}
	}
	return m.connect(ctx)
}

// refresh fetches the catalogue.
func (m *Module) refresh(ctx context.Context) error {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	b, err := m.connect(ctx)
	m.mu.Lock()
	m.lastFetch = time.Now() // also when the server cannot be reached
	m.mu.Unlock()
	if err != nil {
		return err
	}
	resp, err := b.Hello(ctx)
	if err != nil {
		return remoteError(err, false)
	}
	if resp.Catalogue != nil {
		m.setCatalogue(resp.Catalogue)
	}
	return nil
}

// setCatalogue stores a new catalogue for the next process, then takes
// it: stored first, because a process may end as soon as a call that
// waited for the catalogue returns (pkcs11-tool -L does).
func (m *Module) setCatalogue(cat *transport.Catalogue) {
	m.mu.Lock()
	same := m.cat != nil && bytes.Equal(m.cat.Tag, cat.Tag)
	m.mu.Unlock()
	if !same && m.opts.Store != nil {
		if err := m.opts.Store.Save(cat); err != nil {
			m.log.Warn("pscs: catalogue not cached", "err", err)
		}
	}
	m.mu.Lock()
	m.setCatalogueLocked(cat, true)
	m.mu.Unlock()
}

// setCatalogueLocked takes a catalogue and records slot events: a token
// that appeared, went away or changed. It reports whether the catalogue
// differs from the one before.
func (m *Module) setCatalogueLocked(cat *transport.Catalogue, events bool) bool {
	if m.finalized {
		return false
	}
	same := m.cat != nil && bytes.Equal(m.cat.Tag, cat.Tag) && len(cat.Tag) > 0
	m.cat = cat
	m.readyLocked()
	if same {
		return false
	}
	seen := map[uint64]bool{}
	for _, in := range cat.Slots {
		seen[in.ID] = true
		s := m.slots[in.ID]
		if s == nil {
			s = &slot{id: in.ID}
			m.slots[in.ID] = s
		}
		raw, _ := transport.Marshal(&in)
		was := s.present()
		if bytes.Equal(raw, s.raw) && s.offered {
			continue
		}
		s.info, s.offered, s.raw = in, true, raw
		s.objects = buildObjects(in.Objects)
		s.mechs = slotMechanisms(&in)
		if was && !s.present() {
			s.endLocked()
		}
		if events {
			m.pending[s.id] = true
		}
	}
	for id, s := range m.slots {
		if !seen[id] && s.offered {
			s.offered, s.raw = false, nil
			s.endLocked()
			if events {
				m.pending[id] = true
			}
		}
	}
	if events {
		close(m.changed)
		m.changed = make(chan struct{})
	}
	return true
}

// endLocked ends the token's sessions and login: it went away.
func (s *slot) endLocked() {
	s.gen++
	s.loggedIn = false
}

func (m *Module) readyLocked() {
	if !m.catClosed {
		m.catClosed = true
		close(m.catReady)
	}
}

// waitCatalogue waits for a first catalogue; with none after a failed
// fetch, it tries again (at most every five seconds). The whole wait is
// bounded by one timeout: while the first fetch is still under way when
// the call's time is up, no second one starts, and a second one gets what
// is left of the call's time.
func (m *Module) waitCatalogue() error {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	ready := true
	select {
	case <-m.catReady:
	case <-ctx.Done():
		ready = false // the first fetch is still under way: it had all of this call's time
	}
	m.mu.Lock()
	missing := ready && m.cat == nil && !m.finalized && time.Since(m.lastFetch) > 5*time.Second
	done := m.finalized
	m.mu.Unlock()
	if done {
		return ErrNotInitialized
	}
	if missing {
		if err := m.refresh(ctx); err != nil {
			m.log.Warn("pscs: no catalogue from the server", "err", err)
		}
	}
	return nil
}

// Finalize ends the module: sessions close, waiting calls return, the
// connection closes.
func (m *Module) Finalize() error {
	m.mu.Lock()
	if m.finalized {
		m.mu.Unlock()
		return ErrNotInitialized
	}
	m.finalized = true
	b := m.backend
	m.backend = nil
	var gone []*session
	for _, ss := range m.sessions {
		gone = append(gone, ss)
	}
	defer dropped(gone)
	m.sessions = map[uint64]*session{}
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	m.cancel()
	if b != nil {
		b.Close()
	}
	return nil
}

// Info about the library (CK_INFO).
type Info struct {
	Manufacturer, Description string
	Version                   Version
}

// Version mirrors CK_VERSION.
type Version struct{ Major, Minor byte }

// LibraryInfo describes the library for C_GetInfo.
func LibraryInfo() Info {
	return Info{Manufacturer: "pscs", Description: "pscs remote smart cards", Version: Version{1, 0}}
}

// SlotList lists the slots, or only those with a token present.
func (m *Module) SlotList(tokenPresent bool) ([]uint64, error) {
	if err := m.waitCatalogue(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for id, s := range m.slots {
		if !tokenPresent || s.present() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// SlotInfo mirrors CK_SLOT_INFO.
type SlotInfo struct {
	Description, Manufacturer string
	Flags                     uint64
	Hardware, Firmware        Version
}

func (m *Module) slot(id uint64) (*slot, error) {
	if err := m.waitCatalogue(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[id]
	if s == nil {
		return nil, ErrSlotIDInvalid
	}
	return s, nil
}

// SlotInfo describes slot id.
func (m *Module) SlotInfo(id uint64) (SlotInfo, error) {
	s, err := m.slot(id)
	if err != nil {
		return SlotInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	desc := s.info.Description
	if desc == "" {
		desc = "pscs remote card " + s.info.Token.Label
	}
	info := SlotInfo{Description: desc, Manufacturer: "pscs", Flags: ckfRemovableDevice | ckfHWSlot,
		Hardware: Version{1, 0}, Firmware: Version{1, 0}}
	if s.present() {
		info.Flags |= ckfTokenPresent
	}
	return info, nil
}

// TokenInfo mirrors CK_TOKEN_INFO.
type TokenInfo struct {
	Label, Manufacturer, Model, Serial string
	Flags                              uint64
	MaxSessions, Sessions              uint64
	MaxRWSessions, RWSessions          uint64
	MaxPIN, MinPIN                     uint64
	TotalPublic, FreePublic            uint64
	TotalPrivate, FreePrivate          uint64
	Hardware, Firmware                 Version
}

// TokenInfo describes the token in slot id.
func (m *Module) TokenInfo(id uint64) (TokenInfo, error) {
	s, err := m.slot(id)
	if err != nil {
		return TokenInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return TokenInfo{}, ErrTokenNotPresent
	}
	t := s.info.Token
	info := TokenInfo{Label: t.Label, Manufacturer: cmp.Or(t.Manufacturer, "pscs"), Model: cmp.Or(t.Model, "remote card"),
		Serial: t.Serial, Flags: t.Flags | ckfRNG, MaxSessions: 0, MaxRWSessions: 0,
		MaxPIN: uint64(cmp.Or(t.MaxPIN, 64)), MinPIN: uint64(cmp.Or(t.MinPIN, 4)),
		TotalPublic: Unavailable, FreePublic: Unavailable, TotalPrivate: Unavailable, FreePrivate: Unavailable,
		Hardware: Version{1, 0}, Firmware: Version{1, 0}}
	info.Flags |= s.pinFlags()
	for _, ss := range m.sessions {
		if ss.slot == s && ss.gen == s.gen {
			info.Sessions++
			if ss.rw {
				info.RWSessions++
			}
		}
	}
	return info, nil
}

// MechanismList lists the mechanisms of the token in slot id.
func (m *Module) MechanismList(id uint64) ([]uint64, error) {
	s, err := m.slot(id)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return nil, ErrTokenNotPresent
	}
	var out []uint64
	for t := range s.mechs {
		out = append(out, t)
	}
	slices.Sort(out)
	return out, nil
}

// MechanismInfo describes mechanism mech of the token in slot id.
func (m *Module) MechanismInfo(id, mech uint64) (MechanismInfo, error) {
	s, err := m.slot(id)
	if err != nil {
		return MechanismInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.present() {
		return MechanismInfo{}, ErrTokenNotPresent
	}
	info, ok := s.mechs[mech]
	if !ok {
		return MechanismInfo{}, ErrMechanismInvalid
	}
	return info, nil
}

// OpenSession opens a session with the token in slot id.
func (m *Module) OpenSession(id, flags uint64) (uint64, error) {
	if flags&ckfSerialSession == 0 {
		return 0, ErrSessionParallelNotSupp
	}
	s, err := m.slot(id)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finalized {
		return 0, ErrNotInitialized
	}
	if !s.present() {
		return 0, ErrTokenNotPresent
	}
	m.nextSession++
	h := m.nextSession
	m.sessions[h] = &session{handle: h, slot: s, gen: s.gen, rw: flags&ckfRWSession != 0}
	return h, nil
}

// CloseSession closes session h. Closing a token's last session logs the
// application out of it (locally: the server forgets the login when the
// connection ends, or at the next login).
func (m *Module) CloseSession(h uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[h]
	if !ok {
		return ErrSessionHandleInvalid
	}
	delete(m.sessions, h)
	m.logoutIfLastLocked(s.slot)
	defer dropped([]*session{s})
	return nil
}

func (m *Module) logoutIfLastLocked(sl *slot) {
	for _, other := range m.sessions {
		if other.slot == sl && other.gen == sl.gen {
			return
		}
	}
	sl.loggedIn = false
	sl.gen++ // a login in flight does not log the slot in again
}

// CloseAllSessions closes every session with the token in slot id.
func (m *Module) CloseAllSessions(id uint64) error {
	s, err := m.slot(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	var gone []*session
	for h, ss := range m.sessions {
		if ss.slot == s {
			delete(m.sessions, h)
			gone = append(gone, ss)
		}
	}
	s.loggedIn = false
	s.gen++ // a login in flight does not log the slot in again
	m.mu.Unlock()
	dropped(gone)
	return nil
}

// endSign ends the session's signature operation and wipes the PIN a
// context-specific login left in it. The caller holds ss.mu.
func (ss *session) endSign() {
	if ss.sign != nil {
		clear(ss.sign.pin)
		ss.sign = nil
	}
}

// dropped wipes what sessions taken out of the module hold. A session busy
// in a call is left to it: its call ends the operation (finishSign wipes
// its PIN), and no later call can reach it.
func dropped(ss []*session) {
	for _, s := range ss {
		if s.mu.TryLock() {
			s.endSign()
			s.mu.Unlock()
		}
	}
}

// session finds session h, locked; the caller unlocks ss.mu. A session
// whose token went away is CKR_DEVICE_REMOVED.
func (m *Module) session(h uint64) (*session, error) {
	m.mu.Lock()
	ss, ok := m.sessions[h]
	if m.finalized {
		m.mu.Unlock()
		return nil, ErrNotInitialized
	}
	if !ok {
		m.mu.Unlock()
		return nil, ErrSessionHandleInvalid
	}
	if ss.gen != ss.slot.gen {
		m.mu.Unlock()
		return nil, ErrDeviceRemoved
	}
	m.mu.Unlock()
	ss.mu.Lock()
	return ss, nil
}

// SessionInfo mirrors CK_SESSION_INFO.
type SessionInfo struct {
	Slot, State, Flags, DeviceError uint64
}

// SessionInfo describes session h.
func (m *Module) SessionInfo(h uint64) (SessionInfo, error) {
	ss, err := m.session(h)
	if err != nil {
		return SessionInfo{}, err
	}
	defer ss.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	info := SessionInfo{Slot: ss.slot.id, Flags: ckfSerialSession}
	switch {
	case ss.rw && ss.slot.loggedIn:
		info.State = cksRWUser
	case ss.rw:
		info.State = cksRWPublic
	case ss.slot.loggedIn:
		info.State = cksROUser
	default:
		info.State = cksROPublic
	}
	if ss.rw {
		info.Flags |= ckfRWSession
	}
	return info, nil
}

// Login logs the application in to the session's token with the virtual
// PIN: one request to the server. A context-specific login (for a key that
// needs one before each signature) costs no round trip: the PIN goes with
// the signature request, and the server checks it there.
func (m *Module) Login(h, userType uint64, pin []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if userType == ckuSO {
		return m.loginSO(ss) // see conformance.go
	}
	sl := ss.slot
	m.mu.Lock()
	minPIN, maxPIN := int(sl.info.Token.MinPIN), int(sl.info.Token.MaxPIN)
	m.mu.Unlock()
	if len(pin) < minPIN || maxPIN > 0 && len(pin) > maxPIN {
		return ErrPINLenRange // never sent: it cannot be a virtual PIN
	}
	switch userType {
	case ckuUser:
	case ckuContextSpecific:
		if ss.sign == nil {
			return ErrOperationNotInitialized
		}
		m.mu.Lock()
		in := sl.loggedIn
		m.mu.Unlock()
		if !in {
			return ErrUserNotLoggedIn
		}
		if len(pin) == 0 {
			return ErrPINIncorrect
		}
		clear(ss.sign.pin)
		ss.sign.pin = append([]byte(nil), pin...)
		ss.sign.authed = true
		return nil
	default:
		return ErrUserTypeInvalid
	}
	sl.loginMu.Lock()
	defer sl.loginMu.Unlock()
	m.mu.Lock()
	if userType == ckuUser && sl.loggedIn {
		m.mu.Unlock()
		return ErrUserAlreadyLoggedIn
	}
	gen := sl.gen
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	b, err := m.conn(ctx)
	if err != nil {
		return err
	}
	resp, err := b.Login(ctx, sl.id, pin)
	if errors.Is(err, transport.ErrStale) {
		// This clock is off: Hello corrects the request times.
		if _, herr := b.Hello(ctx); herr == nil {
			resp, err = b.Login(ctx, sl.id, pin)
		}
	}
	if err != nil {
		m.noteVPIN(sl, err)
		m.log.Info("pscs: login refused", "slot", sl.id, "err", err)
		return remoteError(err, true)
	}
	m.mu.Lock()
	if sl.gen != gen || m.sessions[h] != ss {
		// The session closed, or the token went, while the login was
		// on its way: it logs nothing in.
		m.mu.Unlock()
		return ErrSessionClosed
	}
	sl.loggedIn, sl.locked, sl.vpin = true, false, vpinState{}
	m.mu.Unlock()
	if resp != nil && resp.Catalogue != nil {
		m.setCatalogue(resp.Catalogue)
	}
	return nil
}

// Logout logs the application out of the session's token, and the
// connection out of the remote card.
func (m *Module) Logout(h uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	sl := ss.slot
	sl.loginMu.Lock()
	defer sl.loginMu.Unlock()
	m.mu.Lock()
	in := sl.loggedIn
	sl.loggedIn = false
	m.mu.Unlock()
	if !in {
		return ErrUserNotLoggedIn
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	if b, err := m.conn(ctx); err == nil {
		if err := b.Logout(ctx, sl.id); err != nil {
			m.log.Info("pscs: logout", "slot", sl.id, "err", err)
		}
	}
	return nil
}

// visible returns object handle oh of the session's token if the session
// may see it: private objects only after login.
func (m *Module) visible(ss *session, oh uint64) (*object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range ss.slot.objects {
		if o.handle == oh {
			if o.private && !ss.slot.loggedIn {
				return nil, ErrObjectHandleInvalid
			}
			return o, nil
		}
	}
	return nil, ErrObjectHandleInvalid
}

// Attribute is a CK_ATTRIBUTE of a template: a type and its value.
type Attribute struct {
	Type  uint64
	Value []byte
}

// AttrQuery is one CK_ATTRIBUTE of C_GetAttributeValue: the type asked
// for, the caller's buffer (HasBuf false when pValue is NULL), and Len,
// set to the value's length, or to [Unavailable].
type AttrQuery struct {
	Type   uint64
	Buf    []byte
	HasBuf bool
	Len    uint64
}

// GetAttributeValue fills q from object oh, with the two-call convention:
// without a buffer a query gets the length; with one too small it gets
// Unavailable and the result is CKR_BUFFER_TOO_SMALL. Every query is
// answered; the result is the last error met (CKR_ATTRIBUTE_SENSITIVE,
// CKR_ATTRIBUTE_TYPE_INVALID or CKR_BUFFER_TOO_SMALL), or CKR_OK.
func (m *Module) GetAttributeValue(h, oh uint64, q []AttrQuery) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	o, err := m.visible(ss, oh)
	if err != nil {
		return err
	}
	var rv error
	for i := range q {
		a := &q[i]
		v, ok := o.attrs[a.Type]
		switch {
		case o.class == ckoPrivateKey && sensitive[a.Type]:
			a.Len, rv = Unavailable, ErrAttributeSensitive
		case !ok:
			a.Len, rv = Unavailable, ErrAttributeTypeInvalid
		case !a.HasBuf:
			a.Len = uint64(len(v))
		case len(a.Buf) < len(v):
			a.Len, rv = Unavailable, ErrBufferTooSmall
		default:
			copy(a.Buf, v)
			a.Len = uint64(len(v))
		}
	}
	return rv
}

// FindObjectsInit starts a search for the objects matching template.
func (m *Module) FindObjectsInit(h uint64, template []Attribute) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.finding {
		return ErrOperationActive
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ss.find = []uint64{}
	ss.finding = true
	for _, o := range ss.slot.objects {
		if o.private && !ss.slot.loggedIn {
			continue
		}
		if o.matches(template) {
			ss.find = append(ss.find, o.handle)
		}
	}
	return nil
}

// FindObjects returns up to max more handles of the search.
func (m *Module) FindObjects(h uint64, max int) ([]uint64, error) {
	ss, err := m.session(h)
	if err != nil {
		return nil, err
	}
	defer ss.mu.Unlock()
	if !ss.finding {
		return nil, ErrOperationNotInitialized
	}
	n := min(max, len(ss.find))
	out := ss.find[:n:n]
	ss.find = ss.find[n:]
	return out, nil
}

// FindObjectsFinal ends the search.
func (m *Module) FindObjectsFinal(h uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if !ss.finding {
		return ErrOperationNotInitialized
	}
	ss.find, ss.finding = nil, false
	return nil
}

// SignInit starts a signature with private key kh.
func (m *Module) SignInit(h uint64, mech Mechanism, kh uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.sign != nil {
		// An operation that has taken no data yet is replaced: OpenSSH
		// leaves one behind when the context-specific login of a
		// PIN-always key fails, and would otherwise find the session
		// unusable for every other key.
		if ss.sign.parts {
			return ErrOperationActive
		}
		ss.endSign()
	}
	m.mu.Lock()
	in := ss.slot.loggedIn
	m.mu.Unlock()
	o, err := m.visible(ss, kh)
	if err != nil {
		if !in {
			return ErrUserNotLoggedIn
		}
		return ErrKeyHandleInvalid
	}
	if o.class != ckoPrivateKey {
		return ErrKeyTypeInconsistent
	}
	if !o.canSign {
		return ErrKeyFunctionNotPermitted
	}
	if !in {
		return ErrUserNotLoggedIn
	}
	op, err := newSignOp(mech, o)
	if err != nil {
		return err
	}
	op.slot = ss.slot.id
	ss.sign = op
	return nil
}

// Sign signs data in one part into out (with the two-call convention:
// hasOut false asks for the length; a buffer too small is
// CKR_BUFFER_TOO_SMALL, and the operation goes on). It returns the
// signature's length. One request to the server.
func (m *Module) Sign(h uint64, data, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	op := ss.sign
	if op == nil {
		return 0, ErrOperationNotInitialized
	}
	if op.parts {
		ss.endSign()
		return 0, ErrOperationActive
	}
	if n, done := m.checkOut(op, out, hasOut); done {
		return n, sizeErr(n, out, hasOut)
	}
	if err := op.update(data); err != nil {
		ss.endSign()
		return 0, err
	}
	return m.finishSign(ss, out)
}

// checkOut answers the length query and a buffer too small, which leave
// the operation active.
func (m *Module) checkOut(op *signOp, out []byte, hasOut bool) (int, bool) {
	n := op.key.sigLen
	if n == 0 {
		return 0, false // unknown: sign, then see
	}
	return n, !hasOut || len(out) < n
}

func sizeErr(n int, out []byte, hasOut bool) error {
	if hasOut && len(out) < n {
		return ErrBufferTooSmall
	}
	return nil
}

// SignUpdate feeds a part of the data.
func (m *Module) SignUpdate(h uint64, data []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.sign == nil {
		return ErrOperationNotInitialized
	}
	if err := ss.sign.update(data); err != nil {
		ss.endSign()
		return err
	}
	return nil
}

// SignFinal signs the data given in parts, like Sign.
func (m *Module) SignFinal(h uint64, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	op := ss.sign
	if op == nil {
		return 0, ErrOperationNotInitialized
	}
	if n, done := m.checkOut(op, out, hasOut); done {
		return n, sizeErr(n, out, hasOut)
	}
	return m.finishSign(ss, out)
}

// finishSign asks the server for the signature and ends the operation.
func (m *Module) finishSign(ss *session, out []byte) (int, error) {
	op := ss.sign
	ss.sign = nil // its PIN is wiped below, after the request
	defer clear(op.pin)
	input, err := op.input()
	if err != nil {
		return 0, err
	}
	if op.key.alwaysAuth && !op.authed {
		return 0, ErrUserNotLoggedIn
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	b, err := m.conn(ctx)
	if err != nil {
		return 0, remoteError(err, true)
	}
	req := &transport.SignRequest{Slot: op.slot, Key: op.key.handle, Mechanism: op.mech.remote, Data: input}
	var resp *transport.SignResponse
	if op.key.alwaysAuth {
		resp, err = b.SignWithPIN(ctx, req, op.pin)
		clear(op.pin)
	} else {
		resp, err = b.Sign(ctx, req)
	}
	if err != nil {
		if errors.Is(err, &transport.Error{Code: transport.CodeNotLoggedIn}) {
			m.mu.Lock()
			ss.slot.loggedIn = false // the server forgot the login (a new connection)
			m.mu.Unlock()
		}
		if op.key.alwaysAuth {
			m.noteVPIN(ss.slot, err)
		}
		m.log.Info("pscs: signature refused", "slot", op.slot, "err", err)
		return 0, remoteError(err, true)
	}
	if op.key.alwaysAuth {
		m.noteVPIN(ss.slot, nil) // a right vPIN clears the wrong ones
	}
	if len(out) < len(resp.Signature) {
		return len(resp.Signature), ErrBufferTooSmall // only with an unknown size
	}
	return copy(out, resp.Signature), nil
}

// DigestInit starts a digest, computed locally.
func (m *Module) DigestInit(h uint64, mech Mechanism) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.digest != nil {
		return ErrOperationActive
	}
	hf, ok := digestMechs[mech.Type]
	if !ok {
		return ErrMechanismInvalid
	}
	if len(mech.Param) != 0 {
		return ErrMechanismParamInvalid
	}
	ss.digest = newDigest(hf.New())
	return nil
}

// Digest digests data in one part into out (two-call convention).
func (m *Module) Digest(h uint64, data, out []byte, hasOut bool) (int, error) {
	return m.digestDone(h, data, true, out, hasOut)
}

// DigestUpdate feeds a part of the data.
func (m *Module) DigestUpdate(h uint64, data []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.digest == nil {
		return ErrOperationNotInitialized
	}
	ss.digest.Write(data)
	return nil
}

// DigestFinal finishes a digest given in parts (two-call convention).
func (m *Module) DigestFinal(h uint64, out []byte, hasOut bool) (int, error) {
	return m.digestDone(h, nil, false, out, hasOut)
}

func (m *Module) digestDone(h uint64, data []byte, single bool, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	d := ss.digest
	if d == nil {
		return 0, ErrOperationNotInitialized
	}
	if single && multiPart(d) {
		ss.digest = nil // C_Digest always ends the operation (section 5.10.2)
		return 0, ErrOperationActive
	}
	n := d.Size()
	if !hasOut {
		return n, nil
	}
	if len(out) < n {
		return n, ErrBufferTooSmall
	}
	if single {
		d.Write(data)
	}
	ss.digest = nil
	return copy(out, d.Sum(nil)), nil
}

// GenerateRandom fills out with random bytes, made locally.
func (m *Module) GenerateRandom(h uint64, out []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if _, err := io.ReadFull(m.opts.Rand, out); err != nil {
		return ErrFunctionFailed
	}
	return nil
}

// WaitForSlotEvent returns a slot whose token appeared, went away or
// changed since the last call. With dontBlock it returns CKR_NO_EVENT if
// there is none; otherwise it waits for one, or for Finalize.
func (m *Module) WaitForSlotEvent(dontBlock bool) (uint64, error) {
	for {
		m.mu.Lock()
		if m.finalized {
			m.mu.Unlock()
			return 0, ErrNotInitialized
		}
		if len(m.pending) > 0 {
			ids := make([]uint64, 0, len(m.pending))
			for id := range m.pending {
				ids = append(ids, id)
			}
			id := slices.Min(ids)
			delete(m.pending, id)
			m.mu.Unlock()
			return id, nil
		}
		ch := m.changed
		m.mu.Unlock()
		if dontBlock {
			return 0, ErrNoEvent
		}
		<-ch
	}
}
