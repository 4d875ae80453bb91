package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory after a flood. The limits of transport.Limits bound what a flood
// makes pscsd hold; once it ends, that memory is garbage, but Go gives it
// back to the system only after a collection (which an idle server may
// not run for two minutes) and then slowly (the background scavenger).
// releaseMemory checks every few seconds, and when the memory the Go
// runtime holds from the system is more than twice the live heap of the
// last collection plus a margin, it collects and returns the free memory
// at once (debug.FreeOSMemory): RSS falls back to near its idle size
// within seconds of the flood's end. Under steady load the live heap is
// what is held, and nothing happens.
const (
	releaseEvery  = 5 * time.Second
	releaseMargin = 32 << 20
)

var releaseSamples = []metrics.Sample{
	{Name: "/memory/classes/total:bytes"},
	{Name: "/memory/classes/heap/released:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

// releaseMemory runs until ctx ends.
func releaseMemory(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(releaseSamples)
		held := releaseSamples[0].Value.Uint64() - releaseSamples[1].Value.Uint64()
		live := releaseSamples[2].Value.Uint64()
		if held > 2*live+releaseMargin {
			debug.FreeOSMemory()
			metrics.Read(releaseSamples)
			log.Debug("memory returned to the system", "held_before", held,
				"held_after", releaseSamples[0].Value.Uint64()-releaseSamples[1].Value.Uint64())
		}
	}
}
