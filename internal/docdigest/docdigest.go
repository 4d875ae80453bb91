// Package docdigest makes the digests that allow a document in a
// delegation (transport.AdminDelegation.Documents): one per digest a
// document signature may use. `pscs admin delegate -documents` and the
// owners' web console both allow a document through it, so that a
// document allowed either way is allowed whichever digest the delegate
// picks.
package docdigest

import (
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"io"
)

// Of reads r once, as a stream, and returns its SHA-256, SHA-384 and
// SHA-512, in that order: the server sees only the digest the delegate
// chose.
func Of(r io.Reader) ([][]byte, error) {
	hs := []hash.Hash{sha256.New(), sha512.New384(), sha512.New()}
	if _, err := io.Copy(io.MultiWriter(hs[0], hs[1], hs[2]), r); err != nil {
		return nil, err
	}
	sums := make([][]byte, len(hs))
	for i, h := range hs {
		sums[i] = h.Sum(nil)
	}
	return sums, nil
}
