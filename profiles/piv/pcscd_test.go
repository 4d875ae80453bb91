//go:build cgo

package piv_test

// The PIV driver through a real pcscd: the simulator plugged in with vpcd,
// the driver on cards/pcsc, as pscsd runs it.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/piv"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/profiles/profiletest"
)

var daemon *pcscdtest.PCSCD

func TestMain(m *testing.M) {
	pcscdtest.Main(m, pcscdtest.Options{Entries: 3}, func(p *pcscdtest.PCSCD) { daemon = p })
}

// Readers used by the tests: the conformance suite cycles through its own.
const (
	readerRestart   = 4
	readerBench     = 5
	readerIsolation = 3
)

var conformanceReaders = []int{0, 1, 2}

func pcscContext(t testing.TB) *pcsc.Context { return daemon.Context(t) }

// plug keeps card in reader until the test ends (or pull is called), and
// waits until pcscd sees it.
func plug(t testing.TB, reader int, card *pivsim.Card) (pull func()) {
	t.Helper()
	c := pcscContext(t)
	return daemon.Plug(t, reader, card, pcscdtest.PlugOptions{Logger: slog.New(slog.DiscardHandler), Probe: daemon.ContextProbe(c)})
}

func connect(t testing.TB, reader int) *pcsc.Card {
	t.Helper()
	k, err := pcscContext(t).Connect(context.Background(), daemon.Readers[reader])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// TestConformanceThroughPCSCD runs the profile suite with the driver on
// PC/SC and the simulator behind pcscd and vpcd.
func TestConformanceThroughPCSCD(t *testing.T) {
	pcscContext(t)
	next := 0
	profiletest.Run(t, profiletest.Env{
		Profile: piv.Profile{},
		New: func(t *testing.T) profiles.Transmitter {
			reader := conformanceReaders[next%len(conformanceReaders)]
			next++
			card, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name())})
			if err != nil {
				t.Fatal(err)
			}
			plug(t, reader, card)
			return connect(t, reader)
		},
		PIN: []byte("123456"),
	})
}

// signer signs with slot 9A through a worker, as pscsd does: select,
// verify, sign, in one transaction.
func workerSign(ctx context.Context, w *cards.Worker, digest []byte) ([]byte, error) {
	var sig []byte
	err := w.DoAs(ctx, "alice", func(ctx context.Context, t cards.Transmitter) error {
		c, err := piv.Open(ctx, t)
		if err != nil {
			return err
		}
		if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
			return err
		}
		sig, err = c.Sign(ctx, "9a", digest, crypto.SHA256)
		return err
	})
	return sig, err
}

// TestWorkerSurvivesPullAndPCSCDRestart: a card worker keeps working, in
// this process, after its card is pulled and reinserted and after pcscd is
// killed and started again.
func TestWorkerSurvivesPullAndPCSCDRestart(t *testing.T) {
	c := pcscContext(t)
	card, err := pivsim.New(pivsim.Config{Seed: []byte("restart")})
	if err != nil {
		t.Fatal(err)
	}
	pub := card.PublicKey(pivsim.SlotAuthentication).(*ecdsa.PublicKey)
	digest := sha256.Sum256([]byte("survive"))
	reader := daemon.Readers[readerRestart]
	w := cards.NewWorker(func(ctx context.Context) (cards.Conn, error) { return c.Connect(ctx, reader) }, nil)
	defer w.Close()

	signs := func(what string) {
		t.Helper()
		// pcscd notices cards by polling: try again until it has (the
		// deadline is a hang guard, generous for a loaded machine, not a
		// measure: BenchmarkInsertRemove in cards/pcsc measures it).
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			sig, err := workerSign(ctx, w, digest[:])
			cancel()
			if err == nil {
				if !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Fatalf("%s: signature does not verify", what)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no signature within 60 s: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	pull := plug(t, readerRestart, card)
	signs("first signature")

	pull()
	if _, err := workerSign(context.Background(), w, digest[:]); err == nil {
		t.Fatal("signed with the card pulled")
	} else if !errors.Is(err, cards.ErrNoCard) && !errors.Is(err, cards.ErrCardRemoved) {
		t.Errorf("sign with the card pulled: %v, want ErrNoCard or ErrCardRemoved", err)
	}
	plug(t, readerRestart, card)
	signs("after reinsertion")

	if err := daemon.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	signs("after a pcscd restart")
}

// TestNoPrincipalRidesOnAnothersPIN: through pcscd, a request of another
// delegate finds the card reset, its PIN no longer verified.
func TestNoPrincipalRidesOnAnothersPIN(t *testing.T) {
	c := pcscContext(t)
	card, err := pivsim.New(pivsim.Config{Seed: []byte("isolation")})
	if err != nil {
		t.Fatal(err)
	}
	plug(t, readerIsolation, card)
	reader := daemon.Readers[readerIsolation]
	w := cards.NewWorker(func(ctx context.Context) (cards.Conn, error) { return c.Connect(ctx, reader) }, nil)
	defer w.Close()
	digest := sha256.Sum256([]byte("isolation"))
	signWithoutPIN := func(who string) error {
		return w.DoAs(context.Background(), who, func(ctx context.Context, t cards.Transmitter) error {
			c, err := piv.Open(ctx, t)
			if err != nil {
				return err
			}
			_, err = c.Sign(ctx, "9a", digest[:], crypto.SHA256)
			return err
		})
	}
	if _, err := workerSign(context.Background(), w, digest[:]); err != nil {
		t.Fatal(err)
	}
	// alice verified the PIN; her next request may use it (PIN once).
	if err := signWithoutPIN("alice"); err != nil {
		t.Errorf("alice's second request: %v", err)
	}
	if err := signWithoutPIN("bob"); !errors.Is(err, apdu.ErrSecurityStatus) {
		t.Errorf("bob's request on alice's login: %v, want security status not satisfied", err)
	}
	if err := signWithoutPIN("alice"); !errors.Is(err, apdu.ErrSecurityStatus) {
		t.Errorf("alice after bob: %v, want security status not satisfied", err)
	}
}

// BenchmarkSignThroughPCSCD measures signatures/s with the driver on PC/SC
// and a zero-latency simulator behind pcscd and vpcd.
func BenchmarkSignThroughPCSCD(b *testing.B) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("bench")})
	if err != nil {
		b.Fatal(err)
	}
	plug(b, readerBench, card)
	k := connect(b, readerBench)
	benchSign(b, k)
}

// BenchmarkSignInProcess is the same with the simulator called directly:
// the cost of the driver and the simulator's cryptography alone.
func BenchmarkSignInProcess(b *testing.B) {
	card, err := pivsim.New(pivsim.Config{Seed: []byte("bench")})
	if err != nil {
		b.Fatal(err)
	}
	benchSign(b, card)
}

func benchSign(b *testing.B, t profiles.Transmitter) {
	ctx := context.Background()
	c, err := piv.Open(ctx, t)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Keys(ctx); err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("bench"))
	for _, tc := range []struct {
		name, slot string
	}{{"ECCP256", "9a"}, {"ECCP384", "9e"}, {"RSA2048", "9c"}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if tc.slot != "9e" {
					if err := c.VerifyPIN(ctx, piv.PIN, []byte("123456")); err != nil {
						b.Fatal(err)
					}
				}
				sig, err := c.Sign(ctx, tc.slot, digest[:], crypto.SHA256)
				if err != nil || len(sig) == 0 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
		})
	}
}
