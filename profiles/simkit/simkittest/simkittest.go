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
	"testing"

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
// simulators' tests use; it must be installed. Plug is
// [pcscdtest.PCSCD.Plug] with its default options.
func Plug(t testing.TB, env *pcscdtest.PCSCD, reader int, card vpcd.Card) (pull func()) {
	t.Helper()
	return env.Plug(t, reader, card, pcscdtest.PlugOptions{})
}
