package audit

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/pscs/pscs/internal/cborpolicy"
	"github.com/pscs/pscs/internal/durable"
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
// It is the one [durable.MACer] of the project's files.
type MACer = durable.MACer

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
	Seq      uint64           `cbor:"1,keyasint"`            // assigned by Append, from 1
	Time     int64            `cbor:"2,keyasint"`            // Unix ms, assigned by Append if zero
	Identity string           `cbor:"3,keyasint,omitempty"`  // who asked
	Op       string           `cbor:"4,keyasint,omitempty"`  // operation name
	Evidence []byte           `cbor:"5,keyasint,omitempty"`  // the verified COSE_Sign1 request, byte for byte; nil for unsigned operations
	Decision uint32           `cbor:"6,keyasint,omitempty"`  // 0 allowed, else the refusal code
	Card     string           `cbor:"7,keyasint,omitempty"`  // card that served, if any
	Result   []byte           `cbor:"8,keyasint,omitempty"`  // e.g. the signature returned
	Timings  map[string]int64 `cbor:"9,keyasint,omitempty"`  // µs per stage, optional
	Prev     []byte           `cbor:"10,keyasint"`           // SHA-256 of the previous record's encoding; 32 zero bytes for the first
	MAC      []byte           `cbor:"11,keyasint,omitempty"` // MACer.MAC(MACLabel, encoding without MAC), assigned by Append
	// Delegation is the delegation the decision was made under, if any.
	Delegation string `cbor:"12,keyasint,omitempty"`

	// Policy is the state of refusals as this request left it: what a
	// later refusal depends on (use counts, lockouts, locks), from which
	// pscsd rebuilds its policy state at start. Nil for records that name
	// neither a delegation nor a card.
	Policy *Policy `cbor:"13,keyasint,omitempty"`

	// Keys 16 to 19 are reserved for anchors, checkpoints and exports.

	// Counter, on an anchor record (written by the Log itself, Op
	// [OpAnchor] or [OpCheckpoint]), is the value the TPM's monotonic
	// counter takes once the record is durable: the log is anchored up to
	// here.
	Counter uint64 `cbor:"14,keyasint,omitempty"`
	// Checkpoint, on a checkpoint record, is the signature of the log's
	// checkpoint key over [CheckpointDigest] of the record: the log up to
	// here verifies offline with the key's certificate.
	Checkpoint []byte `cbor:"15,keyasint,omitempty"`

	// Via says how an unsigned administration request reached pscsd: "console
	// <session>" for the owners' web console (server/console), whose
	// requests carry no Evidence; empty for the protocol.
	Via string `cbor:"20,keyasint,omitempty"`

	// Anchor asks Append not to return before the record is anchored
	// outside the file (in the TPM), as well as durable: set it on records
	// that a later refusal depends on (a wrong vPIN, a lock, a revocation,
	// a signature counted against a limit). It is not encoded.
	Anchor bool `cbor:"-"`
}

// Policy is the state of the delegation a record names (and of its remote
// card), taken after the request's last change to it. Every change to that
// state takes the next number of one series (Serial), so that the newest
// state wins whatever order the records reached the log in; Time bounds
// from above when the counted signatures were made. The package
// documentation lists the keys; server/policy gives them meaning.
type Policy struct {
	Serial    uint64 `cbor:"1,keyasint" json:"serial"`                         // the state's number in the series of changes
	Time      int64  `cbor:"2,keyasint" json:"time_ms"`                        // Unix ms, rounded up, when the state was taken
	Events    uint64 `cbor:"3,keyasint,omitempty" json:"events,omitempty"`     // bit set: what this request changed (server/policy Event)
	Card      string `cbor:"4,keyasint,omitempty" json:"card,omitempty"`       // the remote card
	Used      uint64 `cbor:"5,keyasint,omitempty" json:"used,omitempty"`       // signatures counted under the delegation
	WrongVPIN uint64 `cbor:"6,keyasint,omitempty" json:"wrong_vpin,omitempty"` // wrong virtual PINs in a row
	Locked    bool   `cbor:"7,keyasint,omitempty" json:"locked,omitempty"`     // the delegation is locked
	Revoked   bool   `cbor:"8,keyasint,omitempty" json:"revoked,omitempty"`    // the delegation is revoked
	// CardLock is the Serial of the last lock of every delegation on Card
	// (the card refused its registered PIN); 0: never.
	CardLock uint64 `cbor:"9,keyasint,omitempty" json:"card_lock,omitempty"`
	// WrongPassphrase counts wrong owner passphrases in a row for Card.
	WrongPassphrase uint64 `cbor:"10,keyasint,omitempty" json:"wrong_passphrase,omitempty"`
}

// keyMAC is the CBOR map key of Record.MAC.
const keyMAC = 11

// The project's one CBOR policy (internal/cborpolicy).
var (
	encMode = cborpolicy.EncMode
	decMode = cborpolicy.DecMode
)

// validate reports text a reader would refuse: CBOR text must be UTF-8.
func (r *Record) validate() error {
	texts := []struct{ name, v string }{{"Identity", r.Identity}, {"Op", r.Op}, {"Card", r.Card}, {"Via", r.Via}}
	if r.Policy != nil {
		texts = append(texts, struct{ name, v string }{"Policy.Card", r.Policy.Card})
	}
	for _, s := range texts {
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

// open decodes one record's bytes. It requires the core deterministic
// encoding of the top-level map (shortest heads, keys in increasing order,
// no trailing bytes), so that each record has exactly one valid byte form,
// and checks the MAC when mac is not nil. Keys it does not know are covered
// by the MAC and the chain but otherwise ignored.
func open(data []byte, mac MACer) (*Record, error) {
	unsigned, err := withoutMAC(data)
	if err != nil {
		return nil, fmt.Errorf("malformed record: %v", err)
	}
	var r Record
	if err := decMode.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("malformed record: %v", err)
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
	tag, err := mac.MAC(MACLabel, unsigned)
	if err != nil {
		return nil, &macerError{err}
	}
	if subtle.ConstantTimeCompare(tag, r.MAC) != 1 {
		return nil, errBadMAC
	}
	return &r, nil
}

// withoutMAC walks the top-level map of a record, checking that it is in
// deterministic form and has a MAC, and returns the encoding of the same map
// without the MAC field: what the MAC covers.
func withoutMAC(data []byte) ([]byte, error) {
	count, p, err := cborHead(data, majorMap)
	if err != nil {
		return nil, err
	}
	if count > uint64(len(data)) {
		return nil, errors.New("map longer than the record")
	}
	macStart, macEnd := -1, -1
	var prev uint64
	var raw cbor.RawMessage
	for i := uint64(0); i < count; i++ {
		k, n, err := cborHead(data[p:], majorUint)
		if err != nil {
			return nil, fmt.Errorf("key %d: %v", i, err)
		}
		if i > 0 && k <= prev {
			return nil, fmt.Errorf("key %d after key %d: keys not in increasing order", k, prev)
		}
		prev = k
		rest, err := decMode.UnmarshalFirst(data[p+n:], &raw)
		if err != nil {
			return nil, fmt.Errorf("key %d: %v", k, err)
		}
		end := len(data) - len(rest)
		if k == keyMAC {
			macStart, macEnd = p, end
		}
		p = end
	}
	if p != len(data) {
		return nil, fmt.Errorf("%d bytes after the record", len(data)-p)
	}
	if macStart < 0 {
		return nil, errors.New("no MAC")
	}
	_, hn, _ := cborHead(data, majorMap)
	out := appendCBORHead(make([]byte, 0, len(data)), majorMap, count-1)
	out = append(out, data[hn:macStart]...)
	return append(out, data[macEnd:]...), nil
}

const (
	majorUint = 0
	majorMap  = 5
)

// cborHead reads a CBOR head of the given major type in its shortest form
// and returns its argument and length.
func cborHead(b []byte, major byte) (uint64, int, error) {
	if len(b) == 0 {
		return 0, 0, errors.New("unexpected end")
	}
	if b[0]>>5 != major {
		return 0, 0, fmt.Errorf("major type %d, want %d", b[0]>>5, major)
	}
	ai := b[0] & 0x1f
	var v uint64
	var n int
	switch {
	case ai < 24:
		return uint64(ai), 1, nil
	case ai == 24:
		n = 2
	case ai == 25:
		n = 3
	case ai == 26:
		n = 5
	case ai == 27:
		n = 9
	default:
		return 0, 0, errors.New("indefinite length or reserved head")
	}
	if len(b) < n {
		return 0, 0, errors.New("unexpected end")
	}
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	if len(appendCBORHead(nil, major, v)) != n {
		return 0, 0, errors.New("head not in shortest form")
	}
	return v, n, nil
}

// appendCBORHead appends the shortest CBOR head for major type and v.
func appendCBORHead(b []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= 0xff:
		return append(b, m|24, byte(v))
	case v <= 0xffff:
		return append(b, m|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(b, m|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, m|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// macerError is a failure of the MACer itself, not of the record.
type macerError struct{ err error }

func (e *macerError) Error() string { return "MACer: " + e.err.Error() }
func (e *macerError) Unwrap() error { return e.err }
