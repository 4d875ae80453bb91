package simkit_test

// A rogue host sends arbitrary byte strings: the Card answers each with a
// status word, never more data than the command's Ne allows, and a long
// answer fetched with GET RESPONSE is the applet's answer, whole.

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

func join(cmds ...[]byte) []byte {
	var out []byte
	for _, c := range cmds {
		out = binary.BigEndian.AppendUint16(out, uint16(len(c)))
		out = append(out, c...)
	}
	return out
}

func cardSeeds() map[string][]byte {
	return map[string][]byte{
		"echo":            join(hx("00 01 00 00 02 AA BB 00")),
		"long answer":     join(hx("00 02 02 58 00"), hx("00 C0 00 00 00"), hx("00 C0 00 00 58")),
		"chain":           join(hx("10 01 00 00 02 AA BB"), hx("10 01 00 00 01 CC"), hx("00 01 00 00 01 DD 00")),
		"broken chain":    join(hx("10 01 00 00 02 AA BB"), hx("00 01 00 01 01 DD 00"), hx("00 C0 00 00")),
		"extended":        join(hx("00 01 00 00 00 00 03 01 02 03 00 00"), hx("00 02 10 00 00 00 00")),
		"pin":             join(hx("00 20 00 00 02 31 32"), hx("00 20 00 00"), hx("00 20 00 00 06 31 32 33 34 35 36")),
		"malformed":       join(hx("00"), hx("00 01 00 00 05 01"), hx("FF FF FF FF"), nil),
		"get response 61": join(hx("00 02 01 2C 10"), hx("00 C0 00 00 10"), hx("00 C0 00 00 00 01 00")),
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
			t.Fatalf("seeds missing in %s (go test ./profiles/simkit -run TestFuzzSeeds -write-seeds): %v", dir, err)
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

func FuzzCard(f *testing.F) {
	for _, in := range cardSeeds() {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e, c := newEcho()
		var want, got []byte // the applet's last long answer and what was fetched of it
		for _, raw := range commands(in) {
			e.last = apdu.Command{}
			rsp, err := c.Transmit(t.Context(), raw)
			if err != nil || len(rsp) < 2 {
				t.Fatalf("command %X: response %X, error %v", raw, rsp, err)
			}
			data, sw1 := rsp[:len(rsp)-2], rsp[len(rsp)-2]
			cmd, perr := apdu.ParseCommand(raw)
			limit := 256
			if perr == nil && cmd.Extended && cmd.Ne > 0 {
				limit = cmd.Ne
			} else if perr == nil && cmd.Ne > 0 {
				limit = min(cmd.Ne, 256)
			}
			if len(data) > limit {
				t.Fatalf("command %X: %d bytes of data, Ne allows %d", raw, len(data), limit)
			}
			if sw1 != 0x90 && sw1 != 0x61 && len(data) > 0 {
				t.Fatalf("command %X: data with status %X", raw, rsp[len(rsp)-2:])
			}
			switch {
			case e.last.INS == 0x01 || e.last.INS == 0x02:
				want = bytes.Clone(e.last.Data)
				if e.last.INS == 0x02 {
					want = make([]byte, int(e.last.P1)<<8|int(e.last.P2))
					for i := range want {
						want[i] = byte(i)
					}
				}
				got = bytes.Clone(data)
			case perr == nil && cmd.INS == 0xC0 && cmd.CLA&^0x10 == 0 && (sw1 == 0x90 || sw1 == 0x61):
				got = append(got, data...)
			default:
				want = nil
			}
			if want != nil && sw1 == 0x90 && !bytes.Equal(got, want) {
				t.Fatalf("after %X: fetched %X, the applet answered %X", raw, got, want)
			}
			if sw1 != 0x61 && sw1 != 0x90 {
				want = nil
			}
		}
	})
}
