package piv

// A rogue card returns arbitrary bytes: the driver must answer with an
// error, never a panic, a hang or unbounded memory (profiletest.Rogue).

import (
	"context"
	"flag"
	"testing"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/profiletest"
)

// rogueEnv is the driver under the shared rogue-card harness.
var rogueEnv = profiletest.RogueEnv{
	Profile: Profile{},
	KeyIDs:  []string{"9a", "9c", "9d", "9e"},
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzDriver seeds from the simulator")

// TestWriteFuzzSeeds rewrites the driver's fuzz seeds (conversations with
// the simulator) with -write-seeds; otherwise it checks that the committed
// seeds are there.
func TestWriteFuzzSeeds(t *testing.T) {
	var cards []profiles.Transmitter
	for i, slots := range []map[pivsim.Slot]pivsim.SlotConfig{nil, {pivsim.SlotSignature: {Algorithm: pivsim.ECCP384}}} {
		card, err := pivsim.New(pivsim.Config{Seed: []byte{byte(i)}, Slots: slots})
		if err != nil {
			t.Fatal(err)
		}
		cards = append(cards, card)
	}
	profiletest.RogueSeeds(t, "FuzzDriver", *writeSeeds, rogueEnv, cards...)
}

// FuzzDriver: a rogue card (profiletest.FuzzRogue) leaves the driver
// bounded in time and memory, with errors and no panic.
func FuzzDriver(f *testing.F) { profiletest.FuzzRogue(f, rogueEnv) }

func FuzzParseCertObject(f *testing.F) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("seed")})
	if err != nil {
		f.Fatal(err)
	}
	rsp, _ := card.Transmit(context.Background(), []byte{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00, 0x00, 0x00})
	if len(rsp) > 6 {
		f.Add(rsp[4 : len(rsp)-2]) // the value of 53
	}
	f.Add([]byte{0x70, 0x00, 0x71, 0x01, 0x01, 0xFE, 0x00})
	f.Fuzz(func(t *testing.T, v []byte) {
		cert, err := parseCertObject(v)
		if (cert == nil) == (err == nil) {
			t.Fatalf("parseCertObject: cert %v, err %v", cert != nil, err)
		}
	})
}

func FuzzParseMetadata(f *testing.F) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("seed")})
	if err != nil {
		f.Fatal(err)
	}
	for _, slot := range []byte{0x9A, 0x9C, 0x9E, 0x80} {
		rsp, _ := card.Transmit(context.Background(), []byte{0x00, 0xF7, 0x00, slot, 0x00})
		if len(rsp) > 2 {
			f.Add(rsp[:len(rsp)-2])
		}
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		alg, _, pub, err := parseMetadata(v)
		if err == nil && pub == nil {
			t.Fatalf("parseMetadata: no error and no key (algorithm %q)", alg)
		}
		if err != nil && (pub != nil || alg != "") {
			t.Fatalf("parseMetadata: error %v with algorithm %q, key %T", err, alg, pub)
		}
	})
}
