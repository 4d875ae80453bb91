package main

// pscs card record: a card session written to a transcript
// (internal/transcript), with its secrets scrubbed.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/internal/transcript"
	"github.com/pscs/pscs/profiles"
)

func (a *app) cardRecord(ctx context.Context, fs *cli.Flags, args []string) error {
	reader := fs.String("r", "", "reader name (default: the first reader with a card)")
	out := fs.String("out", "", "transcript file to write (mockfile v3, internal/transcript)")
	keyID := fs.String("k", "", "also sign -in with this key (PIN from PSCS_PIN or the terminal)")
	hashName := fs.String("hash", "sha256", "hash: sha256, sha384 or sha512")
	pss := fs.Bool("pss", false, "RSA-PSS instead of PKCS #1 v1.5 (RSA keys)")
	in := fs.String("in", "", "file to sign (with -k)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("out"); err != nil {
		return err
	}
	if (*keyID == "") != (*in == "") {
		return fs.Usagef("-k and -in go together")
	}
	hash, ok := hashByName[*hashName]
	if !ok {
		return fs.Usagef("-hash: %q is not sha256, sha384 or sha512", *hashName)
	}
	var sign *signRequest
	if *keyID != "" {
		data, err := os.ReadFile(*in)
		if err != nil {
			return err
		}
		h := hash.New()
		h.Write(data)
		sign = &signRequest{key: *keyID, digest: h.Sum(nil), opts: hash}
		if *pss {
			sign.opts = &rsa.PSSOptions{Hash: hash, SaltLength: rsa.PSSSaltLengthEqualsHash}
		}
		sign.pin = func() ([]byte, error) { return readPIN(a) }
	}
	pc, err := openPCSC()
	if err != nil {
		return err
	}
	defer pc.Close()
	rec := newRecorder()
	a.wrap = func(t cards.Transmitter) cards.Transmitter { rec.t = t; return rec }
	defer func() { a.wrap = nil }()
	err = a.withCard(ctx, pc, *reader, sign != nil, func(ctx context.Context, p profiles.Profile, c profiles.Card) error {
		rec.profile = p.Name()
		return recordSession(ctx, c, sign)
	})
	if rec.t == nil {
		return err // no card reached: nothing to record
	}
	rec.atr = a.atr
	// The session is written even when it failed: the card's refusal is
	// what one records a transcript for.
	if werr := os.WriteFile(*out, rec.transcript().Format(), 0o600); werr != nil {
		return werr
	}
	fmt.Fprintf(a.stderr, "recorded %d exchanges (%d scrubbed) to %s\n", rec.n, rec.scrubbed, *out)
	return err
}

// signRequest is the signature a recorded session makes.
type signRequest struct {
	key    string
	digest []byte
	opts   crypto.SignerOpts
	pin    func() ([]byte, error)
}

// recordSession is what `pscs card record` does with the card: read its
// inventory as `pscs card info` does (Info, PINStatus, Keys) and, with
// sign, sign as `pscs card sign` does.
func recordSession(ctx context.Context, c profiles.Card, sign *signRequest) error {
	if _, err := c.Info(ctx); err != nil {
		return err
	}
	for _, p := range c.PINs() {
		if _, err := c.PINStatus(ctx, p.ID); err != nil {
			return err
		}
	}
	keys, err := c.Keys(ctx)
	if err != nil || sign == nil {
		return err
	}
	var key *profiles.Key
	for i := range keys {
		if strings.EqualFold(keys[i].ID, sign.key) {
			key = &keys[i]
		}
	}
	if key == nil {
		return fmt.Errorf("card record: key %q: %w", sign.key, profiles.ErrNoKey)
	}
	if key.PINPolicy != profiles.PINNever {
		pin, err := sign.pin()
		if err != nil {
			return err
		}
		err = c.VerifyPIN(ctx, key.PIN, pin)
		clear(pin)
		if err != nil {
			return err
		}
	}
	_, err = c.Sign(ctx, key.ID, sign.digest, sign.opts)
	return err
}

// recorder keeps the exchanges of a session, scrubbed as they pass.
type recorder struct {
	t       cards.Transmitter
	profile string
	atr     []byte

	mu       sync.Mutex
	start    time.Time
	calls    []transcript.Call
	scrub    scrubber
	n        int
	scrubbed int
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

func (r *recorder) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	t0 := time.Since(r.start)
	rsp, err := r.t.Transmit(ctx, cmd)
	t1 := time.Since(r.start)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		return rsp, err
	}
	c, scrubbedCmd, scrubbedRsp := r.scrub.scrub(cmd, rsp)
	r.n++
	if scrubbedCmd || scrubbedRsp {
		r.scrubbed++
	}
	r.calls = append(r.calls, transcript.Call{
		Start: ms(t0), End: ms(t1), Timed: true, Method: "Transmit",
		Command: c.cmd, Response: c.rsp,
	})
	return rsp, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *recorder) transcript() *transcript.Transcript {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &transcript.Transcript{
		File: []transcript.Field{{Key: "version", Value: "v3"}},
		Meta: []transcript.Field{
			{Key: "pscs.recorder", Value: "pscs-card-record"},
			{Key: "pscs.profile", Value: orDash(r.profile)},
			{Key: "pscs.scrubbed", Value: "secret-bytes-zeroed"},
		},
	}
	if r.atr != nil {
		t.Meta = append([]transcript.Field{{Key: "status.atr", Value: hex.EncodeToString(r.atr)}}, t.Meta...)
	}
	t.Calls = append(t.Calls, r.calls...)
	return t
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// exchange is a scrubbed command and response.
type exchange struct{ cmd, rsp []byte }

// scrubber zeroes the secrets of a session, keeping every length and
// status word, so that a transcript still replays against a driver that
// goes through the same scrubber (see scrubbingReplay in the tests).
//
// TODO(issue 11, item 3: the seam): the profile declares which of its APDUs
// carry secrets (wt-seam's registry); this local table follows cards.Trace's
// rules until then and goes when profiles declare them.
//
// Command data zeroed: VERIFY (20), CHANGE REFERENCE DATA (24), RESET
// RETRY COUNTER (2C), GENERAL AUTHENTICATE (87) with the PIV management
// key (P2 9B), YubiKey IMPORT KEY (FE) and SET MANAGEMENT KEY (FF),
// OpenPGP PUT DATA of a private key (DB 3F FF with an extended header list,
// 4D), and the later blocks of a chain whose first block was zeroed.
// Response data zeroed: PSO:DECIPHER (2A 80 86), GENERAL AUTHENTICATE with
// the PIV key management key (P2 9D: decryption) or with an
// exponentiation (tag 85 in 7C: ECDH), and the GET RESPONSEs that continue
// a zeroed response. Signatures are kept: a driver checks them on replay.
type scrubber struct {
	chainINS    byte
	secretChain bool
	secretMore  bool
}

func (s *scrubber) scrub(cmd, rsp []byte) (ex exchange, cmdScrubbed, rspScrubbed bool) {
	hideCmd := secretCommandData(cmd) || (s.secretChain && len(cmd) > 1 && cmd[1] == s.chainINS)
	hideRsp := secretResponseData(cmd) || (s.secretMore && len(cmd) > 1 && cmd[1] == 0xC0)
	s.secretChain = hideCmd && len(cmd) > 0 && cmd[0]&0x10 != 0
	if s.secretChain {
		s.chainINS = cmd[1]
	}
	s.secretMore = hideRsp && len(rsp) >= 2 && rsp[len(rsp)-2] == 0x61
	ex = exchange{cmd: bytes.Clone(cmd), rsp: bytes.Clone(rsp)}
	if hideCmd {
		zeroCommandData(ex.cmd)
	}
	if hideRsp && len(ex.rsp) > 2 {
		clear(ex.rsp[:len(ex.rsp)-2])
	}
	return ex, hideCmd, hideRsp && len(rsp) > 2
}

// zeroCommandData zeroes the data field of a short or extended command
// APDU (ISO 7816-4 cases 3 and 4), or everything after the header when the
// encoding is not understood.
func zeroCommandData(c []byte) {
	if len(c) <= 5 {
		return
	}
	if c[4] != 0 {
		n := int(c[4])
		if 5+n <= len(c) {
			clear(c[5 : 5+n])
			return
		}
	} else if len(c) > 7 {
		n := int(c[5])<<8 | int(c[6])
		if 7+n <= len(c) {
			clear(c[7 : 7+n])
			return
		}
	}
	clear(c[4:])
}

func secretCommandData(c []byte) bool {
	if len(c) < 4 {
		return false
	}
	switch c[1] {
	case 0x20, 0x24, 0x2C, 0xFE, 0xFF:
		return true
	case 0x87:
		return c[3] == 0x9B
	case 0xDB:
		return c[2] == 0x3F && c[3] == 0xFF && bytes.Contains(commandData(c), []byte{0x4D})
	}
	return false
}

func secretResponseData(c []byte) bool {
	if len(c) < 4 {
		return false
	}
	switch {
	case c[1] == 0x2A && c[2] == 0x80 && c[3] == 0x86:
		return true
	case c[1] == 0x87:
		return c[3] == 0x9D || gaHasExponentiation(commandData(c))
	}
	return false
}

// gaHasExponentiation reports whether a GENERAL AUTHENTICATE dynamic
// authentication template (7C) carries an exponentiation (85): ECDH.
func gaHasExponentiation(d []byte) bool {
	if len(d) < 2 || d[0] != 0x7C {
		return false
	}
	d = d[1:]
	n, rest, ok := berLen(d)
	if !ok || n > len(rest) {
		return bytes.Contains(d, []byte{0x85}) // err on the side of hiding
	}
	inner := rest[:n]
	for len(inner) >= 2 {
		tag := inner[0]
		n, rest, ok := berLen(inner[1:])
		if !ok || n > len(rest) {
			return true
		}
		if tag == 0x85 {
			return true
		}
		inner = rest[n:]
	}
	return false
}

func berLen(b []byte) (int, []byte, bool) {
	if len(b) == 0 {
		return 0, nil, false
	}
	switch {
	case b[0] < 0x80:
		return int(b[0]), b[1:], true
	case b[0] == 0x81 && len(b) >= 2:
		return int(b[1]), b[2:], true
	case b[0] == 0x82 && len(b) >= 3:
		return int(b[1])<<8 | int(b[2]), b[3:], true
	}
	return 0, nil, false
}

// commandData returns the data field of a command APDU, or nil.
func commandData(c []byte) []byte {
	if len(c) <= 5 {
		return nil
	}
	if c[4] != 0 {
		return c[5:min(len(c), 5+int(c[4]))]
	}
	if len(c) > 7 {
		n := int(c[5])<<8 | int(c[6])
		return c[7:min(len(c), 7+n)]
	}
	return nil
}
