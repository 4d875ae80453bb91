package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/profiles/registry"
)

// pscs sim -profile esteid plugs an EstEID 2018 card that OpenSC's
// esteid2018 driver reads, with the PIN2 given on the command line.
func TestSimEstEID(t *testing.T) {
	build(t)
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		t.Fatalf("pkcs11-tool not installed (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sim := exec.CommandContext(ctx, pscs, "sim", "-profile", "esteid", "-vpcd", daemon.CardAddr(0),
		"-latency", "none", "-seed", "cli", "-pin2", "24680")
	sim.Cancel = func() error { return sim.Process.Signal(os.Interrupt) }
	dir := t.TempDir()
	logf, _ := os.Create(filepath.Join(dir, "sim.log"))
	sim.Stdout, sim.Stderr = logf, logf
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := sim.Wait(); err != nil && ctx.Err() == nil {
			t.Errorf("pscs sim: %v", err)
		}
		daemon.WaitCard(t, 0, nil, pcscdtest.PlugOptions{})
	})
	if err := daemon.AwaitCard(t.Context(), 0, eidsim.DefaultATR, pcscdtest.PlugOptions{Timeout: 15 * time.Second}); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "sim.log"))
		t.Fatalf("%v; pscs sim says:\n%s", err, b)
	}
	conf := filepath.Join(dir, "opensc.conf")
	os.WriteFile(conf, []byte("app default {\n framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"), 0o644)
	data := filepath.Join(dir, "data")
	os.WriteFile(data, []byte("signed through pscs sim"), 0o644)
	p11 := func(args ...string) (string, error) {
		cmd := exec.Command("pkcs11-tool", append([]string{"--module", "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"}, args...)...)
		cmd.Env = append(os.Environ(), "OPENSC_CONF="+conf)
		out, err := cmd.CombinedOutput()
		t.Logf("$ pkcs11-tool %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	out, err := p11("-L")
	if err != nil || !strings.Contains(out, "(PIN1)") || !strings.Contains(out, "(PIN2)") || !strings.Contains(out, "IDEMIA") {
		t.Fatalf("pkcs11-tool -L does not show the EstEID tokens (%v)", err)
	}
	// Slot 0x1 is the PIN2 token of the first reader.
	if _, err := p11("--slot", "0x1", "--login", "--pin", "24680", "--sign", "--id", "02", "-m", "ECDSA-SHA384",
		"--input-file", data, "--output-file", filepath.Join(dir, "sig")); err != nil {
		t.Errorf("no signature with the PIN2 given to pscs sim: %v", err)
	}
}

// TestSimulatorsRegistered: every simulator of pscs sim is a profile of
// profiles/registry, under the same name.
func TestSimulatorsRegistered(t *testing.T) {
	for name := range simulators {
		if _, ok := registry.Lookup(name); !ok {
			t.Errorf("simulator %q is not in profiles/registry", name)
		}
	}
	if got := strings.Join(simNameList(), ","); got != "piv,openpgp,esteid" {
		t.Errorf("simulators in registry order: %s", got)
	}
}
