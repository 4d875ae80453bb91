package openpgp

// Fuzz targets of the driver's parsers, and the rogue-card harness on the
// whole driver. Seeds: testdata/fuzz/<Fuzz name>, from the simulator
// (go test -run TestWriteFuzzSeeds -write-seeds) and by hand.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/profiletest"
	"github.com/pscs/pscs/profiles/simkit"
)

var rogueEnv = profiletest.RogueEnv{
	Profile: Profile{},
	KeyIDs:  []string{"sig", "dec", "aut"},
	Exercise: func(op func(string, func(context.Context) error), card profiles.Card) {
		d := card.(profiles.Decrypter)
		op("Decrypt", func(ctx context.Context) error { _, err := d.Decrypt(ctx, "dec", make([]byte, 256), nil); return err })
		op("DeriveECDH", func(ctx context.Context) error { _, err := d.DeriveECDH(ctx, "dec", make([]byte, 65)); return err })
	},
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz seeds from the simulator")

var seedLayouts = []map[pgpsim.Key]simkit.Alg{
	nil,
	{pgpsim.KeySign: simkit.ECCP256, pgpsim.KeyDecrypt: simkit.ECCP384, pgpsim.KeyAuth: simkit.Ed25519},
	{pgpsim.KeySign: simkit.Ed25519, pgpsim.KeyDecrypt: simkit.X25519},
}

// TestWriteFuzzSeeds rewrites the seeds recorded from the simulator with
// -write-seeds; otherwise it checks that they are there.
func TestWriteFuzzSeeds(t *testing.T) {
	for _, name := range []string{"FuzzDriver", "FuzzAppData", "FuzzPWStatus"} {
		dir := filepath.Join("testdata", "fuzz", name)
		if !*writeSeeds {
			if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
				t.Errorf("no seeds in %s (-write-seeds): %v", dir, err)
			}
			continue
		}
		os.MkdirAll(dir, 0o755)
		for i, layout := range seedLayouts {
			card, err := pgpsim.New(pgpsim.Config{Seed: []byte{byte(i)}, Keys: layout})
			if err != nil {
				t.Fatal(err)
			}
			var seed []byte
			switch name {
			case "FuzzDriver":
				seed = profiletest.RecordRogueSeed(rogueEnv, card)
			case "FuzzAppData", "FuzzPWStatus":
				card.Transmit(t.Context(), append([]byte{0, 0xA4, 4, 0, 6}, AID...))
				tag := map[string]byte{"FuzzAppData": 0x6E, "FuzzPWStatus": 0xC4}[name]
				rsp, _ := card.Transmit(t.Context(), []byte{0, 0xCA, 0, tag, 0, 0, 0})
				seed = fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", rsp[:len(rsp)-2])
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("sim-%d", i)), seed, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzDriver: a rogue card leaves the driver bounded in time and memory,
// with errors and no panic (profiletest.FuzzRogue).
func FuzzDriver(f *testing.F) { profiletest.FuzzRogue(f, rogueEnv) }

// FuzzAppData: any application related data gives a card with a
// 16-byte OpenPGP AID and PINs of sane lengths, or an error.
func FuzzAppData(f *testing.F) {
	f.Add([]byte{0x6E, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &Card{ne: 256}
		_, err := c.parseAppData(b)
		if err != nil {
			return
		}
		if len(c.aid) != 16 || len(c.attrs) != 3 {
			t.Fatalf("AID %X, %d attributes", c.aid, len(c.attrs))
		}
		for _, p := range c.PINs() {
			if p.Min < 6 || p.Max < p.Min || p.Max > 127 {
				t.Fatalf("PIN %+v", p)
			}
		}
		for _, a := range c.attrs {
			keyType(a)
		}
		c.ne = max(c.ne, 256)
		if c.ne > apdu.MaxExtendedNe {
			t.Fatalf("Ne %d", c.ne)
		}
	})
}

// pwCard answers SELECT-less GET DATA C4 with fixed bytes and an empty
// VERIFY with a status word.
type pwCard struct{ c4 []byte }

func (p pwCard) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	if cmd[1] == 0xCA {
		return append(append([]byte(nil), p.c4...), 0x90, 0x00), nil
	}
	return []byte{0x63, 0xC2}, nil
}

// FuzzPWStatus: PINStatus reads any PW status bytes as a count from 0
// to 255 and blocked only at 0, or fails.
func FuzzPWStatus(f *testing.F) {
	f.Add([]byte{0x01, 0x7F, 0x7F, 0x7F, 0x03, 0x00, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &Card{conn: apdu.Conn{T: pwCard{b}}, ne: 256}
		for _, id := range []string{PINSign, PIN, PINAdmin} {
			st, err := c.PINStatus(context.Background(), id)
			if err != nil {
				continue
			}
			if st.Verified || st.Retries < 0 || st.Retries > 255 || st.Blocked != (st.Retries == 0) {
				t.Fatalf("%s: %+v from %X", id, st, b)
			}
		}
	})
}
