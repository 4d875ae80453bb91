//go:build !unix

package audit

import "os"

// lockFile is a no-op where flock does not exist: run one pscsd per log.
func lockFile(*os.File) error { return nil }

// syncDir is a no-op: directories cannot be fsynced here.
func syncDir(string) error { return nil }
