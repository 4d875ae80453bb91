// Package cborpolicy is pscs's one CBOR policy: how every CBOR it reads
// is decoded, whether it arrives on the wire (transport) or from a file
// (the audit log, the store's delegations, the vault's entries, an audit
// export), and how everything it writes is encoded.
//
// Decoding follows the protocol's limits (docs/protocol.md): duplicate map
// keys, indefinite lengths, invalid UTF-8, tags, nesting deeper than
// [MaxNesting] and arrays or maps of more than [MaxElements] are errors,
// and integers are never converted. [DecMode] ignores unknown fields (a
// newer writer's additions); [StrictDecMode] refuses them, for formats
// that accept only what they wrote themselves. Encoding is CBOR's core
// deterministic encoding ([EncMode]), so that one value has one encoding.
//
// The modes are immutable and safe for concurrent use.
package cborpolicy

import "github.com/fxamacker/cbor/v2"

// The limits of every decoder.
const (
	MaxNesting  = 16   // CBOR nesting depth
	MaxElements = 4096 // CBOR array elements / map pairs
)

// Options returns the decoding policy, for a caller that needs a mode of
// its own with one more restriction.
func Options() cbor.DecOptions {
	return cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  MaxNesting,
		MaxArrayElements: MaxElements,
		MaxMapPairs:      MaxElements,
		UTF8:             cbor.UTF8RejectInvalid,
		IntDec:           cbor.IntDecConvertNone,
		// No tags anywhere (a COSE_Sign1 travels as a byte string): no
		// dates, big numbers or other meanings to check.
		TagsMd: cbor.TagsForbidden,
	}
}

// The modes of the policy.
var (
	DecMode       = mustDec(Options())
	StrictDecMode = mustDec(strict())
	EncMode       = mustEnc()
	// BufferEncMode is EncMode that encodes into a caller's buffer.
	BufferEncMode = mustBufferEnc()
)

func strict() cbor.DecOptions {
	o := Options()
	o.ExtraReturnErrors = cbor.ExtraDecErrorUnknownField
	return o
}

func mustDec(o cbor.DecOptions) cbor.DecMode {
	dm, err := o.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

func mustEnc() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}

func mustBufferEnc() cbor.UserBufferEncMode {
	em, err := cbor.CoreDetEncOptions().UserBufferEncMode()
	if err != nil {
		panic(err)
	}
	return em
}
