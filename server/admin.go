package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/transport"
)

// Store is where administration keeps what it changes (server/store).
type Store interface {
	Put(kind, key string, value []byte) error
	Delete(kind, key string) error
}

// Admin enables administration requests (OpAdmin): owners enroll
// identities, register their cards' PINs, grant, revoke and unlock
// delegations, and export their audit records.
type Admin struct {
	Store      Store
	Enrollment *transport.StaticEnrollment
	// Pins seals owners' card PINs and delegations' copies; it must also
	// be the Config's Vault.
	Pins *VaultPINs
	// CA issues client certificates; nil: the server issues none.
	CA *CA
	// AuditFile is the audit log that export reads.
	AuditFile string
	// Checkpoint, if set, makes a signed checkpoint of the audit log and
	// returns its sequence number: an export ends with one made for it.
	Checkpoint func(ctx context.Context) (uint64, error)
	// CheckpointCertificate (DER) certifies the checkpoints' key; exports
	// carry it.
	CheckpointCertificate []byte
	// SignManifest, if set, signs an export's manifest (a SHA-256 digest)
	// with the checkpoint key.
	SignManifest func(ctx context.Context, digest []byte) ([]byte, error)
	// Head, if set, gives the store's head after a change, for the change's
	// audit record: a later start refuses a store older than the log says.
	Head func() []byte
	// Console, if set, makes a one-time link to the owners' web console
	// for owner (action "console"), valid until expires.
	Console func(ctx context.Context, owner string) (url string, expires time.Time, err error)
	// PINTries is a full PIN retry counter: register-pin tries the PIN
	// only on a card whose counter shows at least this; zero: 3.
	PINTries int
	// Backup, if set, makes a backup now and mails it (action backup):
	// the archive's digest and the addresses it went to. nil: the server
	// makes no backups (the action is refused as unsupported).
	Backup func(ctx context.Context, who string) (digest []byte, sentTo []string, err error)
}

// Keys of administration records in the store.
const (
	ownerPINKey = "owner-pin:" // + card: the owner's sealed PIN (KindVault)
	revokedKey  = "revoked:"   // + delegation: revocation time (KindConfig)
)

// maxExport bounds the records of one export answer, below the protocol's
// response limit.
const maxExport = 2 << 20

func (s *Server) admin(ctx context.Context, call *transport.Call) (any, error) {
	start := time.Now()
	a := s.cfg.Admin
	if a == nil {
		return nil, transport.Errorf(transport.CodeUnsupported, "this server takes no administration requests")
	}
	var req transport.AdminRequest
	if err := call.Decode(&req); err != nil {
		return nil, err
	}
	var sec transport.AdminSecret
	if len(call.Secret) > 0 {
		if err := transport.Unmarshal(call.Secret, &sec); err != nil {
			return nil, err
		}
		defer clear(sec.PIN)
		defer clear(sec.Passphrase)
	}
	who := call.Conn.Identity.ID
	// The log names the action: "admin:delegate".
	op := "admin:" + req.Action
	if len(req.Action) > 32 {
		op = "admin:?"
	}
	// The record keeps the state of the card the request names, and is
	// anchored if it changed anything.
	var n note
	if _, ok := s.cardNamed(req.Card); ok {
		n.card = req.Card
	}
	resp, delegation, err := s.adminAction(ctx, a, who, &req, &sec, &n)
	if err != nil {
		if transport.CodeOf(err) == transport.CodeNotOwner {
			// Refused as another's: the record names and keeps nothing
			// of the other owner's card or delegation (no policy mark,
			// which a restart would read back, and nothing the caller's
			// export would show of them).
			delegation, n = "", note{}
		}
		return nil, s.refuseAs(ctx, call, op, delegation, n, err, start)
	}
	var head []byte
	if req.Action != transport.AdminList && req.Action != transport.AdminExport && req.Action != transport.AdminConsole {
		n.anchor = true
		if a.Head != nil {
			head = a.Head()
		}
	}
	if err := s.auditAs(ctx, call, op, delegation, 0, req.Card, head, start, n); err != nil {
		return nil, err
	}
	s.log.Info("administration", "action", req.Action, "identity", who, "name", req.Name, "card", req.Card, "delegation", delegation)
	return resp, nil
}

// owns reports whether who owns the remote card named card.
func (s *Server) owns(who, card string) bool {
	for _, c := range s.cfg.Cards {
		if c.Name == card && c.Owner == who {
			return true
		}
	}
	return false
}

func (s *Server) ownsAny(who string) bool {
	return slices.ContainsFunc(s.cfg.Cards, func(c Card) bool { return c.Owner == who })
}

// validName reports whether n may name an identity: 1 to 64 letters,
// digits or ._@-, and not pscsd's own name in the audit log (whose records
// every owner's export shows).
func validName(n string) bool {
	if n == "" || len(n) > 64 || strings.EqualFold(n, audit.Identity) {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r)) {
			return false
		}
	}
	return true
}

// adminAction does what req asks and notes in n what it changed in the
// policy state.
func (s *Server) adminAction(ctx context.Context, a *Admin, who string, req *transport.AdminRequest, sec *transport.AdminSecret, n *note) (any, string, error) {
	if !s.ownsAny(who) {
		return nil, "", transport.Errorf(transport.CodeNotOwner, "%s owns no remote card", who)
	}
	switch req.Action {
	case transport.AdminEnroll, transport.AdminIssue:
		return s.enroll(a, req)
	case transport.AdminRegisterPIN:
		return &transport.AdminResponse{}, "", s.registerPIN(ctx, a, who, req.Card, req.PIN, sec, n)
	case transport.AdminDelegate:
		return s.delegate(a, who, req.Delegation, sec.Passphrase, n)
	case transport.AdminRevoke, transport.AdminUnlock:
		d, _, ok := s.cfg.Book.Get(req.ID)
		if !ok {
			return nil, "", transport.Errorf(transport.CodeUnknown, "no delegation %q", req.ID)
		}
		if !s.owns(who, d.Card) {
			return nil, d.ID, transport.Errorf(transport.CodeNotOwner, "delegation %s is on a card %s does not own", d.ID, who)
		}
		if req.Action == transport.AdminUnlock {
			s.cfg.Book.Unlock(d.ID)
			n.events |= policy.EventUnlocked
			return &transport.AdminResponse{ID: d.ID}, d.ID, nil
		}
		n.events |= policy.EventRevoked
		return &transport.AdminResponse{ID: d.ID}, d.ID, s.revokeKept(a, d.ID)
	case transport.AdminList:
		return s.list(who), "", nil
	case transport.AdminExport:
		resp, err := s.export(ctx, a, who, req.From, req.Until)
		return resp, "", err
	case transport.AdminConsole:
		if a.Console == nil {
			return nil, "", transport.Errorf(transport.CodeUnsupported, "this server has no web console")
		}
		u, exp, err := a.Console(ctx, who)
		if err != nil {
			return nil, "", s.internal("console", err)
		}
		return &transport.AdminResponse{ConsoleURL: u, ConsoleExpires: exp.UnixMilli()}, "", nil
	case transport.AdminBackup:
		if a.Backup == nil {
			return nil, "", transport.Errorf(transport.CodeUnsupported, "this server makes no backups (no \"backup\" in its configuration)")
		}
		digest, sent, err := a.Backup(ctx, who)
		if err != nil {
			return nil, "", transport.Errorf(transport.CodeBackupFailed, "backup: %v", err)
		}
		return &transport.AdminResponse{BackupDigest: digest, BackupSentTo: sent}, "", nil
	}
	return nil, "", transport.Errorf(transport.CodeUnsupported, "unknown administration action %q", req.Action)
}

func (s *Server) enroll(a *Admin, req *transport.AdminRequest) (any, string, error) {
	if !validName(req.Name) {
		return nil, "", transport.Errorf(transport.CodeMalformed, "an identity name is 1 to 64 letters, digits or ._@-")
	}
	if _, ok := a.Enrollment.Certificate(req.Name); ok {
		return nil, "", transport.Errorf(transport.CodeExists, "%s is enrolled already", req.Name)
	}
	var cert *x509.Certificate
	resp := &transport.AdminResponse{}
	if req.Action == transport.AdminIssue {
		if a.CA == nil {
			return nil, "", transport.Errorf(transport.CodeNoCA, "")
		}
		pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
		if err != nil {
			return nil, "", transport.Errorf(transport.CodeMalformed, "public key: %v", err)
		}
		if cert, err = a.CA.IssueClient(req.Name, pub); err != nil {
			return nil, "", transport.Errorf(transport.CodeMalformed, "%v", err)
		}
		resp.Certificate, resp.CA = cert.Raw, a.CA.Cert.Raw
	} else {
		var err error
		if cert, err = x509.ParseCertificate(req.Certificate); err != nil {
			return nil, "", transport.Errorf(transport.CodeMalformed, "certificate: %v", err)
		}
	}
	if err := a.Store.Put(store.KindIdentity, req.Name, cert.Raw); err != nil {
		return nil, "", s.internal("store", err)
	}
	a.Enrollment.Add(req.Name, cert)
	return resp, "", nil
}

func (s *Server) internal(what string, err error) error {
	s.log.Error("administration failed", "in", what, "err", err)
	return transport.Errorf(transport.CodeInternal, "")
}

// registerPIN checks the card's real PIN on every card of the remote card,
// only when all their retry counters are full (a wrong PIN then costs one
// try of three on one card, never the last), and seals it under the
// owner's passphrase.
//
// pinID names the card's PIN (profiles.PINInfo.ID); "" is the card's
// default, first, PIN. A card with several PINs has each registered on
// its own; an unknown pinID is refused with the card's PINs listed.
func (s *Server) registerPIN(ctx context.Context, a *Admin, who, name, pinID string, sec *transport.AdminSecret, n *note) error {
	card, ok := s.cardNamed(name)
	if !ok {
		return transport.Errorf(transport.CodeUnknown, "no remote card %q", name)
	}
	if card.Owner != who {
		return transport.Errorf(transport.CodeNotOwner, "%s does not own %s", who, name)
	}
	if len(sec.PIN) == 0 || len(sec.Passphrase) < 8 {
		return transport.Errorf(transport.CodeMalformed, "the card's PIN and a passphrase of at least 8 characters are needed")
	}
	full := a.PINTries
	if full == 0 {
		full = 3
	}
	if card.Pool.Len() == 0 {
		return transport.Errorf(transport.CodeCardUnavailable, "no card of %s is present", name)
	}
	// First every card's counter, so that no PIN is tried while any of
	// them is short of tries; then the PIN on each card: the cards of a
	// parallel remote card must share it.
	var slot string
	err := card.Pool.Each(ctx, "owner:"+who, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
		pins := c.PINs()
		id := pinID
		if id == "" {
			id = profiles.DefaultPIN(pins)
		}
		if _, ok := profiles.FindPIN(pins, id); !ok {
			return transport.Errorf(transport.CodeMalformed, "card %s has no PIN %q; its PINs: %s", m.ID, pinID, pinList(pins))
		}
		slot = PINSlot(pins, id)
		st, err := c.PINStatus(ctx, id)
		if err != nil {
			return cardLog{s: s, card: name, m: m}.fail("PIN status", err)
		}
		if st.Blocked || st.Retries >= 0 && st.Retries < full {
			return transport.Errorf(transport.CodePINCheck, "card %s: PIN retry counter at %d, not full: not trying a PIN on it", m.ID, st.Retries)
		}
		return nil
	})
	if err == nil {
		err = card.Pool.Each(ctx, "owner:"+who, func(ctx context.Context, c profiles.Card, m *rsc.Member) error {
			id := pinID
			if id == "" {
				id = profiles.DefaultPIN(c.PINs())
			}
			err := c.VerifyPIN(ctx, id, sec.PIN)
			if errors.Is(err, apdu.ErrWrongPIN) || errors.Is(err, apdu.ErrBlocked) {
				s.log.Warn("the card refused the PIN the owner registers", "card", name, "member", m.ID, "reader", m.Reader,
					"owner", who, "err", err.Error())
				return transport.Errorf(transport.CodePINCheck, "card %s refused the PIN: %s (the cards of a remote card must share their PIN)",
					m.ID, triesLeft(ctx, c, id, err))
			}
			if err != nil {
				return cardLog{s: s, card: name, m: m}.fail("verify PIN", err)
			}
			return c.Logout(ctx)
		})
	}
	if err != nil {
		return poolError(err)
	}
	e, err := a.Pins.SealOwnerPINSlot(name, slot, sec.Passphrase, sec.PIN)
	s.cfg.Book.RightPassphrase(name)
	n.events |= policy.EventRightPassphrase
	if err != nil {
		return s.internal("vault", err)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return s.internal("vault", err)
	}
	if err := a.Store.Put(store.KindVault, ownerPINKey+PINName(name, slot), b); err != nil {
		return s.internal("store", err)
	}
	return nil
}

// triesLeft says how many PIN tries the card has left after it refused a
// PIN with err: from the status word (63Cx), or, when it carries no count
// (6300), from the card's PIN status, which spends no try.
func triesLeft(ctx context.Context, c profiles.Card, pinID string, err error) string {
	n, ok := -1, false
	var sw apdu.StatusWord
	if errors.As(err, &sw) {
		n, ok = sw.Retries()
	}
	if !ok {
		if st, err := c.PINStatus(ctx, pinID); err == nil && st.Retries >= 0 {
			n, ok = st.Retries, true
		}
	}
	switch {
	case !ok:
		return "the card does not say how many tries are left"
	case n == 0:
		return "no tries left, the PIN is blocked (unblock it with the PUK)"
	case n == 1:
		return "1 try left"
	}
	return fmt.Sprintf("%d tries left", n)
}

// pinList lists a card's PINs for a message: "pin1 (PIN1), pin2 (PIN2)".
func pinList(pins []profiles.PINInfo) string {
	var b strings.Builder
	for i, p := range pins {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", p.ID, p.Label)
	}
	return b.String()
}

// passphraseResult keeps the result of an owner passphrase for card in the
// Book, where policy.MaxWrongPassphrases wrong ones in a row lock the
// card's registered PIN against delegation: someone holding the owner's
// key is guessing. Registering the PIN again (which needs the card's PIN
// and a card with full tries) clears it.
func (s *Server) passphraseResult(card string, wrong bool, n *note) {
	if !wrong {
		s.cfg.Book.RightPassphrase(card)
		n.events |= policy.EventRightPassphrase
		return
	}
	n.events |= policy.EventWrongPassphrase
	if s.cfg.Book.WrongPassphrase(card) {
		n.events |= policy.EventPassphraseLocked
		s.log.Warn("too many wrong owner passphrases: the card's registered PIN is locked against delegation", "card", card)
	}
}

func (s *Server) cardNamed(name string) (Card, bool) {
	for _, c := range s.cfg.Cards {
		if c.Name == name {
			return c, true
		}
	}
	return Card{}, false
}

func (s *Server) delegate(a *Admin, who string, ad *transport.AdminDelegation, passphrase []byte, n *note) (any, string, error) {
	if ad == nil {
		return nil, "", transport.Errorf(transport.CodeMalformed, "no delegation")
	}
	card, ok := s.cardNamed(ad.Card)
	if !ok {
		return nil, "", transport.Errorf(transport.CodeUnknown, "no remote card %q", ad.Card)
	}
	if card.Owner != who {
		return nil, "", transport.Errorf(transport.CodeNotOwner, "%s does not own %s", who, ad.Card)
	}
	if _, ok := a.Enrollment.Certificate(ad.Delegate); !ok {
		return nil, "", transport.Errorf(transport.CodeUnknown, "no enrolled identity %q", ad.Delegate)
	}
	d, err := delegationFrom(ad)
	if err != nil {
		return nil, "", err
	}
	// Keys the card in hand does not have are a typo (IDs are
	// case-sensitive): a delegation of them would show the delegate nothing.
	if ms := card.Pool.Members(); len(ms) > 0 {
		var ids []string
		for _, k := range ms[0].Keys() {
			ids = append(ids, k.ID)
		}
		for _, k := range d.Keys {
			if !slices.Contains(ids, k) {
				return nil, "", transport.Errorf(transport.CodeMalformed, "%s has no key %q (its keys: %s)", ad.Card, k, strings.Join(ids, ", "))
			}
		}
	}
	d.Owner, d.ID = who, "d-"+randomHex(6)
	vpin := randomDigits(8)
	n.card = ad.Card
	mu, _ := s.passphrases.LoadOrStore(ad.Card, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if s.cfg.Book.PassphraseLocked(ad.Card) {
		return nil, "", transport.Errorf(transport.CodeLocked, "too many wrong passphrases for %s: register its PIN again", ad.Card)
	}
	_, err = a.Pins.Delegate(ad.Card, d.ID, passphrase, []byte(vpin))
	if err == nil || errors.Is(err, ErrWrongVPIN) {
		// Only a tested passphrase counts: a refusal before the test
		// (the TPM's guess limit, no PIN registered) neither locks nor
		// clears the count.
		s.passphraseResult(ad.Card, err != nil, n)
	}
	switch {
	case errors.Is(err, ErrNoOwnerPIN):
		return nil, "", transport.Errorf(transport.CodeNoPIN, "register the PIN of %s first", ad.Card)
	case errors.Is(err, ErrWrongVPIN):
		return nil, "", transport.Errorf(transport.CodeWrongPIN, "wrong passphrase")
	case errors.Is(err, ErrGuessLimit):
		s.log.Warn("vault: TPM guess limit reached", "card", ad.Card, "err", err)
		return nil, "", transport.Errorf(transport.CodeGuessLimit, "")
	case err != nil:
		return nil, "", s.internal("vault", err)
	}
	// After the passphrase (a wrong one counts towards the lockout whatever
	// the grant) and under the card's lock, so that two grants at once
	// cannot both pass.
	if old, ok := s.cfg.Book.Live(ad.Delegate, ad.Card, d.NotBefore); ok {
		a.Pins.Forget(d.ID)
		return nil, "", transport.Errorf(transport.CodeExists, "%s already holds delegation %s on %s: revoke it first", ad.Delegate, old.ID, ad.Card)
	}
	sealed := map[string][]byte{}
	for name, e := range a.Pins.Entries(d.ID) {
		eb, err := e.MarshalBinary()
		if err != nil {
			a.Pins.Forget(d.ID)
			return nil, "", s.internal("vault", err)
		}
		sealed[name] = eb
	}
	db, err := store.EncodeDelegation(d)
	if err != nil {
		return nil, "", s.internal("store", err)
	}
	// The sealed PINs first: a delegation without them would be unusable.
	for name, eb := range sealed {
		if err := a.Store.Put(store.KindVault, name, eb); err != nil {
			a.Pins.Forget(d.ID)
			return nil, "", s.internal("store", err)
		}
	}
	if err := a.Store.Put(store.KindDelegation, d.ID, db); err != nil {
		a.Pins.Forget(d.ID)
		return nil, "", s.internal("store", err)
	}
	s.cfg.Book.Grant(d)
	n.events |= policy.EventGranted
	s.notifyCatalogue(d.Delegate)
	return &transport.AdminResponse{ID: d.ID, VPIN: vpin}, d.ID, nil
}

// CardChanged tells the delegates of the remote card named name that it
// changed (a card joined or left): an EventSlot on their connections; and
// sets its pscs_cards_present at once, which requests otherwise refresh
// (a card pulled out of an idle remote card would show as present until
// the next request).
func (s *Server) CardChanged(name string) {
	if m := s.cfg.Metrics; m != nil {
		for _, c := range s.cfg.Cards {
			if c.Name == name {
				m.CardsPresent(c.Name, c.Pool.Len())
			}
		}
	}
	slot := s.slotOf(name)
	ds, ss := s.cfg.Book.All()
	for i, d := range ds {
		if d.Card != name || ss[i].Revoked {
			continue
		}
		tag := s.Catalogue(d.Delegate).Tag
		for _, c := range s.connsOf(d.Delegate) {
			c.Notify(&transport.Event{Kind: transport.EventSlot, Slot: slot, Tag: tag})
		}
	}
}

// notifyCatalogue tells identity's connections that their catalogue changed.
func (s *Server) notifyCatalogue(identity string) {
	tag := s.Catalogue(identity).Tag
	for _, c := range s.connsOf(identity) {
		c.Notify(&transport.Event{Kind: transport.EventCatalogue, Tag: tag})
	}
}

// revokeKept revokes at once, then keeps the revocation in the store and
// destroys the delegation's sealed PIN.
func (s *Server) revokeKept(a *Admin, id string) error {
	s.Revoke(id)
	names := slices.Sorted(maps.Keys(a.Pins.Entries(id)))
	if !slices.Contains(names, id) {
		names = append(names, id)
	}
	a.Pins.Forget(id)
	t, _ := time.Now().UTC().MarshalText()
	if err := a.Store.Put(store.KindConfig, revokedKey+id, t); err != nil {
		return s.internal("store (the revocation holds until the server restarts)", err)
	}
	for _, name := range names {
		if err := a.Store.Delete(store.KindVault, name); err != nil {
			return s.internal("store", err)
		}
	}
	return nil
}

// maxDelegatedKeys bounds AdminDelegation.Keys.
const maxDelegatedKeys = 64

func delegationFrom(ad *transport.AdminDelegation) (policy.Delegation, error) {
	d := policy.Delegation{Delegate: ad.Delegate, Card: ad.Card, Ops: ad.Ops,
		PerHour: int(ad.PerHour), Total: int(ad.Total), Documents: ad.Documents, Warranty: ad.Warranty, Keys: ad.Keys}
	if len(ad.Keys) > maxDelegatedKeys {
		return d, transport.Errorf(transport.CodeMalformed, "at most %d keys", maxDelegatedKeys)
	}
	for i, k := range ad.Keys {
		if k == "" || len(k) > 32 || slices.Contains(ad.Keys[:i], k) {
			return d, transport.Errorf(transport.CodeMalformed, "key IDs are 1 to 32 characters, each named once")
		}
	}
	for _, op := range ad.Ops {
		if op != "sign" && op != "decrypt" {
			return d, transport.Errorf(transport.CodeMalformed, "unknown operation %q", op)
		}
	}
	d.NotBefore = time.Now()
	if ad.NotBefore != 0 {
		d.NotBefore = time.UnixMilli(ad.NotBefore)
	}
	if ad.NotAfter != 0 {
		d.NotAfter = time.UnixMilli(ad.NotAfter)
		if !d.NotAfter.After(d.NotBefore) {
			return d, transport.Errorf(transport.CodeMalformed, "the delegation ends before it begins")
		}
	}
	if ad.Days != 0 {
		if ad.From >= 24*60 || ad.To > 24*60 {
			return d, transport.Errorf(transport.CodeMalformed, "hours are minutes after midnight, below 1440")
		}
		d.Hours = &policy.Hours{Days: ad.Days, From: int(ad.From), To: int(ad.To)}
	}
	for _, doc := range ad.Documents {
		if l := len(doc); l != 20 && l != 32 && l != 48 && l != 64 {
			return d, transport.Errorf(transport.CodeMalformed, "a document digest is a SHA-1 or SHA-2 digest")
		}
	}
	return d, nil
}

func wireDelegation(d policy.Delegation, st policy.State) transport.AdminDelegation {
	ad := transport.AdminDelegation{ID: d.ID, Owner: d.Owner, Delegate: d.Delegate, Card: d.Card, Ops: d.Ops,
		PerHour: uint32(d.PerHour), Total: uint32(d.Total), Documents: d.Documents, Warranty: d.Warranty,
		Revoked: st.Revoked, Locked: st.Locked, Used: uint32(st.Used), Keys: d.Keys}
	if !d.NotBefore.IsZero() {
		ad.NotBefore = d.NotBefore.UnixMilli()
	}
	if !d.NotAfter.IsZero() {
		ad.NotAfter = d.NotAfter.UnixMilli()
	}
	if d.Hours != nil {
		ad.Days, ad.From, ad.To = d.Hours.Days, uint16(d.Hours.From), uint16(d.Hours.To)
	}
	return ad
}

func (s *Server) list(who string) *transport.AdminResponse {
	resp := &transport.AdminResponse{}
	for _, c := range s.cfg.Cards {
		if c.Owner == who {
			resp.Cards = append(resp.Cards, c.Name)
		}
	}
	ds, ss := s.cfg.Book.All()
	for i, d := range ds {
		if slices.Contains(resp.Cards, d.Card) {
			resp.Delegations = append(resp.Delegations, wireDelegation(d, ss[i]))
		}
	}
	return resp
}

// export returns a page of the audit log for who, from sequence number
// from to the checkpoint until (0: a new checkpoint, made now): the
// records of who's cards (made under delegations on them) and who's own
// requests byte for byte, pscsd's own records (anchors, checkpoints, store
// heads), and the SHA-256 of every record, so that the owner can check
// the export's hash chain and checkpoints without seeing others' records.
func (s *Server) export(ctx context.Context, a *Admin, who string, from, until uint64) (*transport.AdminResponse, error) {
	if a.AuditFile == "" {
		return nil, transport.Errorf(transport.CodeUnsupported, "this server keeps no audit log")
	}
	isShown := s.ShownTo(who)
	errFull, errDone := errors.New("page full"), errors.New("done")
	var manifest []byte
	if until == 0 && a.Checkpoint != nil {
		// The first page: a checkpoint for the export to end with, and the
		// manifest of what it shows, signed.
		var err error
		if until, err = a.Checkpoint(ctx); err != nil {
			return nil, s.internal("audit export: checkpoint", err)
		}
		var shown []uint64
		if err := s.readAudit(a, func(r *audit.Record, _ []byte) error {
			if r.Seq > until {
				return errDone
			}
			if isShown(r) {
				shown = append(shown, r.Seq)
			}
			return nil
		}, errDone); err != nil {
			return nil, err
		}
		if a.SignManifest != nil {
			if manifest, err = a.SignManifest(ctx, audit.ManifestDigest(who, until, shown)); err != nil {
				return nil, s.internal("audit export: manifest", err)
			}
		}
	}
	from = max(from, 1)
	resp := &transport.AdminResponse{Certificates: map[string][]byte{}, First: from, Until: until,
		CheckpointCertificate: a.CheckpointCertificate, Manifest: manifest}
	size := 0
	err := s.readAudit(a, func(r *audit.Record, data []byte) error {
		if r.Seq < from {
			return nil
		}
		if until > 0 && r.Seq > until {
			return errDone
		}
		shown := isShown(r)
		n := sha256.Size + 4
		if shown {
			n += len(data)
		}
		if size+n > maxExport {
			resp.Next = r.Seq
			return errFull
		}
		size += n
		d := sha256.Sum256(data)
		resp.Digests = append(resp.Digests, d[:])
		if !shown {
			return nil
		}
		resp.Records = append(resp.Records, bytes.Clone(data))
		if _, ok := resp.Certificates[r.Identity]; !ok {
			if c, ok := a.Enrollment.Certificate(r.Identity); ok {
				resp.Certificates[r.Identity] = c.Raw
			}
		}
		return nil
	}, errFull, errDone)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// readAudit reads the audit log with audit.ReadRaw; fn's errors in stop
// end the reading without an error. A record being written at the end of
// the file reads as a torn tail: the reading ends before it.
func (s *Server) readAudit(a *Admin, fn func(*audit.Record, []byte) error, stop ...error) error {
	f, err := os.Open(a.AuditFile)
	if err != nil {
		return s.internal("audit export", err)
	}
	defer f.Close()
	err = audit.ReadRaw(f, fn)
	if err == nil || errors.Is(err, audit.ErrTorn) || slices.ContainsFunc(stop, func(e error) bool { return errors.Is(err, e) }) {
		return nil
	}
	return s.internal("audit export", err)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomDigits(n int) string {
	max := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
	v, err := rand.Int(rand.Reader, max)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%0*d", n, v)
}

// RevokeInStore keeps delegation id's revocation in st and destroys every
// sealed PIN copy st holds for it, as an owner's revocation does. pscsd
// restore calls it for the delegations revoked after the backup it puts
// back: the restored store then neither grants them nor holds a copy of
// the card's PIN that their vPIN opens.
func RevokeInStore(st *store.Store, id string, when time.Time) error {
	t, _ := when.UTC().MarshalText()
	if err := st.Put(store.KindConfig, revokedKey+id, t); err != nil {
		return err
	}
	keys, err := st.List(store.KindVault)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if did, _ := SplitPINName(k); did == id && !strings.HasPrefix(k, ownerPINKey) {
			if err := st.Delete(store.KindVault, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// Revoked reports whether st keeps delegation id's revocation.
func Revoked(st *store.Store, id string) bool {
	_, err := st.Get(store.KindConfig, revokedKey+id)
	return err == nil
}
