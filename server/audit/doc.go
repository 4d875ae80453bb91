// Package audit keeps pscsd's audit log: an append-only, hash-chained,
// authenticated record of every request the server serves.
//
// Every request pscsd answers becomes one [Record]: who asked, what for,
// the delegate's signed request byte for byte (the COSE_Sign1 that was
// verified), the decision, the card that served and what it returned. The
// server appends the record with [Log.Append] and sends its reply only
// after Append returns, because Append returns only once the record is on
// disk (the file has been fsynced). Concurrent appenders share fsyncs (group
// commit), so the log does not limit signatures per second: while one fsync
// runs, the records that arrive queue up and go to disk together with the
// next one.
//
// Owners read the log with [ReadAll] and check it with [Verify]; pscsd
// checks it again every time it opens it with [Open].
//
// # What is protected, and how
//
// Each record carries the SHA-256 of the previous record's encoding (Prev)
// and a MAC over its own encoding, made by a [MACer] whose key an attacker
// with a copy of the disk does not have (in pscsd, a key held by the TPM
// through server/vault). Together they detect, and [Verify] names the first
// record affected by:
//
//   - any changed byte in a complete record (a checksum or MAC failure);
//   - a record edited and re-checksummed by someone without the key (MAC);
//   - a record deleted from the middle, records reordered, or an older valid
//     record copied over a newer one (Seq and the hash chain);
//   - records from another log or another key (MAC, chain).
//
// # What the file alone cannot show: rollback
//
// Cutting whole records off the end of the file (rolling the log back to an
// earlier state), or replacing the whole file with an older copy of itself,
// leaves a shorter log that is valid in every respect: nothing inside the
// file can tell that more records once existed. Detecting this needs an
// anchor kept outside the file: [Log.Head] returns the sequence number and
// hash of the newest durable record, which pscsd stores elsewhere (MACed in
// its store, or in TPM NV memory), and hands back through [ExpectHead] (to
// Verify) or [Options.Anchor] (to Open). A log that ends before the anchored
// record, or whose record at that position has a different hash, fails
// with [ErrMissingTail] or [ErrTampered]. The anchor protects the log up to
// the moment it was taken; records appended after the last anchor update can
// still be cut off without trace.
//
// # Torn writes
//
// A crash (power loss, SIGKILL, kernel panic) can stop a write in the middle
// of the final frame. No record in such a frame was ever acknowledged, since
// Append had not returned for it. The reader tells this apart from
// tampering: a frame that is incomplete at the end of the file (fewer bytes
// than its length says), or a tail of zero bytes where a frame should start
// or end (what some file systems show after a crash), is a torn write and is
// reported with [ErrTorn]. [Open] truncates a torn tail, reports what it
// dropped through [Log.Recovered] and carries on. A complete frame that fails
// its checksum is damage, not a torn write, wherever it is; a complete frame
// that passes its checksum but not its MAC, its sequence number or its chain
// link has been tampered with. Either makes Open refuse the log, naming the
// record.
//
// Someone who can write the disk can also make the tail look torn; that is
// no more than cutting it off, and only an anchor detects it.
//
// # File format
//
// All integers are big-endian. CRC-32C is the Castagnoli CRC-32 (as in
// iSCSI and ext4), used only to tell damage and torn writes from tampering;
// the security comes from the hash chain and the MAC.
//
// The file begins with a 24-byte header:
//
//	offset size field
//	0      14   magic "pscs-audit v1\n"
//	14     2    format version: 1
//	16     4    maximum record length in bytes: 1048576 ([MaxRecordSize])
//	20     4    CRC-32C of bytes 0..19
//
// Then frames, one per record, back to back, until the end of the file:
//
//	offset size field
//	0      4    L, the length of the record in bytes, 1 <= L <= 1048576
//	4      4    CRC-32C of bytes 0..3 (a damaged length is never followed)
//	8      L    the record: one CBOR map, deterministic encoding
//	8+L    4    CRC-32C of the record bytes
//
// A reader never allocates more than [MaxRecordSize] for a frame, whatever
// the length field says. The record is a CBOR map with unsigned integer
// keys, encoded with the core deterministic rules of RFC 8949 section 4.2.1
// (shortest forms, definite lengths, keys sorted); readers reject any other
// encoding of the map, duplicate keys, indefinite lengths, tags and invalid
// UTF-8. Key numbers are never reused:
//
//	key field    CBOR type        meaning
//	1   Seq      uint             1 for the first record, then +1 each
//	2   Time     int              Unix time in milliseconds, set by Append
//	3   Identity text (optional)  who asked: the delegate's identity
//	4   Op       text (optional)  the operation, e.g. "sign"
//	5   Evidence bytes (optional) the verified COSE_Sign1 request, byte for byte
//	6   Decision uint (optional)  0 (absent): allowed; otherwise the refusal code
//	7   Card     text (optional)  the card that served
//	8   Result   bytes (optional) what was returned, e.g. the signature
//	9   Timings  map text→int     microseconds per stage (optional)
//	10  Prev     bytes (32)       SHA-256 of the previous record's bytes; 32 zero bytes for Seq 1
//	11  MAC      bytes            MACer.MAC("pscs audit v1", the record's encoding without key 11)
//	12  Delegation text (optional) the delegation the decision was made under
//	13  Policy   map (optional)   the state of refusals the request left, below
//	14–19        reserved         anchors and checkpoints
//	20  Via      text (optional)  how an unsigned administration came: "console" and the
//	                              session's tag for the owners' web console
//
// Policy (key 13) is a map with unsigned integer keys, each optional but 1
// and 2: what a later refusal depends on, as the request left it. pscsd
// rebuilds its policy state from these at start (server/policy Rebuild):
// for each delegation the state with the highest Serial, for each card the
// same, and the signatures of the last hour from Used and Time.
//
//	key field           CBOR type  meaning
//	1   Serial          uint       the number of the state in pscsd's series of changes; higher is newer
//	2   Time            int        Unix ms, rounded up, when the state was taken
//	3   Events          uint       bit set of what this request changed: 1 a signature counted against
//	                               the limits, 2 a wrong vPIN, 4 a right vPIN, 8 the delegation locked
//	                               after wrong vPINs, 16 the card refused its registered PIN (every
//	                               delegation on it locked), 32 unlocked by the owner, 64 revoked,
//	                               128 granted, 256 a wrong owner passphrase, 512 a right one or the
//	                               PIN registered again, 1024 the card's passphrase locked
//	4   Card            text       the remote card
//	5   Used            uint       signatures counted under the delegation (allowed by the policy)
//	6   WrongVPIN       uint       wrong virtual PINs in a row
//	7   Locked          bool       the delegation is locked (wrong vPINs, or its card)
//	8   Revoked         bool       the delegation is revoked
//	9   CardLock        uint       Serial of the last time the card refused its registered PIN; 0 never
//	10  WrongPassphrase uint       wrong owner passphrases in a row for the card
//
// The hash chain covers the record bytes only (the CBOR, MAC included), not
// the frame around them. Readers ignore keys they do not know, but the MAC
// and the hash still cover them, so a newer writer's records verify with an
// older reader.
//
// # Concurrency
//
// A [Log] is safe for concurrent use by multiple goroutines. One process at a
// time may have a log file open: Open takes an exclusive advisory lock
// (flock on Unix) and fails with [ErrLocked] if another Log holds it. [Verify]
// and [ReadAll] only read, and may run on a copy of the file or on the live
// file; reading a live file may end in a torn frame (a batch being written),
// which is harmless: [ExpectHead] with a Head taken before the read makes the
// answer definite for that prefix.
package audit
