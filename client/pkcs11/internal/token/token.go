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
// one request; a login another; so is a decryption (C_Decrypt,
// CKM_RSA_PKCS and CKM_RSA_PKCS_OAEP) and a key agreement (C_DeriveKey,
// CKM_ECDH1_DERIVE), with keys whose CKA_DECRYPT or CKA_DERIVE the
// catalogue sets (see decrypt.go). A padding the card's answer does not
// have is CKR_ENCRYPTED_DATA_INVALID.
//
// # EdDSA and X25519
//
// Ed25519 keys (CKK_EC_EDWARDS) sign with CKM_EDDSA (PKCS #11 3.0), which
// hashes the message itself: the message travels to the server, not a
// digest, also when C_SignUpdate gives it in parts (the module keeps it,
// up to transport.MaxEdDSAMessage bytes; more is CKR_DATA_LEN_RANGE).
// CK_EDDSA_PARAMS asking for Ed25519ph or a context are
// CKR_MECHANISM_PARAM_INVALID. X25519 keys (CKK_EC_MONTGOMERY) only agree
// keys: C_DeriveKey with CKM_ECDH1_DERIVE and the peer's 32-byte
// u-coordinate. docs/protocol.md, section 11, has the attributes.
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
// # Logins and PIN-always keys
//
// C_Login sends the virtual PIN to the server once; the server ties the
// login to the connection. The module keeps the vPIN of a login in
// process memory only, for as long as the login lasts: in an anonymous
// mapping of its own, locked against swapping (mlock), left out of core
// dumps and wiped in a child after fork (see secret.go), never written to
// disk. C_Logout, the last C_CloseSession of the token, C_CloseAllSessions,
// C_Finalize, a revoked delegation and a token that goes away wipe it.
//
// A key that wants the PIN with every signature (CKA_ALWAYS_AUTHENTICATE,
// PIV 9C) signs the first time after C_Login without a context-specific
// login: the login's vPIN travels with that signature request, still one
// request. Every later signature with such a key wants a context-specific
// login (C_Login with CKU_CONTEXT_SPECIFIC after C_SignInit), whose vPIN
// travels with the signature: CKR_USER_NOT_LOGGED_IN otherwise. This is
// what a PIV card in a local reader under OpenSC does (finishSign says
// why), and what OpenSSH's ssh -I relies on: it logs in when it first
// uses a key, and then signs without a context-specific login.
//
// # Lost logins
//
// When pscsd restarts, or the connection is lost and the client
// reconnects, the server has forgotten the login and refuses the next
// signature with CodeNotLoggedIn. The module then logs in again with the
// kept vPIN (one request), takes the catalogue that comes back, and sends
// the signature once more: the application sees its signature, its
// sessions and object handles unchanged (handles stay while the token's
// catalogue entry does). A vPIN the server refuses at that login (wrong,
// the delegation locked or revoked) ends the login and is wiped, never
// tried twice; the application gets CKR_USER_NOT_LOGGED_IN and logs in
// itself. A server that cannot be reached keeps the login for the next
// call. See relogin.
//
// # Cards that change
//
// When a key changes on a card pscsd serves (another program generated a
// new one), the server announces a slot event. The module fetches the new
// catalogue first and only then reports the slot to C_WaitForSlotEvent,
// so the application it wakes finds the new objects. Object handles stay:
// pscsd numbers keys by their ID (a PIV key's is its slot), so a new key
// in 9C has the old one's handles. A signature made
// before the catalogue knew of a longer key does not fit the length
// C_Sign's length query gave: CKR_BUFFER_TOO_SMALL with the signature's
// length, and the operation keeps the signature for the next call with a
// buffer large enough, without a second request (see finishSign).
//
// # Concurrency
//
// A Module is safe for concurrent use. Calls on different sessions run in
// parallel, including their requests to the server; calls on one session
// are serialised.
//
// Locks are taken in this order, never the other way round:
//
//  1. session.mu: one call on a session at a time, held for the whole
//     call, requests to the server included;
//  2. slot.loginMu: one login, logout or replayed login of a token at a
//     time, held across its request;
//  3. Module.refreshMu: one catalogue fetch (Hello) at a time, held
//     across it;
//  4. Module.dialMu: one Options.Connect at a time;
//  5. Module.mu: the module's state (slots, sessions, catalogue, login
//     state, the kept vPINs). It is held only for short sections that
//     make no request and wait for no other lock; session.mu is only ever
//     tried (TryLock) by dropped, which runs without Module.mu.
//
// Each lock serialises something the one before it does not cover: a
// session's calls, a token's logins across sessions, fetches across
// sessions and the event watcher, connection attempts across all of them.
//
// # Files
//
// token.go: the Module, its options and life cycle; conn.go: the
// connection and the server's events; catalogue.go: taking a catalogue;
// slots.go: slot, token and mechanism information, slot events;
// session.go: sessions; login.go, relogin.go, secret*.go: logins and the
// kept vPIN; find.go: objects and their attributes; sign.go: signing;
// digest.go: digests and random numbers; objects.go, mech.go: what the
// catalogue's objects and mechanisms become; rv.go, ck.go: return values
// and PKCS #11 constants; store.go: the catalogue kept between processes.
package token

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
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
	nextDerived uint64          // derived session objects so far (DeriveKey)
	pending     map[uint64]bool // slots with an event not yet reported
	changed     chan struct{}   // closed and replaced at every event
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
	for _, s := range m.slots {
		s.forgetLocked()
	}
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	m.cancel()
	if b != nil {
		b.Close()
	}
	return nil
}
