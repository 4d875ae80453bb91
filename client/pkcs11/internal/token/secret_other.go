//go:build !linux

package token

// newSecret copies b to the heap; it is wiped when the secret is.
func newSecret(b []byte) *secret { return heapSecret(b) }
