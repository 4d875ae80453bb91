package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math"
	"time"

	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/vault"
)

// AuditLog is the Auditor of pscsd: an audit.Log on disk.
type AuditLog struct {
	Log *audit.Log
}

// Record implements Auditor: it returns once the record is durable (and
// anchored, if r.Anchor asks for it and the log anchors).
func (a AuditLog) Record(ctx context.Context, r *AuditRecord) error {
	_, err := a.Log.Append(ctx, &audit.Record{
		Time: r.Time.UnixMilli(), Identity: r.Identity, Op: r.Op, Evidence: r.Evidence,
		Decision: uint32(r.Code), Card: r.Card, Result: r.Result, Delegation: r.Delegation,
		Timings: map[string]int64{"total_us": r.Took.Microseconds()},
		Policy:  auditPolicy(r.Policy), Anchor: r.Anchor, Via: r.Via,
	})
	return err
}

// auditPolicy is m as the audit log keeps it. Its time is rounded up to
// the millisecond: a signature restored from it never leaves its per-hour
// window sooner than it did.
func auditPolicy(m *policy.Mark) *audit.Policy {
	if m == nil {
		return nil
	}
	ms := m.Time.UnixMilli()
	if time.UnixMilli(ms).Before(m.Time) {
		ms++
	}
	return &audit.Policy{Serial: m.Serial, Time: ms, Events: uint64(m.Events), Card: m.Card,
		Used: uint64(m.Used), WrongVPIN: uint64(m.WrongVPIN), Locked: m.Locked, Revoked: m.Revoked,
		CardLock: m.CardLock, WrongPassphrase: uint64(m.WrongPassphrase)}
}

// PolicyMark returns the policy state an audit record keeps, for a
// policy.Rebuild at start; false if it keeps none.
func PolicyMark(r *audit.Record) (policy.Mark, bool) {
	p := r.Policy
	if p == nil {
		return policy.Mark{}, false
	}
	return policy.Mark{Serial: p.Serial, Time: time.UnixMilli(p.Time), Events: policy.Event(p.Events),
		Delegation: r.Delegation, Card: p.Card, Used: clampInt(p.Used), WrongVPIN: clampInt(p.WrongVPIN),
		Locked: p.Locked, Revoked: p.Revoked, CardLock: p.CardLock, WrongPassphrase: clampInt(p.WrongPassphrase)}, true
}

func clampInt(v uint64) int { return int(min(v, math.MaxInt32)) }

// TPMKeyedMAC authenticates audit and store records with HMAC-SHA256 under a
// key the TPM derives once, at start: the TPM's HMAC of a fixed label. The
// key lives only in memory; without this machine's TPM nobody can compute
// it, so nobody with only the disk can forge a record. (One TPM command per
// record would cap the audit log at a few hundred records a second.)
type TPMKeyedMAC struct{ key []byte }

// NewTPMKeyedMAC derives the key from v.
func NewTPMKeyedMAC(v *vault.Vault) (*TPMKeyedMAC, error) {
	k, err := v.MAC("pscs record key v1", nil)
	if err != nil {
		return nil, fmt.Errorf("server: deriving the record key: %w", err)
	}
	return &TPMKeyedMAC{key: k}, nil
}

// MAC implements audit.MACer.
func (m *TPMKeyedMAC) MAC(label string, data []byte) ([]byte, error) {
	h := hmac.New(sha256.New, m.key)
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(data)
	return h.Sum(nil), nil
}
