// Package vault keeps the real PINs of owners' cards sealed under keys that
// need both a delegate's virtual PIN (vPIN) and this machine's TPM, and
// authenticates pscsd's records with a key that only the TPM can use.
//
// An owner registers a card's real PIN once. For each delegation, pscsd
// gives the delegate a vPIN and stores an [Entry]: the real PIN encrypted
// under a key derived from the vPIN and from an HMAC that only this TPM can
// compute. Then:
//
//   - a copy of the disk without the TPM yields nothing: the entry key needs
//     the TPM's HMAC key, whose value never leaves the TPM;
//   - guessing vPINs offline is impossible: every guess needs the TPM, and
//     costs one Argon2id run too;
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
//	pin, err := v.Unseal(&e, vpin, ctx)         // errors.Is(err, vault.ErrWrongVPIN)
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
// response cannot be forged without the salt. The key's authValue is empty
// and NoDA is set: the only credential is access to the TPM, and wrong vPINs
// never count toward the TPM's dictionary-attack lockout (they never reach
// the TPM as authorization values at all). Rate limiting of vPIN attempts
// belongs to pscsd's policy, which sees every [ErrWrongVPIN].
//
// # Key derivation
//
// For each entry, with salt a fresh random 32 bytes and header the entry's
// deterministic CBOR encoding without its Check and Ciphertext fields
// (version, key id, Argon2id parameters, salt, nonce):
//
//	t      = TPM2_HMAC(vault key, "pscs vault v1\0" || SHA-256(header))
//	Check  = HKDF-SHA256(ikm=t, salt, info="pscs vault check v1\0")[:16]
//	k_pin  = Argon2id(vpin, salt, params)                        (32 bytes)
//	K      = HKDF-SHA256(ikm=k_pin || t, salt,
//	                     info="pscs vault key v1\0" || SHA-256(context))
//	Ciphertext = AES-256-GCM(K, nonce, secret,
//	                     additional data = header || SHA-256(context))
//
// Why this shape:
//
//   - K needs both k_pin and t: without the TPM, t is unknown (HMAC is a
//     PRF); without the vPIN, k_pin is unknown. HKDF over the concatenation
//     is a sound combiner of two secrets.
//   - t covers the whole header, not only the salt: Unseal recomputes t and
//     verifies Check before Argon2id runs, so a tampered header (for example
//     Argon2id parameters raised to make pscsd allocate a gigabyte per
//     attempt) is refused in milliseconds with [ErrCorrupt]. Check reveals
//     nothing about K: it is another HKDF output of t, and t alone does not
//     give K.
//   - the context (owner, card and delegation ids, in the caller's canonical
//     encoding) is bound outside the TPM, by HKDF and the AEAD's additional
//     data, which is equivalent to feeding it to the TPM (t is already a
//     per-entry secret) and keeps the TPM input under its 1024-byte limit
//     for any context. An entry moved to another delegation's record fails
//     like a wrong vPIN, and the context need not be stored in the entry.
//   - every TPM and HKDF input starts with a distinct NUL-terminated label,
//     so entry derivation, checks and [Vault.MAC] never share an input.
//   - AES-256-GCM with a random 96-bit nonce: each entry has its own key (its
//     own salt), so nonce reuse across entries is harmless.
//
// Derived keys (t, k_pin, the HKDF input, K) are cleared after use. The AES
// key schedule inside crypto/aes cannot be cleared from Go; it becomes
// garbage right after the one Seal or Unseal that made it.
//
// # Cost
//
// [DefaultParams] is Argon2id with 2 passes over 64 MiB and 2 lanes. The
// TPM part costs a few milliseconds (one CreatePrimary of an ECC key, one
// Load, one salted session, one HMAC, two flushes). Measured with swtpm
// 0.7.1 on a shared 2-core VM (load average about 5, go test -bench):
// Argon2id alone 54-61 ms; Seal 80-127 ms; Unseal 74-128 ms, and the same
// for a wrong vPIN (there is no shortcut); [Vault.MAC], and an Unseal
// refused by its Check, 1.4-1.9 ms; [Open] of an existing vault 1.8-2.5 ms.
// Each Seal or Unseal allocates the Argon2id memory (64 MiB) once.
//
// # Entries on disk
//
// [Entry.MarshalBinary] is deterministic CBOR with integer keys
// ([EntryVersion] 1). [Entry.UnmarshalBinary] accepts exactly that encoding
// and nothing else (no unknown fields, no duplicate keys, no indefinite
// lengths, no trailing bytes, bounded sizes and Argon2id parameters), and
// is fuzzed (FuzzUnmarshalBinary). Every flipped byte of an entry fails
// there or in Unseal.
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
// commands are serialized by a mutex; Argon2id runs outside it, at most
// GOMAXPROCS runs at a time per Vault, so that a burst of Unseal calls
// queues instead of allocating 64 MiB each. The Vault assumes it is the only
// user of its TPM link. [Entry] values are plain data: not safe for
// concurrent mutation, safe to share read-only.
package vault
