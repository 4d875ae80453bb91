//go:build !linux

package audit

import "os"

// syncFile is os.File.Sync (F_FULLFSYNC on Darwin).
func syncFile(f *os.File) error { return f.Sync() }
