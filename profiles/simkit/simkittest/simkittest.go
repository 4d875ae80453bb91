// Package simkittest plugs simulated cards into a private pcscd for tests
// (internal/pcscdtest): the vpcd plumbing every simulator's judge tests
// repeat.
//
//	var env *pcscdtest.PCSCD
//
//	func TestMain(m *testing.M) {
//		pcscdtest.Main(m, pcscdtest.Options{Entries: 4}, func(p *pcscdtest.PCSCD) { env = p })
//	}
//
//	func TestJudge(t *testing.T) {
//		card := mysim.New(...)
//		simkittest.Plug(t, env, 0, card) // reader 0 shows the card until the test ends
//		// run opensc-tool, pkcs11-tool, gpg ... against reader 0
//	}
package simkittest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
)

// Plug inserts card into reader of the private pcscd env until the test
// ends or pull is called, and waits until PC/SC clients see it (and, on
// pull, until they see the reader empty). The vpcd exchanges go to the
// test log at debug level (headers and lengths only). A nil env skips the
// test, saying how the environment disabled pcscd.
//
// Seeing the card is asked of opensc-tool (OpenSC), the judge most
// simulators' tests use; it must be installed.
func Plug(t testing.TB, env *pcscdtest.PCSCD, reader int, card vpcd.Card) (pull func()) {
	t.Helper()
	if env == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	if _, err := exec.LookPath("opensc-tool"); err != nil {
		t.Fatalf("opensc-tool not installed (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv := vpcd.Server{Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		srv.Plug(ctx, env.CardAddr(reader), card)
	}()
	atr := hexColons(card.ATR())
	var once sync.Once
	pull = func() {
		once.Do(func() {
			cancel()
			<-done
			waitATR(t, reader, atr, false)
		})
	}
	t.Cleanup(pull)
	waitATR(t, reader, atr, true)
	return pull
}

func hexColons(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}

// waitATR waits until opensc-tool sees the card of atr in reader (or no
// card), for at most 10 seconds.
func waitATR(t testing.TB, reader int, atr string, present bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var out []byte
	for time.Now().Before(deadline) {
		var err error
		out, err = exec.Command("opensc-tool", "-r", strconv.Itoa(reader), "-a").CombinedOutput()
		if got := err == nil && bytes.Contains(out, []byte(atr)); got == present {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("reader %d: card present=%v not seen within 10 s; opensc-tool says:\n%s", reader, present, out)
}

type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }
