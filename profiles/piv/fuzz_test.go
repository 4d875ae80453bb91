package piv

// A rogue card returns arbitrary bytes: the driver must answer with an
// error, never a panic, a hang or unbounded memory.

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// rogueCard replays replies from fuzz input: each reply is a 2-byte
// big-endian length and that many bytes. When the input runs out it
// answers 6F 00, or an error every third time.
type rogueCard struct {
	in    []byte
	calls int
}

// maxRogueCalls bounds the exchanges of one fuzz run: the driver must not
// loop on a rogue card.
const maxRogueCalls = 4096

var errRogueHang = errors.New("rogue card: driver keeps transmitting")

func (r *rogueCard) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	r.calls++
	if r.calls > maxRogueCalls {
		return nil, errRogueHang
	}
	if len(r.in) < 2 {
		if r.calls%3 == 0 {
			return nil, errors.New("rogue card: link failed")
		}
		return []byte{0x6F, 0x00}, nil
	}
	n := int(binary.BigEndian.Uint16(r.in))
	r.in = r.in[2:]
	n = min(n, len(r.in))
	out := r.in[:n]
	r.in = r.in[n:]
	return out, nil
}

// exercise runs every driver operation against t.
func exercise(tr interface {
	Transmit(context.Context, []byte) ([]byte, error)
}) {
	ctx := context.Background()
	c, err := Open(ctx, tr)
	if err != nil {
		return
	}
	c.Info(ctx)
	c.Keys(ctx)
	c.PINStatus(ctx, PIN)
	c.VerifyPIN(ctx, PIN, []byte("123456"))
	digest := make([]byte, 32)
	c.Sign(ctx, "9a", digest, crypto.SHA256)
	c.Sign(ctx, "9c", digest, crypto.SHA256)
	c.Sign(ctx, "9c", digest, &rsa.PSSOptions{Hash: crypto.SHA256})
	c.Sign(ctx, "9e", digest, crypto.SHA256)
	c.Logout(ctx)
}

// recorder wraps the simulator and keeps its replies in the rogue card's
// format, to seed the fuzzer with a real conversation.
type recorder struct {
	card *pivsim.Card
	out  []byte
}

func (r *recorder) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	rsp, err := r.card.Transmit(ctx, cmd)
	if err == nil {
		r.out = binary.BigEndian.AppendUint16(r.out, uint16(len(rsp)))
		r.out = append(r.out, rsp...)
	}
	return rsp, err
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzDriver seeds from the simulator")

// TestWriteFuzzSeeds rewrites the driver's fuzz seeds with -write-seeds;
// otherwise it checks that the committed seeds are there.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDriver")
	if !*writeSeeds {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			t.Fatalf("no seeds in %s (go test ./profiles/piv -run TestWriteFuzzSeeds -write-seeds): %v", dir, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	for i, slots := range []map[pivsim.Slot]pivsim.SlotConfig{nil, {pivsim.SlotSignature: {Algorithm: pivsim.ECCP384}}} {
		card, err := pivsim.New(pivsim.Config{Seed: []byte{byte(i)}, Slots: slots})
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{card: card}
		exercise(rec)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", rec.out)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("sim-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzDriver(f *testing.F) {
	f.Add([]byte{0x00, 0x02, 0x90, 0x00})
	f.Add([]byte{0x00, 0x02, 0x61, 0x00, 0x00, 0x02, 0x61, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := &rogueCard{in: in}
		exercise(r)
		if r.calls > maxRogueCalls {
			t.Fatalf("driver made %d exchanges with a rogue card", r.calls)
		}
	})
}

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
