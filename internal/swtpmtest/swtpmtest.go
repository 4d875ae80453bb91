// Package swtpmtest starts swtpm (internal/swtpm) for tests: one in a
// test's temporary directory, stopped at cleanup.
package swtpmtest

import (
	"os"
	"testing"

	"github.com/pscs/pscs/internal/swtpm"
)

// TPM is a running swtpm.
type TPM = swtpm.TPM

// SkipEnv names the variable that, set to 1, skips tests when swtpm is
// missing instead of failing them.
const SkipEnv = swtpm.SkipEnv

// New starts a swtpm in dir; see swtpm.New.
func New(dir string) (*TPM, error) { return swtpm.New(dir) }

// Check reports whether swtpm can be started here.
func Check() error { return swtpm.Check() }

// Start starts a swtpm in a fresh t.TempDir and stops it at t.Cleanup.
// It fails tb when swtpm is missing or does not start, or skips it when
// swtpm is missing and PSCS_SKIP_SWTPM=1.
func Start(tb testing.TB) *TPM {
	tb.Helper()
	if err := swtpm.Check(); err != nil {
		if os.Getenv(SkipEnv) == "1" {
			tb.Skipf("%v (%s=1)", err, SkipEnv)
		}
		tb.Fatalf("%v; set %s=1 to skip", err, SkipEnv)
	}
	s, err := swtpm.New(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("swtpmtest: stop: %v", err)
		}
	})
	return s
}
