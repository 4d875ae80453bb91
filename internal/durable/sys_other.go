//go:build !unix

package durable

import "os"

// Lock does nothing where flock does not exist: one process per file is
// then the caller's responsibility.
func Lock(*os.File) (func() error, error) { return func() error { return nil }, nil }

// syncDir does nothing: directories cannot be flushed here.
func syncDir(*os.File) error { return nil }
