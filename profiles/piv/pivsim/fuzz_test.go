package pivsim_test

// A rogue host sends arbitrary commands once it holds the management key:
// the card must answer each with a status word, never panic, and stay
// consistent (every slot's metadata parses, every certificate accessor
// answers).

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// fuzzCard is a card that is quick to make (no RSA key at start) and is
// authenticated with the default management key.
func fuzzCard(t testing.TB) *pivsim.Card {
	c, err := pivsim.New(pivsim.Config{Seed: []byte("fuzz"), NoAttestationKey: true,
		Slots: map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256}}})
	if err != nil {
		t.Fatal(err)
	}
	if st := authMutual(t, c, pivsim.TDES, defaultMgm); st != "9000" {
		t.Fatalf("management key: %s", st)
	}
	return c
}

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

func join(cmds ...[]byte) []byte {
	var out []byte
	for _, c := range cmds {
		out = binary.BigEndian.AppendUint16(out, uint16(len(c)))
		out = append(out, c...)
	}
	return out
}

// managementSeeds are conversations yubico-piv-tool and ykman hold after
// authenticating: generate, import, write objects, change the key.
func managementSeeds() map[string][]byte {
	ec := tlv(0x06, hx(strings.Repeat("11", 32)))
	cert := tlv(0x53, append(append(tlv(0x70, hx("3003020101")), tlv(0x71, []byte{0})...), tlv(0xFE, nil)...))
	return map[string][]byte{
		"generate": join(
			short(0x47, 0x00, 0x9C, tlv(0xAC, append(tlv(0x80, []byte{0x11}), tlv(0xAA, []byte{1})...))),
			hx("00 F7 00 9C 00"),
			hx("00 20 00 80 08 31 32 33 34 35 36 FF FF"),
			append(hx("00 87 11 9C 26 7C 24 82 00 81 20"), make([]byte, 32)...)),
		"import": join(short(0xFE, 0x11, 0x9E, append(ec, tlv(0xAB, []byte{2})...)), hx("00 F7 00 9E 00")),
		"put data": join(
			short(0xDB, 0x3F, 0xFF, append(tlv(0x5C, hx("5FC105")), cert...)),
			hx("00 CB 3F FF 05 5C 03 5F C1 05 00"),
			short(0xDB, 0x3F, 0xFF, append(tlv(0x5C, hx("5FC105")), tlv(0x53, nil)...))),
		"chained put data": join(
			append(hx("10 DB 3F FF 08"), append(tlv(0x5C, hx("5FC10A")), 0x53, 0x04)...),
			append(hx("00 DB 3F FF 04"), hx("70 00 FE 00")...)),
		"set management key": join(
			short(0xFF, 0xFF, 0xFE, append([]byte{0x0A, 0x9B, 24}, defaultMgm...)),
			hx("00 F7 00 9B 00"),
			short(0x87, 0x0A, 0x9B, tlv(0x7C, tlv(0x80, nil)))),
		"pin retries and reset": join(hx("00 20 00 80 08 31 32 33 34 35 36 FF FF"), hx("00 FA 02 02"), hx("00 FB 00 00")),
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzManagement from managementSeeds")

// TestManagementFuzzSeeds rewrites the committed seeds with -write-seeds;
// otherwise it checks they are there.
func TestManagementFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzManagement")
	if !*writeSeeds {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) < len(managementSeeds()) {
			t.Fatalf("seeds missing in %s (go test ./profiles/piv/pivsim -run TestManagementFuzzSeeds -write-seeds): %v", dir, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for name, in := range managementSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, strings.ReplaceAll(name, " ", "-")), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzManagement(f *testing.F) {
	for _, in := range managementSeeds() {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzCard(t)
		for _, cmd := range commands(in) {
			rsp, err := c.Transmit(t.Context(), cmd)
			if err != nil || len(rsp) < 2 {
				t.Fatalf("command %X: response %X, error %v", cmd, rsp, err)
			}
		}
		c.Reset()
		for ref := 0x80; ref <= 0xFF; ref++ {
			rsp, _ := c.Transmit(t.Context(), []byte{0x00, 0xF7, 0x00, byte(ref), 0x00})
			data, st := rsp[:len(rsp)-2], rsp[len(rsp)-2:]
			if st[0] == 0x61 {
				continue // long RSA metadata: its layout is checked elsewhere
			}
			if st[0] == 0x90 {
				if _, err := apdu.ParseTLVs(data); err != nil {
					t.Fatalf("metadata %02X after %X: %v", ref, in, err)
				}
			}
			c.Certificate(pivsim.Slot(ref))
			c.PublicKey(pivsim.Slot(ref))
		}
	})
}
