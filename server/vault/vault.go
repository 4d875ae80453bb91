package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/argon2"
)

var (
	// ErrWrongVPIN means the AEAD tag did not verify: the vPIN is wrong, or
	// the context is not the one the entry was sealed with, or the
	// ciphertext was altered. Nothing was sent to any card.
	ErrWrongVPIN = errors.New("vault: wrong vPIN")

	// ErrCorrupt means an entry or the key file is malformed, or an entry's
	// header (parameters, salt, nonce, key id, version) was altered since it
	// was sealed.
	ErrCorrupt = errors.New("vault: corrupt entry or key file")

	// ErrWrongKey means the entry was sealed by another vault (another key,
	// possibly on another TPM); this vault cannot open it with any vPIN.
	ErrWrongKey = errors.New("vault: entry sealed by another vault key")

	// ErrWrongTPM means the vault's key file was created on another TPM (or
	// before this TPM's owner hierarchy was cleared): this TPM cannot load
	// the key, and nothing sealed with it can be opened here.
	ErrWrongTPM = errors.New("vault: key belongs to another TPM")

	// ErrClosed is returned by every method after [Vault.Close].
	ErrClosed = errors.New("vault: closed")
)

// Domain separation: every input to the TPM's HMAC and to HKDF starts with
// one of these, each ending in a NUL so that none is a prefix of another.
const (
	labelEntry    = "pscs vault v1\x00"           // TPM HMAC input for an entry's header (both versions)
	labelCheck    = "pscs vault check v1\x00"     // HKDF info: the header check (both versions)
	labelKey      = "pscs vault key v1\x00"       // HKDF info: the AEAD key of version 1 (then SHA-256(context))
	labelMAC      = "pscs mac v1\x00"             // TPM HMAC input for [Vault.MAC]
	labelAuth     = "pscs vault auth v2\x00"      // HKDF info: the entry key's authValue
	labelEntryKey = "pscs vault entry key v2\x00" // the entry key's TPM HMAC input
	labelKey2     = "pscs vault key v2\x00"       // HKDF info: the AEAD key of version 2 (then SHA-256(context))
)

// MaxLabelSize is the longest label [Vault.MAC] accepts.
const MaxLabelSize = 255

// Vault seals secrets under a key that needs both a vPIN and this
// machine's TPM. See the package documentation.
//
// A Vault is safe for concurrent use by multiple goroutines. TPM commands
// are serialized inside the Vault (a few milliseconds each); Argon2id runs
// outside that lock, at most GOMAXPROCS at a time, so a flood of Unseal
// calls queues instead of allocating Params.Memory each.
type Vault struct {
	dir    string
	params Params
	da     DA
	key    *tpmKey
	argon  chan struct{} // semaphore bounding concurrent Argon2id runs

	mu     sync.Mutex // serializes use of tpm; guards closed
	tpm    transport.TPM
	closed bool
}

// Option configures [Open].
type Option func(*Vault)

// WithParams sets the Argon2id parameters of new entries (default
// [DefaultParams]). Entries keep the parameters they were sealed with.
// Small parameters are for tests only: they make each vPIN guess cheap for
// whoever can talk to this TPM.
func WithParams(p Params) Option { return func(v *Vault) { v.params = p } }

// Open loads the vault kept in dir, or creates one there on first use.
//
// The vault key is a TPM keyed-hash (HMAC-SHA256) object, created under the
// TPM's ECC P-256 storage root key, which the TPM derives anew from the
// owner hierarchy's seed each time (the owner hierarchy must have an empty
// authValue). The key is FixedTPM|FixedParent|SensitiveDataOrigin|
// UserWithAuth|NoDA and can only sign (compute HMACs). dir holds its public
// area and its TPM-wrapped private area in [KeyFileName] (mode 0600, dir
// created 0700); the key's value exists only inside the TPM.
//
// Open tries the key once, so that a dir made on another TPM fails here with
// [ErrWrongTPM] and a damaged key file with [ErrCorrupt].
//
// Open then sets the TPM's dictionary-attack parameters to the [DA]
// configuration ([WithDA], default [DefaultDA]) if the TPM's lockout
// authorization is empty, and discards that authorization if
// [DA.DiscardLockoutAuth] says so. When the lockout authorization is set,
// the TPM's parameters stay as they are ([Vault.DAStatus] shows them); Open
// fails if they leave no tries above [DA.Reserve], or disable the
// protection (a recovery time of zero).
//
// Open does not take ownership of tpm: Close the link after the Vault. The
// Vault assumes that nobody else uses tpm concurrently (go-tpm's links are
// not safe for concurrent use); give it its own link (with /dev/tpmrm0,
// every open is its own).
func Open(tpm transport.TPM, dir string, opts ...Option) (*Vault, error) {
	v := &Vault{
		dir:    dir,
		params: DefaultParams,
		da:     DefaultDA,
		tpm:    tpm,
		argon:  make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	for _, o := range opts {
		o(v)
	}
	if err := v.params.Validate(); err != nil {
		return nil, err
	}
	if err := v.da.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	key, err := readKeyFile(dir)
	if errors.Is(err, os.ErrNotExist) {
		var f *keyFile
		if f, err = createKey(tpm); err != nil {
			return nil, err
		}
		if err = writeKeyFile(dir, f); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		// Read back what is on disk: ours, or the one that won a race.
		key, err = readKeyFile(dir)
	}
	if err != nil {
		return nil, err
	}
	v.key = key
	// Try the key now rather than at the first Unseal.
	if _, err := v.tpmHMAC([]byte(labelMAC + "open")); err != nil {
		return nil, fmt.Errorf("%w (vault %s)", err, dir)
	}
	if _, err := setupDA(tpm, v.da); err != nil {
		return nil, err
	}
	return v, nil
}

// Close makes every later call fail with [ErrClosed]. It waits for a TPM
// command in progress, holds no TPM resources (none outlive a call) and
// does not close the TPM link. Close is idempotent.
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	return nil
}

// KeyID is the TPM Name of the vault key, the [Entry.KeyID] of its entries.
func (v *Vault) KeyID() []byte { return append([]byte(nil), v.key.name.Buffer...) }

// tpmHMAC runs the key's HMAC over data in the TPM, under the lock.
func (v *Vault) tpmHMAC(data []byte) ([]byte, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, ErrClosed
	}
	return v.key.hmac(v.tpm, data)
}

// Seal encrypts secret (a card's real PIN) so that only this vault, given
// vpin and the same context, can decrypt it, and so that every vPIN tried
// costs a TPM authorization that the TPM's dictionary-attack protection
// counts and limits (see the package documentation). It writes
// [EntryVersion] 2.
//
// context binds the entry to its use, e.g. the owner, card and delegation
// ids in a canonical encoding: Unseal with another context fails exactly as
// with a wrong vPIN. It is authenticated but not stored; the caller supplies
// it again to Unseal. secret is not retained or modified; the caller should
// clear it when done.
//
// Seal costs one Argon2id run with the vault's parameters, then one TPM
// storage root key, two TPM2_HMAC, a TPM2_Create and a TPM2_Load. With the
// TPM in lockout it fails with [ErrGuessLimit].
func (v *Vault) Seal(vpin, secret, context []byte) (*Entry, error) {
	e, err := v.newEntry(EntryVersion, vpin, secret)
	if err != nil {
		return nil, err
	}
	kpin := v.argon2id(vpin, e.Salt, e.Params)
	defer clear(kpin)
	auth, err := entryAuth(kpin, e.Salt)
	if err != nil {
		return nil, err
	}
	defer clear(auth)

	var t, u []byte
	var header []byte
	err = v.withSRK(func(s *srk) error {
		pub, priv, err := createEntryKey(v.tpm, s, auth)
		if err != nil {
			return err
		}
		e.Public, e.Private = tpm2.Marshal(pub), tpm2.Marshal(priv)
		if header, err = e.header(); err != nil {
			return fmt.Errorf("vault: %w", err)
		}
		hh := sha256.Sum256(header)
		if t, err = v.key.hmacUnder(v.tpm, s, append([]byte(labelEntry), hh[:]...)); err != nil {
			return err
		}
		u, err = v.entryHMAC(s, e, auth, hh[:])
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(t)
	defer clear(u)
	if e.Check, err = headerCheck(t, e.Salt); err != nil {
		return nil, err
	}
	aead, err := newAEAD(labelKey2, e.Salt, context, kpin, t, u)
	if err != nil {
		return nil, err
	}
	e.Ciphertext = aead.Seal(nil, e.Nonce, secret, additionalData(header, context))
	return e, nil
}

// SealNoDA is Seal for secrets whose "vPIN" is no user's secret (a constant,
// such as the one sealing pscsd's CA key) and that must open even when the
// TPM is in dictionary-attack lockout. It writes a version 1 entry: the TPM
// part of its key comes from the NoDA vault key, so its vPIN could be tested
// offline, at Argon2id speed, by whoever holds this TPM. Never use it for a
// delegate's vPIN or an owner's passphrase.
func (v *Vault) SealNoDA(vpin, secret, context []byte) (*Entry, error) {
	e, err := v.newEntry(entryVersionNoDA, vpin, secret)
	if err != nil {
		return nil, err
	}
	aead, header, check, err := v.deriveAEAD(e, vpin, context)
	if err != nil {
		return nil, err
	}
	e.Check = check
	e.Ciphertext = aead.Seal(nil, e.Nonce, secret, additionalData(header, context))
	return e, nil
}

// newEntry checks Seal's arguments and starts an entry with fresh salt and
// nonce.
func (v *Vault) newEntry(version int, vpin, secret []byte) (*Entry, error) {
	if len(vpin) == 0 {
		return nil, errors.New("vault: empty vPIN")
	}
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return nil, fmt.Errorf("vault: secret of %d bytes, want 1 to %d", len(secret), MaxSecretSize)
	}
	e := &Entry{
		Version: version,
		KeyID:   v.KeyID(),
		Params:  v.params,
		Salt:    make([]byte, saltSize),
		Nonce:   make([]byte, nonceSize),
	}
	rand.Read(e.Salt)
	rand.Read(e.Nonce)
	return e, nil
}

// Unseal returns the secret sealed in e for vpin and context. The caller
// should clear the returned slice as soon as it has used it.
//
// Errors: [ErrWrongVPIN] when the vPIN or the context is wrong (or the
// ciphertext was altered); [ErrGuessLimit] when the TPM's
// dictionary-attack counter has reached the reserve, or the TPM is in
// lockout (a version 2 entry, the vPIN untested); [ErrWrongKey] for an
// entry of another vault; [ErrCorrupt] for a malformed or tampered entry;
// [ErrWrongTPM] or a wrapped TPM error when the TPM cannot use the vault
// key; [ErrClosed]. Only a nil error comes with a secret.
//
// Unseal checks the entry's header with the TPM before it runs Argon2id, so
// tampered or foreign entries cost a few milliseconds, not the Argon2id
// time, and never count as a failed authorization. For a version 2 entry
// it then reads the TPM's lockout counter and, with more than the reserve
// left, tests the vPIN as the entry key's authorization: a wrong vPIN is
// refused by the TPM and counted in its lockout counter.
func (v *Vault) Unseal(e *Entry, vpin, context []byte) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(e.KeyID, v.key.name.Buffer) != 1 {
		return nil, fmt.Errorf("%w: entry key %x, vault key %x", ErrWrongKey, e.KeyID, v.key.name.Buffer)
	}
	if e.Version == entryVersionNoDA {
		aead, header, _, err := v.deriveAEAD(e, vpin, context)
		if err != nil {
			return nil, err
		}
		secret, err := aead.Open(nil, e.Nonce, e.Ciphertext, additionalData(header, context))
		if err != nil {
			return nil, ErrWrongVPIN
		}
		return secret, nil
	}

	header, err := e.header()
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	hh := sha256.Sum256(header)
	t, err := v.tpmHMAC(append([]byte(labelEntry), hh[:]...))
	if err != nil {
		return nil, err
	}
	defer clear(t)
	if err := verifyCheck(t, e); err != nil {
		return nil, err
	}
	kpin := v.argon2id(vpin, e.Salt, e.Params)
	defer clear(kpin)
	auth, err := entryAuth(kpin, e.Salt)
	if err != nil {
		return nil, err
	}
	defer clear(auth)
	var u []byte
	err = v.withSRK(func(s *srk) error {
		st, err := readDA(v.tpm)
		if err != nil {
			return err
		}
		st.Reserve = v.da.Reserve
		if st.Left() == 0 {
			return fmt.Errorf("%w (%d of %d failed authorizations counted, reserve %d, one forgotten every %v)",
				ErrGuessLimit, st.Counter, st.MaxTries, st.Reserve, st.Recovery)
		}
		u, err = v.entryHMAC(s, e, auth, hh[:])
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(u)
	aead, err := newAEAD(labelKey2, e.Salt, context, kpin, t, u)
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, e.Nonce, e.Ciphertext, additionalData(header, context))
	if err != nil {
		return nil, ErrWrongVPIN
	}
	return secret, nil
}

// withSRK runs f with the vault's storage root key loaded, under the lock.
func (v *Vault) withSRK(f func(*srk) error) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	s, err := v.key.srk(v.tpm)
	if err != nil {
		return err
	}
	defer flush(v.tpm, s.handle)
	return f(s)
}

// entryHMAC loads e's entry key under s and computes
// u = TPM2_HMAC(entry key, "pscs vault entry key v2\0" || hh) authorized
// with auth. A wrong auth is [ErrWrongVPIN] (the TPM counted it); a TPM in
// lockout is [ErrGuessLimit].
func (v *Vault) entryHMAC(s *srk, e *Entry, auth, hh []byte) ([]byte, error) {
	pub, priv, name, err := e.entryKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	h, err := load(v.tpm, s, pub, priv, name)
	if err != nil {
		return nil, err
	}
	defer flush(v.tpm, h)
	u, err := keyHMAC(v.tpm, s, h, name, auth, append([]byte(labelEntryKey), hh...))
	switch {
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		return nil, ErrWrongVPIN
	case errors.Is(err, tpm2.TPMRCLockout):
		return nil, fmt.Errorf("%w (the TPM is in lockout)", ErrGuessLimit)
	}
	return u, err
}

// entryAuth derives the entry key's authValue from the Argon2id output:
// the lower-case hex of HKDF-SHA256(ikm=k_pin, salt,
// info="pscs vault auth v2\0")[:16], 32 bytes with 128 bits of entropy.
//
// Hex, because the authValue must hold no zero byte: go-tpm v0.9.8
// (tpm2/sessions.go, hmacKeyFromAuthValue) cuts an HMAC session's
// authValue at its first zero byte, not only its trailing zeros as the TPM
// does (Part 1, 19.6.5), so about one in eight random 32-byte values would
// fail as a wrong authorization and count toward lockout.
func entryAuth(kpin, salt []byte) ([]byte, error) {
	a, err := hkdf.Key(sha256.New, kpin, salt, labelAuth, 16)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	defer clear(a)
	return hex.AppendEncode(nil, a), nil
}

// headerCheck is HKDF-SHA256(ikm=t, salt, info="pscs vault check v1\0")[:16].
func headerCheck(t, salt []byte) ([]byte, error) {
	c, err := hkdf.Key(sha256.New, t, salt, labelCheck, checkSize)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return c, nil
}

// verifyCheck compares e.Check with the one t gives, in constant time.
func verifyCheck(t []byte, e *Entry) error {
	check, err := headerCheck(t, e.Salt)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(check, e.Check) != 1 {
		return fmt.Errorf("%w: header check failed (entry altered)", ErrCorrupt)
	}
	return nil
}

// newAEAD derives K = HKDF-SHA256(ikm = the concatenation of secrets,
// salt, info = label || SHA-256(context)) and returns AES-256-GCM under it.
func newAEAD(label string, salt, context []byte, secrets ...[]byte) (cipher.AEAD, error) {
	n := 0
	for _, s := range secrets {
		n += len(s)
	}
	ikm := make([]byte, 0, n)
	for _, s := range secrets {
		ikm = append(ikm, s...)
	}
	defer clear(ikm)
	ch := sha256.Sum256(context)
	k, err := hkdf.Key(sha256.New, ikm, salt, label+string(ch[:]), 32)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	defer clear(k)
	// The AES key schedule inside block cannot be cleared from Go; it lives
	// as long as the AEAD, which the caller drops right after one use.
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return cipher.NewGCM(block)
}

// deriveAEAD derives the AEAD of a version 1 entry from the vPIN, the TPM
// and the context. It returns the header and the header check too. When
// e.Check is set (Unseal) and does not match, it fails with [ErrCorrupt]
// before running Argon2id.
//
//	header = deterministic CBOR of (version, key id, params, salt, nonce)
//	t      = TPM2_HMAC(vault key, "pscs vault v1\0" || SHA-256(header))
//	check  = HKDF-SHA256(ikm=t, salt=salt, info="pscs vault check v1\0")[:16]
//	k_pin  = Argon2id(vpin, salt, params), 32 bytes
//	K      = HKDF-SHA256(ikm=k_pin || t, salt=salt,
//	                     info="pscs vault key v1\0" || SHA-256(context)), 32 bytes
//	AEAD   = AES-256-GCM(K), additional data = header || SHA-256(context)
func (v *Vault) deriveAEAD(e *Entry, vpin, context []byte) (aead cipher.AEAD, header, check []byte, err error) {
	header, err = e.header()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("vault: %w", err)
	}
	hh := sha256.Sum256(header)
	t, err := v.tpmHMAC(append([]byte(labelEntry), hh[:]...))
	if err != nil {
		return nil, nil, nil, err
	}
	defer clear(t)
	if check, err = headerCheck(t, e.Salt); err != nil {
		return nil, nil, nil, err
	}
	if e.Check != nil && subtle.ConstantTimeCompare(check, e.Check) != 1 {
		return nil, nil, nil, fmt.Errorf("%w: header check failed (entry altered)", ErrCorrupt)
	}
	kpin := v.argon2id(vpin, e.Salt, e.Params)
	defer clear(kpin)
	aead, err = newAEAD(labelKey, e.Salt, context, kpin, t)
	if err != nil {
		return nil, nil, nil, err
	}
	return aead, header, check, nil
}

// argon2id runs Argon2id, at most GOMAXPROCS at a time per Vault.
func (v *Vault) argon2id(vpin, salt []byte, p Params) []byte {
	v.argon <- struct{}{}
	defer func() { <-v.argon }()
	return argon2.IDKey(vpin, salt, p.Time, p.Memory, p.Threads, 32)
}

func additionalData(header, context []byte) []byte {
	ch := sha256.Sum256(context)
	return append(append([]byte(nil), header...), ch[:]...)
}

// MAC returns an HMAC-SHA256, computed by the TPM with the vault key, that
// authenticates data under label. Records of the store and the audit log
// carry one, so that whoever holds the disk but not the TPM cannot forge
// or alter them. The result is deterministic for the same vault, label and
// data, differs across labels, and differs across vaults (and TPMs).
//
// The TPM computes HMAC(key, "pscs mac v1\0" || len(label) || label ||
// SHA-256(data)), one byte of length: data of any size, one TPM command, and
// never the same input as an entry's (domain separation by prefix). label
// must be 1 to [MaxLabelSize] bytes. Compare MACs with [Equal] or use
// [Vault.VerifyMAC].
func (v *Vault) MAC(label string, data []byte) ([]byte, error) {
	if len(label) == 0 || len(label) > MaxLabelSize {
		return nil, fmt.Errorf("vault: MAC label of %d bytes, want 1 to %d", len(label), MaxLabelSize)
	}
	in := make([]byte, 0, len(labelMAC)+1+len(label)+sha256.Size)
	in = append(in, labelMAC...)
	in = append(in, byte(len(label)))
	in = append(in, label...)
	dh := sha256.Sum256(data)
	in = append(in, dh[:]...)
	return v.tpmHMAC(in)
}

// ErrBadMAC is returned by [Vault.VerifyMAC] for a MAC that does not match.
var ErrBadMAC = errors.New("vault: MAC mismatch")

// VerifyMAC recomputes the MAC of data under label and compares it with mac
// in constant time. It returns nil, [ErrBadMAC], or the error of [Vault.MAC].
func (v *Vault) VerifyMAC(label string, data, mac []byte) error {
	want, err := v.MAC(label, data)
	if err != nil {
		return err
	}
	if !Equal(want, mac) {
		return ErrBadMAC
	}
	return nil
}

// Equal compares two MACs in constant time (for equal lengths).
func Equal(a, b []byte) bool { return hmac.Equal(a, b) }

// WithTPM runs fn with the vault's TPM link, under the lock that
// serializes the vault's own use of it, so that other users of the same
// link (pscsd's anchor counter and checkpoint key, server/anchor) never
// interleave their commands with the vault's. fn must not call the Vault.
func (v *Vault) WithTPM(fn func(tpm transport.TPM) error) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	return fn(v.tpm)
}
