package client

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzTicketFile: whatever the ticket file holds (a damaged or hostile
// file in the cache directory), Get answers without a panic, and Put
// replaces it with a good file.
func FuzzTicketFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "tickets")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := NewFileSessionCache(path)
		if cs, ok := c.Get("pscs.example"); ok && cs == nil {
			t.Fatal("ok without a session")
		}
		c.Put("other", nil)
	})
}
