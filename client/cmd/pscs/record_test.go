package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/internal/transcript"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// scrubbingReplay plays a scrubbed transcript back: each command goes
// through the recorder's scrubber before it is compared with the recorded
// one, so that the driver sends what the transcript expects up to the
// secret bytes the transcript no longer holds.
type scrubbingReplay struct {
	r *transcript.Replay
	s scrubber
}

func (r *scrubbingReplay) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	ex, _, _ := r.s.scrub(cmd, []byte{0x90, 0x00})
	return r.r.Transmit(ctx, ex.cmd)
}

// TestCardRecord records `pscs card record` with the PIV simulator through
// pcscd, checks that the PIN is nowhere in the file, and replays the
// transcript against the PIV driver.
func TestCardRecord(t *testing.T) {
	if daemon == nil {
		t.Skip("no private pcscd (" + pcscdtest.SkipEnv + "=1)")
	}
	const pin = "246813" // not the default, so that its bytes are recognisable
	card, err := pivsim.New(pivsim.Config{PIN: pin, Seed: []byte("record")})
	if err != nil {
		t.Fatal(err)
	}
	daemon.Plug(t, 0, card, pcscdtest.PlugOptions{})

	dir := t.TempDir()
	doc := filepath.Join(dir, "doc.txt")
	os.WriteFile(doc, []byte("recorded\n"), 0o644)
	out := filepath.Join(dir, "session.trace")
	t.Setenv("PSCS_PIN", pin)
	p := program()
	var stdout, stderr bytes.Buffer
	p.Stdout, p.Stderr = &stdout, &stderr
	if err := p.Run(t.Context(), []string{"card", "record", "-r", daemon.Readers[0], "-out", out, "-k", "9c", "-in", doc}); err != nil {
		t.Fatalf("pscs card record: %v\n%s", err, stderr.String())
	}
	t.Logf("%s", stderr.String())
	file, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{pin, hex.EncodeToString([]byte(pin)), strings.ToUpper(hex.EncodeToString([]byte(pin)))} {
		if bytes.Contains(file, []byte(secret)) {
			t.Errorf("the PIN appears in the transcript as %q", secret)
		}
	}
	tr, err := transcript.Parse(file)
	if err != nil {
		t.Fatalf("the transcript does not parse: %v", err)
	}
	if got := tr.MetaValue("status.atr"); got != hex.EncodeToString(card.ATR()) {
		t.Errorf("meta status.atr = %q, want %x", got, card.ATR())
	}
	var verifies int
	for _, ex := range tr.Exchanges() {
		if len(ex.Command) > 5 && ex.Command[1] == 0x20 {
			verifies++
			if d := ex.Command[5:]; !bytes.Equal(d, make([]byte, len(d))) {
				t.Errorf("VERIFY data not scrubbed: % X", ex.Command)
			}
		}
	}
	if verifies != 1 {
		t.Errorf("%d VERIFY commands with data in the transcript, want 1", verifies)
	}

	// Replay: the PIV driver, run through the same session, sends what
	// the transcript expects and gets the same signature.
	replay := &scrubbingReplay{r: transcript.NewReplay(tr)}
	_, c, err := profiles.Detect(t.Context(), replay, piv.Profile{})
	if err != nil {
		t.Fatalf("replay: open: %v", err)
	}
	digest := crypto.SHA256.New()
	digest.Write([]byte("recorded\n"))
	err = recordSession(t.Context(), c, &signRequest{key: "9c", digest: digest.Sum(nil), opts: crypto.SHA256,
		pin: func() ([]byte, error) { return []byte("000000"), nil }}) // scrubbed: any 6 digits replay
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if err := replay.r.Done(); err != nil {
		t.Errorf("replay: %v", err)
	}
}

// TestScrubber: the table zeroes secrets and keeps lengths and status words.
func TestScrubber(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name             string
		cmd, rsp         string
		wantCmd, wantRsp string
	}{
		{"VERIFY", "00 20 00 80 08 32 34 36 38 31 33 FF FF", "90 00", "00 20 00 80 08 00 00 00 00 00 00 00 00", "90 00"},
		{"VERIFY status", "00 20 00 80", "63 C3", "00 20 00 80", "63 C3"},
		{"CHANGE REFERENCE DATA", "00 24 00 80 04 31 32 33 34", "90 00", "00 24 00 80 04 00 00 00 00", "90 00"},
		{"sign 9C kept", "00 87 07 9C 06 7C 04 82 00 81 00", "7C 03 82 01 AA 90 00", "00 87 07 9C 06 7C 04 82 00 81 00", "7C 03 82 01 AA 90 00"},
		{"decrypt 9D", "00 87 07 9D 06 7C 04 82 00 81 00", "7C 03 82 01 AA 90 00", "00 87 07 9D 06 7C 04 82 00 81 00", "00 00 00 00 00 90 00"},
		{"ECDH 9A", "00 87 11 9A 06 7C 04 82 00 85 00", "7C 03 82 01 AA 90 00", "00 87 11 9A 06 7C 04 82 00 85 00", "00 00 00 00 00 90 00"},
		{"PSO:DECIPHER", "00 2A 80 86 02 00 AB", "DE AD 90 00", "00 2A 80 86 02 00 AB", "00 00 90 00"},
		{"management key", "00 87 03 9B 04 7C 02 81 00", "90 00", "00 87 03 9B 04 00 00 00 00", "90 00"},
		{"extended VERIFY", "00 20 00 81 00 00 02 31 32", "90 00", "00 20 00 81 00 00 02 00 00", "90 00"},
	} {
		var s scrubber
		ex, _, _ := s.scrub(h(tc.cmd), h(tc.rsp))
		if !bytes.Equal(ex.cmd, h(tc.wantCmd)) || !bytes.Equal(ex.rsp, h(tc.wantRsp)) {
			t.Errorf("%s: % X / % X, want %s / %s", tc.name, ex.cmd, ex.rsp, tc.wantCmd, tc.wantRsp)
		}
	}
	// A chained secret command and a continued secret response.
	var s scrubber
	s.scrub(h("10 DB 3F FF 03 4D 01 02"), h("90 00"))
	if ex, _, _ := s.scrub(h("00 DB 3F FF 02 AA BB"), h("90 00")); !bytes.Equal(ex.cmd, h("00 DB 3F FF 02 00 00")) {
		t.Errorf("chain continuation not scrubbed: % X", ex.cmd)
	}
	s.scrub(h("00 2A 80 86 01 00"), h("AA 61 02"))
	if ex, _, _ := s.scrub(h("00 C0 00 00 02"), h("BB CC 90 00")); !bytes.Equal(ex.rsp, h("00 00 90 00")) {
		t.Errorf("GET RESPONSE of a decipher not scrubbed: % X", ex.rsp)
	}
}
