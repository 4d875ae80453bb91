package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/vault"
)

// AuditLog is the Auditor of pscsd: an audit.Log on disk.
type AuditLog struct {
	Log *audit.Log
}

// Record implements Auditor: it returns once the record is durable.
func (a AuditLog) Record(ctx context.Context, r *AuditRecord) error {
	_, err := a.Log.Append(ctx, &audit.Record{
		Time: r.Time.UnixMilli(), Identity: r.Identity, Op: r.Op, Evidence: r.Evidence,
		Decision: uint32(r.Code), Card: r.Card, Result: r.Result, Delegation: r.Delegation,
		Timings: map[string]int64{"total_us": r.Took.Microseconds()},
	})
	return err
}

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
