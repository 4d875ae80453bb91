package netsim

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// StreamRelay is the stream counterpart of Proxy, for protocols over unix
// or TCP sockets (p11-kit's RPC, say): it accepts connections, connects
// each to the upstream address, and forwards bytes both ways, each chunk
// delayed by Delay (the one-way delay: a round trip costs twice that),
// in order. It counts turns: a round trip is client bytes after server
// bytes (or the first client bytes), so a request–answer exchange is one.
type StreamRelay struct {
	ln       net.Listener
	network  string
	upstream string
	delay    time.Duration

	mu      sync.Mutex
	turns   int
	lastDir direction
	first   time.Time
	last    time.Time
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewStreamRelay listens on (network, addr) and relays to upstream on the
// same network.
func NewStreamRelay(network, addr, upstream string, delay time.Duration) (*StreamRelay, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	r := &StreamRelay{ln: ln, network: network, upstream: upstream, delay: delay, conns: map[net.Conn]struct{}{}, lastDir: s2c}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is where clients connect.
func (r *StreamRelay) Addr() string { return r.ln.Addr().String() }

// Turns is the round trips counted since the last Reset.
func (r *StreamRelay) Turns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.turns
}

// Span is the time from the first client bytes to the last server bytes
// since the last Reset.
func (r *StreamRelay) Span() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first.IsZero() {
		return 0
	}
	return r.last.Sub(r.first)
}

// Reset zeroes the counters.
func (r *StreamRelay) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.turns, r.lastDir, r.first, r.last = 0, s2c, time.Time{}, time.Time{}
}

// Close stops accepting, closes every relayed connection and waits for
// the relay's goroutines.
func (r *StreamRelay) Close() error {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *StreamRelay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *StreamRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial(r.network, r.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !r.track(c) || !r.track(up) {
			c.Close()
			up.Close()
			return
		}
		r.wg.Add(2)
		go r.pump(c, up, c2s)
		go r.pump(up, c, s2c)
	}
}

type chunk struct {
	data []byte
	at   time.Time
}

// pump reads from src and writes each chunk to dst Delay after it came.
func (r *StreamRelay) pump(src, dst net.Conn, d direction) {
	defer r.wg.Done()
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			time.Sleep(time.Until(ch.at))
			r.note(d)
			if _, err := dst.Write(ch.data); err != nil {
				return
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{data: append([]byte(nil), buf[:n]...), at: time.Now().Add(r.delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}

// note counts a chunk delivered in direction d.
func (r *StreamRelay) note(d direction) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if d == c2s {
		if r.first.IsZero() {
			r.first = now.Add(-r.delay) // when the client sent it
		}
		if r.lastDir == s2c {
			r.turns++
		}
	} else {
		r.last = now
	}
	r.lastDir = d
}
