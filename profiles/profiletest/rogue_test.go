package profiletest

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/pscs/pscs/profiles"
)

// fakeProfile is a driver with chosen faults, to show that the harness
// sees them.
type fakeProfile struct {
	ignoreErrors bool // every operation succeeds, whatever the card says
	loop         bool // Info transmits until the card answers 90 00
	hog          int  // bytes Keys allocates and keeps
	panics       bool // Sign panics
}

func (p fakeProfile) Name() string { return "fake" }

func (p fakeProfile) Open(ctx context.Context, t profiles.Transmitter) (profiles.Card, error) {
	return &fakeCard{p: p, t: t}, nil
}

type fakeCard struct {
	p    fakeProfile
	t    profiles.Transmitter
	kept []byte
}

func (c *fakeCard) do(ctx context.Context) error {
	rsp, err := c.t.Transmit(ctx, []byte{0x00, 0xCA, 0x00, 0x00, 0x00})
	if c.p.ignoreErrors {
		return nil
	}
	if err != nil {
		return err
	}
	if len(rsp) < 2 || rsp[len(rsp)-2] != 0x90 {
		return errors.New("fake: not 90 00")
	}
	return nil
}

func (c *fakeCard) Info(ctx context.Context) (profiles.Info, error) {
	if c.p.loop {
		for c.do(ctx) != nil {
		}
	}
	return profiles.Info{Profile: "fake", Serial: "1"}, c.do(ctx)
}

func (c *fakeCard) Keys(ctx context.Context) ([]profiles.Key, error) {
	c.kept = make([]byte, c.p.hog)
	for i := range c.kept {
		c.kept[i] = byte(i)
	}
	return nil, c.do(ctx)
}

func (c *fakeCard) PINs() []profiles.PINInfo {
	return []profiles.PINInfo{{ID: "pin", Label: "PIN", Min: 4, Max: 8}}
}
func (c *fakeCard) PINStatus(ctx context.Context, id string) (profiles.PINStatus, error) {
	return profiles.PINStatus{}, c.do(ctx)
}
func (c *fakeCard) VerifyPIN(ctx context.Context, id string, pin []byte) error { return c.do(ctx) }
func (c *fakeCard) Sign(ctx context.Context, id string, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if c.p.panics {
		panic("fake card: boom")
	}
	return nil, c.do(ctx)
}
func (c *fakeCard) Logout(ctx context.Context) error { return c.do(ctx) }

func mentions(problems []string, s string) bool {
	for _, p := range problems {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// TestRogueFindsFaults: the harness reports a driver that swallows a
// stall, a link failure or endless 61xx, one that keeps transmitting, and
// one that allocates past the limit; it lets a careful driver pass every
// kind of script.
func TestRogueFindsFaults(t *testing.T) {
	careful := RogueEnv{Profile: fakeProfile{}, KeyIDs: []string{"01"}}
	scripts := map[string][]byte{
		"stall":   {RogueStall, RogueStall, RogueStall, RogueStall, RogueStall, RogueStall, RogueStall, RogueStall},
		"link":    {RogueLinkError, RogueLinkError, RogueLinkError, RogueLinkError, RogueLinkError, RogueLinkError, RogueLinkError, RogueLinkError},
		"endless": {RogueEndless61, 0x10},
		"huge":    {RogueHuge, 0xFF, 0xFF},
		"foreign": {RogueForeign, 0, RogueForeign, 1, RogueForeign, 2, RogueForeign, 3},
		"echo":    {RogueEcho, RogueEcho, RogueEcho},
		"status":  {RogueStatus, 0x90, 0x00, RogueBytes, 0x00, 0x02, 0x90, 0x00},
		"empty":   nil,
	}
	for name, s := range scripts {
		if p := RogueProblems(careful, s); len(p) > 0 {
			t.Errorf("careful driver, %s script: %q", name, p)
		}
	}

	sloppy := RogueEnv{Profile: fakeProfile{ignoreErrors: true}, KeyIDs: []string{"01"}}
	for name, want := range map[string]string{
		"stall":   "never answered",
		"link":    "never answered",
		"endless": "only 61xx",
	} {
		if p := RogueProblems(sloppy, scripts[name]); !mentions(p, want) {
			t.Errorf("driver that ignores errors, %s script: problems %q, want one saying %q", name, p, want)
		}
	}

	looper := RogueEnv{Profile: fakeProfile{loop: true}, MaxTransmits: 16}
	if p := RogueProblems(looper, scripts["endless"]); !mentions(p, "Info: 33 exchanges with a rogue card, limit 16") {
		t.Errorf("driver that loops: problems %q", p)
	}

	hog := RogueEnv{Profile: fakeProfile{hog: 4 << 20}, MaxAlloc: 1 << 20}
	if p := RogueProblems(hog, nil); !mentions(p, "allocated") {
		t.Errorf("driver that allocates 4 MiB under a 1 MiB limit: problems %q", p)
	}

	panicky := RogueEnv{Profile: fakeProfile{panics: true}, KeyIDs: []string{"01"}}
	func() {
		defer func() {
			if v := recover(); v == nil {
				t.Errorf("a driver's panic did not reach the fuzzer")
			} else if _, ok := v.(runaway); ok {
				t.Errorf("the driver's panic became a runaway")
			}
		}()
		RogueProblems(panicky, scripts["status"])
	}()
}

// TestRecordRogueSeed: a recorded conversation is a corpus file that
// replays as literal answers.
func TestRecordRogueSeed(t *testing.T) {
	card := &echoCard{}
	seed := string(RecordRogueSeed(RogueEnv{Profile: fakeProfile{}, KeyIDs: []string{"01"}}, card))
	if !strings.HasPrefix(seed, "go test fuzz v1\n[]byte(\"") {
		t.Fatalf("seed file: %q", seed)
	}
	if card.n == 0 || strings.Count(seed, `\x00\x00\x02\x90\x00`) != card.n {
		t.Errorf("%d exchanges, seed %q", card.n, seed)
	}
}

type echoCard struct{ n int }

func (c *echoCard) Transmit(context.Context, []byte) ([]byte, error) {
	c.n++
	return []byte{0x90, 0x00}, nil
}
