package profiletest

// The rogue-card harness: a card that answers with bytes chosen by a fuzzer
// (endless 61xx, huge lengths, answers of another application, a card that
// stalls until the context ends). Whatever it answers, opening the card and
// every operation end in bounded time and memory, with an error where the
// card gave no usable answer, never with a panic.
//
// # Use
//
// The Fuzz function lives in the profile's package, with its seeds in that
// package's testdata/fuzz/<FuzzName>:
//
//	func FuzzRogue(f *testing.F) {
//		profiletest.FuzzRogue(f, profiletest.RogueEnv{Profile: piv.Profile{}, KeyIDs: []string{"9a", "9c"}})
//	}
//
// Seeds are best recorded from the profile's simulator ([RogueRecorder]): the
// fuzzer then mutates a real conversation, and gets past SELECT.
//
// # Script
//
// The fuzz input is a script of answers, one per command the driver sends.
// Each answer starts with a kind byte (taken modulo 8):
//
//	0 n1 n2 b…   the n bytes b (n big-endian; cut short at the end)
//	1 xx         61 xx to this and every later command: endless GET RESPONSE
//	2 n1 n2      a huge answer: (n mod 2048 + 1)·64 bytes of filler (up to
//	             128 KiB, twice what apdu.Conn accepts), then 90 00
//	3            stall: block until the operation's context ends (the reader
//	             times out if the context cannot end)
//	4            a link error
//	5 i          the answer of another application (ForeignAnswers[i])
//	6 s1 s2      the status word s1 s2 alone
//	7            the command echoed back, then 90 00
//
// When the script runs out the card answers 6F 00 ("no precise diagnosis").

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/pscs/pscs/profiles"
)

// Rogue script kinds (see the package's Script section).
const (
	RogueBytes byte = iota
	RogueEndless61
	RogueHuge
	RogueStall
	RogueLinkError
	RogueForeign
	RogueStatus
	RogueEcho
)

// ForeignAnswers are answers of other card applications, which a rogue card
// gives in place of the one the driver expects: an OpenPGP card's
// application related data, an EstEID's FCI, a PIV application property
// template, an EMV PSE, a JavaCard's GlobalPlatform answer.
var ForeignAnswers = [][]byte{
	// OpenPGP: application related data (AID, historical bytes, algorithm attributes).
	{0x6E, 0x1D, 0x4F, 0x10, 0xD2, 0x76, 0x00, 0x01, 0x24, 0x01, 0x03, 0x04, 0x00, 0x06, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00,
		0x73, 0x09, 0xC1, 0x07, 0x01, 0x08, 0x00, 0x00, 0x20, 0x00, 0x00, 0x90, 0x00},
	// EstEID 2018: FCI of the QSCD application.
	{0x6F, 0x12, 0x84, 0x10, 0xA0, 0x00, 0x00, 0x00, 0x77, 0x01, 0x08, 0x00, 0x07, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x01, 0x00, 0x90, 0x00},
	// PIV: application property template.
	{0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x90, 0x00},
	// EMV: payment system environment.
	{0x6F, 0x1E, 0x84, 0x0E, '1', 'P', 'A', 'Y', '.', 'S', 'Y', 'S', '.', 'D', 'D', 'F', '0', '1', 0xA5, 0x0C, 0x88, 0x01, 0x01,
		0x5F, 0x2D, 0x02, 'e', 'n', 0x9F, 0x11, 0x01, 0x01, 0x90, 0x00},
	// GlobalPlatform card manager: card recognition data with a lying length.
	{0x66, 0x81, 0xFF, 0x73, 0x82, 0xFF, 0xFF, 0x06, 0x07, 0x2A, 0x86, 0x48, 0x86, 0xFC, 0x6B, 0x01, 0x90, 0x00},
	// A certificate object whose lengths overrun (53 with a 4-byte length).
	{0x53, 0x84, 0x7F, 0xFF, 0xFF, 0xFF, 0x70, 0x82, 0xFF, 0xFF, 0x30, 0x82, 0x90, 0x00},
	// Nothing but a status word of success, in another CLA's idea of it.
	{0x90, 0x00},
	// One byte.
	{0x61},
}

// RogueEnv describes the profile under the rogue-card harness.
type RogueEnv struct {
	Profile profiles.Profile
	// KeyIDs are key IDs to sign with besides those Keys returns (a rogue
	// card's inventory may be empty or fail).
	KeyIDs []string
	// PIN is presented with VerifyPIN; nil means "123456".
	PIN []byte
	// Exercise, if set, runs the profile's operations beyond [profiles.Card]
	// (decryption, PIN change, …) on an opened card. Each call gets its own
	// context; an operation that receives a stall must return an error.
	Exercise func(op func(name string, f func(ctx context.Context) error), card profiles.Card)
	// MaxTransmits bounds the exchanges of one operation; default 1024.
	MaxTransmits int
	// MaxAlloc bounds the bytes allocated by one run of the harness;
	// default 256 MiB.
	MaxAlloc uint64
}

// RogueCard is a [profiles.Transmitter] that answers from a script (see
// the package's Script section). It is not safe for concurrent use.
type RogueCard struct {
	script  []byte
	endless []byte // non-nil: answer this forever

	// cancel ends the current operation's context on a stall; set by the harness.
	cancel context.CancelFunc
	// opTransmits, max: the harness stops a driver that keeps
	// transmitting in one operation (max 0: no limit).
	opTransmits int
	max         int

	Transmits int // exchanges so far
	// FirstFailed: the first exchange of the current operation stalled
	// or failed, so the operation got no answer at all.
	FirstFailed bool
}

// NewRogueCard returns a card that answers from script.
func NewRogueCard(script []byte) *RogueCard { return &RogueCard{script: script} }

var (
	errRogueLink    = errors.New("rogue card: link failed")
	errRogueTimeout = errors.New("rogue card: no answer within the reader's timeout")
)

// Endless reports whether the card answers 61xx forever from now on.
func (r *RogueCard) Endless() bool { return r.endless != nil }

// Transmit answers cmd from the script.
func (r *RogueCard) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	r.Transmits++
	r.opTransmits++
	if r.max > 0 && r.opTransmits > 2*r.max {
		// A driver that ignores errors would loop forever: end the
		// operation (the harness recovers this value only).
		panic(runaway{r.opTransmits})
	}
	if err := ctx.Err(); err != nil {
		return nil, err // as cards/pcsc does
	}
	if r.endless != nil {
		return bytes.Clone(r.endless), nil
	}
	if len(r.script) == 0 {
		return []byte{0x6F, 0x00}, nil
	}
	kind := r.script[0] % 8
	r.script = r.script[1:]
	switch kind {
	case RogueBytes:
		if len(r.script) < 2 {
			r.script = nil
			return []byte{0x6F, 0x00}, nil
		}
		n := int(binary.BigEndian.Uint16(r.script))
		r.script = r.script[2:]
		n = min(n, len(r.script))
		out := bytes.Clone(r.script[:n])
		r.script = r.script[n:]
		return out, nil
	case RogueEndless61:
		r.endless = []byte{0x61, r.next()}
		return bytes.Clone(r.endless), nil
	case RogueHuge:
		// Up to 128 KiB: twice what apdu.Conn accepts, and cheap enough
		// for thousands of runs a second.
		n := ((int(r.next())<<8|int(r.next()))%2048 + 1) * 64
		out := bytes.Repeat([]byte{0xA5}, n)
		return append(out, 0x90, 0x00), nil
	case RogueStall:
		r.FirstFailed = r.FirstFailed || r.opTransmits == 1
		if ctx.Done() == nil {
			// A context that cannot end: apdu.Conn sends the rest of a
			// GET RESPONSE or chained sequence so. The reader's own
			// timeout ends the exchange, as pcscd's does with a card
			// that does not answer.
			return nil, errRogueTimeout
		}
		if r.cancel != nil {
			// The deadline comes now rather than in seconds: the fuzzer
			// runs thousands of stalls a second.
			r.cancel()
		}
		<-ctx.Done()
		return nil, ctx.Err()
	case RogueLinkError:
		r.FirstFailed = r.FirstFailed || r.opTransmits == 1
		return nil, errRogueLink
	case RogueForeign:
		return bytes.Clone(ForeignAnswers[int(r.next())%len(ForeignAnswers)]), nil
	case RogueStatus:
		return []byte{r.next(), r.next()}, nil
	default: // RogueEcho
		return append(bytes.Clone(cmd), 0x90, 0x00), nil
	}
}

func (r *RogueCard) next() byte {
	if len(r.script) == 0 {
		return 0
	}
	b := r.script[0]
	r.script = r.script[1:]
	return b
}

// RogueRecorder wraps a card (a simulator) and writes its answers as a
// rogue script of literal answers, to seed the fuzzer with a real
// conversation.
type RogueRecorder struct {
	Card   profiles.Transmitter
	Script []byte
}

// Transmit passes cmd to the card and records its answer.
func (r *RogueRecorder) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	rsp, err := r.Card.Transmit(ctx, cmd)
	if err == nil {
		r.Script = append(r.Script, RogueBytes)
		r.Script = binary.BigEndian.AppendUint16(r.Script, uint16(len(rsp)))
		r.Script = append(r.Script, rsp...)
	}
	return rsp, err
}

// RecordRogueSeed runs the harness's operations against card (a
// simulator) and returns the conversation as a rogue script, in the
// format of a Go fuzz corpus file, for testdata/fuzz/<FuzzName>/.
func RecordRogueSeed(e RogueEnv, card profiles.Transmitter) []byte {
	rec := &RogueRecorder{Card: card}
	e.exercise(context.Background(), rec, nil)
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", rec.Script)
}

// RogueSeeds keeps a profile's rogue-card seeds in testdata/fuzz/<fuzz>
// (run from the profile's package): with write set it records the
// conversation with each of cards (simulators) there as sim-<i>
// ([RecordRogueSeed]); otherwise it fails t when there are none.
func RogueSeeds(t *testing.T, fuzz string, write bool, e RogueEnv, cards ...profiles.Transmitter) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if !write {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			t.Fatalf("no seeds in %s (run the test with -write-seeds): %v", dir, err)
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, card := range cards {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("sim-%d", i)), RecordRogueSeed(e, card), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzRogue seeds f with the scripts of each kind and fuzzes e's profile
// with [Rogue].
func FuzzRogue(f *testing.F, e RogueEnv) {
	f.Add([]byte{RogueBytes, 0x00, 0x02, 0x90, 0x00})
	f.Add([]byte{RogueEndless61, 0x00})
	f.Add([]byte{RogueBytes, 0x00, 0x02, 0x90, 0x00, RogueEndless61, 0xFF})
	f.Add([]byte{RogueHuge, 0xFF, 0xFF, RogueHuge, 0x10, 0x00})
	f.Add([]byte{RogueStall})
	f.Add([]byte{RogueBytes, 0x00, 0x02, 0x90, 0x00, RogueStall, RogueStall, RogueStall})
	f.Add([]byte{RogueLinkError, RogueBytes, 0x00, 0x02, 0x90, 0x00, RogueLinkError})
	f.Add([]byte{RogueForeign, 0, RogueForeign, 1, RogueForeign, 2, RogueForeign, 3, RogueForeign, 4, RogueForeign, 5})
	f.Add([]byte{RogueStatus, 0x6A, 0x82, RogueStatus, 0x63, 0xC0, RogueStatus, 0x69, 0x83})
	f.Add([]byte{RogueEcho, RogueEcho, RogueEcho, RogueEcho})
	f.Fuzz(func(t *testing.T, script []byte) { Rogue(t, e, script) })
}

// Rogue runs one script: it opens the card and runs every operation on it
// (Info, Keys, PINStatus, VerifyPIN, Sign with each key and e.KeyIDs,
// Logout, then e.Exercise), and fails t with each problem [RogueProblems]
// finds. A panic of the driver fails the fuzz run as any panic does.
func Rogue(t *testing.T, e RogueEnv, script []byte) {
	t.Helper()
	for _, p := range RogueProblems(e, script) {
		t.Errorf("%s: %s", e.Profile.Name(), p)
	}
}

// RogueProblems runs one script as [Rogue] does and returns what went
// wrong: an operation that makes more than e.MaxTransmits exchanges (past
// twice that, the card panics to end it, and this is recovered), that
// returns no error when its first exchange stalled or failed or while the
// card answered only 61xx, or a run that allocates more than e.MaxAlloc
// bytes. An operation may ignore the failure of an optional exchange after
// the first (PIV's PIN retries from YubiKey metadata), but it returns: a
// stall ends with the operation's context.
func RogueProblems(e RogueEnv, script []byte) []string {
	maxAlloc := e.MaxAlloc
	if maxAlloc == 0 {
		maxAlloc = 256 << 20
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	card := NewRogueCard(script)
	var problems []string
	e.exercise(context.Background(), card, func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	})
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > maxAlloc {
		problems = append(problems, fmt.Sprintf("one run allocated %d bytes with a rogue card, limit %d", n, maxAlloc))
	}
	return problems
}

// runaway is the panic that ends an operation that keeps transmitting.
type runaway struct{ n int }

// exercise opens the card behind tx and runs every operation. With a
// RogueCard and t, it checks each operation.
func (e RogueEnv) exercise(parent context.Context, tx profiles.Transmitter, report func(format string, args ...any)) {
	rogue, _ := tx.(*RogueCard)
	maxTx := e.MaxTransmits
	if maxTx <= 0 {
		maxTx = 1024
	}
	if rogue != nil {
		rogue.max = maxTx
	}
	op := func(name string, f func(ctx context.Context) error) {
		ctx, cancel := context.WithCancel(parent)
		defer cancel()
		if rogue == nil || report == nil {
			f(ctx)
			return
		}
		rogue.cancel, rogue.FirstFailed, rogue.opTransmits = cancel, false, 0
		startTx, wasEndless := rogue.Transmits, rogue.Endless()
		err := runOp(ctx, f)
		n := rogue.Transmits - startTx
		switch {
		case n > maxTx:
			report("%s: %d exchanges with a rogue card, limit %d", name, n, maxTx)
		case err == nil && rogue.FirstFailed:
			report("%s: no error although the card never answered (stall or link failure on the first exchange)", name)
		case err == nil && wasEndless && n > 0:
			report("%s: no error although the card answered only 61xx", name)
		}
	}
	var card profiles.Card
	var openErr error
	op("Open", func(ctx context.Context) error {
		card, openErr = e.Profile.Open(ctx, tx)
		if openErr == nil && card == nil {
			if report != nil {
				report("Open: no card and no error")
			}
			openErr = errors.New("nil card")
		}
		return openErr
	})
	if openErr != nil || card == nil {
		return
	}
	ids := append([]string(nil), e.KeyIDs...)
	op("Info", func(ctx context.Context) error { _, err := card.Info(ctx); return err })
	op("Keys", func(ctx context.Context) error {
		ks, err := card.Keys(ctx)
		for _, k := range ks {
			ids = append(ids, k.ID)
		}
		return err
	})
	var pinIDs []string
	for _, p := range card.PINs() {
		pinIDs = append(pinIDs, p.ID)
	}
	for _, id := range pinIDs {
		op("PINStatus "+id, func(ctx context.Context) error { _, err := card.PINStatus(ctx, id); return err })
	}
	pin := e.PIN
	if pin == nil {
		pin = []byte("123456")
	}
	digest := make([]byte, 32)
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		for _, p := range pinIDs {
			op("VerifyPIN "+p, func(ctx context.Context) error { return card.VerifyPIN(ctx, p, pin) })
		}
		op("Sign "+id, func(ctx context.Context) error {
			_, err := card.Sign(ctx, id, digest, crypto.SHA256)
			return err
		})
		op("Sign PSS "+id, func(ctx context.Context) error {
			_, err := card.Sign(ctx, id, digest, &rsa.PSSOptions{Hash: crypto.SHA256})
			return err
		})
	}
	if e.Exercise != nil {
		e.Exercise(op, card)
	}
	op("Logout", func(ctx context.Context) error { return card.Logout(ctx) })
}

// runOp runs f, turning the card's runaway panic into an error; any other
// panic goes on.
func runOp(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			r, ok := v.(runaway)
			if !ok {
				panic(v)
			}
			err = fmt.Errorf("rogue card: stopped after %d exchanges", r.n)
		}
	}()
	return f(ctx)
}
