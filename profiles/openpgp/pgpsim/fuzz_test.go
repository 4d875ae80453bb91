package pgpsim_test

// A rogue host sends arbitrary commands once PW1 and PW3 are verified: the
// card answers each with a status word, never panics, and stays
// consistent (after a reset the application related data parse, C4 has
// its seven bytes, every key's public key can be read).

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
)

func commands(in []byte) [][]byte {
	var out [][]byte
	for len(in) >= 2 {
		n := min(int(binary.BigEndian.Uint16(in)), len(in)-2)
		out = append(out, in[2:2+n])
		in = in[2+n:]
	}
	return out
}

func join(cmds ...[]byte) []byte {
	var out []byte
	for _, c := range cmds {
		out = binary.BigEndian.AppendUint16(out, uint16(len(c)))
		out = append(out, c...)
	}
	return out
}

// commandSeeds are conversations GnuPG, OpenSC and go-openpgp-card hold
// with a card (from the transcripts' command forms).
func commandSeeds() map[string][]byte {
	return map[string][]byte{
		"import p256": join(hx("00 DA 00 C1 09 13 2A 86 48 CE 3D 03 01 07"),
			hx("00 DB 3F FF 2F 4D 2D B6 03 84 01 01 7F 48 02 92 20 5F 48 20"+strings.Repeat(" AB", 32)),
			hx("00 2A 9E 9A 20"+strings.Repeat(" 11", 32)+" 00")),
		"import x25519 chained": join(hx("00 DA 00 C2 0B 16 2B 06 01 04 01 97 55 01 05 01"),
			hx("10 DB 3F FF 10 4D 2D B8 03 84 01 02 7F 48 02 92 20 5F 48 20"),
			hx("00 DB 3F FF 20"+strings.Repeat(" AB", 32)),
			hx("00 2A 80 86 27 A6 25 7F 49 22 86 20"+strings.Repeat(" 09", 32)+" 00")),
		"generate ed25519": join(hx("00 DA 00 C3 0A 16 2B 06 01 04 01 DA 47 0F 01"), hx("00 47 80 00 05 A4 03 84 01 03 00"),
			hx("00 88 00 00 05 01 02 03 04 05 00"), hx("00 DA 00 CE 04 65 63 D4 C4")),
		"data objects": join(hx("00 DA 00 5B 03 41 42 43"), hx("00 DA 5F 50 03 75 72 6C"), hx("00 DA 01 01 02 CA FE"),
			hx("00 CA 00 65 00"), hx("00 A5 02 04 07 06 60 04 5C 02 7F 21 00"), hx("00 DA 7F 21 03 30 01 00"), hx("00 CC 7F 21 00")),
		"pins and kdf": join(hx("00 24 00 81 0C 31 32 33 34 35 36 36 35 34 33 32 31"), hx("00 DA 00 D3 08 31 31 31 31 31 31 31 31"),
			hx("00 F2 00 00 03 05 05 05"), hx("00 DA 00 F9 03 81 01 00"), hx("00 2C 02 81 06 31 32 33 34 35 36")),
		"terminate": join(hx("00 E6 00 00"), hx("00 CA 00 6E 00"), hx("00 44 00 00"), hx("00 84 00 00 10")),
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzCommands from commandSeeds")

func TestCommandFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzCommands")
	if !*writeSeeds {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) < len(commandSeeds()) {
			t.Fatalf("seeds missing in %s (go test ./profiles/openpgp/pgpsim -run TestCommandFuzzSeeds -write-seeds): %v", dir, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for name, in := range commandSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, strings.ReplaceAll(name, " ", "-")), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzCommands(f *testing.F) {
	for _, in := range commandSeeds() {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := pgpsim.New(pgpsim.Config{Seed: []byte("fuzz"), Factory: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{selectPGP, verify81, verify82, verify83} {
			must(t, c, s, "9000")
		}
		for _, cmd := range commands(in) {
			if len(cmd) >= 4 && cmd[1] == 0x47 && cmd[2] == 0x80 {
				// RSA generation takes a second: keep the fuzzer fast.
				continue
			}
			rsp, err := c.Transmit(t.Context(), cmd)
			if err != nil || len(rsp) < 2 {
				t.Fatalf("command %X: response %X, error %v", cmd, rsp, err)
			}
		}
		c.Reset()
		if _, sw := send(t, c, hx(selectPGP)); sw == "6285" { // terminated
			must(t, c, "00 44 00 00", "9000")
		}
		must(t, c, selectPGP, "9000")
		ard := must(t, c, "00 CA 00 6E 00 00 00", "9000")
		tlvs, err := apdu.ParseTLVs(ard)
		if err != nil || len(tlvs) != 1 {
			t.Fatalf("6E after %X: %X %v", in, ard, err)
		}
		if st := must(t, c, "00 CA 00 C4 00", "9000"); len(st) != 7 {
			t.Fatalf("C4 %X", st)
		}
		for k := pgpsim.KeySign; k <= pgpsim.KeyAuth; k++ {
			c.PublicKey(k)
			c.KeyFingerprint(k)
		}
	})
}
