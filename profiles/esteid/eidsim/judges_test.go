package eidsim_test

// These tests plug the simulator into a real pcscd through vpcd and let
// software nobody on this project wrote judge it: OpenSC's esteid2018
// driver (pkcs11-tool, pkcs15-tool, opensc-tool) and OpenSSL.

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
)

var env *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 3}, func(p *pcscdtest.PCSCD) { env = p })
}

const openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// judge is a card plugged into one reader of the private pcscd, and the
// environment for the tools that look at it.
type judge struct {
	t      *testing.T
	card   *eidsim.Card
	reader int
	dir    string
	env    []string
}

func plug(t *testing.T, reader int) *judge {
	t.Helper()
	if env == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	for _, tool := range []string{"pkcs11-tool", "pkcs15-tool", "opensc-tool", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	card, err := eidsim.New(eidsim.Config{Seed: []byte(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "opensc.conf")
	// No file caching (every simulated card would share the cache); enough
	// virtual slots for every reader. PSCS_OPENSC_DEBUG=1 logs OpenSC's
	// exchanges (PINs included) to opensc.log in the test's directory.
	debug := ""
	if os.Getenv("PSCS_OPENSC_DEBUG") == "1" {
		debug = " debug = 9;\n debug_file = " + filepath.Join(dir, "opensc.log") + ";\n"
		t.Logf("OpenSC log: %s", filepath.Join(dir, "opensc.log"))
	}
	os.WriteFile(conf, []byte("app default {\n"+debug+" framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"+
		"app opensc-pkcs11 {\n pkcs11 {\n  max_virtual_slots = 64;\n }\n}\n"), 0o644)
	j := &judge{t: t, card: card, reader: reader, dir: dir,
		env: append(os.Environ(), "OPENSC_CONF="+conf)}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv := vpcd.Server{Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
		srv.Plug(ctx, env.CardAddr(reader), card)
	}()
	t.Cleanup(func() {
		if debug != "" {
			logAPDUs(t, filepath.Join(dir, "opensc.log"))
		}
		cancel()
		<-done
		j.waitATR(false)
	})
	j.waitATR(true)
	return j
}

// waitATR waits until opensc-tool sees a card in the reader (or none).
func (j *judge) waitATR(present bool) {
	j.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var out []byte
	for time.Now().Before(deadline) {
		var err error
		out, err = exec.Command("opensc-tool", "-r", strconv.Itoa(j.reader), "-a").CombinedOutput()
		got := err == nil && bytes.Contains(out, []byte("3b:db:96"))
		if got == present {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	j.t.Fatalf("reader %d: card present=%v not seen within 10 s; opensc-tool says:\n%s", j.reader, present, out)
}

// run runs a tool and returns its combined output; a failure is fatal unless
// wantFail.
func (j *judge) run(wantFail bool, name string, args ...string) string {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = j.env
	cmd.Dir = j.dir
	out, err := cmd.CombinedOutput()
	j.t.Logf("$ %s %s\n%s", name, strings.Join(args, " "), out)
	if err != nil && !wantFail {
		j.t.Fatalf("%s: %v", name, err)
	}
	if err == nil && wantFail {
		j.t.Fatalf("%s succeeded, want failure", name)
	}
	return string(out)
}

// slot is the pkcs11-tool slot of the judge's reader: OpenSC numbers its
// virtual slots four per reader.
func (j *judge) p11(wantFail bool, args ...string) string {
	return j.run(wantFail, "pkcs11-tool", append([]string{"--module", openscModule}, args...)...)
}

func (j *judge) p15(args ...string) string {
	return j.run(false, "pkcs15-tool", append([]string{"--reader", strconv.Itoa(j.reader)}, args...)...)
}

func (j *judge) path(name string) string { return filepath.Join(j.dir, name) }

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

// logAPDUs logs the APDUs in an OpenSC debug log.
func logAPDUs(t *testing.T, file string) {
	b, _ := os.ReadFile(file)
	var out []string
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.Contains(l, "Outgoing APDU") || strings.Contains(l, "Incoming APDU") {
			for k := i + 1; k < len(lines) && k < i+8 && !strings.Contains(lines[k], "[") && !strings.Contains(lines[k], "sm.c"); k++ {
				out = append(out, strings.TrimSpace(lines[k]))
			}
			out = append(out, "--")
		}
	}
	t.Logf("APDUs:\n%s", strings.Join(out, "\n"))
}

var _ = regexp.MustCompile

func TestOpenSCExplore(t *testing.T) {
	j := plug(t, 0)
	j.p11(false, "-L")
	j.p15("--list-pins")
	j.p11(false, "-O", "--slot-index", "0")
	j.p11(false, "--login", "--pin", "1234", "--slot-index", "0", "--sign", "--id", "01", "-m", "ECDSA", "--input-file", "/etc/hostname", "--output-file", j.path("s1"))
	j.p11(false, "--login", "--pin", "12345", "--slot-index", "1", "--sign", "--id", "02", "-m", "ECDSA", "--input-file", "/etc/hostname", "--output-file", j.path("s1"))
}
