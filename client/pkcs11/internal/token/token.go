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
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	m.cancel()
	if b != nil {
		b.Close()
	}
	return nil
}
