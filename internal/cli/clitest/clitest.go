// Package clitest runs the test scripts of pscs and pscsd
// (github.com/rogpeppe/go-internal/testscript) with the settings both
// share: explicit exec, a quiet race detector, PC/SC pointed at the
// package's private pcscd (or at no pcscd), and the condition and command
// the scripts use beyond testscript's own:
//
//	[pcscd]                 the private pcscd runs (PSCS_SKIP_PCSCD=1: it does not)
//	status CODE CMD ARGS…   run CMD like exec, and fail unless it exits with CODE
//
// Every command's refusals are checked with status 2, its help with
// status 0 (or exec) and an empty stderr.
package clitest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/rogpeppe/go-internal/testscript"
)

// Params are the settings of the scripts in dir. pcscd reports whether
// the package's private pcscd runs (it is asked when the scripts run,
// after TestMain started it); its socket is in PCSCLITE_CSOCK_NAME then.
func Params(dir string, pcscd func() bool) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			// A race-detector binary waits 1 s at exit by default: every
			// command of a script would.
			e.Setenv("GORACE", "atexit_sleep_ms=0")
			sock := filepath.Join(e.WorkDir, "no-pcscd")
			if pcscd() {
				sock = os.Getenv("PCSCLITE_CSOCK_NAME")
			}
			e.Setenv("PCSCLITE_CSOCK_NAME", sock)
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "pcscd" {
				return pcscd(), nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status": status,
		},
	}
}

// status is the script command status CODE CMD ARGS….
func status(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status CODE command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}
