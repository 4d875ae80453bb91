package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// TestInventory: pscsd inventory does what its help says: it watches the
// readers, logs a card's profile, serial, PIN state and keys when it is
// inserted and its removal, serves nothing, and stops on SIGINT with exit
// status 0.
func TestInventory(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	bin := buildPSCSD(t)
	var log logBuffer
	cmd := exec.Command(bin, "inventory")
	cmd.Env = append(os.Environ(), daemon.Env())
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("pscsd inventory said:\n%s", log.String())
		}
	})
	log.waitFor(t, regexp.MustCompile(`msg="pscsd watching readers"`), 1)

	sim, err := pivsim.New(pivsim.Config{Seed: []byte("inventory"), Serial: 7300})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	unplugged := make(chan struct{})
	go func() { defer close(unplugged); vpcd.Plug(ctx, daemon.CardAddr(0), sim) }()
	log.waitFor(t, regexp.MustCompile(`msg="card ready" .*profile=piv serial=7300 .*pin_tries=3 pin_blocked=false`), 1)
	for _, id := range []string{"9a", "9c", "9d", "9e"} {
		log.waitFor(t, regexp.MustCompile(`msg=key .*id=`+id+` `), 1)
	}
	cancel()
	<-unplugged
	log.waitFor(t, regexp.MustCompile(`msg="card removed"`), 1)

	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	waited = true
	if err != nil {
		t.Fatalf("pscsd inventory on SIGINT: %v", err)
	}
	if !regexp.MustCompile(`msg="pscsd stopping"`).MatchString(log.String()) {
		t.Error("pscsd inventory did not say it stops")
	}
	if regexp.MustCompile(`serving`).MatchString(log.String()) {
		t.Error("pscsd inventory serves")
	}
}
