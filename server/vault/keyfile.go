package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
)

// KeyFileName is the file in the vault's directory that holds the vault
// key's public area and its private area wrapped by the TPM's storage root
// key (TPM2B_PUBLIC and TPM2B_PRIVATE). The key's value never leaves the
// TPM in clear; the file is useless without the TPM that created it.
const KeyFileName = "vault-key"

const keyFileVersion = 1

// keyFile is the content of [KeyFileName], in deterministic CBOR.
type keyFile struct {
	Version int `cbor:"1,keyasint"`
	// SRKName is the Name of the storage root key the vault key was created
	// under; a different Name means a different TPM.
	SRKName []byte `cbor:"2,keyasint"`
	// Public is a marshalled TPM2B_PUBLIC.
	Public []byte `cbor:"3,keyasint"`
	// Private is a marshalled TPM2B_PRIVATE.
	Private []byte `cbor:"4,keyasint"`
}

// parse decodes the TPM structures of the key file and checks them.
func (f *keyFile) parse() (*tpmKey, error) {
	if f.Version != keyFileVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, keyFileVersion)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](f.Public)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	if again := tpm2.Marshal(*pub); !bytes.Equal(again, f.Public) {
		return nil, errors.New("public area: trailing bytes")
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](f.Private)
	if err != nil {
		return nil, fmt.Errorf("private area: %w", err)
	}
	if again := tpm2.Marshal(*priv); !bytes.Equal(again, f.Private) {
		return nil, errors.New("private area: trailing bytes")
	}
	contents, err := pub.Contents()
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	if err := checkKeyPublic(contents); err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	name, err := tpm2.ObjectName(contents)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	return &tpmKey{srkName: f.SRKName, public: *pub, private: *priv, name: *name}, nil
}

// readKeyFile reads and parses the key file in dir. It returns an error
// wrapping os.ErrNotExist when there is none.
func readKeyFile(dir string) (*tpmKey, error) {
	path := filepath.Join(dir, KeyFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	var f keyFile
	if err := decMode.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("vault: %s: %w: %v", path, ErrCorrupt, err)
	}
	k, err := f.parse()
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w: %v", path, ErrCorrupt, err)
	}
	return k, nil
}

// writeKeyFile writes f as dir's key file, mode 0600, unless dir already
// has one: it writes a temporary file, syncs it and links it into place, so
// two processes creating the same vault at once end with one key file, the
// winner's, and readers never see a partial file. It reports
// os.ErrExist when another key file won.
func writeKeyFile(dir string, f *keyFile) error {
	b, err := encMode.Marshal(f)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	var r [8]byte
	rand.Read(r[:])
	tmp := filepath.Join(dir, "."+KeyFileName+"."+hex.EncodeToString(r[:]))
	defer os.Remove(tmp)
	if err := writeSync(tmp, b); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	if err := os.Link(tmp, filepath.Join(dir, KeyFileName)); err != nil {
		if errors.Is(err, os.ErrExist) {
			return os.ErrExist
		}
		return fmt.Errorf("vault: %w", err)
	}
	return syncDir(dir)
}

func writeSync(path string, b []byte) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(b); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("vault: sync %s: %w", dir, err)
	}
	return nil
}
