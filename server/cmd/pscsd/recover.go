package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/store"
)

// Losses an owner can accept with pscsd recover.
const (
	// lossLog: the audit log does not reach its anchor in the TPM (cut,
	// deleted, emptied, or an older copy).
	lossLog = "log"
	// lossStore: the store is older than the head the log recorded.
	lossStore = "store"
)

// recovery is an owner's decision to accept named losses of state and go
// on: pscsd recover. Each accepted loss becomes a record of the new log
// (Op "recover:log" or "recover:store", Identity "pscsd recover"), with
// what was found and the owner's reason, anchored before pscsd goes on.
//
// A lost log (cut, deleted, emptied, an older copy) leaves unknown what
// happened after its end: revocations, uses against a limit, wrong vPINs,
// locks. An old copy of the files must not resurrect a revoked delegation,
// so accepting it revokes every delegation the store does not already keep
// revoked (revokeAll, as pscsd restore does);
// the owners delegate again, their registered PINs stay.
type recovery struct {
	accept []string
	reason string
	done   []string // what was accepted, for the operator
	// revoke: a lost log revokes every delegation (pscsd recover).
	// pscsd restore leaves it false and decides itself, with the log
	// it replaces at hand.
	revoke bool
}

// parseRecovery reads -accept (a comma-separated list of losses).
func parseRecovery(accept, reason string) (*recovery, error) {
	r := &recovery{reason: reason, revoke: true}
	for _, a := range strings.Split(accept, ",") {
		switch a = strings.TrimSpace(a); a {
		case lossLog, lossStore:
			r.accept = append(r.accept, a)
		case "":
		default:
			return nil, fmt.Errorf("recover: -accept takes %q and %q, not %q", lossLog, lossStore, a)
		}
	}
	if len(r.accept) == 0 {
		return nil, fmt.Errorf("recover: name what you accept to lose with -accept %s and/or %s", lossLog, lossStore)
	}
	if strings.TrimSpace(reason) == "" {
		return nil, fmt.Errorf("recover: say why with -reason (it goes into the audit log)")
	}
	return r, nil
}

func (r *recovery) accepts(loss string) bool { return slices.Contains(r.accept, loss) }

// acceptLog is audit.Options.Accept.
func (r *recovery) acceptLog(*audit.RollbackError) bool { return r.accepts(lossLog) }

// record writes the log's accepted loss, if there was one, into the log.
func (r *recovery) record(l *audit.Log, re *audit.RollbackError) error {
	if re == nil {
		return nil
	}
	what := fmt.Sprintf("accepted: %v; reason: %s", re, r.reason)
	r.done = append(r.done, what)
	_, err := l.Append(context.Background(), &audit.Record{Identity: "pscsd recover", Op: "recover:" + lossLog,
		Result: []byte(what), Anchor: true})
	return err
}

// recordStore writes the store's accepted loss into the log.
func (r *recovery) recordStore(l *audit.Log, found error) error {
	what := fmt.Sprintf("accepted: %v; reason: %s", found, r.reason)
	r.done = append(r.done, what)
	_, err := l.Append(context.Background(), &audit.Record{Identity: "pscsd recover", Op: "recover:" + lossStore,
		Result: []byte(what), Anchor: true})
	return err
}

// keepRevocations writes into st the revocations the marks m (an audit
// log's) hold that st does not keep: an older store than the log lacks
// them, and still holds the sealed PIN copies they destroyed.
func keepRevocations(st *store.Store, m marks) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if r := m[k]; r.Delegation != "" && r.Policy.Revoked && !server.Revoked(st, r.Delegation) {
			if err := server.RevokeInStore(st, r.Delegation, time.UnixMilli(r.Policy.Time)); err != nil {
				return err
			}
		}
	}
	return nil
}

// revokeAll revokes, when what happened after the logs at hand is
// unknown, every delegation st holds and does not keep revoked: first a
// record of op (by pscsd, anchored, numbered after serial) into l with the
// revocation and the newest state newest knows of the delegation and of
// its card (whose lock and wrong passphrases ride on every mark of it),
// then the revocation in the store. A crash between the two leaves the
// record, which every later start reads. add, if not nil, takes each
// record. It returns the delegations revoked.
func revokeAll(ctx context.Context, l *audit.Log, st *store.Store, serial uint64, newest func(delegation, card string) *audit.Policy,
	op, why string, add func(*audit.Record)) ([]string, error) {
	ids, err := st.List(store.KindDelegation)
	if err != nil {
		return nil, err
	}
	var revoked []string
	for _, id := range ids {
		last := newest(id, "")
		if last != nil && last.Revoked || server.Revoked(st, id) {
			continue
		}
		db, gerr := st.Get(store.KindDelegation, id)
		d, derr := store.DecodeDelegation(db)
		if err := errors.Join(gerr, derr); err != nil {
			return revoked, fmt.Errorf("delegation %s: %w", id, err)
		}
		serial++
		now := time.Now()
		p := audit.Policy{Serial: serial, Time: now.UnixMilli(), Card: d.Card, Revoked: true}
		if last != nil {
			p.Used, p.WrongVPIN, p.Locked = last.Used, last.WrongVPIN, last.Locked
		}
		if c := newest("", d.Card); c != nil {
			p.CardLock, p.WrongPassphrase = c.CardLock, c.WrongPassphrase
		}
		r := &audit.Record{Identity: audit.Identity, Op: op, Delegation: id, Policy: &p, Result: []byte(why), Anchor: true}
		if _, err := l.Append(ctx, r); err != nil {
			return revoked, err
		}
		if add != nil {
			add(r)
		}
		if err := server.RevokeInStore(st, id, now); err != nil {
			return revoked, err
		}
		revoked = append(revoked, id)
	}
	return revoked, nil
}

// revokeUnknown is revokeAll after an accepted loss of the log, whose
// marks are known; add takes the policy mark of each revocation.
func (r *recovery) revokeUnknown(l *audit.Log, st *store.Store, known marks, add func(policy.Mark)) error {
	revoked, err := revokeAll(context.Background(), l, st, known.maxSerial(), known.newest, "recover:policy",
		"revoked by the recovery: what happened after the log's end is unknown", func(rec *audit.Record) {
			if m, ok := server.PolicyMark(rec); ok {
				add(m)
			}
		})
	if len(revoked) > 0 {
		r.done = append(r.done, fmt.Sprintf("what happened after the log's end is unknown, so every delegation was revoked: %s; "+
			"the owners delegate again (pscs admin delegate)", strings.Join(revoked, ", ")))
	}
	return err
}
