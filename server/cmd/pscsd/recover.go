package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/pscs/pscs/server/audit"
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
type recovery struct {
	accept []string
	reason string
	done   []string // what was accepted, for the operator
}

// parseRecovery reads -accept (a comma-separated list of losses).
func parseRecovery(accept, reason string) (*recovery, error) {
	r := &recovery{reason: reason}
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
