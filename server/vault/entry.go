package vault

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/pscs/pscs/internal/cborpolicy"
)

// EntryVersion is the [Entry.Version] that [Vault.Seal] writes. [Vault.Unseal]
// reads every version in the history.
//
// History:
//   - 1 (2026-11): Argon2id + TPM2_HMAC (NoDA vault key) + HKDF-SHA256,
//     AES-256-GCM, CBOR keyasint. [Vault.SealNoDA] still writes it.
//   - 2 (2026-12): adds a DA-protected entry key (fields 8 and 9) whose
//     authValue derives from the vPIN, and its TPM2_HMAC in the AEAD key.
const EntryVersion = 2

// entryVersionNoDA is the version of entries without an entry key.
const entryVersionNoDA = 1

// Sizes of an entry's fields.
const (
	saltSize  = 32
	nonceSize = 12 // AES-GCM standard nonce
	checkSize = 16
	tagSize   = 16 // AES-GCM tag
	maxKeyID  = 2 + 64
	// Bounds of an entry key's TPM2B_PUBLIC (about 50 bytes) and
	// TPM2B_PRIVATE (about 150 bytes).
	maxPublic  = 256
	maxPrivate = 512
)

// MaxSecretSize is the largest secret [Vault.Seal] accepts. Card PINs are
// at most 8 bytes (PIV) or 127 (OpenPGP); the bound leaves room for PUKs,
// management keys and passphrases, and bounds what a hostile entry can make
// the decoder accept.
const MaxSecretSize = 1024

// Params are the Argon2id cost parameters of one entry. They are stored in
// the entry, so entries sealed with older parameters still open after the
// defaults change.
type Params struct {
	// Time is the number of passes over the memory.
	Time uint32 `cbor:"1,keyasint"`
	// Memory is the memory size in KiB.
	Memory uint32 `cbor:"2,keyasint"`
	// Threads is the degree of parallelism.
	Threads uint8 `cbor:"3,keyasint"`
}

// DefaultParams are the parameters of [Open] without [WithParams]: 2 passes
// over 64 MiB with 2 lanes, about 100 ms per Seal or Unseal on one core of a
// 2025 server (RFC 9106 section 4's second recommended option, with 2 lanes
// instead of 4 for small appliances).
var DefaultParams = Params{Time: 2, Memory: 64 << 10, Threads: 2}

// Bounds that every Params must meet, in entries read from disk too: a
// tampered entry must not make pscsd allocate gigabytes or spin for minutes.
// (The TPM check in Unseal rejects tampered parameters before Argon2 runs;
// these bounds also hold for entries given to Unseal without that check
// having a chance, e.g. one from another vault.)
const (
	MaxTime    = 16
	MaxMemory  = 1 << 20 // KiB, 1 GiB
	MaxThreads = 16
)

// Validate reports whether p is within the bounds above, with at least 8 KiB
// of memory per thread as Argon2 requires.
func (p Params) Validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxTime:
		return fmt.Errorf("vault: Argon2id time %d outside [1, %d]", p.Time, MaxTime)
	case p.Threads < 1 || p.Threads > MaxThreads:
		return fmt.Errorf("vault: Argon2id threads %d outside [1, %d]", p.Threads, MaxThreads)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > MaxMemory:
		return fmt.Errorf("vault: Argon2id memory %d KiB outside [%d, %d]", p.Memory, 8*uint32(p.Threads), MaxMemory)
	}
	return nil
}

// Entry is one sealed secret. Nothing in it is confidential: it can be
// stored anywhere and read by anyone, and opening it needs the vPIN, the
// context it was sealed with, and the TPM of the vault that sealed it.
//
// Its binary form ([Entry.MarshalBinary]) is a CBOR map with integer keys
// (deterministic encoding, RFC 8949 section 4.2.1). Key numbers are never
// reused.
type Entry struct {
	// Version is [EntryVersion].
	Version int `cbor:"1,keyasint"`
	// KeyID is the TPM Name of the vault key that sealed the entry
	// ([Vault.KeyID]); Unseal refuses entries of other vaults with
	// [ErrWrongKey] before doing any work.
	KeyID []byte `cbor:"2,keyasint"`
	// Params are the Argon2id parameters for the vPIN.
	Params Params `cbor:"3,keyasint"`
	// Salt is random, 32 bytes: the Argon2id salt, the HKDF salt, and
	// (through the header) the TPM HMAC input, so every entry has its own key.
	Salt []byte `cbor:"4,keyasint"`
	// Nonce is the AES-GCM nonce, 12 random bytes.
	Nonce []byte `cbor:"5,keyasint"`
	// Check is 16 bytes derived from the TPM's HMAC of the header: Unseal
	// verifies it before running Argon2id, so a tampered header fails fast
	// with [ErrCorrupt].
	Check []byte `cbor:"6,keyasint"`
	// Ciphertext is the AES-256-GCM encryption of the secret, tag included.
	Ciphertext []byte `cbor:"7,keyasint"`
	// Public is the entry key's public area (a marshalled TPM2B_PUBLIC),
	// version 2 only: a DA-protected HMAC key whose authValue derives from
	// the vPIN.
	Public []byte `cbor:"8,keyasint,omitempty"`
	// Private is the entry key's private area (a marshalled TPM2B_PRIVATE),
	// wrapped by the storage root key: only this TPM can load it. Version
	// 2 only.
	Private []byte `cbor:"9,keyasint,omitempty"`
}

// entryHeader is what the TPM authenticates: every field of the entry but
// Check and Ciphertext, which are derived from it.
type entryHeader struct {
	Version int    `cbor:"1,keyasint"`
	KeyID   []byte `cbor:"2,keyasint"`
	Params  Params `cbor:"3,keyasint"`
	Salt    []byte `cbor:"4,keyasint"`
	Nonce   []byte `cbor:"5,keyasint"`
	Public  []byte `cbor:"8,keyasint,omitempty"`
	Private []byte `cbor:"9,keyasint,omitempty"`
}

func (e *Entry) header() ([]byte, error) {
	return encMode.Marshal(entryHeader{
		Version: e.Version,
		KeyID:   e.KeyID,
		Params:  e.Params,
		Salt:    e.Salt,
		Nonce:   e.Nonce,
		Public:  e.Public,
		Private: e.Private,
	})
}

// The project's one CBOR policy (internal/cborpolicy); entries and key
// files accept no field they do not know.
var (
	encMode = cborpolicy.EncMode
	decMode = cborpolicy.StrictDecMode
)

// maxEntrySize bounds the input of UnmarshalBinary: a valid entry is about
// 140 bytes (version 1) or 350 bytes (version 2) plus the secret.
const maxEntrySize = 512 + maxPublic + maxPrivate + MaxSecretSize

// MarshalBinary returns the entry's deterministic CBOR encoding.
func (e *Entry) MarshalBinary() ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	return encMode.Marshal((*entryWire)(e))
}

// entryWire is Entry without its methods, so that cbor does not call
// MarshalBinary and UnmarshalBinary recursively.
type entryWire Entry

// UnmarshalBinary decodes an entry. It accepts only what MarshalBinary
// produces: the deterministic encoding of a well-formed entry, with no
// unknown fields and no trailing bytes. Errors wrap [ErrCorrupt].
// On error, e is left unchanged.
func (e *Entry) UnmarshalBinary(data []byte) error {
	if len(data) > maxEntrySize {
		return fmt.Errorf("%w: %d bytes, want at most %d", ErrCorrupt, len(data), maxEntrySize)
	}
	var d Entry
	if err := decMode.Unmarshal(data, (*entryWire)(&d)); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := d.validate(); err != nil {
		return err
	}
	// One entry, one encoding: anything else (non-minimal integers, another
	// key order, text strings for bytes) is not ours.
	again, err := encMode.Marshal((*entryWire)(&d))
	if err != nil || !bytes.Equal(again, data) {
		return fmt.Errorf("%w: not in deterministic encoding", ErrCorrupt)
	}
	*e = d
	return nil
}

// validate checks the fields' sizes and the parameters' bounds.
// Errors wrap [ErrCorrupt].
func (e *Entry) validate() error {
	if e == nil {
		return fmt.Errorf("%w: nil entry", ErrCorrupt)
	}
	var errs []error
	switch e.Version {
	case entryVersionNoDA:
		if e.Public != nil || e.Private != nil {
			errs = append(errs, errors.New("version 1 with an entry key"))
		}
	case EntryVersion:
		if _, _, _, err := e.entryKey(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("version %d, want %d or %d", e.Version, entryVersionNoDA, EntryVersion))
	}
	if len(e.KeyID) < 2 || len(e.KeyID) > maxKeyID {
		errs = append(errs, fmt.Errorf("key id of %d bytes", len(e.KeyID)))
	}
	if err := e.Params.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, f := range []struct {
		name string
		b    []byte
		want int
	}{{"salt", e.Salt, saltSize}, {"nonce", e.Nonce, nonceSize}, {"check", e.Check, checkSize}} {
		if len(f.b) != f.want {
			errs = append(errs, fmt.Errorf("%s of %d bytes, want %d", f.name, len(f.b), f.want))
		}
	}
	if n := len(e.Ciphertext); n < tagSize+1 || n > tagSize+MaxSecretSize {
		errs = append(errs, fmt.Errorf("ciphertext of %d bytes", n))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// entryKey parses and checks the entry key of a version 2 entry: its
// public area must be exactly what [Vault.Seal] creates (DA-protected), and
// both areas must be in their canonical encoding with nothing after them.
func (e *Entry) entryKey() (pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate, name tpm2.TPM2BName, err error) {
	if len(e.Public) == 0 || len(e.Public) > maxPublic {
		return pub, priv, name, fmt.Errorf("entry key public area of %d bytes", len(e.Public))
	}
	if len(e.Private) == 0 || len(e.Private) > maxPrivate {
		return pub, priv, name, fmt.Errorf("entry key private area of %d bytes", len(e.Private))
	}
	p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](e.Public)
	if err != nil {
		return pub, priv, name, fmt.Errorf("entry key public area: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(*p), e.Public) {
		return pub, priv, name, errors.New("entry key public area: not canonical")
	}
	contents, err := p.Contents()
	if err != nil {
		return pub, priv, name, fmt.Errorf("entry key public area: %v", err)
	}
	if err := checkEntryKeyPublic(contents); err != nil {
		return pub, priv, name, fmt.Errorf("entry key public area: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(tpm2.New2B(*contents)), e.Public) {
		return pub, priv, name, errors.New("entry key public area: not canonical")
	}
	n, err := tpm2.ObjectName(contents)
	if err != nil {
		return pub, priv, name, fmt.Errorf("entry key public area: %v", err)
	}
	q, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](e.Private)
	if err != nil {
		return pub, priv, name, fmt.Errorf("entry key private area: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(*q), e.Private) {
		return pub, priv, name, errors.New("entry key private area: not canonical")
	}
	return *p, *q, *n, nil
}
