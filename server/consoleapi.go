package server

import (
	"context"
	"fmt"

	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// What the owners' web console (server/console) asks of the server: it
// administers through [Server.AdminAs], the very path of OpAdmin, and
// reads the owner's cards, delegations and audit records with the same
// scoping as list and export.

type viaKey struct{}

// WithVia returns ctx marked as carrying requests that came through via
// (e.g. "console 3fa2c1d0"): their audit records say so (Record.Via).
func WithVia(ctx context.Context, via string) context.Context {
	return context.WithValue(ctx, viaKey{}, via)
}

// ViaOf returns what WithVia marked ctx with, or "".
func ViaOf(ctx context.Context) string {
	v, _ := ctx.Value(viaKey{}).(string)
	return v
}

// AdminAs runs the administration req for owner exactly as an OpAdmin
// request of owner's would run (the same checks, the same audit record,
// without Evidence: mark ctx with WithVia to say where it came from). sec
// holds the request's secrets; AdminAs does not keep or clear it.
func (s *Server) AdminAs(ctx context.Context, owner string, req *transport.AdminRequest, sec *transport.AdminSecret) (*transport.AdminResponse, error) {
	body, err := transport.Marshal(req)
	if err != nil {
		return nil, err
	}
	call := &transport.Call{Conn: &transport.Conn{Identity: &transport.Identity{ID: owner}}, Op: transport.OpAdmin, Body: body}
	if sec != nil {
		if call.Secret, err = transport.Marshal(sec); err != nil {
			return nil, err
		}
		defer clear(call.Secret)
	}
	v, err := s.Handle(ctx, call)
	if err != nil {
		return nil, err
	}
	resp, ok := v.(*transport.AdminResponse)
	if !ok {
		return nil, fmt.Errorf("server: administration answered %T", v)
	}
	return resp, nil
}

// CardsOf returns the remote cards owner owns.
func (s *Server) CardsOf(owner string) []Card {
	var out []Card
	for _, c := range s.cfg.Cards {
		if c.Owner == owner {
			out = append(out, c)
		}
	}
	return out
}

// IsOwner reports whether identity owns any remote card.
func (s *Server) IsOwner(identity string) bool { return s.ownsAny(identity) }

// DelegationsOf returns the delegations on owner's cards, with their state,
// as the list action gives them (without auditing the reading).
func (s *Server) DelegationsOf(owner string) []transport.AdminDelegation {
	return s.list(owner).Delegations
}

// ShownTo returns what owner's export (and console) shows of the audit
// log: the records made under delegations on owner's cards, owner's own
// requests, and pscsd's records (anchors, checkpoints, store heads) that
// name no delegation or card of another owner's: pscsd restore writes,
// as pscsd, the state of every delegation and card it carries forward or
// revokes (restore:policy), which is theirs alone. The delegations are
// those of now.
func (s *Server) ShownTo(owner string) func(*audit.Record) bool {
	mine := map[string]bool{}
	ds, _ := s.cfg.Book.All()
	for _, d := range ds {
		if s.owns(owner, d.Card) {
			mine[d.ID] = true
		}
	}
	return func(r *audit.Record) bool {
		switch {
		case mine[r.Delegation] || r.Identity == owner:
			return true
		case r.Identity != audit.Identity:
			return false
		case r.Delegation != "":
			return false // another owner's, or no longer anyone's
		case r.Policy != nil && r.Policy.Card != "" && !s.owns(owner, r.Policy.Card):
			return false
		}
		return true
	}
}

// CardOfDelegation returns the remote card of delegation id.
func (s *Server) CardOfDelegation(id string) (string, bool) {
	d, _, ok := s.cfg.Book.Get(id)
	return d.Card, ok
}
