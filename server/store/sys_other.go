//go:build !unix

package store

import "os"

// lockFile does nothing where flock does not exist: one process per store
// is then the caller's responsibility.
func lockFile(f *os.File) (func() error, error) { return func() error { return nil }, nil }

func syncFile(f *os.File) error { return f.Sync() }
