package transport

// Administration (OpAdmin). An owner administers the remote cards the
// server's configuration names them owner of, and the delegations on them;
// every administration request is signed like any other and lands in the
// audit log. Secrets (a card's real PIN, the owner's passphrase) travel in
// Request.Secret as an encoded [AdminSecret], outside the signed payload,
// so that the log never holds them; a new delegation's virtual PIN comes
// back once, in the answer, and is kept nowhere in clear.

// Admin actions.
const (
	AdminEnroll      = "enroll"       // enroll Name with Certificate
	AdminIssue       = "issue"        // the server's CA certifies PublicKey for Name, and enrolls it
	AdminRegisterPIN = "register-pin" // check the real PIN on Card and seal it under the owner's passphrase
	AdminDelegate    = "delegate"     // grant Delegation; the answer holds its ID and virtual PIN
	AdminRevoke      = "revoke"       // revoke delegation ID
	AdminUnlock      = "unlock"       // unlock delegation ID after too many wrong virtual PINs
	AdminList        = "list"         // the requester's cards and the delegations on them
	AdminExport      = "export"       // the audit records of the requester's cards, from sequence From
	// AdminConsole asks for a one-time link to the owners' web console
	// (server/console), bound to the requester; the answer holds it in
	// ConsoleURL. Since version 4.
	AdminConsole = "console"
	// AdminBackup makes a backup now and mails it to the configured
	// owners (server/backup); the answer holds its digest and who got it.
	AdminBackup = "backup"
)

// AdminRequest is the body of OpAdmin.
type AdminRequest struct {
	Action      string           `cbor:"1,keyasint"`
	Name        string           `cbor:"2,keyasint,omitempty"` // an identity
	Certificate []byte           `cbor:"3,keyasint,omitempty"` // DER X.509 (enroll)
	PublicKey   []byte           `cbor:"4,keyasint,omitempty"` // DER PKIX (issue)
	Card        string           `cbor:"5,keyasint,omitempty"` // a remote card's name
	ID          string           `cbor:"6,keyasint,omitempty"` // a delegation
	Delegation  *AdminDelegation `cbor:"7,keyasint,omitempty"`
	From        uint64           `cbor:"8,keyasint,omitempty"` // export: first sequence number
	// Until, for export pages after the first: the checkpoint the export
	// ends at, from the first page's answer.
	Until uint64 `cbor:"9,keyasint,omitempty"`
	// PIN, for register-pin: the ID of the card's PIN (profiles.PINInfo.ID,
	// "piv-pin", "pin2"); empty: the card's default (first) PIN.
	PIN string `cbor:"10,keyasint,omitempty"`
}

// AdminSecret is what Request.Secret holds for register-pin (PIN and
// Passphrase) and delegate (Passphrase).
type AdminSecret struct {
	PIN        []byte `cbor:"1,keyasint,omitempty"` // the card's real PIN
	Passphrase []byte `cbor:"2,keyasint,omitempty"` // the owner's passphrase that seals it
}

// AdminDelegation describes a delegation (see server/policy).
type AdminDelegation struct {
	ID        string   `cbor:"1,keyasint,omitempty"` // set by the server
	Owner     string   `cbor:"2,keyasint,omitempty"` // set by the server: the requester
	Delegate  string   `cbor:"3,keyasint"`
	Card      string   `cbor:"4,keyasint"`
	Ops       []string `cbor:"5,keyasint,omitempty"` // "sign", "decrypt"; empty: sign
	NotBefore int64    `cbor:"6,keyasint,omitempty"` // Unix ms; 0: now
	NotAfter  int64    `cbor:"7,keyasint,omitempty"` // Unix ms; 0: none
	// Days is a bit set of week days (bit 0 Sunday); with Days set, use is
	// allowed from From to To minutes after midnight UTC (To < From: past
	// midnight).
	Days      uint8    `cbor:"8,keyasint,omitempty"`
	From      uint16   `cbor:"9,keyasint,omitempty"`
	To        uint16   `cbor:"10,keyasint,omitempty"`
	PerHour   uint32   `cbor:"11,keyasint,omitempty"`
	Total     uint32   `cbor:"12,keyasint,omitempty"`
	Documents [][]byte `cbor:"13,keyasint,omitempty"` // allowed document digests
	Warranty  bool     `cbor:"14,keyasint,omitempty"`
	// State, in answers only.
	Revoked bool   `cbor:"15,keyasint,omitempty"`
	Locked  bool   `cbor:"16,keyasint,omitempty"`
	Used    uint32 `cbor:"17,keyasint,omitempty"`
	// Keys limits the delegation to these keys of the card (their IDs,
	// profiles.Key.ID: "9c", "81"); empty: every key. Since version 3.
	Keys []string `cbor:"18,keyasint,omitempty"`
}

// AdminResponse is the body of the answer to OpAdmin.
type AdminResponse struct {
	Certificate []byte            `cbor:"1,keyasint,omitempty"` // issue: the new certificate
	CA          []byte            `cbor:"2,keyasint,omitempty"` // issue: the CA certificate
	ID          string            `cbor:"3,keyasint,omitempty"` // delegate: the new delegation
	VPIN        string            `cbor:"4,keyasint,omitempty"` // delegate: its virtual PIN, shown once
	Cards       []string          `cbor:"5,keyasint,omitempty"` // list: the requester's cards
	Delegations []AdminDelegation `cbor:"6,keyasint,omitempty"` // list
	// Records, for export: audit records as CBOR maps (server/audit's
	// Record), and the certificates of the identities that signed them.
	Records      [][]byte          `cbor:"7,keyasint,omitempty"`
	Certificates map[string][]byte `cbor:"8,keyasint,omitempty"`
	Next         uint64            `cbor:"9,keyasint,omitempty"` // export: more from here; 0: done
	// Export: the SHA-256 of every record of the page, shown or not, in
	// order from record First; Records holds the shown ones byte for byte
	// as in the log. Until is the checkpoint, made for the export, that it
	// ends with; CheckpointCertificate (DER) certifies the key that signs
	// the log's checkpoints. Together they let anyone check the export
	// offline (server/audit's ExportVerifier).
	Digests               [][]byte `cbor:"10,keyasint,omitempty"`
	First                 uint64   `cbor:"11,keyasint,omitempty"`
	Until                 uint64   `cbor:"12,keyasint,omitempty"`
	CheckpointCertificate []byte   `cbor:"13,keyasint,omitempty"`
	// Manifest, on an export's first page, is the checkpoint key's
	// signature (ASN.1 ECDSA) over server/audit's ManifestDigest of the
	// requester, Until and the sequence numbers of every record the export
	// shows: leaving a shown record out of the export is detected.
	Manifest []byte `cbor:"14,keyasint,omitempty"`
	// ConsoleURL, for console: the one-time link that opens a console
	// session of the requester; it works once, until ConsoleExpires (Unix
	// ms). Since version 4.
	ConsoleURL     string `cbor:"15,keyasint,omitempty"`
	ConsoleExpires int64  `cbor:"16,keyasint,omitempty"`
	// Backup: the SHA-256 of the backup's archive (server/backup.Digest),
	// and the addresses the mail server accepted it for. Since version 4.
	BackupDigest []byte   `cbor:"17,keyasint,omitempty"`
	BackupSentTo []string `cbor:"18,keyasint,omitempty"`
}
