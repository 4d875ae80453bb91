// Package vault keeps the real PINs of owners' cards sealed under keys that
// need both a delegate's virtual PIN (vPIN) and this machine's TPM, and
// authenticates pscsd's records with a key that only the TPM can use.
//
// An owner registers a card's real PIN once. For each delegation, pscsd
// gives the delegate a vPIN and stores an [Entry]: the real PIN encrypted
// under a key derived from the vPIN and from HMACs that only this TPM can
// compute, one of them with a per-entry TPM key whose authorization
// derives from the vPIN. Then:
//
//   - a copy of the disk without the TPM yields nothing: the entry key needs
//     the TPM's HMAC keys, whose values never leave the TPM;
//   - guessing vPINs offline is impossible, even with the TPM at hand: every
//     guess is an authorization of a TPM key that the TPM's
//     dictionary-attack protection counts and limits ([DA]), and costs one
//     Argon2id run too;
//   - a wrong vPIN is detected here, by the AEAD tag ([ErrWrongVPIN]), and
//     never reaches the card, so delegates cannot burn its PIN retries;
//   - the real PIN exists in clear only in the slice [Vault.Unseal] returns,
//     which the caller clears after use (see [Vault.Unseal]).
//
// (DESIGN.md, decision 4.)
//
// # Use
//
//	tpm, err := linuxtpm.Open("/dev/tpmrm0")     // or swtpm, see internal/swtpmtest
//	v, err := vault.Open(tpm, "/var/lib/pscs/vault")
//	e, err := v.Seal(vpin, realPIN, ctx)        // ctx: owner, card, delegation ids
//	b, err := e.MarshalBinary()                 // store b with the delegation
//	...
//	var e vault.Entry
//	err = e.UnmarshalBinary(b)
//	pin, err := v.Unseal(&e, vpin, ctx)         // errors.Is(err, vault.ErrWrongVPIN),
//	                                            // vault.ErrGuessLimit (try later)
//	defer clear(pin)
//	mac, err := v.MAC("audit", record)          // store or log record with mac
//
// # The TPM key
//
// [Open] keeps one TPM object per vault directory: an HMAC-SHA256 keyed-hash
// key created by the TPM (SensitiveDataOrigin) under the storage root key
// (SRK) of the owner hierarchy, with attributes FixedTPM, FixedParent,
// UserWithAuth, NoDA and SignEncrypt. The SRK uses the TCG ECC P-256
// template; the TPM derives it from the owner seed each time, so nothing is
// made persistent in the TPM and no NV index or persistent handle is used.
// The directory holds the key's public area and its private area as wrapped
// by the SRK ([KeyFileName], mode 0600). The TPM refuses to load that
// private area under any other SRK (TPM_RC_INTEGRITY), so a directory
// copied to another machine, or kept across a TPM clear, fails in [Open]
// with [ErrWrongTPM]; Open first compares the SRK's Name with the one
// recorded, for a clearer message.
//
// Every TPM use creates the SRK, loads the key, runs one TPM2_HMAC and
// flushes both, so no handle outlives a call. The vault therefore works
// without a resource manager (swtpm), next to other users of the TPM, and
// across TPM restarts and resets. The TPM2_HMAC runs in a one-use HMAC
// session salted with the SRK (ECDH) and with response parameter
// encryption (AES-128-CFB): the HMAC never crosses the bus in clear, and a
// response cannot be forged without the salt. The vault key's authValue is
// empty and NoDA is set: the only credential is access to the TPM, so MACs
// and header checks work even when the TPM is in dictionary-attack lockout.
//
// # Entry keys: the TPM limits vPIN guesses
//
// Each [EntryVersion] 2 entry has a TPM key of its own, the entry key: an
// HMAC-SHA256 keyed-hash object created by the TPM under the SRK, with the
// vault key's attributes but without NoDA (FixedTPM, FixedParent,
// SensitiveDataOrigin, UserWithAuth, SignEncrypt), whose authValue derives
// from Argon2id(vPIN). The entry stores its public area and its private
// area as wrapped by the SRK. Testing a vPIN therefore means asking this
// TPM for an HMAC with that vPIN's authorization: a wrong one fails with
// TPM_RC_AUTH_FAIL and the TPM increments its lockout counter; after
// [DA.MaxTries] failures the TPM refuses every DA-protected key, even with
// the right authorization, and forgets one failure per [DA.Recovery]. A
// thief with the disk and the TPM gets [DA.MaxTries] guesses, then
// 3600/Recovery an hour (docs/security.md has the numbers).
//
// The authValue never crosses the bus in clear: TPM2_Create receives it
// in its first parameter, encrypted by a salted session (AES-128-CFB), and
// TPM2_HMAC is authorized by a salted HMAC session, which proves knowledge
// of the authValue without sending it, its response (the HMAC) encrypted.
//
// The TPM's lockout counter is shared by everything on the TPM, so that
// ordinary wrong vPINs never lock the TPM for everyone, [Vault.Unseal] reads
// the counter (TPM_PT_LOCKOUT_COUNTER, TPM_PT_MAX_AUTH_FAIL) before each
// vPIN test, under the same lock as the test, and refuses with
// [ErrGuessLimit], without touching the entry key, when only [DA.Reserve]
// failures are left. pscsd's own wrong vPINs thus stop Reserve short of
// lockout; the vPIN is not tested, so the refusal counts neither as right
// nor as wrong. [Open] sets the TPM's parameters ([WithDA], default
// [DefaultDA]) with TPM2_DictionaryAttackParameters while the lockout
// authorization is empty, and [DA.DiscardLockoutAuth] then replaces that
// empty authorization by random bytes nobody keeps, so that nobody can
// reset the counter (TPM2_DictionaryAttackLockReset) or raise the limit.
//
// Version 1 entries (sealed before entry keys, or by [Vault.SealNoDA])
// still open, and their vPINs are not limited by the TPM; pscsd reseals a
// delegation's entry when the delegation is made again.
//
// # Key derivation
//
// For each entry, with salt a fresh random 32 bytes and header the entry's
// deterministic CBOR encoding without its Check and Ciphertext fields
// (version, key id, Argon2id parameters, salt, nonce, and in version 2 the
// entry key's public and private areas):
//
//	t      = TPM2_HMAC(vault key, "pscs vault v1\0" || SHA-256(header))
//	Check  = HKDF-SHA256(ikm=t, salt, info="pscs vault check v1\0")[:16]
//	k_pin  = Argon2id(vpin, salt, params)                        (32 bytes)
//
// Version 2:
//
//	auth   = hex(HKDF-SHA256(ikm=k_pin, salt, info="pscs vault auth v2\0")[:16])
//	u      = TPM2_HMAC(entry key, authorized by auth,
//	                   "pscs vault entry key v2\0" || SHA-256(header))
//	K      = HKDF-SHA256(ikm=k_pin || t || u, salt,
//	                     info="pscs vault key v2\0" || SHA-256(context))
//
// Version 1:
//
//	K      = HKDF-SHA256(ikm=k_pin || t, salt,
//	                     info="pscs vault key v1\0" || SHA-256(context))
//
// and in both:
//
//	Ciphertext = AES-256-GCM(K, nonce, secret,
//	                     additional data = header || SHA-256(context))
//
// Why this shape:
//
//   - K needs k_pin, t and (version 2) u: without the TPM, t and u are
//     unknown (HMAC is a PRF); without the vPIN, k_pin is unknown; and u
//     needs the vPIN's authorization in the TPM, so the TPM sees, counts
//     and limits every vPIN tried. t alone, which the NoDA vault key gives
//     without limit, checks nothing about the vPIN. HKDF over the
//     concatenation is a sound combiner of secrets.
//   - auth is hex so that it holds no zero byte: go-tpm v0.9.8 cuts an
//     HMAC session's authValue at its first zero byte (the TPM only trims
//     trailing zeros), which would turn one random value in eight into a
//     spurious, counted, authorization failure. 128 bits are plenty: auth
//     is as guessable as the vPIN, no more.
//   - t covers the whole header, not only the salt: Unseal recomputes t and
//     verifies Check before Argon2id runs, so a tampered header (for example
//     Argon2id parameters raised to make pscsd allocate a gigabyte per
//     attempt, or another entry key) is refused in milliseconds with
//     [ErrCorrupt], and never costs a try in the TPM. Check reveals nothing
//     about K: it is another HKDF output of t, and t alone does not give K.
//   - the context (owner, card and delegation ids, in the caller's canonical
//     encoding) is bound outside the TPM, by HKDF and the AEAD's additional
//     data, which is equivalent to feeding it to the TPM (t is already a
//     per-entry secret) and keeps the TPM input under its 1024-byte limit
//     for any context. An entry moved to another delegation's record fails
//     like a wrong vPIN (after a successful TPM authorization: it costs no
//     try), and the context need not be stored in the entry.
//   - every TPM and HKDF input starts with a distinct NUL-terminated label,
//     so entry derivation, checks and [Vault.MAC] never share an input.
//   - AES-256-GCM with a random 96-bit nonce: each entry has its own key (its
//     own salt), so nonce reuse across entries is harmless.
//
// Derived keys (t, u, k_pin, auth, the HKDF input, K) are cleared after
// use. The AES key schedule inside crypto/aes cannot be cleared from Go; it
// becomes garbage right after the one Seal or Unseal that made it.
//
// # Cost
//
// [DefaultParams] is Argon2id with 2 passes over 64 MiB and 2 lanes. The
// TPM part of a version 1 entry costs a few milliseconds (one CreatePrimary
// of an ECC key, one Load, one salted session, one HMAC, two flushes); a
// version 2 Unseal adds a second CreatePrimary, a GetCapability, a Load and
// a second salted HMAC, and a Seal a TPM2_Create. Measured with swtpm
// 0.7.1 on a shared 2-core VM (go test -bench BenchmarkSWTPM), see the
// figures in docs/security.md. Each Seal or Unseal allocates the Argon2id
// memory (64 MiB) once.
//
// # Entries on disk
//
// [Entry.MarshalBinary] is deterministic CBOR with integer keys (version 1:
// keys 1-7; version 2: keys 1-9). [Entry.UnmarshalBinary] accepts exactly
// that encoding and nothing else (no unknown fields, no duplicate keys, no
// indefinite lengths, no trailing bytes, bounded sizes and Argon2id
// parameters, an entry key whose public area is exactly the DA-protected
// template), and is fuzzed (FuzzUnmarshalBinary, FuzzEntryKey). Every
// flipped byte of an entry fails there or in Unseal.
//
// # MACs
//
// [Vault.MAC] computes HMAC-SHA256 in the TPM, with the vault key, over a
// label and the SHA-256 of the data. The store and the audit log attach it
// to their records so that someone with the disk but not the TPM cannot
// forge or alter them; [Vault.VerifyMAC] and [Equal] compare in constant
// time.
//
// # Concurrency
//
// A [Vault] is safe for concurrent use by multiple goroutines. Its TPM
// commands are serialized by a mutex (the lockout counter's check and the
// vPIN test it allows run under it together); Argon2id runs outside it, at most
// GOMAXPROCS runs at a time per Vault, so that a burst of Unseal calls
// queues instead of allocating 64 MiB each. The Vault assumes it is the only
// user of its TPM link. [Entry] values are plain data: not safe for
// concurrent mutation, safe to share read-only.
package vault
