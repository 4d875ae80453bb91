package durable

import (
	"os"
	"syscall"
)

// Sync flushes f's data and the metadata needed to read it back (its
// size) to stable storage, with fdatasync, which skips the timestamp
// updates fsync would also write.
func Sync(f *os.File) error {
	if err := retry(func() error { return syscall.Fdatasync(int(f.Fd())) }); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}
