package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
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
