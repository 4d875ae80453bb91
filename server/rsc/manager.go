package rsc

import (
	"context"
	"crypto"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/profiles"
)

// Event is a change of a reader, as the manager needs it: a card came in
// (Present) or went away.
type Event struct {
	Reader  string
	Present bool
}

// Assign chooses the pool of a card from what it is: its profile, serial and
// keys. ok false leaves the card out of every pool.
type Assign func(profile string, info profiles.Info, keys []profiles.Key) (pool string, ok bool)

// Manager keeps pools in step with the readers: a card inserted is
// identified (profile, serial, keys), given a worker and added to the pool
// Assign chooses; a card removed leaves its pool; a card inserted again
// rejoins, while the server runs.
//
// A Manager is used by one goroutine, the one running [Manager.Run].
type Manager struct {
	Pools    map[string]*Pool
	Profiles []profiles.Profile
	Assign   Assign
	// Open connects to the card in a reader.
	Open   func(reader string) cards.Opener
	Logger *slog.Logger
	// RequireProof refuses a card that cannot prove it holds the private
	// key of one of the public keys it shows (it has no key usable without
	// a PIN); by default such a card is admitted with a warning.
	RequireProof bool

	cards map[string]*managed // by reader
}

type managed struct {
	pool   *Pool
	id     string
	worker *cards.Worker
}

// Run applies events until the channel closes or ctx ends; it closes the
// workers it made when it returns.
func (m *Manager) Run(ctx context.Context, events <-chan Event) {
	log := m.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m.cards = map[string]*managed{}
	var wg sync.WaitGroup
	defer func() {
		for _, c := range m.cards {
			c.pool.Remove(c.id)
			wg.Add(1)
			go func() { defer wg.Done(); c.worker.Close() }()
		}
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if old := m.cards[ev.Reader]; old != nil {
				old.pool.Remove(old.id)
				wg.Add(1)
				go func() { defer wg.Done(); old.worker.Close() }() // never block on a busy card
				delete(m.cards, ev.Reader)
			}
			if !ev.Present {
				continue
			}
			c, err := m.join(ctx, ev.Reader)
			if err != nil {
				log.Warn("card not served", "reader", ev.Reader, "err", err)
				continue
			}
			if c != nil {
				m.cards[ev.Reader] = c
			}
		}
	}
}

// prove has the card sign a fresh challenge with a key that needs no PIN
// (PIV 9E, card authentication): serials and public keys are public, and a
// card imitating a member of a pool would otherwise be sent the real PIN.
// The profile checks the signature against the public key the card shows,
// so only the card holding that key passes.
func (m *Manager) prove(ctx context.Context, c profiles.Card, keys []profiles.Key) error {
	for _, k := range keys {
		if k.PINPolicy != profiles.PINNever {
			continue
		}
		challenge := make([]byte, 32)
		rand.Read(challenge)
		if _, err := c.Sign(ctx, k.ID, challenge, crypto.SHA256); err != nil {
			return fmt.Errorf("rsc: the card does not prove it holds key %s: %w", k.ID, err)
		}
		return nil
	}
	if m.RequireProof {
		return fmt.Errorf("rsc: the card has no key usable without a PIN to prove itself")
	}
	if m.Logger != nil {
		m.Logger.Warn("card admitted without proof of its keys: it has no key usable without a PIN")
	}
	return nil
}

// join identifies the card in reader and adds it to its pool.
func (m *Manager) join(ctx context.Context, reader string) (*managed, error) {
	w := cards.NewWorker(m.Open(reader), m.Logger)
	// A card that does not answer must not hold up the other readers.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var (
		profile string
		info    profiles.Info
		keys    []profiles.Key
		conn    uint64
	)
	err := w.Do(ctx, func(ctx context.Context, t cards.Transmitter) error {
		p, c, err := profiles.Detect(ctx, t, m.Profiles...)
		if err != nil {
			return err
		}
		profile = p.Name()
		if info, err = c.Info(ctx); err != nil {
			return err
		}
		if keys, err = c.Keys(ctx); err != nil {
			return err
		}
		conn = w.Connections()
		return m.prove(ctx, c, keys)
	})
	if err != nil {
		w.Close()
		return nil, err
	}
	if m.Logger != nil {
		m.Logger.Info("card identified", "reader", reader, "profile", profile, "label", info.Label,
			"serial", info.Serial, "version", info.Version, "keys", describeKeys(keys))
	}
	name, ok := m.Assign(profile, info, keys)
	if !ok {
		w.Close()
		return nil, nil
	}
	pool := m.Pools[name]
	if pool == nil {
		w.Close()
		return nil, fmt.Errorf("rsc: no remote card %q", name)
	}
	var prof profiles.Profile
	for _, p := range m.Profiles {
		if p.Name() == profile {
			prof = p
		}
	}
	id := profile + ":" + info.Serial
	member := &Member{ID: id, Reader: reader, Worker: w, Profile: prof}
	member.setKeys(keys, conn)
	if err := pool.Add(member); err != nil {
		w.Close()
		return nil, err
	}
	return &managed{pool: pool, id: id, worker: w}, nil
}
