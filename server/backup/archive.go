package backup

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/pscs/pscs/internal/cborpolicy"
)

// Magic starts every archive.
const Magic = "pscs-backup v1\n\x00"

// MaxArchive bounds the archive ParseArchive reads.
const MaxArchive = 1 << 30

// Files are the state directory's files an archive may hold, by their
// path relative to the state directory: the store, the audit log (its
// checkpoints are records in it), the certificate of the checkpoint key,
// and the TPM-wrapped keys (the vault's storage key, the checkpoint key),
// which open nothing without this machine's TPM. Sealed PINs are records
// of the store.
var Files = []string{"store", "audit.log", "checkpoint.pem", "vault/vault-key", "vault/checkpoint.key"}

// Required are the files without which an archive restores nothing.
var Required = []string{"store", "audit.log", "checkpoint.pem", "vault/vault-key"}

// File is one file of an archive.
type File struct {
	Name   string `cbor:"1,keyasint"` // one of Files
	Data   []byte `cbor:"2,keyasint"`
	SHA256 []byte `cbor:"3,keyasint"` // of Data
}

// Archive is a backup's content (see the package documentation).
type Archive struct {
	Created int64  `cbor:"1,keyasint"` // Unix ms
	Server  string `cbor:"2,keyasint"` // the server's name (its CA's subject)
	// LogSeq is the audit log's checkpoint made for the backup (records
	// after it may follow, appended while the backup was copied);
	// StoreVersion the store's version. (Key 4 is not used.)
	LogSeq       uint64 `cbor:"3,keyasint"`
	StoreVersion uint64 `cbor:"5,keyasint"`
	Files        []File `cbor:"6,keyasint"`
}

// Time is when the archive was made.
func (a *Archive) Time() time.Time { return time.UnixMilli(a.Created) }

// File returns the data of the file named name, or nil.
func (a *Archive) File(name string) []byte {
	for _, f := range a.Files {
		if f.Name == name {
			return f.Data
		}
	}
	return nil
}

// Digest is the SHA-256 of an archive's encoding: the name owners and the
// audit log give a backup.
func Digest(archive []byte) [32]byte { return sha256.Sum256(archive) }

// Marshal encodes a, computing each file's digest.
func (a *Archive) Marshal() ([]byte, error) {
	for i := range a.Files {
		d := sha256.Sum256(a.Files[i].Data)
		a.Files[i].SHA256 = d[:]
	}
	if err := a.check(); err != nil {
		return nil, err
	}
	b, err := cborpolicy.EncMode.Marshal(a)
	if err != nil {
		return nil, err
	}
	return append([]byte(Magic), b...), nil
}

// ErrArchive is wrapped by every error of ParseArchive.
var ErrArchive = errors.New("backup: not a valid archive")

// ParseArchive reads an archive and checks every file's digest.
func ParseArchive(p []byte) (*Archive, error) {
	if len(p) > MaxArchive {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrArchive, len(p), MaxArchive)
	}
	body, ok := bytes.CutPrefix(p, []byte(Magic))
	if !ok {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrArchive, Magic)
	}
	var a Archive
	if err := cborpolicy.StrictDecMode.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrArchive, err)
	}
	if err := a.check(); err != nil {
		return nil, err
	}
	for _, f := range a.Files {
		d := sha256.Sum256(f.Data)
		if subtle.ConstantTimeCompare(d[:], f.SHA256) != 1 {
			return nil, fmt.Errorf("%w: %s does not match its digest", ErrArchive, f.Name)
		}
	}
	return &a, nil
}

// check refuses unknown, repeated or missing files.
func (a *Archive) check() error {
	seen := map[string]bool{}
	for _, f := range a.Files {
		if !slices.Contains(Files, f.Name) || path.Clean(f.Name) != f.Name {
			return fmt.Errorf("%w: a file %q (an archive holds only %v)", ErrArchive, f.Name, Files)
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: %s twice", ErrArchive, f.Name)
		}
		seen[f.Name] = true
	}
	for _, n := range Required {
		if !seen[n] {
			return fmt.Errorf("%w: no %s", ErrArchive, n)
		}
	}
	return nil
}
