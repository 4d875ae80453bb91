package pcscdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/pscs/pscs/cards/pcsc"
)

var (
	pcOnce sync.Once
	pc     *pcsc.Context
	pcErr  error
)

// Context returns the test binary's one cards/pcsc context on the private
// pcscd (the environment [Main] sets points every context there), opened
// at the first call and kept until the process ends: a context per test
// would cost pcscd a client each. It skips t when there is no private
// pcscd.
func (p *PCSCD) Context(t testing.TB) *pcsc.Context {
	t.Helper()
	if p == nil {
		t.Skip("no private pcscd (" + SkipEnv + "=1)")
	}
	c, err := context0()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func context0() (*pcsc.Context, error) {
	pcOnce.Do(func() { pc, pcErr = pcsc.Open() })
	return pc, pcErr
}

// events reports pcscd's event counter of reader (see pcsc.Reader.Events)
// and whether it holds a card, as the process's cards/pcsc context sees
// it. ok is false when that context cannot tell: it talks to another
// pcscd (SetEnv was not called for p: libpcsclite reads
// PCSCLITE_CSOCK_NAME once per process), or cards/pcsc was built without
// cgo.
func (p *PCSCD) events(ctx context.Context, reader int) (n uint16, present, ok bool, err error) {
	if os.Getenv("PCSCLITE_CSOCK_NAME") != p.Socket {
		return 0, false, false, nil
	}
	c, err := context0()
	if errors.Is(err, errors.ErrUnsupported) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, true, err
	}
	rs, err := c.Readers(ctx)
	if err != nil {
		return 0, false, true, err
	}
	for _, r := range rs {
		if r.Name == p.Readers[reader] {
			return r.Events, r.Present, true, nil
		}
	}
	return 0, false, true, fmt.Errorf("pcscdtest: reader %q not listed", p.Readers[reader])
}

// ContextProbe is the [Probe] that asks c, an in-process cards/pcsc
// context, for reader's state: faster than [PCSCD.OpenSC], and what the
// code under test sees.
func (p *PCSCD) ContextProbe(c *pcsc.Context) Probe {
	return func(ctx context.Context, reader int) ([]byte, error) {
		rs, err := c.Readers(ctx)
		for _, r := range rs {
			if r.Name == p.Readers[reader] && r.Present {
				return r.ATR, nil
			}
		}
		return nil, err
	}
}
