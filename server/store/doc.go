// Package store is pscsd's embedded, crash-safe, authenticated store:
// enrolled identities and their certificates, remote card configuration,
// delegations ([EncodeDelegation]), vault entries and other settings, as
// (kind, key) → value records.
//
//	s, err := store.Open(path, mac, store.WithAnchor(anchor))
//	var ie *store.IntegrityError
//	if errors.As(err, &ie) { /* log ie.Problems; refuse to serve until an operator looks */ }
//	err = s.Put(store.KindVault, delegationID, sealedEntry) // durable when it returns
//	v, err := s.Get(store.KindVault, delegationID)          // ErrNotFound, *IntegrityError
//	anchor = s.Head()                                       // keep it outside the file
//
// # What is protected, and how
//
// Every record is authenticated by a [MACer] whose key someone with a copy
// of the disk does not have (in pscsd, a key held by the TPM). Each write
// ([Store.Put], [Store.Delete]) gets the next store version, and its MAC
// covers the operation, kind, key, value, that version, and a link to the
// record written just before it in the file (its version, kind, key and
// MAC tag). The file is therefore one authenticated chain, and [Open]
// (and [Store.Verify]) report, by record ([Problem]: kind, key, version,
// offset, [Reason]):
//
//   - a changed byte: [ReasonDamaged] (checksum) or [ReasonForged] (the
//     checksum was fixed, the MAC was not); the other records stay readable;
//   - a removed record: the next record names it as its predecessor
//     ([ReasonRemoved]); a record lost this way gives an [*IntegrityError]
//     from [Store.Get], never a silent [ErrNotFound] or an older value;
//   - an old copy of a record put back (an earlier valid value and MAC for
//     the same key): it does not link to its neighbours and its version is
//     not newer than the records before it ([ReasonOldCopy]);
//   - frames from another copy of the store, or made with another key.
//
// When it finds problems, Open still returns the Store along with the
// [*IntegrityError]: the good records are served, the bad ones fail in
// Get until they are written or deleted again. The problems stay in the
// file, and are reported at every Open, until [Store.Compact] rewrites it
// (records still bad are kept as [ReasonQuarantined]).
//
// In the part of the file written by a compaction, a chain break cannot
// tell an inserted record from one that follows a removed record, so the
// record after the break is reported as well (an extra report, under
// tampering only).
//
// # What the file alone cannot show: rollback
//
// Replacing the whole file with an older copy of itself, or cutting writes
// off its end, leaves a file that is valid in every respect. [Store.Head]
// returns an [Anchor]: the version and a hash of the whole history of
// writes up to it (compaction does not change it). pscsd keeps the anchor
// outside the file (the audit log, TPM NV memory) and passes it back to
// Open with [WithAnchor]; a store older than the anchor, or with another
// history at the anchored version, is reported with [ReasonRollback]. Writes
// made after the last anchor update can still be lost without trace. An
// interrupted last write is dropped by Open ([Store.Recovered]); an attacker
// can make the last record look interrupted, which is the same as cutting
// it off, and only the anchor detects it.
//
// # Secrets
//
// The store authenticates, it does not encrypt: it holds exactly the bytes
// it is given, readable by anyone with the disk. Real PINs and keys must be
// sealed (server/vault) before they are Put.
//
// # Durability
//
// A write returns only after its record is fsynced. Records are appended to
// one file; when the file has grown past 1 MiB and twice its live data, the
// store rewrites it with the live records only (a new file, fsynced,
// renamed into place, directory fsynced), so a crash leaves either the old
// or the new file. A crash in the middle of an append leaves a torn last
// record, which was never acknowledged and which Open removes.
//
// # Concurrency
//
// A [Store] is safe for concurrent use by multiple goroutines; writes are
// serialised, reads run in parallel. Only one process may open a store
// file at a time (Open takes an flock on it).
//
// The store keeps every record in memory: it is meant for thousands to a
// few hundred thousand small records (pscsd's configuration, not its audit
// log, which is server/audit).
//
// # Why a hand-written log and not an embedded database
//
// Pure-Go embedded databases were considered: go.etcd.io/bbolt (B+tree,
// copy-on-write, crash safe), and LSM stores such as badger and pebble.
// None authenticates its contents, so the MAC layer, the version binding
// and a manifest against removal would have to be built on top anyway.
// bbolt does not checksum its data pages and is not built to read a
// file someone has edited on purpose (it may panic or return garbage),
// whereas the requirement here is to read a tampered file and report each
// bad record. LSM stores bring compaction machinery, many files and far
// more code than a few thousand small records need. An append-only log of
// MACed records, read entirely at Open, gives crash safety with one fsync
// per write and an atomic rename for compaction, the authenticated chain
// that detects removal and replay for free, a reader small enough to fuzz
// (FuzzScan), and no new dependency.
//
// # File format
//
// All integers are big-endian. The file starts with the 16 bytes
// "pscs-store v1\n\x00\x00", then frames back to back:
//
//	size  field
//	4     magic "PSr1" (Open resynchronises on it after damaged bytes)
//	4     body length (at most 1 MiB + 2304)
//	1     tag length (16 to 64)
//	n     body, MACed with label "pscs/store/v1/frame"
//	t     tag
//	4     CRC-32C of everything above (tells damage and torn writes from forgery)
//
// The body:
//
//	1     operation: 1 begin, 2 put, 3 delete, 4 compacted record, 5 quarantined record
//	8     version
//	8     previous frame's version
//	1+2+n previous frame's kind, key length, key
//	1+n   previous frame's tag length, tag
//	1     kind: 1 identity, 2 card, 3 delegation, 4 vault, 5 config
//	2+n   key
//	4+n   value (begin: record count, 8 bytes, and the 32-byte history hash)
//
// Every file starts with a begin frame (the version and history hash at
// its creation or compaction and how many compacted records follow), then
// the compacted records (quarantined ones first, then by version), then
// one frame per write, versions rising by one. The history hash is
// SHA-256("pscs/store/v1/head" || previous hash || body) over write frames.
package store
