// Package transcripttest finds the real-card transcripts that live beside
// the repository (../shared/reference/transcripts), for tests that replay
// them against drivers and simulators.
package transcripttest

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pscs/pscs/internal/transcript"
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

// Each runs f, as a subtest named by the transcript's directory below the
// set, on every transcript Files finds, parsed. It fails t when the set
// does not hold want transcripts (0: any number), so that a transcript
// lost or added is noticed, and returns how many it ran.
func Each(t *testing.T, set, name string, want int, f func(t *testing.T, name string, tr *transcript.Transcript)) int {
	t.Helper()
	dir, files := Files(t, set, name)
	if want != 0 && len(files) != want {
		t.Errorf("%d transcripts in %s, want %d", len(files), dir, want)
	}
	for _, file := range files {
		sub, _ := filepath.Rel(dir, filepath.Dir(file))
		t.Run(sub, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := transcript.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			f(t, sub, tr)
		})
	}
	return len(files)
}
