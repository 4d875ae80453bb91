// Package server is pscsd's core: it answers the protocol's requests
// (transport.Handler) by deciding them under the owners' delegations
// (server/policy), opening the card's real PIN with the delegate's virtual
// PIN (a [PINVault]), running them on a remote card (server/rsc), and
// recording every request in the audit log before the answer leaves.
//
// # A signature
//
//	Login(slot, vPIN): policy allows login → the vault opens the real PIN
//	  (a wrong vPIN fails here, never at the card; too many lock the
//	  delegation) → the session keeps the real PIN in memory until logout
//	  or disconnection, when it is zeroed.
//	Sign(slot, key, mechanism, data): policy allows this signature (window,
//	  limits, document) → the next card of the remote card in turn: select,
//	  VERIFY with the real PIN, sign, in one transaction, the card reset
//	  first if it last served another delegate → audit record → answer.
//
// # Remote cards of cards with different keys
//
// A remote card whose pool is not rsc.Options.SameKeys shows every card's
// keys (rsc.Pool.Shown), each under a number of its own and a label that
// names its card. A raw signature, decryption or key agreement with one
// goes to the card holding it (rsc.Holds): only that card makes a result
// that fits the certificate the application read. A document signature
// carries its card's certificate, so it goes to every card with a key of
// the same ID that suits it, in turn (signJob.cards). See
// docs/protocol.md §14.
//
// SignDocument (a CAdES-BES signature of a document's digest, document.go)
// takes the same path (signWith): only what the card signs (the hash of
// the signed attributes, built on the signing card's certificate) and the
// answer (the SignedData) differ.
//
// Every decision is made at every request, so revocation takes effect at
// once, also on open sessions; revoked delegates' connections also get an
// event.
//
// # What refusals depend on, across restarts
//
// Use counts, wrong vPINs in a row, lockouts, card locks and wrong owner
// passphrases live in the policy.Book. Each request's audit record keeps
// the Book's state of its delegation and card as the request left it
// ([AuditRecord].Policy, a policy.Mark taken after the request's last
// change, with what the request changed: a signature counted, a vPIN
// checked, the card refusing its PIN), and the record is durable before
// the answer; records a later refusal depends on ask the Auditor to anchor
// them ([AuditRecord].Anchor). At start pscsd rebuilds the Book from the
// log it reads anyway ([PolicyMark], policy.Rebuild): no write per
// signature beyond the one record.
//
// # Concurrency
//
// A Server is safe for concurrent use.
package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/metrics"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/transport"
)

// ErrWrongVPIN is what a PINVault returns for a wrong virtual PIN.
var ErrWrongVPIN = errors.New("server: wrong virtual PIN")

// ErrGuessLimit is what a PINVault returns when it cannot test a virtual
// PIN now because the TPM's dictionary-attack counter, shared by every
// delegation, is at its reserve (vault.ErrGuessLimit). The vPIN was not
// tested: it counts neither as right nor as wrong.
var ErrGuessLimit = errors.New("server: TPM guess limit reached, try later")

// PINVault opens the real PIN of a delegation's card with the delegate's
// virtual PIN. It returns an error wrapping ErrWrongVPIN for a wrong one.
type PINVault interface {
	OpenPIN(ctx context.Context, delegation string, vpin []byte) ([]byte, error)
}

// PINsVault is a PINVault that holds several PINs per delegation, one per
// PIN of the card (see VaultPINs). OpenPINs returns them by vault slot
// (PINSlot: "" for the card's default PIN, else the PIN's ID). A vault
// without it holds the default PIN only.
type PINsVault interface {
	OpenPINs(ctx context.Context, delegation string, vpin []byte) (map[string][]byte, error)
}

// Auditor records requests durably; Record returns once the record is on
// disk.
type Auditor interface {
	Record(ctx context.Context, r *AuditRecord) error
}

// AuditRecord is what the server records of one request.
type AuditRecord struct {
	Time       time.Time
	Identity   string
	Op         string
	Evidence   []byte // the signed request, byte for byte
	Delegation string
	Code       transport.Code // the decision: 0 allowed and done
	Card       string         // the member that served
	Result     []byte         // the signature; of a decryption or key agreement, the SHA-256 of the ciphertext or peer point (never what it gave)
	Took       time.Duration
	// Policy is the state of refusals the request left (of Delegation, or
	// of a card); nil if it names neither.
	Policy *policy.Mark
	// Anchor: a later refusal depends on this record (a wrong vPIN, a
	// lock, an unlock, a revocation, a passphrase failure, an
	// administration change, a signature counted against a limit); the
	// Auditor should anchor it before returning, as well as write it.
	Anchor bool
	// Via is how an administration without Evidence came (see WithVia).
	Via string
}

// Card is a remote card the server offers.
type Card struct {
	Name  string // the name delegations refer to
	Owner string // the identity that administers it and its delegations
	Slot  uint64 // its slot id on the wire, stable across restarts
	Pool  *rsc.Pool
	// Chain holds the certificates of the CAs that issued the cards'
	// certificates (intermediates, as the owner configured them): a
	// document signature carries the path from the signing card's
	// certificate up to, not including, a self-signed root (see
	// chainOf).
	Chain []*x509.Certificate
}

// Config configures a Server.
type Config struct {
	Book    *policy.Book
	Cards   []Card
	Vault   PINVault
	Audit   Auditor // nil: no audit (tests only)
	Logger  *slog.Logger
	Name    string           // server software, for Hello
	Metrics *metrics.Metrics // nil: none
	Admin   *Admin           // nil: no administration requests
}

// Server implements transport.Handler.
type Server struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]map[*transport.Conn]struct{} // identity -> open connections

	logins sync.Map // delegation ID -> *sync.Mutex: one vPIN check at a time
	// passphrases: card -> *sync.Mutex: one test of the owner's
	// passphrase at a time, so that parallel guesses cannot outrun its lock.
	passphrases sync.Map
}

var _ transport.Handler = (*Server)(nil)
var _ transport.ConnHandler = (*Server)(nil)

// New makes a Server.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "pscsd"
	}
	return &Server{cfg: cfg, log: log, conns: map[string]map[*transport.Conn]struct{}{}}
}

// session is a login of one connection to one remote card.
type session struct {
	mu         sync.Mutex
	delegation string
	pins       map[string][]byte // the card's real PINs by vault slot (PINSlot); zeroed at logout
}

func (s *session) wipe() {
	s.mu.Lock()
	wipePINs(s.pins)
	s.pins = nil
	s.mu.Unlock()
}

func wipePINs(pins map[string][]byte) {
	for _, p := range pins {
		clear(p)
	}
}

type sessionKey struct{ slot uint64 }

// Connected implements transport.ConnHandler.
func (s *Server) Connected(c *transport.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := c.Identity.ID
	if s.conns[id] == nil {
		s.conns[id] = map[*transport.Conn]struct{}{}
	}
	s.conns[id][c] = struct{}{}
	s.countConnsLocked()
	return nil
}

func (s *Server) countConnsLocked() {
	if s.cfg.Metrics == nil {
		return
	}
	n := 0
	for _, cs := range s.conns {
		n += len(cs)
	}
	s.cfg.Metrics.Connections(n)
}

// Closed implements transport.ConnHandler: the connection's logins end and
// their PINs are zeroed.
func (s *Server) Closed(c *transport.Conn) {
	s.mu.Lock()
	delete(s.conns[c.Identity.ID], c)
	s.countConnsLocked()
	s.mu.Unlock()
	for _, card := range s.cfg.Cards {
		if v, ok := c.Value(sessionKey{card.Slot}).(*session); ok {
			v.wipe()
		}
	}
}

// Revoke revokes a delegation at once: the delegate's next request is
// refused, and its open connections are told.
func (s *Server) Revoke(id string) bool {
	d, _, ok := s.cfg.Book.Get(id)
	if !ok || !s.cfg.Book.Revoke(id) {
		return false
	}
	slot := s.slotOf(d.Card)
	for _, c := range s.connsOf(d.Delegate) {
		if v, ok := c.Value(sessionKey{slot}).(*session); ok && v.delegation == id {
			v.wipe()
		}
		c.Notify(&transport.Event{Kind: transport.EventRevoked, Slot: slot, Message: "delegation revoked by its owner"})
	}
	s.log.Info("delegation revoked", "delegation", id, "delegate", d.Delegate)
	return true
}

// connsOf is identity's open connections.
func (s *Server) connsOf(identity string) []*transport.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*transport.Conn, 0, len(s.conns[identity]))
	for c := range s.conns[identity] {
		conns = append(conns, c)
	}
	return conns
}

func (s *Server) slotOf(name string) uint64 {
	c, _ := s.cardNamed(name)
	return c.Slot
}

func (s *Server) card(slot uint64) (Card, bool) {
	for _, c := range s.cfg.Cards {
		if c.Slot == slot {
			return c, true
		}
	}
	return Card{}, false
}

// Catalogue is the catalogue of identity: the remote cards it holds a
// delegation for.
func (s *Server) Catalogue(identity string) *transport.Catalogue {
	cat := &transport.Catalogue{Slots: []transport.Slot{}}
	dels := s.cfg.Book.For(identity)
	for _, c := range s.cfg.Cards {
		if !slices.ContainsFunc(dels, func(d policy.Delegation) bool { return d.Card == c.Name }) {
			continue
		}
		members := c.Pool.Members()
		slot := transport.Slot{ID: c.Slot, Description: "pscs remote card " + c.Name, Cards: uint32(len(members)),
			Present: len(members) > 0,
			Token: transport.TokenInfo{Label: c.Name, Manufacturer: "pscs", Model: "remote card", Serial: fmt.Sprint(c.Slot),
				Flags: ckfLoginRequired | ckfUserPINInitialized | ckfTokenInitialized, MinPIN: 4, MaxPIN: 64}}
		if len(members) > 0 {
			// A delegation limited to keys shows only those, under the
			// numbers every delegate sees them by. A remote card of
			// cards with different keys shows every card's (see
			// shownObjects).
			shown := c.Pool.Shown()
			if d, ok := s.cfg.Book.Current(identity, c.Name); ok {
				shown = slices.DeleteFunc(shown, func(k rsc.NumberedKey) bool { return !d.AllowsKey(k.ID) })
			}
			slot.Objects, slot.Mechanisms = shownObjects(shown)
		}
		cat.Slots = append(cat.Slots, slot)
	}
	cat.Tag = catalogueTag(cat)
	return cat
}

// keyOf finds the key a request names by its object handle (keyIndex):
// the index and the key (its ID on the card, and in a remote card of
// cards with different keys the card holding it), ok false when there is
// none.
func (s *Server) keyOf(card Card, key uint64) (int, rsc.KeyRef, bool) {
	idx, ok := keyIndex(key)
	if !ok {
		return 0, rsc.KeyRef{}, false
	}
	ref, ok := card.Pool.KeyRef(idx)
	return idx, ref, ok
}

// Handle implements transport.Handler.
func (s *Server) Handle(ctx context.Context, call *transport.Call) (any, error) {
	start := time.Now()
	body, err := s.handle(ctx, call)
	if m := s.cfg.Metrics; m != nil {
		code := transport.CodeOf(err)
		m.Request(call.Op.String(), uint32(code), time.Since(start))
		if reason, ok := refusalReasons[code]; ok {
			m.Refusal(reason)
		}
		for _, c := range s.cfg.Cards {
			m.QueueDepth(c.Name, c.Pool.Waiting())
			m.CardsPresent(c.Name, c.Pool.Len())
		}
	}
	return body, err
}

// refusalReasons names the refusals in metrics.
var refusalReasons = map[transport.Code]string{
	transport.CodeDenied: "denied", transport.CodeRevoked: "revoked", transport.CodeOutsideWindow: "outside_window",
	transport.CodeLimitReached: "limit", transport.CodeWrongPIN: "wrong_vpin", transport.CodeLocked: "locked",
	transport.CodeNotLoggedIn: "not_logged_in", transport.CodeDocumentRefused: "document", transport.CodeNoSuchSlot: "no_such_slot",
	transport.CodeNoSuchKey: "no_such_key", transport.CodeMechanism: "mechanism", transport.CodeCardUnavailable: "card_unavailable",
	transport.CodeBusy: "busy", transport.CodeCardError: "card_error", transport.CodeGuessLimit: "guess_limit",
	transport.CodeKeyGone: "key_gone", transport.CodeDecryption: "decryption", transport.CodeKeyNotDelegated: "key_not_delegated",
	transport.CodeWarrantyRaw: "warranty_raw", transport.CodeNoCertificate: "no_certificate",
}

func (s *Server) handle(ctx context.Context, call *transport.Call) (any, error) {
	switch call.Op {
	case transport.OpHello:
		var req transport.HelloRequest
		if call.Body != nil {
			if err := call.Decode(&req); err != nil {
				return nil, err
			}
		}
		resp := &transport.HelloResponse{Server: s.cfg.Name, Time: time.Now().UnixMilli(), Identity: call.Conn.Identity.ID,
			ReplayWindowMS: uint32(call.Conn.ReplayWindow().Milliseconds())}
		cat := s.Catalogue(call.Conn.Identity.ID)
		if !bytes.Equal(req.Tag, cat.Tag) {
			resp.Catalogue = cat // the client's copy is stale or missing
		}
		return resp, nil
	case transport.OpPing:
		return nil, nil
	case transport.OpLogin:
		return s.login(ctx, call)
	case transport.OpSign:
		return s.sign(ctx, call)
	case transport.OpSignDocument:
		return s.signDocument(ctx, call)
	case transport.OpDecrypt:
		return s.decrypt(ctx, call)
	case transport.OpDerive:
		return s.derive(ctx, call)
	case transport.OpAdmin:
		return s.admin(ctx, call)
	case transport.OpLogout:
		var req transport.LogoutRequest
		if err := call.Decode(&req); err != nil {
			return nil, err
		}
		if v, ok := call.Conn.Swap(sessionKey{req.Slot}, nil).(*session); ok {
			v.wipe()
		}
		return nil, s.audit(ctx, call, "", 0, "", nil, time.Now(), note{})
	}
	return nil, transport.Errorf(transport.CodeUnsupported, "%v is not served", call.Op)
}

func (s *Server) login(ctx context.Context, call *transport.Call) (any, error) {
	start := time.Now()
	var req transport.LoginRequest
	if err := call.Decode(&req); err != nil {
		return nil, err
	}
	who := call.Conn.Identity.ID
	card, ok := s.card(req.Slot)
	if !ok {
		return nil, s.refuse(ctx, call, "", transport.Errorf(transport.CodeNoSuchSlot, "no remote card %d", req.Slot), start)
	}
	d, err := s.cfg.Book.Check(policy.Request{Delegate: who, Card: card.Name, Op: "login"})
	if err != nil {
		return nil, s.refuse(ctx, call, d.ID, err, start)
	}
	pins, ev, err := s.openVPIN(ctx, who, card.Name, "login", d.ID, call.Secret)
	if err != nil {
		return nil, s.refuseNoted(ctx, call, d.ID, note{events: ev}, err, start)
	}
	if err := s.audit(ctx, call, d.ID, 0, "", nil, start, note{events: ev}); err != nil {
		wipePINs(pins)
		return nil, err
	}
	if old, ok := call.Conn.Swap(sessionKey{req.Slot}, &session{delegation: d.ID, pins: pins}).(*session); ok {
		old.wipe()
	}
	return &transport.LoginResponse{Catalogue: s.Catalogue(who)}, nil
}

// openVPIN opens the real PINs of delegation id (by vault slot, see
// PINSlot) with a virtual PIN, one
// check at a time per delegation with the lockout decided before each,
// so that parallel guesses cannot outrun it. A wrong vPIN counts towards
// the lockout and never reaches the card. It returns what it changed in
// the policy state, for the request's audit record.
func (s *Server) openVPIN(ctx context.Context, who, card, op, id string, vpin []byte) (map[string][]byte, policy.Event, error) {
	mu, _ := s.logins.LoadOrStore(id, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if _, err := s.cfg.Book.Check(policy.Request{Delegate: who, Card: card, Op: "login"}); err != nil {
		return nil, 0, err
	}
	var pins map[string][]byte
	var err error
	if v, ok := s.cfg.Vault.(PINsVault); ok {
		pins, err = v.OpenPINs(ctx, id, vpin)
	} else {
		var pin []byte
		if pin, err = s.cfg.Vault.OpenPIN(ctx, id, vpin); err == nil {
			pins = map[string][]byte{"": pin}
		}
	}
	if errors.Is(err, ErrWrongVPIN) {
		if s.cfg.Book.WrongVPIN(id) {
			return nil, policy.EventWrongVPIN | policy.EventLocked, transport.Errorf(transport.CodeLocked, "")
		}
		left := uint32(max(s.cfg.Book.VPINTriesLeft(id), 0))
		return nil, policy.EventWrongVPIN, &transport.Error{Code: transport.CodeWrongPIN, TriesLeft: left}
	}
	if errors.Is(err, ErrGuessLimit) {
		s.log.Warn("vault: TPM guess limit reached", "delegation", id, "op", op, "err", err)
		return nil, 0, transport.Errorf(transport.CodeGuessLimit, "")
	}
	if err != nil {
		s.log.Error("vault", "delegation", id, "op", op, "err", err)
		return nil, 0, transport.Errorf(transport.CodeInternal, "")
	}
	s.cfg.Book.RightVPIN(id)
	return pins, policy.EventRightVPIN, nil
}

func (s *Server) sign(ctx context.Context, call *transport.Call) (any, error) {
	var req transport.SignRequest
	if err := call.Decode(&req); err != nil {
		return nil, err
	}
	digest, opts, perr := signInput(req.Mechanism, req.Params, req.Data)
	// The policy sees the document's digest; bytes that are no digest
	// (CKM_RSA_PKCS without a DigestInfo) match no allowed document. An
	// EdDSA signature's document is the message itself: the policy sees
	// its SHA-256.
	docDigest := digest
	switch {
	case perr == nil && req.Mechanism == ckmEDDSA:
		sum := sha256.Sum256(digest)
		docDigest = sum[:]
	case perr == nil && opts.HashFunc() == 0 && req.Mechanism == ckmRSAPKCS:
		docDigest = nil
	}
	out, err := s.signWith(ctx, call, signJob{slot: req.Slot, key: req.Key, perr: perr, raw: true, docDigest: docDigest,
		fits: func(k profiles.Key) error { return mechanismFits(req.Mechanism, k) },
		input: func(policy.Delegation, profiles.Key) ([]byte, crypto.SignerOpts, error) {
			return digest, opts, nil
		},
		output: func(k profiles.Key, sig []byte) ([]byte, error) { return p11Signature(k.Public, sig) },
	})
	if err != nil {
		return nil, err
	}
	return &transport.SignResponse{Signature: out.answer, Certificate: out.cert}, nil
}

// signJob is one signature on a remote card: a raw one (OpSign) or a
// document's (OpSignDocument, document.go). Both take the same path:
// session, policy (window, limits, documents, warranty), the key's vPIN
// rule, the card (VERIFY, sign, a key changed meanwhile read again), the
// audit record.
type signJob struct {
	slot, key uint64
	// perr is the request's error found while decoding it (a bad
	// mechanism), refused once the session is known.
	perr error
	// raw: a bare signature, which cannot carry the delegation notice.
	raw bool
	// docDigest is the document's digest for the policy; nil: unknown.
	docDigest []byte
	// refusal is added to the message of a document refused.
	refusal string
	// fits checks that the request suits the key's public key.
	fits func(k profiles.Key) error
	// input returns what the card signs with key k under delegation d;
	// namesCert: it names k's certificate, so a signature that a changed
	// key made is made again rather than kept.
	namesCert bool
	input     func(d policy.Delegation, k profiles.Key) (digest []byte, opts crypto.SignerOpts, err error)
	// output turns the card's signature (ECDSA: ASN.1) into the answer,
	// which the audit record keeps as the request's result.
	output func(k profiles.Key, sig []byte) ([]byte, error)
}

// cards returns the cards of remote card p that may run the job with key
// ref (for rsc.Pool.DoOn). In a remote card whose cards share their keys,
// every card (nil). In one of cards with different keys, a raw signature
// goes to the card holding ref, whose certificate the application read;
// a document signature, which carries the certificate of the card that
// made it, goes to any card with a key of ref's ID that suits the request
// (and has a certificate, when one of them has), in turn.
func (job signJob) cards(p *rsc.Pool, ref rsc.KeyRef) func(m *rsc.Member) bool {
	switch {
	case ref.Card == "":
		return nil
	case job.raw:
		return rsc.Holds(ref)
	}
	certified := slices.ContainsFunc(p.Members(), func(m *rsc.Member) bool { return m.Certificate(ref.ID) != nil })
	return func(m *rsc.Member) bool {
		k, ok := m.Key(ref.ID)
		return ok && (k.Certificate != nil || !certified) && job.fits(k) == nil
	}
}

// signed is what a signJob gave.
type signed struct {
	answer []byte // output's
	cert   []byte // the DER certificate of the card's key that signed
	by     string // the member that signed
}

func (s *Server) signWith(ctx context.Context, call *transport.Call, job signJob) (signed, error) {
	start := time.Now()
	who := call.Conn.Identity.ID
	card, ok := s.card(job.slot)
	if !ok {
		return signed{}, s.refuse(ctx, call, "", transport.Errorf(transport.CodeNoSuchSlot, "no remote card %d", job.slot), start)
	}
	sess, ok := call.Conn.Value(sessionKey{job.slot}).(*session)
	if !ok {
		return signed{}, s.refuse(ctx, call, "", transport.Errorf(transport.CodeNotLoggedIn, ""), start)
	}
	if job.perr != nil {
		return signed{}, s.refuse(ctx, call, sess.delegation, job.perr, start)
	}
	idx, ref, ok := s.keyOf(card, job.key)
	keyID := ref.ID
	d, err := s.cfg.Book.Check(policy.Request{Delegate: who, Card: card.Name, Op: "sign", Digest: job.docDigest, Raw: job.raw, Key: keyID})
	if transport.CodeOf(err) == transport.CodeDocumentRefused {
		var te *transport.Error
		if job.refusal != "" && errors.As(err, &te) {
			err = transport.Errorf(transport.CodeDocumentRefused, "%s%s", te.Message, job.refusal)
		}
		return signed{}, s.refuseDocument(ctx, call, d.ID, job.docDigest, err, start)
	}
	if err != nil {
		return signed{}, s.refuse(ctx, call, d.ID, err, start)
	}
	// From here on the signature counts against the delegation's limits,
	// whatever becomes of it: the record says so, and is anchored if a
	// limit will depend on it.
	n := note{events: policy.EventCounted, anchor: d.Total > 0 || d.PerHour > 0}
	if d.ID != sess.delegation {
		return signed{}, s.refuseNoted(ctx, call, d.ID, n, transport.Errorf(transport.CodeNotLoggedIn, "log in again"), start)
	}
	if !ok {
		return signed{}, s.refuseNoted(ctx, call, d.ID, n, transport.Errorf(transport.CodeNoSuchKey, ""), start)
	}
	// A key the card wants its PIN for before every signature wants the
	// delegate's virtual PIN with every signature (CKA_ALWAYS_AUTHENTICATE
	// in the catalogue), opened afresh: the delegate confirms each one.
	var freshPINs map[string][]byte
	k, ok := card.Pool.Key(idx)
	if ok {
		// A key that does not sign, or a mechanism of another key type,
		// is refused before the card (and the vPIN) is asked.
		if err := job.fits(k); err != nil {
			return signed{}, s.refuseNoted(ctx, call, d.ID, n, err, start)
		}
	}
	if ok && k.PINPolicy == profiles.PINAlways {
		if len(call.Secret) == 0 {
			return signed{}, s.refuseNoted(ctx, call, d.ID, n, errPINEveryTime, start)
		}
		var ev policy.Event
		freshPINs, ev, err = s.openVPIN(ctx, who, card.Name, "sign", d.ID, call.Secret)
		n.events |= ev
		if err != nil {
			return signed{}, s.refuseNoted(ctx, call, d.ID, n, err, start)
		}
		defer wipePINs(freshPINs)
	}
	var out signed
	var cardLocked atomic.Bool
	err = card.Pool.DoOn(ctx, who, job.cards(card.Pool, ref), func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		onCard := time.Now()
		sess.mu.Lock()
		loggedIn := sess.pins != nil
		sess.mu.Unlock()
		if !loggedIn {
			return transport.Errorf(transport.CodeNotLoggedIn, "") // logged out meanwhile
		}
		cl := cardLog{s: s, card: card.Name, m: m}
		for reread := false; ; {
			k, ok := m.Key(keyID)
			if !ok {
				s.log.Warn("a request names a key the card no longer has", "card", card.Name, "member", m.ID,
					"reader", m.Reader, "key", keyID, "delegation", d.ID)
				return transport.Errorf(transport.CodeKeyGone, "key %s is no longer on the card", keyID)
			}
			if err := job.fits(k); err != nil {
				return err
			}
			digest, opts, err := job.input(d, k)
			if err != nil {
				return err
			}
			if k.PINPolicy == profiles.PINAlways && freshPINs == nil {
				return errPINEveryTime // the card's key changed to one that wants it
			}
			if k.PINPolicy != profiles.PINNever {
				pin, err := sess.pinFor(freshPINs, c.PINs(), k.PIN)
				if err != nil {
					return err
				}
				err = c.VerifyPIN(ctx, k.PIN, pin)
				clear(pin)
				if errors.Is(err, apdu.ErrWrongPIN) || errors.Is(err, apdu.ErrBlocked) {
					// The registered real PIN is no longer the card's: stop
					// every delegate before the card's tries run out.
					s.cfg.Book.LockCard(card.Name)
					cardLocked.Store(true)
					cl.log("verify PIN", err, "the card refused its registered PIN: delegations on it locked")
					return transport.Errorf(transport.CodeLocked, "the owner must register the card's PIN again")
				}
				if err != nil {
					return cl.fail("verify PIN", err)
				}
			}
			raw, err := c.Sign(ctx, k.ID, digest, opts)
			if ep, ok := k.Public.(ed25519.PublicKey); ok && err == nil && !ed25519.Verify(ep, digest, raw) {
				// The server checks what the card signed, as drivers
				// check their ECDSA and RSA signatures.
				err = &profiles.BadSignatureError{Key: k.ID, Signature: raw}
			}
			if errors.Is(err, profiles.ErrKeyUsage) {
				return transport.Errorf(transport.CodeMechanism, "key %s does not sign this way", k.ID)
			}
			if err != nil && !reread && mayBeStale(err) {
				// Another program may have changed the key without a
				// reset that told us: read the card's keys again.
				reread = true
				keys, changed, rerr := m.Reread(ctx, c)
				if errors.Is(rerr, rsc.ErrMixedKeys) {
					return rerr // the card leaves; another takes the request
				}
				if rerr != nil {
					return cl.fail("read keys", rerr)
				}
				if changed {
					// A signature valid under the new key stands, unless
					// what it signed names the key's certificate.
					var bad *profiles.BadSignatureError
					nk, ok := keyByID(keys, k.ID)
					if !ok || !errors.As(err, &bad) || job.namesCert && !sameCertificate(nk, k) || profiles.VerifySignature(nk.Public, digest, bad.Signature, opts) != nil {
						continue // with the card's keys as they are now
					}
					raw, err, k = bad.Signature, nil, nk
				}
			}
			if err != nil {
				return cl.fail("sign with "+k.ID, err)
			}
			if mt := s.cfg.Metrics; mt != nil {
				mt.CardOp(card.Name, m.ID, time.Since(onCard))
			}
			answer, err := job.output(k, raw)
			if err != nil {
				return err
			}
			out = signed{answer: answer, by: m.ID}
			if k.Certificate != nil {
				out.cert = k.Certificate.Raw
			}
			return nil
		}
	})
	if cardLocked.Load() {
		n.events |= policy.EventCardLocked
	}
	if err != nil {
		return signed{}, s.refuseNoted(ctx, call, d.ID, n, s.requestError(card.Name, err), start)
	}
	if err := s.audit(ctx, call, d.ID, 0, out.by, out.answer, start, n); err != nil {
		return signed{}, err
	}
	return out, nil
}

// sameCertificate reports whether two keys carry the same certificate
// (or none).
func sameCertificate(a, b profiles.Key) bool {
	if a.Certificate == nil || b.Certificate == nil {
		return a.Certificate == b.Certificate
	}
	return a.Certificate.Equal(b.Certificate)
}

// pinFor returns a copy of the real PIN pinID of a card whose PINs are
// pins: from fresh (opened for this request) when it is not nil, else
// from the session. A PIN the owner has not registered is refused with
// CodeNoPIN.
func (s *session) pinFor(fresh map[string][]byte, pins []profiles.PINInfo, pinID string) ([]byte, error) {
	slot := PINSlot(pins, pinID)
	if fresh != nil {
		if p, ok := fresh[slot]; ok {
			return append([]byte(nil), p...), nil
		}
		return nil, transport.Errorf(transport.CodeNoPIN, "the owner has not registered the card's PIN %s", pinID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pins == nil {
		return nil, transport.Errorf(transport.CodeNotLoggedIn, "") // logged out meanwhile
	}
	p, ok := s.pins[slot]
	if !ok {
		return nil, transport.Errorf(transport.CodeNoPIN, "the owner has not registered the card's PIN %s", pinID)
	}
	return append([]byte(nil), p...), nil
}

var errPINEveryTime = transport.Errorf(transport.CodeNotLoggedIn, "this key needs the virtual PIN with every signature")

func keyByID(keys []profiles.Key, id string) (profiles.Key, bool) {
	for _, k := range keys {
		if k.ID == id {
			return k, true
		}
	}
	return profiles.Key{}, false
}

// mayBeStale reports whether err, a card's refusal of a signature, may
// come from a key that changed since the card's keys were read: a
// signature that does not verify under the key's public key, a slot that
// holds no key (6A88), or one whose key has another algorithm or size
// (6A86 for the algorithm in P1, 6A80 for input of the wrong length).
func mayBeStale(err error) bool {
	return errors.Is(err, profiles.ErrBadSignature) || errors.Is(err, apdu.SWRefNotFound) ||
		errors.Is(err, apdu.SWIncorrectP1P2) || errors.Is(err, apdu.SWWrongData)
}

// cardLog logs what a card did wrong during a request of a remote card.
type cardLog struct {
	s    *Server
	card string // the remote card
	m    *rsc.Member
}

// log logs err, the failure of operation op on the card, with msg: the
// remote card, the card (ID, which names its profile and serial, and
// reader), the status word, and what the driver concluded (its error).
func (l cardLog) log(op string, err error, msg string) {
	attrs := []any{"op", op, "card", l.card}
	if l.m != nil {
		attrs = append(attrs, "member", l.m.ID, "reader", l.m.Reader)
	}
	var sw apdu.StatusWord
	if errors.As(err, &sw) {
		attrs = append(attrs, "sw", fmt.Sprintf("%04X", uint16(sw)))
	}
	attrs = append(attrs, "err", err.Error())
	l.s.log.Warn(msg, attrs...)
}

// fail logs err, the failure of op on the card, and returns it with a code
// for the wire (cardError): the details stay in the log.
func (l cardLog) fail(op string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return err
	}
	l.log(op, err, "card error")
	return cardError(err)
}

// cardError gives the wire a code; the card's details stay in the log
// (see cardLog).
func cardError(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return err
	}
	var sw apdu.StatusWord
	if errors.As(err, &sw) {
		return &transport.Error{Code: transport.CodeCardError, Message: fmt.Sprintf("card status %04X", uint16(sw))}
	}
	return &transport.Error{Code: transport.CodeCardError}
}

// requestError gives err, the failure of a request on remote card name, a
// code for the wire (poolError); a failure that none gave one (the card
// could not be opened, its keys not read) is logged as a card error.
func (s *Server) requestError(name string, err error) error {
	err = poolError(err)
	var te *transport.Error
	if errors.As(err, &te) || errors.Is(err, context.Canceled) {
		return err
	}
	cardLog{s: s, card: name}.log("prepare the card", err, "card error")
	return cardError(err)
}

func poolError(err error) error {
	switch {
	case errors.Is(err, rsc.ErrBusy):
		return transport.Errorf(transport.CodeBusy, "remote card busy")
	case errors.Is(err, rsc.ErrNoCard), errors.Is(err, rsc.ErrClosed):
		return transport.Errorf(transport.CodeCardUnavailable, "no card can serve now")
	case errors.Is(err, context.DeadlineExceeded):
		return transport.Errorf(transport.CodeTimeout, "")
	}
	return err
}

// note is what a request changed in the policy state, for its audit
// record.
type note struct {
	events policy.Event
	card   string // the remote card whose state the record keeps, if it names no delegation
	anchor bool   // anchor the record even if events do not ask for it
}

// anchoring are the events that a later refusal depends on.
const anchoring = policy.EventWrongVPIN | policy.EventLocked | policy.EventCardLocked | policy.EventUnlocked |
	policy.EventRevoked | policy.EventGranted | policy.EventWrongPassphrase | policy.EventPassphraseLocked

// refuse records a refusal and returns it.
func (s *Server) refuse(ctx context.Context, call *transport.Call, delegation string, err error, start time.Time) error {
	return s.refuseAs(ctx, call, call.Op.String(), delegation, note{}, err, start)
}

// refuseNoted is refuse for a request that changed the policy state.
func (s *Server) refuseNoted(ctx context.Context, call *transport.Call, delegation string, n note, err error, start time.Time) error {
	return s.refuseAs(ctx, call, call.Op.String(), delegation, n, err, start)
}

// refuseAs is refuse with the operation named as op in the log.
func (s *Server) refuseAs(ctx context.Context, call *transport.Call, op, delegation string, n note, err error, start time.Time) error {
	code := transport.CodeOf(err)
	s.log.Info("request refused", "op", op, "identity", call.Conn.Identity.ID, "delegation", delegation, "code", code)
	if aerr := s.auditAs(ctx, call, op, delegation, code, "", nil, start, n); aerr != nil {
		return aerr
	}
	return err
}

func (s *Server) audit(ctx context.Context, call *transport.Call, delegation string, code transport.Code, card string, result []byte, start time.Time, n note) error {
	return s.auditAs(ctx, call, call.Op.String(), delegation, code, card, result, start, n)
}

// auditAs writes the request's record, with the policy state the request
// left (taken after its last change, so that the log never holds less
// than what the answer tells), and returns once it is durable.
func (s *Server) auditAs(ctx context.Context, call *transport.Call, op, delegation string, code transport.Code, card string, result []byte, start time.Time, n note) error {
	if s.cfg.Audit == nil {
		return nil
	}
	rec := &AuditRecord{Time: start, Identity: call.Conn.Identity.ID, Op: op,
		Evidence: call.Evidence, Delegation: delegation, Code: code, Card: card, Result: result,
		Anchor: n.anchor || n.events&anchoring != 0, Via: ViaOf(ctx)}
	if m, ok := s.cfg.Book.Mark(delegation, n.card); ok {
		m.Events = n.events
		rec.Policy = &m
	}
	rec.Took = time.Since(start)
	if rec.Anchor {
		// What this record keeps (a lock, a count) was already changed in
		// memory: the record is written even if the request is cancelled
		// meanwhile, so that a restart does not forget it.
		ctx = context.WithoutCancel(ctx)
	}
	err := s.cfg.Audit.Record(ctx, rec)
	if err != nil {
		s.log.Error("audit record not written: refusing the answer", "err", err)
		return transport.Errorf(transport.CodeInternal, "")
	}
	return nil
}
