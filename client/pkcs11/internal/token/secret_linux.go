package token

import "golang.org/x/sys/unix"

// newSecret copies b into memory of its own, outside the Go heap: an
// anonymous mapping that is locked (never swapped out, so never on disk),
// left out of core dumps and wiped in a child after fork. Where the
// mapping or the lock is refused (RLIMIT_MEMLOCK), the secret lives on the
// heap instead and is wiped all the same.
func newSecret(b []byte) *secret {
	if len(b) == 0 || len(b) > unix.Getpagesize() {
		return heapSecret(b)
	}
	mem, err := unix.Mmap(-1, 0, unix.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return heapSecret(b)
	}
	if err := unix.Mlock(mem); err != nil {
		unix.Munmap(mem)
		return heapSecret(b)
	}
	unix.Madvise(mem, unix.MADV_DONTDUMP)
	unix.Madvise(mem, unix.MADV_WIPEONFORK) // Linux 4.14 and later
	n := copy(mem, b)
	return &secret{b: mem[:n:n], release: func() {
		clear(mem)
		unix.Munlock(mem)
		unix.Munmap(mem)
	}}
}
