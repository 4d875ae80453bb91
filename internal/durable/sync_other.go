//go:build !linux

package durable

import "os"

// Sync flushes f's data and size to stable storage: os.File.Sync
// (F_FULLFSYNC on Darwin), which retries EINTR itself.
func Sync(f *os.File) error { return f.Sync() }
