package token

import (
	"context"
	"errors"
	"time"

	"github.com/pscs/pscs/transport"
)

// start connects, fetches the catalogue and follows the server's events.
func (m *Module) start() {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	_, err := m.connect(ctx)
	close(m.connected)
	if err == nil {
		err = m.refresh(ctx)
	}
	cancel()
	if err != nil {
		m.log.Warn("pscs: no catalogue from the server", "err", err)
		m.mu.Lock()
		m.lastFetch = time.Now() // a failed attempt: none again within 5 s
		m.readyLocked()
		m.mu.Unlock()
	}
}

// watch refreshes the catalogue when the server announces a change.
func (m *Module) watch(b Backend) {
	for {
		select {
		case <-m.ctx.Done():
			return
		case ev := <-b.Events():
			m.log.Debug("pscs: event", "kind", ev.Kind, "slot", ev.Slot)
			if ev.Kind == transport.EventShutdown {
				continue
			}
			if ev.Kind == transport.EventRevoked {
				m.logout(ev.Slot) // at once: the server ended the login
			}
			ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
			if err := m.refresh(ctx); err != nil {
				m.log.Warn("pscs: catalogue refresh", "err", err)
			}
			cancel()
			// The event after the new catalogue: an application that
			// C_WaitForSlotEvent wakes reads the slot's new objects, not
			// the ones the event announced the end of.
			if ev.Kind == transport.EventRevoked || ev.Kind == transport.EventSlot {
				m.slotEvent(ev.Slot)
			}
		}
	}
}

// logout forgets the login of slot id: the server ended it (a revoked
// delegation).
func (m *Module) logout(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slots[id]; s != nil && !m.finalized {
		s.forgetLocked()
	}
}

// slotEvent reports an event of slot id to C_WaitForSlotEvent.
func (m *Module) slotEvent(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[id]
	if s == nil || m.finalized {
		return
	}
	m.pending[id] = true
	close(m.changed)
	m.changed = make(chan struct{})
}

// connect returns the backend, connecting if there is none.
func (m *Module) connect(ctx context.Context) (Backend, error) {
	m.dialMu.Lock()
	defer m.dialMu.Unlock()
	m.mu.Lock()
	b, done := m.backend, m.finalized
	m.mu.Unlock()
	if done {
		return nil, ErrNotInitialized
	}
	if b != nil {
		return b, nil
	}
	if m.opts.Connect == nil {
		return nil, &rvError{ErrDeviceError, errors.New("no server configured")}
	}
	b, err := m.opts.Connect(ctx)
	if err != nil {
		return nil, remoteError(err, false)
	}
	m.mu.Lock()
	if m.finalized {
		m.mu.Unlock()
		b.Close()
		return nil, ErrNotInitialized
	}
	m.backend = b
	m.mu.Unlock()
	// The server's events are followed from the first connection, whichever
	// call made it.
	go m.watch(b)
	return b, nil
}

// conn waits for the background connection, or connects again if it
// failed.
func (m *Module) conn(ctx context.Context) (Backend, error) {
	select {
	case <-m.connected:
	case <-ctx.Done():
		return nil, &rvError{ErrDeviceError, ctx.Err()}
	}
	return m.connect(ctx)
}

// refresh fetches the catalogue.
func (m *Module) refresh(ctx context.Context) error {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	b, err := m.connect(ctx)
	m.mu.Lock()
	m.lastFetch = time.Now() // also when the server cannot be reached
	m.mu.Unlock()
	if err != nil {
		return err
	}
	resp, err := b.Hello(ctx)
	if err != nil {
		return remoteError(err, false)
	}
	if resp.Catalogue != nil {
		m.setCatalogue(resp.Catalogue)
	}
	return nil
}
