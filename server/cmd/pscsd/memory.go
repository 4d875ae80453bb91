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
// releaseMemory checks every few seconds, and collects and returns the
// free memory at once (debug.FreeOSMemory) when
//
//   - the memory the runtime holds from the system is more than twice
//     the live heap of the last collection, plus a margin; or
//   - no collection ran since the last check (the server is quiet) and it
//     holds more than a margin above what it held after the last release
//     (the live heap of the last collection is then stale: a login's
//     Argon2id memory, a flood's buffers); or
//   - the server is quiet and the last release is releaseQuiet old: what
//     became garbage without anything new being allocated (the answers
//     the replay memory drops at the end of their resend period,
//     transport.Server.ResendPeriod, after a flood of requests) holds
//     pages that no collection would otherwise find for two minutes.
//     That costs a quiet pscsd a collection of its small heap every
//     releaseQuiet, a millisecond or so.
//
// So RSS falls back to near its idle size within seconds of a flood's
// end, and what the replay memory held within releaseQuiet of its resend
// period; under steady load (collections running, the heap live) nothing
// happens.
const (
	releaseEvery  = 5 * time.Second
	releaseMargin = 32 << 20
	releaseQuiet  = 10 * time.Second
)

var releaseSamples = []metrics.Sample{
	{Name: "/memory/classes/total:bytes"},
	{Name: "/memory/classes/heap/released:bytes"},
	{Name: "/gc/heap/live:bytes"},
	{Name: "/gc/cycles/total:gc-cycles"},
}

// releaseMemory runs until ctx ends.
func releaseMemory(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	read := func() (held, live, cycles uint64) {
		metrics.Read(releaseSamples)
		return releaseSamples[0].Value.Uint64() - releaseSamples[1].Value.Uint64(),
			releaseSamples[2].Value.Uint64(), releaseSamples[3].Value.Uint64()
	}
	_, _, lastCycles := read()
	var floor uint64
	released := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held, live, cycles := read()
		quiet := cycles == lastCycles
		if held > 2*live+releaseMargin || quiet && (held > floor+releaseMargin || time.Since(released) >= releaseQuiet) {
			debug.FreeOSMemory()
			floor, _, cycles = read()
			released = time.Now()
			log.Debug("memory returned to the system", "held_before", held, "held_after", floor)
		}
		lastCycles = cycles
	}
}
