package server_test

import (
	"time"

	"crypto/hmac"
	"crypto/sha256"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

type hmacKey []byte

func (k hmacKey) MAC(label string, data []byte) ([]byte, error) {
	h := hmac.New(sha256.New, k)
	h.Write([]byte(label))
	h.Write(data)
	return h.Sum(nil), nil
}

// BenchmarkServerSign is pscsd's own cost per signature: a warm signature
// from the Go client over QUIC on loopback, through policy, the pool, the
// PIV driver and a zero-latency simulated card, with the audit record
// fsynced before the answer. One delegate signing in a loop, and 16 at once.
func BenchmarkServerSign(b *testing.B) {
	for _, parallel := range []int{1, 16} {
		b.Run(map[int]string{1: "sequential", 16: "16-delegates"}[parallel], func(b *testing.B) {
			log, err := audit.Open(filepath.Join(b.TempDir(), "audit.log"), hmacKey("bench"), audit.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer log.Close()
			r := newRig(b, 1, server.AuditLog{Log: log})
			c := r.dial(b, r.alice)
			if _, err := c.Login(ctx(b), 7, []byte("2718")); err != nil {
				b.Fatal(err)
			}
			req := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: make([]byte, 32)}
			var next atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := c.Sign(ctx(b), req); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/sig")
		})
	}
}

// BenchmarkParallelThroughServer: signatures/s of a parallel remote card of
// 4 cards that take 100 ms per signature, with 16 delegates each on its own
// QUIC connection, through the whole server (policy, pool, audit); the
// efficiency is against 4 × 10 sig/s.
func BenchmarkParallelThroughServer(b *testing.B) {
	cardLatency = pivsim.Latency{SignECCP256: 100 * time.Millisecond}
	defer func() { cardLatency = pivsim.Latency{} }()
	log, err := audit.Open(filepath.Join(b.TempDir(), "audit.log"), hmacKey("bench"), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	r := newRig(b, 4, server.AuditLog{Log: log})
	clients := make([]*client.Client, 16)
	for i := range clients {
		clients[i] = r.dial(b, r.alice)
		if _, err := clients[i].Login(ctx(b), 7, []byte("2718")); err != nil {
			b.Fatal(err)
		}
	}
	req := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: make([]byte, 32)}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := c.Sign(ctx(b), req); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "sigs/s")
	b.ReportMetric(100*rate/40, "%efficiency")
}
