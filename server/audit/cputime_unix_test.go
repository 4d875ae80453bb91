//go:build unix

package audit

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user + system) this process has used; the
// benchmarks report it because wall time on a shared machine is noisy.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
