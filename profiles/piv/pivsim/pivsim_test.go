package pivsim_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/profiles/piv/pivsim"
)

func newCard(t *testing.T, cfg pivsim.Config) *pivsim.Card {
	t.Helper()
	if cfg.Seed == nil {
		cfg.Seed = []byte(t.Name())
	}
	c, err := pivsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// send transmits a hex command and returns the response.
func send(t *testing.T, c *pivsim.Card, cmd string) []byte {
	t.Helper()
	rsp, err := c.Transmit(context.Background(), hx(cmd))
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return rsp
}

func sw(rsp []byte) string {
	if len(rsp) < 2 {
		return "short"
	}
	return strings.ToUpper(hex.EncodeToString(rsp[len(rsp)-2:]))
}

// TestClientDialects feeds the simulator the forms real clients send
// (cards.md 1.3–1.8) and checks the status words a PIV card gives.
func TestClientDialects(t *testing.T) {
	c := newCard(t, pivsim.Config{})
	steps := []struct {
		name, cmd, sw string
	}{
		{"select PIV, 5-byte AID", "00 A4 04 00 05 A0 00 00 03 08 00", "9000"},
		{"select PIV, 9-byte AID (OpenSC)", "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00", "9000"},
		{"select another AID (ykman probing)", "00 A4 04 00 08 A0 00 00 05 27 47 11 17", "6A82"},
		{"empty VERIFY, 4 bytes (OpenSC)", "00 20 00 80", "63C3"},
		{"empty VERIFY, 5 bytes (piv-go)", "00 20 00 80 00", "63C3"},
		{"empty VERIFY, 7 bytes (ykman)", "00 20 00 80 00 00 00", "63C3"},
		{"GET DATA cert 9A without Le (piv-go)", "00 CB 3F FF 05 5C 03 5F C1 05", "61"},
		{"GET RESPONSE", "00 C0 00 00 00", ""},
		{"GET DATA cert 9A, Le 8 (OpenSC's probe)", "00 CB 3F FF 05 5C 03 5F C1 05 08", "61"},
		{"GET DATA cert 9A extended (ykman)", "00 CB 3F FF 00 00 05 5C 03 5F C1 05 00 00", "9000"},
		{"GET DATA discovery", "00 CB 3F FF 03 5C 01 7E 00", "9000"},
		{"GET DATA missing object", "00 CB 3F FF 05 5C 03 5F C1 06 00", "6A82"},
		{"GET VERSION", "00 FD 00 00 00", "9000"},
		{"GET SERIAL", "00 F8 00 00 00", "9000"},
		{"sign without PIN", "00 87 11 9A 26 7C 24 82 00 81 20" + strings.Repeat(" 11", 32) + " 00", "6982"},
		{"VERIFY wrong length", "00 20 00 80 04 31 32 33 34", "6A80"},
		{"VERIFY right PIN", "00 20 00 80 08 31 32 33 34 35 36 FF FF", "9000"},
		{"empty VERIFY verified", "00 20 00 80", "9000"},
		{"sign P-256 in 9A", "00 87 11 9A 26 7C 24 82 00 81 20" + strings.Repeat(" 11", 32) + " 00", "9000"},
		{"sign with the wrong algorithm", "00 87 07 9A 26 7C 24 82 00 81 20" + strings.Repeat(" 11", 32) + " 00", "6A86"},
		{"sign in an empty slot", "00 87 11 82 26 7C 24 82 00 81 20" + strings.Repeat(" 11", 32) + " 00", "6A88"},
		{"log out", "00 20 FF 80", "9000"},
		{"empty VERIFY after log out", "00 20 00 80", "63C3"},
		{"unknown instruction", "00 E2 00 00", "6D00"},
		{"unknown class", "80 CB 3F FF 03 5C 01 7E 00", "6E00"},
		{"GET RESPONSE with nothing pending", "00 C0 00 00 00", "6985"},
		{"malformed APDU", "00 CB 3F", "6700"},
	}
	for _, s := range steps {
		rsp := send(t, c, s.cmd)
		if s.sw != "" && !strings.HasPrefix(sw(rsp), s.sw) {
			t.Errorf("%s: %s -> SW %s, want %s", s.name, s.cmd, sw(rsp), s.sw)
		}
	}
}

// TestResponseChaining reads a certificate in 8-byte and 256-byte pieces
// and checks it against the whole, as OpenSC and piv-go read it.
func TestResponseChaining(t *testing.T) {
	c := newCard(t, pivsim.Config{})
	whole := send(t, c, "00 CB 3F FF 00 00 05 5C 03 5F C1 05 00 00")
	if sw(whole) != "9000" {
		t.Fatalf("extended GET DATA: %s", sw(whole))
	}
	whole = whole[:len(whole)-2]
	for _, first := range []string{"00", "08"} {
		rsp := send(t, c, "00 CB 3F FF 05 5C 03 5F C1 05 "+first)
		got := bytes.Clone(rsp[:len(rsp)-2])
		for rounds := 0; strings.HasPrefix(sw(rsp), "61"); rounds++ {
			if rounds > 20 {
				t.Fatal("endless 61xx")
			}
			rsp = send(t, c, "00 C0 00 00 "+sw(rsp)[2:])
			got = append(got, rsp[:len(rsp)-2]...)
		}
		if sw(rsp) != "9000" || !bytes.Equal(got, whole) {
			t.Errorf("Le %s then GET RESPONSE: %d bytes, SW %s; want the %d-byte object", first, len(got), sw(rsp), len(whole))
		}
	}
}

// TestCommandChaining sends an RSA-2048 GENERAL AUTHENTICATE in two
// chained blocks, as OpenSC does.
func TestCommandChaining(t *testing.T) {
	c := newCard(t, pivsim.Config{})
	send(t, c, "00 20 00 80 08 31 32 33 34 35 36 FF FF")
	block := "00 01" + strings.Repeat(" FF", 202) + " 00 30 31 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20" + strings.Repeat(" 42", 32)
	data := hx("7C 82 01 06 82 00 81 82 01 00" + block)
	first := append(hx("10 87 07 9C FF"), data[:255]...)
	if got := sw(send(t, c, hex.EncodeToString(first))); got != "9000" {
		t.Fatalf("first chained block: %s", got)
	}
	last := append([]byte{0x00, 0x87, 0x07, 0x9C, byte(len(data) - 255)}, data[255:]...)
	last = append(last, 0x00)
	rsp := send(t, c, hex.EncodeToString(last))
	if !strings.HasPrefix(sw(rsp), "61") && sw(rsp) != "9000" {
		t.Fatalf("last chained block: %s", sw(rsp))
	}
	// A second signature needs the PIN again (9C is PIN-always).
	send(t, c, "00 C0 00 00 00")
	if got := sw(send(t, c, hex.EncodeToString(first))); got != "9000" {
		t.Fatalf("chained block: %s", got)
	}
	if got := sw(send(t, c, hex.EncodeToString(last))); got != "6982" {
		t.Errorf("second 9C signature after one VERIFY: %s, want 6982", got)
	}
}

// TestPINLifecycle: block the PIN, unblock it with the PUK, change it.
func TestPINLifecycle(t *testing.T) {
	c := newCard(t, pivsim.Config{})
	wrong := "00 20 00 80 08 39 39 39 39 39 39 FF FF"
	for _, want := range []string{"63C2", "63C1", "6983", "6983"} {
		if got := sw(send(t, c, wrong)); got != want {
			t.Fatalf("wrong PIN: %s, want %s", got, want)
		}
	}
	if got := sw(send(t, c, "00 20 00 80 08 31 32 33 34 35 36 FF FF")); got != "6983" {
		t.Fatalf("right PIN when blocked: %s", got)
	}
	// RESET RETRY COUNTER with a wrong PUK, then the right one.
	if got := sw(send(t, c, "00 2C 00 80 10 30 30 30 30 30 30 30 30 36 35 34 33 32 31 FF FF")); got != "63C2" {
		t.Errorf("unblock with a wrong PUK: %s", got)
	}
	if got := sw(send(t, c, "00 2C 00 80 10 31 32 33 34 35 36 37 38 36 35 34 33 32 31 FF FF")); got != "9000" {
		t.Fatalf("unblock: %s", got)
	}
	if c.PINRetries() != 3 {
		t.Errorf("PIN retries after unblock: %d", c.PINRetries())
	}
	// CHANGE REFERENCE DATA: to a too-short PIN (refused), then properly.
	if got := sw(send(t, c, "00 24 00 80 10 36 35 34 33 32 31 FF FF 31 32 33 FF FF FF FF FF")); got != "6A80" {
		t.Errorf("change to a 3-digit PIN: %s", got)
	}
	if got := sw(send(t, c, "00 24 00 80 10 36 35 34 33 32 31 FF FF 31 31 31 31 31 31 31 31")); got != "9000" {
		t.Fatalf("change PIN: %s", got)
	}
	if got := sw(send(t, c, "00 20 00 80 08 31 31 31 31 31 31 31 31")); got != "9000" {
		t.Errorf("new PIN: %s", got)
	}
}

// TestLatencyModel: operations take the configured time, and a cancelled
// context stops the wait.
func TestLatencyModel(t *testing.T) {
	c := newCard(t, pivsim.Config{Latency: pivsim.Latency{Verify: 50 * time.Millisecond}})
	start := time.Now()
	send(t, c, "00 20 00 80 08 31 32 33 34 35 36 FF FF")
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("VERIFY took %v, want at least 50ms", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Transmit(ctx, hx("00 20 00 80")); err == nil {
		t.Error("Transmit with a cancelled context succeeded")
	}
}

func TestSeedReproducible(t *testing.T) {
	a := newCard(t, pivsim.Config{Seed: []byte("same")})
	b := newCard(t, pivsim.Config{Seed: []byte("same")})
	d := newCard(t, pivsim.Config{Seed: []byte("other")})
	for _, s := range []pivsim.Slot{pivsim.SlotAuthentication, pivsim.SlotSignature, pivsim.SlotCardAuthentication} {
		if a.Fingerprint(s) != b.Fingerprint(s) {
			t.Errorf("slot %02X: same seed, different keys", byte(s))
		}
		if a.Fingerprint(s) == d.Fingerprint(s) {
			t.Errorf("slot %02X: different seeds, same key", byte(s))
		}
	}
	if a.Serial() != b.Serial() {
		t.Errorf("same seed, serials %d and %d", a.Serial(), b.Serial())
	}
}
