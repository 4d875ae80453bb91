package main

// The command line of pscsd as a person at a terminal meets it, in test
// scripts (testdata/script/*.txtar, github.com/rogpeppe/go-internal/testscript):
// every command's usage and refusals, -h, --version, and the quick happy
// paths. pscsd runs in process: the test binary is the pscsd of the scripts.

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pscs/pscs/internal/cli/clitest"
	"github.com/pscs/pscs/internal/pcscdtest"
)

// TestMain runs pscsd as a command of the scripts, and the package's tests
// against a private pcscd.
func TestMain(m *testing.M) {
	testscript.Main(withPCSCD{m}, map[string]func(){"pscsd": main})
}

// withPCSCD runs the tests against a private pcscd, as testscript's
// testing.M.
type withPCSCD struct{ m *testing.M }

func (w withPCSCD) Run() int {
	return pcscdtest.Run(w.m, pcscdtest.Options{Entries: 3}, func(p *pcscdtest.PCSCD) { daemon = p })
}

func TestScripts(t *testing.T) {
	testscript.Run(t, clitest.Params("testdata/script", func() bool { return daemon != nil }))
}
