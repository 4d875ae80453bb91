package registry_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/profiles/registry"
)

// replay answers each command with the next of its replies, then 90 00.
type replay struct{ replies [][]byte }

func (r *replay) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	if len(r.replies) > 0 {
		rsp := r.replies[0]
		r.replies = r.replies[1:]
		return rsp, nil
	}
	return []byte{0xAA, 0xBB, 0x90, 0x00}, nil
}

func TestEntries(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range registry.All() {
		if e.Name == "" || seen[e.Name] || e.Redact == nil || e.Description == "" {
			t.Errorf("entry %+v: empty or repeated name, no Redact or no description", e)
		}
		seen[e.Name] = true
		if e.Profile != nil && e.Profile.Name() != e.Name {
			t.Errorf("entry %s: driver named %s", e.Name, e.Profile.Name())
		}
		if got, ok := registry.Lookup(e.Name); !ok || got.Name != e.Name {
			t.Errorf("Lookup(%s) = %v, %v", e.Name, got.Name, ok)
		}
	}
	if len(registry.Profiles()) == 0 {
		t.Error("no driver registered")
	}
	if _, ok := registry.Lookup("nosuch"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
}

// TestTraceRedactsEveryProfilesSecrets: a trace with the registry's
// Redactor hides what each profile declares secret, across command and
// response chaining, and shows the rest.
func TestTraceRedactsEveryProfilesSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	card := &replay{replies: [][]byte{
		{0x90, 0x00}, {0x90, 0x00}, {0x90, 0x00}, {0x90, 0x00}, // VERIFY, CHANGE, PIV management key, YubiKey import
		{0x90, 0x00}, {0x90, 0x00}, // two blocks of an OpenPGP key import
		{0x7C, 0x05, 0x82, 0x03, 0x5E, 0xC2, 0xE7, 0x61, 0x02}, // PIV decryption, more to come
		{0x5E, 0xC2, 0x90, 0x00},                               // the rest
		{0x5E, 0xC3, 0x5E, 0xC4, 0x90, 0x00},                   // PSO:DECIPHER
		{0x01, 0x02, 0x90, 0x00},                               // an ordinary GET DATA
	}}
	tr := cards.Trace(card, log, registry.Redactor())
	ctx := t.Context()
	for _, cmd := range [][]byte{
		{0x00, 0x20, 0x00, 0x80, 0x08, 0x53, 0x45, 0x43, 0x52, 0x31, 0x32, 0xFF, 0xFF},
		append([]byte{0x00, 0x24, 0x00, 0x81, 0x08}, []byte("SECRSECR")...),
		{0x00, 0x87, 0x03, 0x9B, 0x04, 0x7C, 0x02, 0x53, 0x45},
		{0x00, 0xFE, 0x11, 0x9A, 0x04, 0x53, 0x45, 0x43, 0x52},
		{0x10, 0xDB, 0x3F, 0xFF, 0x06, 0x4D, 0x04, 0x53, 0x45, 0x43, 0x52},
		{0x00, 0xDB, 0x3F, 0xFF, 0x04, 0x53, 0x45, 0x43, 0x52},
		{0x00, 0x87, 0x07, 0x9D, 0x04, 0x7C, 0x02, 0x82, 0x00, 0x00},
		{0x00, 0xC0, 0x00, 0x00, 0x02},
		{0x00, 0x2A, 0x80, 0x86, 0x03, 0xA6, 0x01, 0x02, 0x00},
		{0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00},
	} {
		tr.Transmit(ctx, cmd)
	}
	out := buf.String()
	for _, secret := range []string{"53 45 43 52", "53 45", "5E C2", "5E C3"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace shows secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"00 20 00 80 [9 bytes redacted]", "00 24 00 81 [9 bytes redacted]",
		"00 87 03 9B [5 bytes redacted]", "00 FE 11 9A [5 bytes redacted]",
		"10 DB 3F FF [7 bytes redacted]", "00 DB 3F FF [5 bytes redacted]",
		"[7 bytes redacted] 61 02", "[2 bytes redacted] 90 00", "[4 bytes redacted] 90 00",
		"00 CB 3F FF 03 5C 01 7E 00", "01 02 90 00"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
}

// TestRedactChainsFollowFirstBlock: the later blocks of a chain follow the
// first block's decision, whatever their data looks like: a PIV signature
// whose challenge spans two blocks is shown with its answer, a key
// agreement split the same way hides its answer, and a template that does
// not parse is hidden.
func TestRedactChainsFollowFirstBlock(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	card := &replay{replies: [][]byte{
		{0x90, 0x00}, {0x7C, 0x03, 0x82, 0x01, 0x51, 0x90, 0x00}, // signature: 51 is the "signature"
		{0x90, 0x00}, {0x7C, 0x03, 0x82, 0x01, 0x5E, 0x90, 0x00}, // key agreement: 5E is secret
		{0x7C, 0x03, 0x82, 0x01, 0x5F, 0x90, 0x00}, // unparsable template: 5F hidden
	}}
	tr := cards.Trace(card, log, registry.Redactor())
	ctx := t.Context()
	for _, cmd := range [][]byte{
		// 7C len 8: 82 00, 81 04 then the challenge's last bytes in block 2.
		{0x10, 0x87, 0x07, 0x9C, 0x06, 0x7C, 0x08, 0x82, 0x00, 0x81, 0x04},
		{0x00, 0x87, 0x07, 0x9C, 0x04, 0x85, 0x02, 0x33, 0x44},
		{0x10, 0x87, 0x11, 0x9A, 0x06, 0x7C, 0x08, 0x82, 0x00, 0x85, 0x04},
		{0x00, 0x87, 0x11, 0x9A, 0x04, 0x11, 0x22, 0x33, 0x44},
		{0x00, 0x87, 0x07, 0x9C, 0x02, 0x7C, 0x7F},
	} {
		tr.Transmit(ctx, cmd)
	}
	out := buf.String()
	for _, want := range []string{"00 87 07 9C 04 85 02 33 44", "7C 03 82 01 51 90 00",
		"00 87 11 9A 04 11 22 33 44", "[5 bytes redacted] 90 00"} { // the peer's point is public
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"01 5E", "01 5F"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace shows secret %q:\n%s", secret, out)
		}
	}
}
