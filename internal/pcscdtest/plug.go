package pcscdtest

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
)

// Probe reports the ATR of the card PC/SC clients see in reader (an index
// into [PCSCD.Readers]), or nil when the reader is empty.
type Probe func(ctx context.Context, reader int) (atr []byte, err error)

// OpenSC is the [Probe] that asks opensc-tool (OpenSC), as the judges of
// the simulators' tests do: a separate process, so that it sees the card
// as any PC/SC client does.
func (p *PCSCD) OpenSC(ctx context.Context, reader int) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "opensc-tool", "-r", strconv.Itoa(reader), "-a")
	cmd.Env = append(cmd.Environ(), p.Env())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, nil // no card (or no reader yet): opensc-tool exits 1
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if b, ok := parseHexColons(line); ok && len(b) >= 2 {
			return b, nil
		}
	}
	return nil, nil
}

func parseHexColons(s string) ([]byte, bool) {
	var out []byte
	for _, part := range strings.Split(s, ":") {
		if len(part) != 2 {
			return nil, false
		}
		v, err := strconv.ParseUint(part, 16, 8)
		if err != nil {
			return nil, false
		}
		out = append(out, byte(v))
	}
	return out, true
}

// PlugOptions configure [PCSCD.Plug].
type PlugOptions struct {
	// Probe tells when PC/SC clients see the card; nil means [PCSCD.OpenSC]
	// (opensc-tool must be installed). Tests with an in-process
	// cards/pcsc context pass a Probe on its Readers, which is faster.
	Probe Probe
	// Once serves the card for one vpcd connection only (vpcd.Serve): a
	// restart of pcscd pulls it. The default keeps it inserted across
	// restarts (vpcd.Plug).
	Once bool
	// Logger receives the vpcd exchanges (headers and lengths only); nil
	// means the test log at debug level.
	Logger *slog.Logger
	// Timeout bounds each wait; default 10 s.
	Timeout time.Duration
}

// Plug inserts card into reader (an index into Readers) until the test
// ends or pull is called, and returns once PC/SC clients see it; pull
// returns once they see the reader empty, so that the next card plugged in
// the same reader is not mistaken for this one, and once pcscd's reader
// thread has seen it empty too, so that the next card is seen at all.
// A nil p skips the test: [Main] ran without pcscd ([SkipEnv]).
//
// The second condition is pcscd's, not the probe's: when an exchange or a
// reset finds the card gone, pcscd (1.9.9) marks the reader empty for its
// clients at once, but its reader thread believes the card in until its
// next poll (every 400 ms, later under load) finds the vpcd slot empty. A
// card plugged before that poll is taken by that thread for the card it
// knew: no insertion is recorded, and the reader stays empty for every
// client until that card is pulled again. pull therefore waits, after the
// probe shows the reader empty, until pcscd's event counter of the reader
// (see cards/pcsc.Reader.Events: the reader thread alone moves it) differs
// from its value while the card was in. It can only when the process's
// cards/pcsc context talks to p (Main, or SetEnv before any PC/SC call)
// and cgo is on; otherwise pull cannot tell, and a card plugged again at
// once into the same reader may go unseen.
func (p *PCSCD) Plug(t testing.TB, reader int, card vpcd.Card, opts PlugOptions) (pull func()) {
	t.Helper()
	if p == nil {
		t.Skip("no private pcscd (" + SkipEnv + "=1)")
	}
	if opts.Probe == nil {
		if _, err := exec.LookPath("opensc-tool"); err != nil {
			t.Fatalf("pcscdtest: opensc-tool not installed (make deps installs it): %v", err)
		}
		opts.Probe = p.OpenSC
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		srv := vpcd.Server{Logger: log}
		if opts.Once {
			done <- srv.Serve(ctx, p.CardAddr(reader), card)
		} else {
			done <- srv.Plug(ctx, p.CardAddr(reader), card)
		}
	}()
	atr := card.ATR()
	var once sync.Once
	var in uint16 // pcscd's event counter of the reader with the card in
	pull = func() {
		once.Do(func() {
			// The counter may have moved since Plug (the card reset and
			// reinserted by pcscd): take it again while the card is in.
			if n, present, ok, err := p.events(context.Background(), reader); ok && err == nil && present {
				in = n
			}
			cancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Errorf("pcscdtest: vpcd of reader %d: %v", reader, err)
			}
			p.WaitCard(t, reader, nil, opts)
			if err := p.awaitNoticed(reader, in, opts); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(pull)
	p.WaitCard(t, reader, atr, opts)
	if n, _, ok, err := p.events(context.Background(), reader); ok && err == nil {
		in = n
	}
	return pull
}

// awaitNoticed waits until pcscd's reader thread has seen reader empty: its
// event counter differs from in, its value with the card in (see Plug).
func (p *PCSCD) awaitNoticed(reader int, in uint16, opts PlugOptions) error {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n, present, ok, err := p.events(ctx, reader)
		if !ok || (err == nil && !present && n != in) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pcscdtest: reader %d: pcscd's reader thread did not see the card go within %v "+
				"(event counter %d, present %v, %v; %d with the card in)", reader, timeout, n, present, err, in)
		case <-tick.C:
		}
	}
}

// WaitCard waits until opts.Probe sees the card of atr in reader, or an
// empty reader when atr is nil, and fails t after opts.Timeout.
func (p *PCSCD) WaitCard(t testing.TB, reader int, atr []byte, opts PlugOptions) {
	t.Helper()
	if err := p.AwaitCard(context.Background(), reader, atr, opts); err != nil {
		t.Fatal(err)
	}
}

// AwaitCard is WaitCard returning an error, for a test that has more to
// say when the card does not come (the log of the process that plugs it).
func (p *PCSCD) AwaitCard(ctx context.Context, reader int, atr []byte, opts PlugOptions) error {
	probe := opts.Probe
	if probe == nil {
		probe = p.OpenSC
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		last, err := probe(ctx, reader)
		if err == nil && ((atr == nil && last == nil) || (atr != nil && bytes.Equal(last, atr))) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pcscdtest: reader %d: card %X not seen within %v (last seen %X, %v)", reader, atr, timeout, last, err)
		case <-tick.C:
		}
	}
}

type testLog struct{ t testing.TB }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
