package rsc_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/rsc"
)

// floodLatency is the simulated cards' time to sign: small, so that the
// pool's own work shows.
var floodLatency = pivsim.Latency{SignECCP256: 5 * time.Millisecond}

// BenchmarkHonestUnderFlood: an honest delegate signs sequentially on a
// remote card of two simulated cards, alone ("unloaded"), and while a
// flooding delegate keeps 256 requests going at once in a loop, all of
// them waiting ("flood=queued": its share is 256) or most refused
// ("flood=refused": the default bounds, QueueSize 64, PerPrincipal 16;
// a refused flood request is made again after 1 ms, a round trip's worth,
// so that 240 goroutines do not spin on two cores). It reports the honest
// delegate's signing time (p50, p99, in ms), how often it was refused
// (honest-busy, which must be 0), and the flood's signatures and refusals
// per second.
//
//	go test -run '^$' -bench HonestUnderFlood -benchtime 400x ./server/rsc/
func BenchmarkHonestUnderFlood(b *testing.B) {
	for _, tc := range []struct {
		name  string
		flood bool
		opts  rsc.Options
		fill  int // flood requests waiting once the flood is under way
	}{
		{"unloaded", false, rsc.Options{}, 0},
		{"flood=queued", true, rsc.Options{QueueSize: 512, PerPrincipal: 256}, 250},
		{"flood=refused", true, rsc.Options{}, 16},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := rsc.NewPool("flooded", tc.opts)
			defer p.Close()
			for i := range 2 {
				if err := p.Add(member(b, fmt.Sprint("card", i), newSim(b, fmt.Sprint("flood", i), floodLatency))); err != nil {
					b.Fatal(err)
				}
			}
			digest := sha256.Sum256([]byte("flood"))
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var floodSigs, floodBusy atomic.Int64
			if tc.flood {
				for range 256 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							_, _, err := sign(context.Background(), p, "flooder", digest[:])
							switch {
							case err == nil:
								floodSigs.Add(1)
							case errors.Is(err, rsc.ErrBusy):
								floodBusy.Add(1)
								time.Sleep(time.Millisecond)
							default:
								b.Error(err)
								return
							}
						}
					}()
				}
				for p.Waiting() < tc.fill {
					runtime.Gosched()
				}
			}
			lat := make([]time.Duration, 0, b.N)
			honestBusy := 0
			b.ResetTimer()
			start := time.Now()
			s0, r0 := floodSigs.Load(), floodBusy.Load()
			for range b.N {
				t0 := time.Now()
				_, _, err := sign(context.Background(), p, "honest", digest[:])
				switch {
				case errors.Is(err, rsc.ErrBusy):
					honestBusy++
				case err != nil:
					b.Fatal(err)
				default:
					lat = append(lat, time.Since(t0))
				}
			}
			b.StopTimer()
			d := time.Since(start).Seconds()
			s1, r1 := floodSigs.Load(), floodBusy.Load()
			close(stop)
			wg.Wait()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
				b.ReportMetric(ms(lat[(len(lat)*99)/100]), "p99-ms")
			}
			b.ReportMetric(float64(honestBusy), "honest-busy")
			b.ReportMetric(float64(s1-s0)/d, "flood-sigs/s")
			b.ReportMetric(float64(r1-r0)/d, "flood-busy/s")
			if honestBusy > 0 {
				b.Errorf("the honest delegate was refused %d times", honestBusy)
			}
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
