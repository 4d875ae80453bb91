package docdigest

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	doc := strings.Repeat("Order 2026/117\n", 1000)
	got, err := Of(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	s256, s384, s512 := sha256.Sum256([]byte(doc)), sha512.Sum384([]byte(doc)), sha512.Sum512([]byte(doc))
	want := [][]byte{s256[:], s384[:], s512[:]}
	if len(got) != len(want) {
		t.Fatalf("%d digests, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("digest %d: %x, want %x", i, got[i], want[i])
		}
	}
}
