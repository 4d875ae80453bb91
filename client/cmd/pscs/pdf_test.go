package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
)

// verifyIn runs pscs verify -in path in this process and returns its
// standard output and error.
func verifyIn(t *testing.T, path string) (string, error) {
	t.Helper()
	p := program()
	var stdout, stderr bytes.Buffer
	p.Stdout, p.Stderr = &stdout, &stderr
	err := p.Run(context.Background(), []string{"verify", "-in", path})
	t.Logf("$ pscs verify -in %s\n%s%s", filepath.Base(path), stdout.String(), stderr.String())
	return stdout.String(), err
}

// TestVerifyPDFChanged: pscs verify says of each signature of a PDF
// whether the file changed after it: a file signed twice, the first
// signature changed (YES, by the second's incremental update and its
// size), the second not; then an incremental update written by hand
// appended (a new /Info): both changed, and both still valid.
func TestVerifyPDFChanged(t *testing.T) {
	dir := t.TempDir()
	alice, bob := pdfsigtest.NewSigner(t, "Alice Signer"), pdfsigtest.NewSigner(t, "Bob Signer")
	once := alice.Sign(t, pdfsigtest.MakePDF(t, false))
	twice := bob.Sign(t, once)
	_, size := pdfsigtest.Trailer(t, twice)
	later := pdfsigtest.AppendUpdate(t, twice, map[int]string{size: "<< /Title (changed after the signatures) >>"})
	changed := regexp.MustCompile(`(?m)^changed: +(.*)$`)
	for _, tc := range []struct {
		name string
		file []byte
		want []string
	}{
		{"twice", twice, []string{fmt.Sprintf("YES: %d bytes", len(twice)-len(once)), "no"}},
		{"later", later, []string{fmt.Sprintf("YES: %d bytes", len(later)-len(once)), fmt.Sprintf("YES: %d bytes", len(later)-len(twice))}},
	} {
		p := filepath.Join(dir, tc.name+".pdf")
		if err := os.WriteFile(p, tc.file, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := verifyIn(t, p)
		if err != nil || strings.Count(out, "result:       valid") != 2 {
			t.Fatalf("%s: pscs verify: %v, want both valid\n%s", tc.name, err, out)
		}
		got := changed.FindAllStringSubmatch(out, -1)
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %d changed: lines, want %d\n%s", tc.name, len(got), len(tc.want), out)
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(got[i][1], w) {
				t.Errorf("%s: signature %d: changed: %s, want %s", tc.name, i+1, got[i][1], w)
			}
		}
	}
}

// TestVerifyPDFTooLarge: pscs verify refuses a PDF of more than
// pdfsig.MaxSize bytes (a sparse file) before reading it.
func TestVerifyPDFTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.pdf")
	if err := os.WriteFile(p, []byte("%PDF-1.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, pdfsig.MaxSize+1); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyIn(t, p); !errors.Is(err, pdfsig.ErrTooLarge) {
		t.Fatalf("pscs verify of %d bytes: %v, want ErrTooLarge", pdfsig.MaxSize+1, err)
	}
}
