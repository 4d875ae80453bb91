package memcard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/profiletest"
)

// TestContract runs the profiles conformance suite on in-memory cards:
// the OpenPGP-like Curve25519 card (Ed25519 signing the message, an
// X25519 key that does not sign), and one with an ECDSA key of every PIN
// policy.
func TestContract(t *testing.T) {
	for name, mk := range map[string]func() *Card{
		"curve25519": func() *Card { return OpenPGPLike("contract") },
		"ecdsa": func() *Card {
			once, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			always, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return New(Config{Keys: []Key{
				{ID: "once", Label: "P-256", Private: once},
				{ID: "always", Label: "P-384", Private: always, PINPolicy: profiles.PINAlways},
			}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			var cur *Card
			profiletest.Run(t, profiletest.Env{
				Profile: profile{func() *Card { return cur }},
				New: func(t *testing.T) profiles.Transmitter {
					cur = mk()
					return cur
				},
				PIN: []byte(DefaultPIN),
			})
		})
	}
}
