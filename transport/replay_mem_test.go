package transport

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"
)

// TestReplayCacheTiers: an answered nonce keeps its response for the
// resend period, then only the nonce (still a replay), until it expires;
// the maps are made anew once they have shrunk. Frozen clock.
func TestReplayCacheTiers(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	const resend = 10 * time.Second
	exp := t0.Add(time.Minute)
	c := newReplayCache(1<<20, resend)
	e, fresh, err := c.begin(nk("a"), exp, t0)
	if err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	resp := &Response{Status: CodeOK, Body: []byte{0x40}}
	c.sweep(t0.Add(time.Hour)) // running: kept whole, even past its expiry
	if got, seen := c.lookup(nk("a")); !seen || got != e {
		t.Fatalf("running entry: %v %v", got, seen)
	}
	c.finish(e, resp, t0)
	c.sweep(t0.Add(resend - 1))
	if got, seen := c.lookup(nk("a")); !seen || got != e || got.resp != resp {
		t.Fatalf("within the resend period: %v %v", got, seen)
	}
	c.resent(e, t0.Add(resend-1))
	c.sweep(t0.Add(2*resend - 2)) // the resend started the period again
	if got, _ := c.lookup(nk("a")); got != e {
		t.Fatal("the response was dropped within the period a resend started")
	}
	c.sweep(t0.Add(2*resend - 1))
	if got, seen := c.lookup(nk("a")); !seen || got != nil {
		t.Fatalf("past the resend period: entry %v, seen %v; want the nonce alone", got, seen)
	}
	if got, fresh, err := c.begin(nk("a"), exp, t0.Add(2*resend)); got != nil || fresh || err != nil {
		t.Fatalf("begin of a nonce kept alone: %v %v %v, want a replay without entry", got, fresh, err)
	}
	c.sweep(exp)
	if _, seen := c.lookup(nk("a")); !seen {
		t.Fatal("forgotten at its expiry instant")
	}
	c.sweep(exp.Add(1))
	if _, seen := c.lookup(nk("a")); seen || c.len() != 0 {
		t.Fatal("kept past its expiry")
	}

	// A full cache counts both forms, and its hint is the first expiry.
	c = newReplayCache(2, resend)
	for i, k := range []string{"x", "y"} {
		e, _, _ := c.begin(nk(k), t0.Add(time.Duration(i+1)*time.Minute), t0)
		c.finish(e, resp, t0)
	}
	c.sweep(t0.Add(resend)) // both kept alone now
	_, _, err = c.begin(nk("z"), t0.Add(time.Hour), t0.Add(resend))
	if CodeOf(err) != CodeReplayMemoryFull {
		t.Fatalf("full: %v", err)
	}
	var re *retryError
	if !errors.As(err, &re) || re.after != time.Minute-resend {
		t.Fatalf("retry after %v, want %v", re.after, time.Minute-resend)
	}
	if _, fresh, err := c.begin(nk("z"), t0.Add(time.Hour), t0.Add(time.Minute+1)); err != nil || !fresh {
		t.Fatalf("after the first expiry: %v %v", fresh, err)
	}

	// Shrunk maps are made anew.
	c = newReplayCache(1<<20, resend)
	for i := range 4096 {
		e, _, _ := c.begin(key(i), exp, t0)
		c.finish(e, resp, t0)
	}
	c.sweep(t0.Add(resend))
	if len(c.recent) != 0 || c.peakRecent != 0 || len(c.old) != 4096 {
		t.Fatalf("after the resend period: %d recent (peak %d), %d old", len(c.recent), c.peakRecent, len(c.old))
	}
	c.sweep(exp.Add(1))
	if len(c.old) != 0 || c.peakOld != 0 || c.next != 0 {
		t.Fatalf("after the expiry: %d old (peak %d), next %d", len(c.old), c.peakOld, c.next)
	}
}

func key(i int) nonceKey {
	var k nonceKey
	binary.BigEndian.PutUint64(k[:], uint64(i))
	k[15] = 1
	return k
}

// TestReplayMemoryPerNonce measures, with runtime.ReadMemStats, what a
// remembered nonce costs once its resend period is over (the live heap
// after a collection, over 128 Ki nonces of one identity, each answered
// with a signature-sized response), and bounds it. It logs the cost
// within the resend period too (the whole response kept).
//
//	go test -run TestReplayMemoryPerNonce -v ./transport
func TestReplayMemoryPerNonce(t *testing.T) {
	const n = 1 << 17
	const bound = 96 // bytes per nonce kept alone; the whole response costs some 350
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	c := newReplayCache(-1, 10*time.Second)
	for i := range n {
		e, _, _ := c.begin(key(i), t0.Add(4*time.Minute), t0)
		// A sign response: an ECDSA P-256 signature in a CBOR map.
		c.finish(e, &Response{Version: ProtocolVersion, Status: CodeOK, Body: make([]byte, 80)}, t0)
	}
	whole := float64(heap()-before) / n
	c.sweep(t0.Add(10 * time.Second))
	if c.len() != n || len(c.recent) != 0 {
		t.Fatalf("%d nonces, %d with their response; want %d, 0", c.len(), len(c.recent), n)
	}
	alone := float64(int64(heap())-int64(before)) / n
	t.Logf("bytes per remembered nonce: %.0f with its response (resend period), %.0f after it", whole, alone)
	if alone > bound {
		t.Errorf("a nonce kept alone costs %.0f bytes, want at most %d", alone, bound)
	}
	runtime.KeepAlive(c)
}
