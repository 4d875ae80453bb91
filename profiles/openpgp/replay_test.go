package openpgp_test

// Ground truth: the 57 transcripts of a real YubiKey 5.4.3 (recorded by
// cunicu/go-openpgp-card, not by this driver) replayed against the DRIVER.
// Each recorded exchange that is one of the driver's operations (opening
// the application, VERIFY, PSO: COMPUTE DIGITAL SIGNATURE, INTERNAL
// AUTHENTICATE, PSO: DECIPHER, the signature counter) is given to the
// driver with the recorded input (PIN, digest, peer point); the driver
// must send the recorded command (header and data; the Le encoding and
// GET RESPONSE chaining may differ) and make sense of the card's real
// answer: signatures that verify under the key the card generated in the
// transcript, the recorded shared secrets, the PIN errors of the status
// words. Exchanges the driver does not make are counted by reason.

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/internal/transcript"
	"github.com/pscs/pscs/internal/transcript/transcripttest"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/openpgp"
)

// call is a recorded command with its whole answer (GET RESPONSE and
// command chaining joined).
type call struct {
	cmd  apdu.Command
	data []byte
	sw   apdu.StatusWord
}

func calls(t *testing.T, ex []transcript.Exchange) []call {
	var out []call
	chained := false
	for _, e := range ex {
		cmd, err := apdu.ParseCommand(e.Command)
		if err != nil {
			t.Fatalf("recorded command %X: %v", e.Command, err)
		}
		sw := apdu.NewStatusWord(e.Response[len(e.Response)-2], e.Response[len(e.Response)-1])
		data := e.Response[:len(e.Response)-2]
		switch {
		case cmd.INS == 0xC0 && len(out) > 0:
			last := &out[len(out)-1]
			last.data, last.sw = append(last.data, data...), sw
			continue
		case chained:
			last := &out[len(out)-1]
			last.cmd.Data = append(last.cmd.Data, cmd.Data...)
			last.data, last.sw = data, sw
		default:
			cmd.CLA &^= 0x10
			out = append(out, call{cmd: cmd, data: bytes.Clone(data), sw: sw})
		}
		chained = e.Command[0]&0x10 != 0
		if _, more := sw.MoreData(); !more && out[len(out)-1].sw.SW1() == 0x61 {
			out[len(out)-1].sw = sw
		}
	}
	return out
}

// semantic is a card that answers the driver from the recorded calls in
// [pos, limit): the first one with the same CLA, INS, P1, P2 and data.
type semantic struct {
	calls      []call
	pos, limit int
	used       map[int]bool
	extra      []string // driver commands the transcript does not have there
}

func (s *semantic) Transmit(_ context.Context, raw []byte) ([]byte, error) {
	cmd, err := apdu.ParseCommand(raw)
	if err != nil {
		return nil, err
	}
	cmd.CLA &^= 0x10
	for i := s.pos; i < s.limit && i < len(s.calls); i++ {
		c := s.calls[i].cmd
		if c.CLA == cmd.CLA && c.INS == cmd.INS && c.P1 == cmd.P1 && c.P2 == cmd.P2 && bytes.Equal(c.Data, cmd.Data) {
			s.pos, s.used[i] = i+1, true
			return append(bytes.Clone(s.calls[i].data), s.calls[i].sw.SW1(), s.calls[i].sw.SW2()), nil
		}
	}
	s.extra = append(s.extra, fmt.Sprintf("%02X %02X %02X %02X", cmd.CLA, cmd.INS, cmd.P1, cmd.P2))
	// A read the transcript does not have here (the library read it
	// once): the card's latest earlier answer to the same command.
	for i := s.pos - 1; i >= 0 && cmd.INS == 0xCA; i-- {
		if c := s.calls[i]; c.cmd.INS == cmd.INS && c.cmd.P1 == cmd.P1 && c.cmd.P2 == cmd.P2 {
			return append(bytes.Clone(c.data), c.sw.SW1(), c.sw.SW2()), nil
		}
	}
	return []byte{0x6F, 0x00}, nil
}

// op says which driver operation a recorded call is, or "".
func op(c apdu.Command) string {
	switch {
	case c.INS == 0xA4 && bytes.HasPrefix(c.Data, openpgp.AID):
		return "open"
	case c.INS == 0x20 && c.P1 == 0 && len(c.Data) > 0:
		return "verify"
	case c.INS == 0x2A && c.P1 == 0x9E, c.INS == 0x88:
		return "sign"
	case c.INS == 0x2A && c.P1 == 0x80 && len(c.Data) > 0 && (c.Data[0] == 0 || c.Data[0] == 0xA6):
		return "decipher"
	case c.INS == 0xCA && c.P2 == 0x7A:
		return "info"
	}
	return ""
}

// notMade says why the driver makes no exchange of this kind.
func notMade(c apdu.Command) string {
	switch c.INS {
	case 0xCA, 0xCB:
		return "GET DATA of objects the driver does not read (cardholder data, URL, login, private DOs, algorithm information, certificates without 47 81 keys) or read again by the test"
	case 0xDA, 0xDB:
		return "PUT DATA: administration (PW3), not a driver operation"
	case 0x47:
		return "GENERATE ASYMMETRIC KEY PAIR P1=80: key generation is administration; the driver reads keys with P1=81, which no transcript records"
	case 0x24, 0x2C, 0xF2:
		return "CHANGE REFERENCE DATA, RESET RETRY COUNTER, SET PIN RETRIES: PIN administration"
	case 0xE6, 0x44:
		return "TERMINATE DF, ACTIVATE FILE: factory reset"
	case 0x20:
		return "VERIFY status query or P1=FF (the driver's PINStatus and Logout; the tests never record them alone)"
	case 0x84:
		return "GET CHALLENGE: not a driver operation"
	case 0xA5:
		return "SELECT DATA: the driver reads certificates within Keys (after 47 81)"
	case 0xA4:
		return "SELECT of the Yubico OTP application (firmware version probe), or a SELECT again without reading 6E"
	case 0x03:
		return "Yubico OTP status"
	case 0x2A:
		return "PSO: DECIPHER with AES (02): the driver has no symmetric keys"
	}
	return fmt.Sprintf("INS %02X", c.INS)
}

func TestDriverReplaysYubiKeyTranscripts(t *testing.T) {
	made, skipped := map[string]int{}, map[string]int{}
	extras := map[string]int{}
	total := 0
	n := transcripttest.Each(t, "openpgp-yubikey-5.4.3", "yk-5.4.3", 57, func(t *testing.T, _ string, tr *transcript.Transcript) {
		cs := calls(t, tr.Exchanges())
		total += len(cs)
		s := &semantic{calls: cs, used: map[int]bool{}}
		replayDriver(t, s, made)
		for i, c := range cs {
			if !s.used[i] {
				skipped[notMade(c.cmd)]++
			}
		}
		for _, e := range s.extra {
			extras[e]++
		}
	})
	t.Logf("%d recorded calls (GET RESPONSE joined) in %d transcripts", total, n)
	for k, n := range made {
		t.Logf("driver made %4d × %s", n, k)
	}
	for k, n := range skipped {
		t.Logf("not made %4d × %s", n, k)
	}
	for k, n := range extras {
		t.Logf("driver sent %d × %s that the transcript lacks at that point (answered with the card's latest earlier answer to it)", n, k)
	}
	if made["sign"] == 0 || made["decipher"] == 0 || made["verify"] == 0 || made["open"] == 0 {
		t.Errorf("operations replayed: %v", made)
	}
}

// replayDriver walks the calls and runs the driver operation of each.
func replayDriver(t *testing.T, s *semantic, made map[string]int) {
	ctx := context.Background()
	var card *openpgp.Card
	keys := map[string]profiles.Key{}
	nextOp := func(i int) int {
		for j := i + 1; j < len(s.calls); j++ {
			if op(s.calls[j].cmd) != "" {
				return j
			}
		}
		return len(s.calls)
	}
	for i := 0; i < len(s.calls); i++ {
		c := s.calls[i]
		if c.cmd.INS == 0x47 && c.cmd.P1 == 0x80 && c.sw.OK() && len(c.cmd.Data) > 0 {
			if k, ok := generatedKey(c); ok {
				keys[k.ID] = k
			}
		}
		kind := op(c.cmd)
		if kind == "open" && (i+1 >= len(s.calls) || s.calls[i+1].cmd.INS != 0xCA || s.calls[i+1].cmd.P2 != 0x6E) {
			kind = "" // a SELECT again without reading 6E: no driver opening
		}
		if kind == "" || (kind != "open" && card == nil) || s.used[i] {
			continue
		}
		s.pos, s.limit = i, nextOp(i)
		if kind == "open" {
			// The driver reads 6E (and F9) right after SELECT.
			s.limit = max(s.limit, min(i+6, len(s.calls))) // SELECT, 6E, 65, 7A, F9
		}
		where := fmt.Sprintf("#%d %s", i, c.cmd)
		if card != nil {
			var ks []profiles.Key
			for _, k := range keys {
				ks = append(ks, k)
			}
			card.UseKeys(ks) // the keys generated so far
		}
		var err error
		switch kind {
		case "open":
			card, err = openpgp.Open(ctx, s)
			if errors.Is(err, openpgp.ErrKDF) {
				t.Logf("%s: %v (the card was set up with a KDF)", where, err)
				err = nil
			}
		case "verify":
			id := map[byte]string{0x81: openpgp.PINSign, 0x82: openpgp.PIN, 0x83: openpgp.PINAdmin}[c.cmd.P2]
			err = card.VerifyPIN(ctx, id, c.cmd.Data)
			switch {
			case errors.Is(err, profiles.ErrPINFormat) && c.sw == apdu.SWWrongData:
				err = nil // refused before the card, as the card refused it
			case c.sw.OK() != (err == nil):
				err = fmt.Errorf("card %v, driver %v", c.sw, err)
			case err != nil && !errors.Is(err, apdu.ErrWrongPIN) && !errors.Is(err, apdu.ErrBlocked):
				err = fmt.Errorf("card %v: driver %v, not a PIN error", c.sw, err)
			default:
				err = nil
			}
		case "sign":
			id := map[byte]string{0x2A: "sig", 0x88: "aut"}[c.cmd.INS]
			k, ok := keys[id]
			if !ok || !c.sw.OK() {
				continue // no key generated in this transcript: nothing to verify with
			}
			opts := crypto.SignerOpts(crypto.SHA256)
			digest := c.cmd.Data
			if h, d, ok := profiles.ParseDigestInfo(digest); ok {
				opts, digest = h, d
			} else if k.Algorithm == "ED25519" {
				opts = crypto.Hash(0)
			}
			_, err = card.Sign(ctx, id, digest, opts) // it verifies under the generated key
		case "decipher":
			if _, ok := keys["dec"]; !ok || !c.sw.OK() {
				continue
			}
			var out []byte
			if c.cmd.Data[0] == 0 {
				out, err = card.Decrypt(ctx, "dec", c.cmd.Data[1:], nil)
			} else {
				v, _, _ := apdu.FindTLV(c.cmd.Data, 0xA6)
				v, _, _ = apdu.FindTLV(v, 0x7F49)
				v, _, _ = apdu.FindTLV(v, 0x86)
				out, err = card.DeriveECDH(ctx, "dec", v)
			}
			if err == nil && !bytes.Equal(out, c.data) {
				err = errors.New("the driver's answer is not the card's")
			}
		case "info":
			var info profiles.Info
			info, err = card.Info(ctx)
			if v, ok, _ := apdu.FindTLV(c.data, 0x7A); err == nil && ok {
				n, _, _ := apdu.FindTLV(v, 0x93)
				if len(n) == 3 && !strings.HasSuffix(info.Label, fmt.Sprintf(", %d signatures", int(n[0])<<16|int(n[1])<<8|int(n[2]))) {
					err = fmt.Errorf("label %q, card's counter %X", info.Label, n)
				}
			}
		}
		if err != nil {
			t.Errorf("%s: %s: %v", where, kind, err)
			continue
		}
		if !s.used[i] && !(kind == "verify" && c.sw == apdu.SWWrongData) {
			t.Errorf("%s: the driver's %s did not send the recorded command", where, kind)
			continue
		}
		made[kind]++
	}
}

// generatedKey is the key a recorded GENERATE ASYMMETRIC KEY PAIR made.
func generatedKey(c call) (profiles.Key, bool) {
	id := map[byte]string{0xB6: "sig", 0xB8: "dec", 0xA4: "aut"}[c.cmd.Data[0]]
	var t profiles.KeyType
	if _, ok, _ := apdu.FindTLV(c.data[min(len(c.data), 5):], 0x81); ok || bytes.Contains(c.data[:min(len(c.data), 12)], []byte{0x81, 0x82}) {
		t = profiles.KeyRSA
	} else {
		v, _, _ := apdu.FindTLV(c.data, 0x7F49)
		p, _, _ := apdu.FindTLV(v, 0x86)
		t = map[int]profiles.KeyType{65: profiles.KeyP256, 97: profiles.KeyP384, 133: profiles.KeyP521, 32: profiles.KeyEd25519}[len(p)]
		if t == profiles.KeyEd25519 && id == "dec" {
			t = profiles.KeyX25519
		}
	}
	pub, err := profiles.PublicKeyFromTemplate(c.data, t)
	if id == "" || err != nil {
		return profiles.Key{}, false
	}
	pin := map[string]string{"sig": openpgp.PINSign}[id]
	if pin == "" {
		pin = openpgp.PIN
	}
	return profiles.Key{ID: id, Public: pub, Algorithm: profiles.AlgorithmOf(pub), PINPolicy: profiles.PINOnce, PIN: pin,
		Decrypt: id == "dec", NoSign: id == "dec"}, true
}
