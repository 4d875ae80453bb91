// Command demo shows pscs on simulated cards, with nothing on the machine
// touched. First the card layer: a private pcscd with vpcd readers, two
// simulated PIV cards plugged into it by `pscs sim`, `pscs readers`,
// `pscs card info`, and a signature made by `pscs card sign` that OpenSSL
// verifies against the card's certificate. Then the delegation: `pscsd
// --demo` serves remote cards (a parallel remote card of three cards) with
// a simulated TPM, and the demo delegate lists them with `pscs slots` and
// signs with its virtual PIN through `pscs sign`; OpenSSL verifies.
// Run it with `make demo`, which builds bin/pscs and bin/pscsd first.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/pscs/pscs/internal/pcscdtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	pscs, err := filepath.Abs("bin/pscs")
	if err != nil {
		return err
	}
	if _, err := os.Stat(pscs); err != nil {
		return fmt.Errorf("%s missing: run `make demo`, which builds it", pscs)
	}
	say("Starting a private pcscd with two vpcd readers (nothing else on this machine is touched).")
	d, err := pcscdtest.Start(ctx, pcscdtest.Options{Entries: 1})
	if err != nil {
		return err
	}
	defer d.Stop()
	env := append(os.Environ(), d.Env(), "PSCS_PIN=123456")
	work, err := os.MkdirTemp("", "pscs-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	say("Plugging two simulated PIV cards into the readers (PIN 123456).")
	simCtx, stopSim := context.WithCancel(ctx)
	defer stopSim()
	sim := exec.CommandContext(simCtx, pscs, "sim", "-vpcd", d.CardAddr(0)+","+d.CardAddr(1), "-latency", "real")
	sim.Env = env
	sim.Cancel = func() error { return sim.Process.Signal(os.Interrupt) }
	sim.Stdout, sim.Stderr = os.Stdout, os.Stderr
	if err := sim.Start(); err != nil {
		return err
	}
	defer func() {
		stopSim()
		sim.Wait()
	}()

	// pcscd polls its readers about every 400 ms.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := output(ctx, env, pscs, "readers")
		if strings.Count(out, "present") == 2 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the simulated cards did not appear in 10 s:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := show(ctx, env, pscs, "readers"); err != nil {
		return err
	}
	if err := show(ctx, env, pscs, "card", "info", "-r", d.Readers[1]); err != nil {
		return err
	}
	doc := filepath.Join(work, "document.txt")
	if err := os.WriteFile(doc, []byte("The mayor approves the budget for 2027.\n"), 0o644); err != nil {
		return err
	}
	sig, cert, pub := filepath.Join(work, "document.sig"), filepath.Join(work, "signer.pem"), filepath.Join(work, "signer.pub")
	if err := show(ctx, env, pscs, "card", "sign", "-r", d.Readers[1], "-k", "9c", "-in", doc, "-out", sig, "-cert", cert); err != nil {
		return err
	}
	say("Verifying the signature with OpenSSL against the card's certificate:")
	if err := show(ctx, env, "openssl", "x509", "-in", cert, "-pubkey", "-noout", "-out", pub); err != nil {
		return err
	}
	if err := show(ctx, env, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, doc); err != nil {
		return err
	}
	say("The card made the signature and OpenSSL verifies it.")
	stopSim()
	return remote(ctx, work)
}

// remote runs pscsd --demo and signs as the demo delegate.
func remote(ctx context.Context, work string) error {
	pscsd, _ := filepath.Abs("bin/pscsd")
	pscs, _ := filepath.Abs("bin/pscs")
	state := filepath.Join(work, "pscsd")
	say("Starting pscsd --demo: four simulated cards, swtpm as the TPM, a delegation with a virtual PIN.")
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	srv := exec.CommandContext(srvCtx, pscsd, "--demo", "--state", state)
	srv.Cancel = func() error { return srv.Process.Signal(os.Interrupt) }
	srv.Stdout, srv.Stderr = os.Stdout, os.Stderr
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		stopSrv()
		srv.Wait()
	}()
	conf := filepath.Join(state, "demo", "client.conf")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(conf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pscsd --demo did not write %s", conf)
		}
	}
	vpin, err := os.ReadFile(filepath.Join(state, "demo", "vpin"))
	if err != nil {
		return err
	}
	env := append(os.Environ(), "PSCS_CONFIG="+conf, "PSCS_VPIN="+strings.TrimSpace(string(vpin)),
		"XDG_CACHE_HOME="+filepath.Join(work, "cache")) // pscs sign's session tickets
	say("The delegate lists the remote cards it may use:")
	if err := show(ctx, env, pscs, "slots"); err != nil {
		return err
	}
	doc := filepath.Join(work, "order.txt")
	if err := os.WriteFile(doc, []byte("Order 2026/117: repave Via Roma. Signed for the mayor.\n"), 0o644); err != nil {
		return err
	}
	sig, cert, pub := filepath.Join(work, "order.sig"), filepath.Join(work, "mayor.pem"), filepath.Join(work, "mayor.pub")
	say("The delegate signs with the mayor's remote card, with its virtual PIN (the real PIN never leaves pscsd):")
	if err := show(ctx, env, pscs, "sign", "-slot", "1", "-in", doc, "-out", sig, "-cert", cert); err != nil {
		return err
	}
	if err := show(ctx, env, "openssl", "x509", "-in", cert, "-pubkey", "-noout", "-out", pub); err != nil {
		return err
	}
	if err := show(ctx, env, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, doc); err != nil {
		return err
	}
	owner := append(os.Environ(), "PSCS_CONFIG="+filepath.Join(state, "demo", "owner", "client.conf"))
	say("The owner sees the delegation and its use, and exports the card's audit records, every signed request checked:")
	if err := show(ctx, owner, pscs, "admin", "list"); err != nil {
		return err
	}
	if err := show(ctx, owner, pscs, "admin", "export", "-out", filepath.Join(work, "mayor-audit.jsonl")); err != nil {
		return err
	}
	say("Anyone with the export and pscsd's CA certificate checks it offline: the hash chain, the server's checkpoints, what it shows:")
	if err := show(ctx, owner, pscs, "audit", "verify", "-ca", filepath.Join(state, "demo", "owner", "ca.pem"), filepath.Join(work, "mayor-audit.jsonl")); err != nil {
		return err
	}
	say("The owner also has a web console; `pscs admin console` prints a one-time link to it:")
	if err := show(ctx, owner, pscs, "admin", "console"); err != nil {
		return err
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		// pscsd stops with the demo: give the owner time to open the link.
		fmt.Print("\nOpen the link in a browser (it works once, for 2 minutes); press Enter to end the demo. ")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	say("Done: a delegate signed with the mayor's card from afar, the signature verifies, and the owner holds the record.")
	return nil
}

func say(s string) { fmt.Printf("\n## %s\n", s) }

func output(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// show runs a command and prints it, as a user would type it, with its output.
func show(ctx context.Context, env []string, name string, args ...string) error {
	shown := filepath.Base(name) + " " + strings.Join(args, " ")
	fmt.Printf("\n$ %s\n", shown)
	out, err := output(ctx, env, name, args...)
	fmt.Print(out)
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	return nil
}
