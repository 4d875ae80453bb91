package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/rig"
)

// TestFork: a C application initialises the module, signs and forks. In
// the child every entry answers at once without entering the Go runtime
// (which does not survive fork): CKR_CRYPTOKI_NOT_INITIALIZED, and
// C_Initialize CKR_GENERAL_ERROR. The parent, whose connection the child
// never touched, signs again.
func TestFork(t *testing.T) {
	need(t, "gcc")
	so, _ := binaries(t)
	dir := t.TempDir()
	host := filepath.Join(dir, "forkhost")
	if out, err := exec.Command("gcc", "-Wall", "-I..", "-o", host, "testdata/forkhost.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	r := rig.New(t)
	conf := r.WriteConfig(t, dir, "")
	env := append(os.Environ(), "PSCS_CONFIG="+conf, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "PSCS_TIMEOUT=10s")
	out := run(t, env, host, so, rig.VPIN)
	for _, want := range []string{"parent ok", "child refused", "parent again ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}
