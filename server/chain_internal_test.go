package server

import (
	"crypto/x509"
	"slices"
	"testing"

	"github.com/pscs/pscs/internal/testpki"
)

// TestChainOf: a signature carries the path from the card's certificate
// up to the root, left out, of the certificates configured, in order
// whatever their order in the configuration; others are left out, and a
// missing link ends the path.
func TestChainOf(t *testing.T) {
	root := testpki.NewCA("root")
	mid := root.Intermediate("mid")
	low := mid.Intermediate("low")
	other := testpki.NewCA("other").Intermediate("other mid")
	leaf := low.Issue("card", testpki.Options{}).Leaf
	for _, tc := range []struct {
		name        string
		pool, chain []*x509.Certificate
	}{
		{"all, shuffled", []*x509.Certificate{root.Cert, other.Cert, mid.Cert, low.Cert}, []*x509.Certificate{low.Cert, mid.Cert}},
		{"no root", []*x509.Certificate{low.Cert, mid.Cert}, []*x509.Certificate{low.Cert, mid.Cert}},
		{"missing link", []*x509.Certificate{mid.Cert, root.Cert}, nil},
		{"issuer only", []*x509.Certificate{low.Cert}, []*x509.Certificate{low.Cert}},
		{"none", nil, nil},
		{"another CA's", []*x509.Certificate{other.Cert}, nil},
	} {
		if got := chainOf(leaf, tc.pool); !slices.EqualFunc(got, tc.chain, (*x509.Certificate).Equal) {
			t.Errorf("%s: chain of %d certificates, want %d", tc.name, len(got), len(tc.chain))
		}
	}
	// A root's own signature: nothing to add.
	if got := chainOf(root.Cert, []*x509.Certificate{root.Cert}); len(got) != 0 {
		t.Errorf("a self-signed certificate's chain: %d certificates", len(got))
	}
}

// TestCKAIDsDistinct: key numbers give distinct CKA_IDs, one byte up to
// 254 as before, more beyond.
func TestCKAIDsDistinct(t *testing.T) {
	seen := map[string]int{}
	for i := range 70000 {
		id := string(ckaIDOf(i))
		if j, dup := seen[id]; dup {
			t.Fatalf("keys %d and %d share CKA_ID %x", j, i, id)
		}
		seen[id] = i
		if i < 255 && (len(id) != 1 || id[0] != byte(i+1)) {
			t.Fatalf("key %d: CKA_ID %x, want %02x", i, id, i+1)
		}
	}
}
