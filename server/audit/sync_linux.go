package audit

import (
	"os"
	"syscall"
)

// syncFile flushes f's data and the metadata needed to read it back (its
// size) with fdatasync, which skips the timestamp updates fsync would also
// write.
func syncFile(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
