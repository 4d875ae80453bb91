package eidsim_test

// A rogue host sends arbitrary commands: the card must answer each with a
// status word, never panic, and keep its rules whatever came before: a
// signature only after a VERIFY of PIN2 (and never two on one), an
// authentication or key agreement only with PIN1 verified, a counter that moves only on the
// commands that compare its PIN, and files and keys that do not change.

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/esteid/eidsim"
)

// commands splits fuzz input into commands: a 2-byte big-endian length and
// that many bytes each.
func commands(in []byte) [][]byte {
	var out [][]byte
	for len(in) >= 2 {
		n := min(int(binary.BigEndian.Uint16(in)), len(in)-2)
		out = append(out, in[2:2+n])
		in = in[2+n:]
	}
	return out
}

func join(cmds ...string) []byte {
	var out []byte
	for _, c := range cmds {
		b := hx(c)
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

// cardSeeds are the conversations OpenSC and web-eid hold with the card,
// and some a rogue host would try.
func cardSeeds() map[string][]byte {
	h := strings.Repeat("5A", 48)
	return map[string][]byte{
		"opensc bind": join("00 A4 04 0C 10 "+mainAID, selMF, "00 A4 02 0C", selMF, "00 A4 02 0C 02 D0 03",
			"00 B0 00 00 0B", selMF, selADF1, "00 A4 02 0C 02 34 01", "00 B0 00 00 E9", "00 B0 00 E9 E9",
			"00 B0 01 D2 E9", "00 B0 02 BB E9", fmt.Sprintf(pinInfo, 1)),
		"opensc sign": join(selMF, selADF2, fmt.Sprintf(pinInfo, 5), verifyCmd(eidsim.PIN2, "12345"), selMF, selADF2,
			mseSign, "00 2A 9E 9A 30 "+h+" 60", "00 2A 9E 9A 30 "+h+" 60"),
		"opensc authenticate": join(verifyCmd(eidsim.PIN1, "1234"), selMF, selADF1, mseAuth, "00 88 00 00 30 "+h+" 60"),
		"web-eid sign": join("00 A4 04 0C 10 51 53 43 44 20 41 70 70 6C 69 63 61 74 69 6F 6E",
			"00 22 41 B6 06 80 01 54 84 01 9F", verifyCmd(eidsim.PIN2, "12345"), "00 2A 9E 9A 30 "+h+" 00"),
		"fcp and paths": join("00 A4 09 04 04 AD F1 34 01 00", "00 A4 08 00 04 AD F2 34 1F 00",
			"00 A4 04 00 0D E8 28 BD 08 0F F2 50 4F 54 20 41 57 50 00", "00 B0 00 00 00 00 00"),
		"unblock": join(selADF2, verifyCmd(eidsim.PIN2, "00000"), verifyCmd(eidsim.PIN2, "00000"),
			verifyCmd(eidsim.PIN2, "00000"), verifyCmd(eidsim.PUK, "12345678"), "00 2C 02 85 0C "+pinData("55555"),
			"00 24 00 01 18 "+pinData("1234")+pinData("4321")),
		"opensc derive": join(verifyCmd(eidsim.PIN1, "1234"), selMF, selADF1, "00 22 41 B8 09 80 04 FF 30 04 00 84 01 81",
			"00 2A 80 86 62 00 04"+strings.Repeat("11", 96)+" 00"),
		"get response": join(verifyCmd(eidsim.PIN1, "1234"), selADF1, mseAuth, "00 88 00 00 30 "+h+" 10",
			"00 C0 00 00 10", "00 C0 00 00 00", "00 C0 00 00 00"),
		"chained sign": join(selADF2, mseSign, verifyCmd(eidsim.PIN2, "12345"), "10 2A 9E 9A 10 "+h[:32],
			"00 2A 9E 9A 20 "+h[32:]+" 00", "00 2A 9E 9A 30 "+h),
		"malformed": join("00", "00 A4 04 00 FF 01", "FF FF FF FF", "00 CB 3F FF 04 4D 82 FF FF",
			"00 22 41 B6 04 80 83 FF FF", "00 B0 FF FF 00 00 00", ""),
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzCard from cardSeeds")

// TestFuzzSeeds rewrites the committed seeds with -write-seeds; otherwise
// it checks they are there.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzCard")
	if !*writeSeeds {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) < len(cardSeeds()) {
			t.Fatalf("seeds missing in %s (go test ./profiles/esteid/eidsim -run TestFuzzSeeds -write-seeds): %v", dir, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for name, in := range cardSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, strings.ReplaceAll(name, " ", "-")), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// selPath selects a path from the MF.
func selPath(path string) string { return fmt.Sprintf("00 A4 08 0C %02X %s", len(path)/2, path) }

var allPINs = []eidsim.PIN{eidsim.PIN1, eidsim.PIN2, eidsim.PUK}

func FuzzCard(f *testing.F) {
	for _, in := range cardSeeds() {
		f.Add(in)
	}
	card := newCard(f, eidsim.Config{Seed: []byte("fuzz")})
	files := map[string][]byte{}
	for _, path := range []string{"D003", "ADF13401", "ADF2341F", "50005001"} {
		card.Reset()
		want(f, card, selPath(path), "9000")
		data, _ := tx(f, card, hx("00 B0 00 00 00 00 00"))
		files[path] = data
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := newCard(t, eidsim.Config{Seed: []byte("fuzz")})
		for _, raw := range commands(in) {
			before := map[eidsim.PIN]int{}
			for _, p := range allPINs {
				before[p] = c.Retries(p)
			}
			pin1, pin2 := c.Verified(eidsim.PIN1), c.Verified(eidsim.PIN2)
			rsp, err := c.Transmit(t.Context(), raw)
			if err != nil || len(rsp) < 2 {
				t.Fatalf("command %X: response %X, error %v", raw, rsp, err)
			}
			sw1 := rsp[len(rsp)-2]
			cmd, perr := apdu.ParseCommand(raw)
			whole := perr == nil && cmd.CLA == 0x00 // not a chained block
			ok := sw1 == 0x90 || sw1 == 0x61
			if whole && ok && cmd.INS == 0x2A && cmd.P1 == 0x9E {
				if !pin2 {
					t.Fatalf("PSO:CDS %X answered %X without PIN2 verified", raw, rsp)
				}
				if c.Verified(eidsim.PIN2) {
					t.Fatalf("PIN2 still verified after a signature")
				}
			}
			if whole && ok && (cmd.INS == 0x88 || (cmd.INS == 0x2A && cmd.P1 == 0x80)) && !pin1 {
				t.Fatalf("%X answered %X without PIN1 verified", raw, rsp)
			}
			changed := 0
			for _, p := range allPINs {
				n := c.Retries(p)
				if n < 0 || n > 3 {
					t.Fatalf("counter %02X = %d", byte(p), n)
				}
				if n != before[p] {
					changed++
					if n != 3 && n != before[p]-1 {
						t.Fatalf("counter %02X went from %d to %d on %X", byte(p), before[p], n, raw)
					}
				}
			}
			// RESET RETRY COUNTER with the PUK in it moves two: the PUK's
			// and the PIN's.
			compares := whole && (cmd.INS == 0x20 || cmd.INS == 0x24 || cmd.INS == 0x2C)
			if (changed > 1 && !(whole && cmd.INS == 0x2C)) || changed > 2 || (changed > 0 && !compares) {
				t.Fatalf("%X changed %d counters", raw, changed)
			}
		}
		// Files and keys are as they were.
		for path, data := range files {
			c.Reset()
			want(t, c, selPath(path), "9000")
			if got, _ := tx(t, c, hx("00 B0 00 00 00 00 00")); !bytes.Equal(got, data) {
				t.Fatalf("file %s changed after %X", path, in)
			}
		}
		for _, k := range []eidsim.Key{eidsim.KeyAuthentication, eidsim.KeySignature} {
			if !c.PublicKey(k).Equal(card.PublicKey(k)) {
				t.Fatalf("key %02X changed", byte(k))
			}
		}
	})
}
