// Package transcripttest finds the real-card transcripts that live beside
// the repository (../shared/reference/transcripts), for tests that replay
// them against drivers and simulators.
package transcripttest

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Files returns the directory of the transcript set (a directory of
// ../shared/reference/transcripts, "openpgp-yubikey-5.4.3") and, sorted,
// the files below it named name ("yk-5.4.3"). It skips t when the set is
// absent: the transcripts are beside the repository, not in it.
func Files(t testing.TB, set, name string) (dir string, files []string) {
	t.Helper()
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			t.Fatal("transcripttest: no go.mod above the test")
		}
		root = parent
	}
	dir = filepath.Join(root, "..", "shared", "reference", "transcripts", set)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("the real-card transcripts are not at %s (they live beside the repository, not in it): %v", dir, err)
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	return dir, files
}
