package pgpsim_test

// These tests plug the simulator into a real pcscd through vpcd and let
// software nobody on this project wrote judge it: OpenSC's openpgp driver
// (openpgp-tool, pkcs11-tool), OpenSSL, and GnuPG through its scdaemon.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit/simkittest"
)

var env *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 4}, func(p *pcscdtest.PCSCD) { env = p })
}

const openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// judge is a card in a reader of the private pcscd, and a directory and
// environment for the tools that look at it.
type judge struct {
	t      *testing.T
	card   *pgpsim.Card
	reader int
	dir    string
	env    []string

	slotUser, slotSig string // PKCS #11 slots of OpenSC's two tokens
}

func plug(t *testing.T, reader int, cfg pgpsim.Config, tools ...string) *judge {
	t.Helper()
	if env == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	card := newCard(t, cfg)
	dir := t.TempDir()
	conf := filepath.Join(dir, "opensc.conf")
	// No file caching (every simulated card would share the cache); the
	// openpgp driver first, as the card has a YubiKey's ATR, which OpenSC's
	// PIV driver claims first.
	os.WriteFile(conf, []byte("app default {\n card_drivers = openpgp, internal;\n framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"+
		"app opensc-pkcs11 {\n pkcs11 {\n  max_virtual_slots = 64;\n }\n}\n"), 0o644)
	j := &judge{t: t, card: card, reader: reader, dir: dir, env: append(os.Environ(), "OPENSC_CONF="+conf)}
	simkittest.Plug(t, env, reader, card)
	return j
}

// run runs a tool with stdin and returns its combined output; a failure is
// fatal.
func (j *judge) run(stdin string, name string, args ...string) string {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = j.env
	cmd.Dir = j.dir
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	j.t.Logf("$ %s %s\n%s", name, strings.Join(args, " "), out)
	if err != nil {
		j.t.Fatalf("%s: %v", name, err)
	}
	return string(out)
}

func (j *judge) path(name string) string { return filepath.Join(j.dir, name) }
