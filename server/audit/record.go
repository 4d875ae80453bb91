package audit

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// MACer authenticates records with a key that an attacker with a copy of the
// disk does not have (in pscsd: the TPM-held key of server/vault).
//
// MAC must be deterministic: the same label and data always give the same
// tag, because verification recomputes the tag and compares. It returns an
// error only when the key cannot be used (a TPM failure); Append then fails
// without writing, and Open and Verify stop with that error. Implementations
// must be safe for concurrent use; the Log calls MAC for one record at a time,
// in sequence order, so a slow MACer limits the append rate (use a key that
// lives in memory, not one round trip to a TPM per record).
type MACer interface {
	MAC(label string, data []byte) ([]byte, error)
}

// MACLabel is the label passed to [MACer.MAC] for every record.
const MACLabel = "pscs audit v1"

// MaxRecordSize is the largest encoded record, in bytes. Append refuses
// bigger records with [ErrTooLarge]; readers treat a bigger length as damage
// and never allocate more than this for one frame.
const MaxRecordSize = 1 << 20

// HashSize is the size of the chain hash (SHA-256).
const HashSize = sha256.Size

// Record is one audited request. It is encoded as a CBOR map with integer
// keys; the package documentation lists them. Append assigns Seq, Prev and
// MAC, and Time when it is zero; the caller fills in the rest.
type Record struct {
	Seq      uint64           `cbor:"1,keyasint"`           // assigned by Append, from 1
	Time     int64            `cbor:"2,keyasint"`           // Unix ms, assigned by Append if zero
	Identity string           `cbor:"3,keyasint,omitempty"` // who asked
	Op       string           `cbor:"4,keyasint,omitempty"` // operation name
	Evidence []byte           `cbor:"5,keyasint,omitempty"` // the verified COSE_Sign1 request, byte for byte; nil for unsigned operations
	Decision uint32           `cbor:"6,keyasint,omitempty"` // 0 allowed, else the refusal code
	Card     string           `cbor:"7,keyasint,omitempty"` // card that served, if any
	Result   []byte           `cbor:"8,keyasint,omitempty"` // e.g. the signature returned
	Timings  map[string]int64 `cbor:"9,keyasint,omitempty"` // µs per stage, optional
	Prev     []byte           `cbor:"10,keyasint"`          // SHA-256 of the previous record's encoding; 32 zero bytes for the first
	MAC      []byte           `cbor:"11,keyasint,omitempty"`
}

// keyMAC is the CBOR map key of Record.MAC.
const keyMAC = 11

// One immutable encoder and decoder for the package.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 4096,
		MaxMapPairs:      4096,
		UTF8:             cbor.UTF8RejectInvalid,
		IntDec:           cbor.IntDecConvertNone,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// validate reports text a reader would refuse: CBOR text must be UTF-8.
func (r *Record) validate() error {
	for _, s := range []struct{ name, v string }{{"Identity", r.Identity}, {"Op", r.Op}, {"Card", r.Card}} {
		if !utf8.ValidString(s.v) {
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidRecord, s.name)
		}
	}
	for k := range r.Timings {
		if !utf8.ValidString(k) {
			return fmt.Errorf("%w: Timings key %q is not valid UTF-8", ErrInvalidRecord, k)
		}
	}
	return nil
}

// seal sets r.MAC and returns the record's encoding. r.Seq, r.Time and
// r.Prev must already be set.
func seal(r *Record, mac MACer) ([]byte, error) {
	r.MAC = nil
	unsigned, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: encode record: %w", err)
	}
	tag, err := mac.MAC(MACLabel, unsigned)
	if err != nil {
		return nil, fmt.Errorf("audit: MAC record %d: %w", r.Seq, err)
	}
	if len(tag) == 0 {
		return nil, fmt.Errorf("audit: MAC record %d: MACer returned an empty tag", r.Seq)
	}
	r.MAC = tag
	data, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: encode record: %w", err)
	}
	return data, nil
}

// errBadMAC is how open reports a record whose MAC does not match.
var errBadMAC = errors.New("MAC mismatch: record altered or not written with this key")

// open decodes one record's bytes. It requires the canonical encoding of the
// top-level map, so that each record has exactly one valid byte form, and
// checks the MAC when mac is not nil. Keys it does not know are covered by
// the MAC and the chain but otherwise ignored.
func open(data []byte, mac MACer) (*Record, error) {
	var m map[uint64]cbor.RawMessage
	if err := decMode.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("malformed record: %v", err)
	}
	canon, err := encMode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("malformed record: %v", err)
	}
	if !bytes.Equal(canon, data) {
		return nil, errors.New("malformed record: not in deterministic encoding")
	}
	var r Record
	if err := decMode.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("malformed record: %v", err)
	}
	if len(r.MAC) == 0 {
		return nil, errors.New("malformed record: no MAC")
	}
	if len(r.Prev) != HashSize {
		return nil, fmt.Errorf("malformed record: Prev is %d bytes, want %d", len(r.Prev), HashSize)
	}
	if r.Seq == 0 {
		return nil, errors.New("malformed record: Seq 0")
	}
	if mac == nil {
		return &r, nil
	}
	delete(m, keyMAC)
	unsigned, err := encMode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("malformed record: %v", err)
	}
	tag, err := mac.MAC(MACLabel, unsigned)
	if err != nil {
		return nil, &macerError{err}
	}
	if subtle.ConstantTimeCompare(tag, r.MAC) != 1 {
		return nil, errBadMAC
	}
	return &r, nil
}

// macerError is a failure of the MACer itself, not of the record.
type macerError struct{ err error }

func (e *macerError) Error() string { return "MACer: " + e.err.Error() }
func (e *macerError) Unwrap() error { return e.err }
