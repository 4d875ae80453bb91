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
	"github.com/pscs/pscs/profiles/registry"
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
// Which exchanges hold secrets, every profile declares (profiles.Redactor,
// joined by registry.Redactor): the command data of VERIFY and the other
// PIN commands, of private and management keys; the response data of
// decryptions and key agreements, and the GET RESPONSEs that continue it.
// The later blocks of a chain whose first block was zeroed are zeroed too.
// Signatures are kept: a driver checks them on replay.
type scrubber struct {
	r  cards.Redactor // nil: registry.Redactor()
	rs cards.RedactState
}

func (s *scrubber) scrub(cmd, rsp []byte) (ex exchange, cmdScrubbed, rspScrubbed bool) {
	if s.r == nil {
		s.r = registry.Redactor()
	}
	hideCmd, hideRsp := s.rs.Judge(s.r, cmd)
	s.rs.Answered(rsp, hideRsp)
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
