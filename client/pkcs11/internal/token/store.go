package token

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/pscs/pscs/transport"
)

// FileStore is a CatalogueStore in a file (CBOR, mode 0600): what the
// server told this delegate, so that the next process answers metadata
// calls at once. It holds certificates and public keys, no secret.
type FileStore struct {
	Path string
}

var _ CatalogueStore = FileStore{}

// Load implements CatalogueStore.
func (f FileStore) Load() (*transport.Catalogue, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, err
	}
	var cat transport.Catalogue
	if err := transport.Unmarshal(b, &cat); err != nil {
		return nil, err
	}
	if cat.Tag == nil {
		return nil, errors.New("token: cached catalogue without a tag")
	}
	return &cat, nil
}

// Save implements CatalogueStore: written to a temporary file and renamed,
// so that concurrent processes read a whole catalogue.
func (f FileStore) Save(cat *transport.Catalogue) error {
	b, err := transport.Marshal(cat)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".catalogue-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.Path)
}
