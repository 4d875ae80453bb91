package pcscdtest

import (
	"context"
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
	pcOnce.Do(func() { pc, pcErr = pcsc.Open() })
	if pcErr != nil {
		t.Fatal(pcErr)
	}
	return pc
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
