package token

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzCatalogueFile: a damaged or hostile cached catalogue is an error
// from Load, never a panic, and what Load accepts saves and loads again.
func FuzzCatalogueFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "catalogue")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cat, err := FileStore{Path: path}.Load()
		if err != nil {
			return
		}
		again := FileStore{Path: filepath.Join(dir, "again")}
		if err := again.Save(cat); err != nil {
			t.Fatalf("an accepted catalogue does not save: %v", err)
		}
		if _, err := again.Load(); err != nil {
			t.Fatalf("a saved catalogue does not load: %v", err)
		}
	})
}
