package esteid

// Every parser of what a card answers, and the whole driver on a rogue
// card (profiletest.FuzzRogue): errors, never a panic, a hang or
// unbounded memory.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"flag"
	"testing"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
	"github.com/pscs/pscs/profiles/profiletest"
)

// rogueEnv is the driver under the shared rogue-card harness, with key
// agreement exercised too.
var rogueEnv = profiletest.RogueEnv{
	Profile: Profile{},
	KeyIDs:  []string{"81", "9f"},
	PIN:     []byte("12345"),
	Exercise: func(op func(string, func(context.Context) error), card profiles.Card) {
		peer := bytes.Repeat([]byte{0}, 97)
		sim, _ := eidsim.New(eidsim.Config{Seed: []byte("peer")})
		if pub, err := sim.PublicKey(eidsim.KeySignature).ECDH(); err == nil {
			peer = pub.Bytes()
		}
		op("DeriveECDH", func(ctx context.Context) error {
			_, err := card.(profiles.Decrypter).DeriveECDH(ctx, "81", peer)
			return err
		})
		for _, id := range []string{PIN1, PIN2} {
			op("PINStatus "+id, func(ctx context.Context) error { _, err := card.PINStatus(ctx, id); return err })
		}
	},
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzDriver seeds from the simulator")

// TestWriteFuzzSeeds rewrites the driver's fuzz seeds (conversations with
// the simulator) with -write-seeds; otherwise it checks they are there.
func TestWriteFuzzSeeds(t *testing.T) {
	var cards []profiles.Transmitter
	for i := range 2 {
		card, err := eidsim.New(eidsim.Config{Seed: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		cards = append(cards, card)
	}
	profiletest.RogueSeeds(t, "FuzzDriver", *writeSeeds, rogueEnv, cards...)
}

// FuzzDriver: a rogue card leaves the driver bounded, with errors.
func FuzzDriver(f *testing.F) { profiletest.FuzzRogue(f, rogueEnv) }

// simAnswer is the data of the simulator's answer to cmd.
func simAnswer(f *testing.F, cmds ...[]byte) []byte {
	card, err := eidsim.New(eidsim.Config{Seed: []byte("seed")})
	if err != nil {
		f.Fatal(err)
	}
	var rsp []byte
	for _, cmd := range cmds {
		if rsp, err = card.Transmit(context.Background(), cmd); err != nil || len(rsp) < 2 {
			f.Fatalf("%X: %X %v", cmd, rsp, err)
		}
	}
	return rsp[:len(rsp)-2]
}

func FuzzParseFCPSize(f *testing.F) {
	f.Add(simAnswer(f, []byte{0x00, 0xA4, 0x09, 0x04, 0x04, 0xAD, 0xF1, 0x34, 0x01, 0x00}))
	f.Add([]byte{0x6F, 0x04, 0x81, 0x02, 0x07, 0xD0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseFCPSize(b)
		if (err == nil) != (n > 0 && n <= maxFile) {
			t.Fatalf("size %d, error %v", n, err)
		}
	})
}

func FuzzParseDocumentNumber(f *testing.F) {
	f.Add(simAnswer(f, []byte{0x00, 0xA4, 0x09, 0x0C, 0x02, 0xD0, 0x03}, []byte{0x00, 0xB0, 0x00, 0x00, 0x00}))
	f.Add([]byte{0x04, 0x02, 'A', 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := parseDocumentNumber(b)
		if (err == nil) == (doc == "") || !bytes.Contains(b, []byte(doc)) {
			t.Fatalf("document number %q, error %v", doc, err)
		}
	})
}

func FuzzParsePINInfo(f *testing.F) {
	for _, ref := range []byte{0x01, 0x02} {
		f.Add(simAnswer(f, []byte{0x00, 0xCB, 0x3F, 0xFF, 0x0A, 0x4D, 0x08, 0x70, 0x06, 0xBF, 0x81, ref, 0x02, 0xA0, 0x80, 0x00}), ref)
	}
	f.Fuzz(func(t *testing.T, b []byte, ref byte) {
		n, err := parsePINInfo(b, ref)
		if err == nil && (n < 0 || n > 15) || err != nil && n != 0 {
			t.Fatalf("%d tries, error %v", n, err)
		}
	})
}

func FuzzParseCertificate(f *testing.F) {
	card, err := eidsim.New(eidsim.Config{Seed: []byte("seed")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(card.Certificate(eidsim.KeySignature).Raw)
	f.Add(append(bytes.Clone(card.Certificate(eidsim.KeyAuthentication).Raw), 0, 0, 0xFF))
	f.Add(card.CACertificate().Raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		cert, err := parseCertificate(b)
		if (cert == nil) == (err == nil) {
			t.Fatalf("certificate %v, error %v", cert != nil, err)
		}
		if cert != nil {
			if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok {
				t.Fatalf("accepted a %T key", cert.PublicKey)
			}
		}
	})
}
