package peerbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/netsim"
)

const (
	softhsm     = "/usr/lib/softhsm/libsofthsm2.so"
	p11kitProxy = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
)

var rtts = []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond}

func run(b *testing.B, env []string, name string, args ...string) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func waitFor(b *testing.B, path string) {
	b.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("no %s after 60 s", path)
		}
	}
}

// BenchmarkP11Kit: pkcs11-tool signing through p11-kit's remoting, a new
// process each time, SoftHSM holding an ECDSA P-256 key.
func BenchmarkP11Kit(b *testing.B) {
	for _, bin := range []string{softhsm, p11kitProxy} {
		if _, err := os.Stat(bin); err != nil {
			b.Fatalf("%s: %v (apt-get install softhsm2 p11-kit)", bin, err)
		}
	}
	dir := b.TempDir()
	env := []string{"SOFTHSM2_CONF=" + filepath.Join(dir, "softhsm2.conf")}
	os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(filepath.Join(dir, "softhsm2.conf"), []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\n"), 0o600)
	run(b, env, "softhsm2-util", "--init-token", "--free", "--label", "t", "--pin", "1234", "--so-pin", "5678")
	run(b, env, "pkcs11-tool", "--module", softhsm, "--login", "--pin", "1234", "--keypairgen", "--key-type", "EC:prime256v1", "--id", "01")
	sock := filepath.Join(dir, "p11.sock")
	srv := exec.Command("p11-kit", "server", "-f", "-s", "-n", sock, "--provider", softhsm, "pkcs11:token=t")
	srv.Env = append(os.Environ(), env...)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	waitFor(b, sock)
	in := filepath.Join(dir, "in")
	os.WriteFile(in, []byte("a document to sign"), 0o600)
	for _, rtt := range rtts {
		b.Run(fmt.Sprintf("rtt=%v", rtt), func(b *testing.B) {
			relay, err := netsim.NewStreamRelay("unix", filepath.Join(dir, fmt.Sprintf("relay-%d.sock", rtt.Milliseconds())), sock, rtt/2)
			if err != nil {
				b.Fatal(err)
			}
			defer relay.Close()
			cenv := []string{"P11_KIT_SERVER_ADDRESS=unix:path=" + relay.Addr()}
			turns := 0
			b.ResetTimer()
			for range b.N {
				relay.Reset()
				run(b, cenv, "pkcs11-tool", "--module", p11kitProxy, "--login", "--pin", "1234", "--sign", "-m", "ECDSA", "--id", "01", "-i", in, "-o", filepath.Join(dir, "sig"))
				turns += relay.Turns()
			}
			b.ReportMetric(float64(turns)/float64(b.N), "round-trips/op")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkPSCS: the same pkcs11-tool process through pscs's module to
// pscsd --demo (cards that answer at once, as SoftHSM does): for a new
// user (nothing cached), without a session ticket (the catalogue cached),
// and with one (login in 0-RTT). The wall time includes pscsd's Argon2id
// of the virtual PIN at every login (about 75 ms here), which a span at
// the relay cannot tell from link time: round trips are counted by
// client/pkcs11/e2e's TestProcessRoundTrips against a server without it.
func BenchmarkPSCS(b *testing.B) {
	dir := b.TempDir()
	pscsd, module := filepath.Join(dir, "pscsd"), filepath.Join(dir, "pscs-pkcs11.so")
	for _, c := range [][]string{{"build", "-o", pscsd, "../../server/cmd/pscsd"},
		{"build", "-buildmode=c-shared", "-o", module, "../../client/pkcs11"}} {
		if out, err := exec.Command("go", c...).CombinedOutput(); err != nil {
			b.Fatalf("go %s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	state := filepath.Join(dir, "state")
	ctx, cancel := context.WithCancel(context.Background())
	srv := exec.CommandContext(ctx, pscsd, "--demo", "--state", state, "--card-latency", "none")
	srv.Cancel = func() error { return srv.Process.Signal(os.Interrupt) }
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); srv.Wait() }()
	conf := filepath.Join(state, "demo", "client.conf")
	waitFor(b, conf)
	vpin, _ := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	var f client.File
	raw, _ := os.ReadFile(conf)
	if err := json.Unmarshal(raw, &f); err != nil {
		b.Fatal(err)
	}
	in := filepath.Join(dir, "in")
	os.WriteFile(in, []byte("a document to sign"), 0o600)
	for _, rtt := range rtts {
		for _, mode := range []string{"first", "no-ticket", "ticket"} {
			b.Run(fmt.Sprintf("rtt=%v/%s", rtt, mode), func(b *testing.B) {
				proxy, err := netsim.New(f.Server, netsim.Config{Delay: rtt / 2})
				if err != nil {
					b.Fatal(err)
				}
				defer proxy.Close()
				g := f
				g.Server = proxy.Addr()
				gb, _ := json.Marshal(g)
				bconf := filepath.Join(state, "demo", fmt.Sprintf("bench-%d-%s.conf", rtt.Milliseconds(), mode))
				os.WriteFile(bconf, gb, 0o600)
				cache := filepath.Join(dir, fmt.Sprintf("cache-%d-%s", rtt.Milliseconds(), mode))
				env := []string{"PSCS_CONFIG=" + bconf, "XDG_CACHE_HOME=" + cache}
				sign := func() {
					run(b, env, "pkcs11-tool", "--module", module, "--login", "--pin", strings.TrimSpace(string(vpin)),
						"--sign", "-m", "ECDSA", "--id", "01", "-i", in, "-o", filepath.Join(dir, "sig"))
				}
				sign() // leaves a catalogue and a ticket in the cache
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					switch mode {
					case "first": // a new user: nothing cached
						os.RemoveAll(cache)
					case "no-ticket": // the ticket expired; the catalogue is cached
						tickets, _ := filepath.Glob(filepath.Join(cache, "pscs", "tickets-*"))
						for _, t := range tickets {
							os.Remove(t)
						}
					}
					b.StartTimer()
					sign()
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
			})
		}
	}
}
