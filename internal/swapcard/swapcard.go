// Package swapcard is a card whose contents the test changes under the
// programs that use it: what pscsd sees when another program changes a
// card it serves (a new key generated in a slot, a certificate imported, a
// key deleted), made with simulated PIV cards.
//
// A [Card] answers as the pivsim.Card it holds; [Card.Swap] puts another in
// its place, which a test makes with the same serial and PIN and the
// changed slots (the same Config.Seed gives the same keys in the slots
// whose algorithm stays). Plugged into a pcscd through cards/vpcd, the
// reader sees no change: only a reset, which the test makes itself (as PIV
// tools do when they disconnect), or none.
//
// Until the simulator can be provisioned as a card is (generate, import),
// this is how tests change a card; the change itself is the same for the
// program under test.
package swapcard

import (
	"context"
	"sync"

	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// Card is a card whose contents can be exchanged. It is safe for
// concurrent use.
type Card struct {
	mu  sync.Mutex
	sim *pivsim.Card
}

// New returns a Card that answers as sim.
func New(sim *pivsim.Card) *Card { return &Card{sim: sim} }

// Swap makes the card answer as sim from its next command, without a reset:
// the volatile state (the selected application, a verified PIN) is sim's.
func (c *Card) Swap(sim *pivsim.Card) {
	c.mu.Lock()
	c.sim = sim
	c.mu.Unlock()
}

// Sim returns the simulated card the Card answers as now.
func (c *Card) Sim() *pivsim.Card {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sim
}

// ATR returns the card's answer to reset.
func (c *Card) ATR() []byte { return c.Sim().ATR() }

// Transmit answers one command APDU.
func (c *Card) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	return c.Sim().Transmit(ctx, cmd)
}

// Reset resets the card's volatile state.
func (c *Card) Reset() { c.Sim().Reset() }
