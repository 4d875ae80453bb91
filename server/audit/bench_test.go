package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures durable appends (real fsync, on the file system
// of the temporary directory) with 1, 16 and 64 goroutines appending at
// once, and reports appends/s and fsyncs per append. A result of
// fsyncs/append well below 1 is group commit at work.
func BenchmarkAppend(b *testing.B) {
	for _, appenders := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "audit.log"), testKey, Options{})
			if err != nil {
				b.Fatal(err)
			}
			rec := testRecord(1)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start, cpu := time.Now(), cpuTime()
			for g := 0; g < appenders; g++ {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := l.Append(context.Background(), rec); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed, cpuUsed := time.Since(start), cpuTime()-cpu
			b.StopTimer()
			st := l.Stats()
			b.ReportMetric(float64(st.Appends)/elapsed.Seconds(), "appends/s")
			b.ReportMetric(float64(st.Syncs)/float64(st.Appends), "fsyncs/append")
			b.ReportMetric(float64(cpuUsed.Microseconds())/float64(st.Appends), "cpu-µs/append")
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkOpen100k measures Open (which verifies every record's chain
// link and MAC) and Verify on a log of 100,000 records.
func BenchmarkOpen100k(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, testKey, Options{NoSync: true, Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Go(func() {
			for i := g; i < n; i += 64 {
				if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(path)
	b.Run("Open", func(b *testing.B) {
		b.SetBytes(fi.Size())
		cpu := cpuTime()
		for b.Loop() {
			l, err := Open(path, testKey, Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			if seq, _ := l.Head(); seq != n {
				b.Fatalf("head %d", seq)
			}
			l.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/open")
		b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/open")
	})
	b.Run("Verify", func(b *testing.B) {
		b.SetBytes(fi.Size())
		cpu := cpuTime()
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			if got, err := Verify(f, testKey, nil); got != n || err != nil {
				b.Fatalf("Verify = %d, %v", got, err)
			}
			f.Close()
		}
		b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
	})
}
