// Package backup makes and reads pscsd's backups: an archive of the state
// directory's files (the store, the audit log with its checkpoints, the
// checkpoint certificate, the TPM-wrapped keys; sealed PINs are records of
// the store), signed by pscsd in a CMS SignedData and encrypted to owners'
// certificates in a CMS EnvelopedData, carried as an S/MIME message, and
// sent over SMTP with STARTTLS required.
//
//	raw, _ := (&backup.Archive{...Files...}).Marshal()
//	env, _ := backup.Seal(raw, signer, ownerCerts)          // SignedData in EnvelopedData
//	signed, _ := signer.SignedEntity(raw)                   // or: sign once,
//	env, _ = backup.SealEntity(signed, []*x509.Certificate{owner}, cms.KeyTransportPKCS1v15) // encrypt per owner
//	msg := backup.Mail(from, to, subject, time.Now(), env)  // S/MIME, enveloped-data
//	err := (&backup.SMTP{Addr: "mail:587", RootCAs: pool}).Send(ctx, from, to, msg)
//
//	opened, err := backup.Open(msg, ownerKey, pscsdCA)      // decrypt, verify, check digests
//
// # The archive
//
// [Magic], then a deterministic CBOR map ([Archive]): creation time, the
// server, the audit log's last record and the store's version at the
// backup, and the files, each with its SHA-256. [ParseArchive] refuses
// unknown, repeated or missing files and a file whose digest does not
// match; it is fuzzed (FuzzParseArchive), as are [Open] (FuzzOpen) and
// the S/MIME entity reader under it (FuzzReadEntity), from seeds in
// testdata/fuzz, genuine and hostile (deep or huge CBOR, duplicate keys,
// path traversal, nested envelopes, a foreign signer, a bare archive,
// other transfer encodings), which TestFuzzSeeds writes with -seeds.
//
// # Trust
//
// [Open] accepts a backup only if its one signer's certificate chains to
// the given roots (pscsd's CA) and is for e-mail protection: pscsd signs
// with a key it makes at start, certified by its CA for that purpose only
// (server.CA.IssueBackupSigner); other certificates of the same CA (TLS,
// clients, the checkpoint key's, which names no extended key usage) are
// refused: the signer's certificate must name e-mail protection itself
// and be no CA. The encryption gives confidentiality, not
// integrity; the signature gives integrity.
//
// Why the whole state goes to every configured owner, how the schedule,
// retries and restore work, and what cannot be restored on another TPM:
// docs/backup.md.
package backup
