//go:build unix

package durable

import (
	"os"
	"syscall"
)

// Lock takes an exclusive advisory lock (flock) on f without waiting: if
// another open file holds it, Lock fails at once. The kernel releases it
// when the process dies, so a crash never leaves the file locked. The
// returned function releases it.
func Lock(f *os.File) (unlock func() error, err error) {
	fd := int(f.Fd())
	if err := retry(func() error { return syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) }); err != nil {
		return nil, err
	}
	return func() error { return retry(func() error { return syscall.Flock(fd, syscall.LOCK_UN) }) }, nil
}

// syncDir flushes an open directory (os.File.Sync retries EINTR itself).
func syncDir(d *os.File) error { return d.Sync() }

// retry calls op again while a signal interrupts it.
func retry(op func() error) error {
	for {
		if err := op(); err != syscall.EINTR {
			return err
		}
	}
}
