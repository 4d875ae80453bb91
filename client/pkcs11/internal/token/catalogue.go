package token

import (
	"bytes"
	"context"
	"time"

	"github.com/pscs/pscs/transport"
)

// setCatalogue stores a new catalogue for the next process, then takes
// it: stored first, because a process may end as soon as a call that
// waited for the catalogue returns (pkcs11-tool -L does).
func (m *Module) setCatalogue(cat *transport.Catalogue) {
	m.mu.Lock()
	same := m.cat != nil && bytes.Equal(m.cat.Tag, cat.Tag)
	m.mu.Unlock()
	if !same && m.opts.Store != nil {
		if err := m.opts.Store.Save(cat); err != nil {
			m.log.Warn("pscs: catalogue not cached", "err", err)
		}
	}
	m.mu.Lock()
	m.setCatalogueLocked(cat, true)
	m.mu.Unlock()
}

// setCatalogueLocked takes a catalogue and records slot events: a token
// that appeared, went away or changed. It reports whether the catalogue
// differs from the one before.
func (m *Module) setCatalogueLocked(cat *transport.Catalogue, events bool) bool {
	if m.finalized {
		return false
	}
	same := m.cat != nil && bytes.Equal(m.cat.Tag, cat.Tag) && len(cat.Tag) > 0
	m.cat = cat
	m.readyLocked()
	if same {
		return false
	}
	seen := map[uint64]bool{}
	for _, in := range cat.Slots {
		seen[in.ID] = true
		s := m.slots[in.ID]
		if s == nil {
			s = &slot{id: in.ID}
			m.slots[in.ID] = s
		}
		raw, _ := transport.Marshal(&in)
		was := s.present()
		if bytes.Equal(raw, s.raw) && s.offered {
			continue
		}
		s.info, s.offered, s.raw = in, true, raw
		s.objects = buildObjects(in.Objects)
		s.mechs = slotMechanisms(&in)
		if was && !s.present() {
			s.endLocked()
		}
		if events {
			m.pending[s.id] = true
		}
	}
	for id, s := range m.slots {
		if !seen[id] && s.offered {
			s.offered, s.raw = false, nil
			s.endLocked()
			if events {
				m.pending[id] = true
			}
		}
	}
	if events {
		close(m.changed)
		m.changed = make(chan struct{})
	}
	return true
}

// endLocked ends the token's sessions and login: it went away.
func (s *slot) endLocked() {
	s.gen++
	s.forgetLocked()
}

func (m *Module) readyLocked() {
	if !m.catClosed {
		m.catClosed = true
		close(m.catReady)
	}
}

// waitCatalogue waits for a first catalogue; with none after a failed
// fetch, it tries again (at most every five seconds). The whole wait is
// bounded by one timeout: while the first fetch is still under way when
// the call's time is up, no second one starts, and a second one gets what
// is left of the call's time.
func (m *Module) waitCatalogue() error {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	ready := true
	select {
	case <-m.catReady:
	case <-ctx.Done():
		ready = false // the first fetch is still under way: it had all of this call's time
	}
	m.mu.Lock()
	missing := ready && m.cat == nil && !m.finalized && time.Since(m.lastFetch) > 5*time.Second
	done := m.finalized
	m.mu.Unlock()
	if done {
		return ErrNotInitialized
	}
	if missing {
		if err := m.refresh(ctx); err != nil {
			m.log.Warn("pscs: no catalogue from the server", "err", err)
		}
	}
	return nil
}
