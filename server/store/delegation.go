package store

import (
	"fmt"
	"time"

	"github.com/pscs/pscs/internal/cborpolicy"
	"github.com/pscs/pscs/server/policy"
)

// delegationRecord is the stored form of a [policy.Delegation]. Field
// numbers are never reused; unknown ones are ignored.
type delegationRecord struct {
	ID           string       `cbor:"1,keyasint"`
	Owner        string       `cbor:"2,keyasint"`
	Delegate     string       `cbor:"3,keyasint"`
	Card         string       `cbor:"4,keyasint"`
	Ops          []string     `cbor:"5,keyasint,omitempty"`
	NotBefore    int64        `cbor:"6,keyasint,omitempty"` // Unix nanoseconds; 0: unbounded
	NotAfter     int64        `cbor:"7,keyasint,omitempty"`
	Hours        *hoursRecord `cbor:"8,keyasint,omitempty"`
	PerHour      int          `cbor:"9,keyasint,omitempty"`
	Total        int          `cbor:"10,keyasint,omitempty"`
	Documents    [][]byte     `cbor:"11,keyasint,omitempty"`
	Warranty     bool         `cbor:"12,keyasint,omitempty"`
	MaxWrongVPIN int          `cbor:"13,keyasint,omitempty"`
	Keys         []string     `cbor:"14,keyasint,omitempty"` // empty (older records): every key
}

type hoursRecord struct {
	Days     uint8  `cbor:"1,keyasint"`
	From     int    `cbor:"2,keyasint"`
	To       int    `cbor:"3,keyasint"`
	Location string `cbor:"4,keyasint,omitempty"` // IANA name; empty: UTC
}

// The project's one CBOR policy (internal/cborpolicy).
var (
	encMode = cborpolicy.EncMode
	decMode = cborpolicy.DecMode
)

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// EncodeDelegation encodes d for [KindDelegation] records: deterministic
// CBOR with integer keys. Times keep nanoseconds but not their location.
func EncodeDelegation(d policy.Delegation) ([]byte, error) {
	r := delegationRecord{ID: d.ID, Owner: d.Owner, Delegate: d.Delegate, Card: d.Card, Ops: d.Ops,
		NotBefore: unixNano(d.NotBefore), NotAfter: unixNano(d.NotAfter), PerHour: d.PerHour, Total: d.Total,
		Documents: d.Documents, Warranty: d.Warranty, MaxWrongVPIN: d.MaxWrongVPIN, Keys: d.Keys}
	if h := d.Hours; h != nil {
		r.Hours = &hoursRecord{Days: h.Days, From: h.From, To: h.To}
		if h.Location != nil && h.Location != time.UTC {
			r.Hours.Location = h.Location.String()
		}
	}
	return encMode.Marshal(r)
}

// DecodeDelegation decodes what [EncodeDelegation] encodes.
func DecodeDelegation(p []byte) (policy.Delegation, error) {
	var r delegationRecord
	if err := decMode.Unmarshal(p, &r); err != nil {
		return policy.Delegation{}, fmt.Errorf("store: delegation: %w", err)
	}
	d := policy.Delegation{ID: r.ID, Owner: r.Owner, Delegate: r.Delegate, Card: r.Card, Ops: r.Ops,
		NotBefore: fromUnixNano(r.NotBefore), NotAfter: fromUnixNano(r.NotAfter), PerHour: r.PerHour, Total: r.Total,
		Documents: r.Documents, Warranty: r.Warranty, MaxWrongVPIN: r.MaxWrongVPIN, Keys: r.Keys}
	if h := r.Hours; h != nil {
		d.Hours = &policy.Hours{Days: h.Days, From: h.From, To: h.To}
		if h.Location != "" {
			loc, err := time.LoadLocation(h.Location)
			if err != nil {
				return policy.Delegation{}, fmt.Errorf("store: delegation hours: %w", err)
			}
			d.Hours.Location = loc
		}
	}
	return d, nil
}
