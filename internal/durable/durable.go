// Package durable is what pscs's files on disk (the audit log, the store)
// share to be crash-safe and tamper-evident: an exclusive lock on a file,
// flushing a file and a directory to stable storage, the CRC-32C of
// their frames, and the MACer that authenticates their records.
//
// Every system call here is retried when a signal interrupts it (EINTR):
// Go's runtime sends signals to its own threads (preemption), so an
// interrupted flock or fdatasync is an ordinary event, not a failure.
package durable

import (
	"fmt"
	"hash/crc32"
	"os"
)

// MACer authenticates records. MAC returns a tag over data under a
// domain-separating label; the key never leaves it (a TPM HMAC key in
// pscsd).
type MACer interface {
	MAC(label string, data []byte) ([]byte, error)
}

// castagnoli is the CRC-32C table (the polynomial with hardware support
// on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC returns the CRC-32C of b: the checksum of a frame, which finds a
// torn or rotted write; the MAC, not the checksum, finds tampering.
func CRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// SyncDir makes dir's entries durable (a file created, renamed or
// removed in it), where directories can be flushed; elsewhere it does
// nothing.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = syncDir(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
