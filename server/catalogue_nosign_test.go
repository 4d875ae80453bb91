package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/pscs/pscs/profiles"
)

// TestCatalogueNoSign: a decryption-only key (profiles.Key.NoSign, the
// OpenPGP "dec" key) is no signing key in PKCS #11 (CKA_SIGN false) but
// derives; a signing key signs.
func TestCatalogueNoSign(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := []profiles.Key{
		{ID: "sig", Label: "Signature key", Public: &k.PublicKey, PINPolicy: profiles.PINOnce},
		{ID: "dec", Label: "Decryption key", Public: &k.PublicKey, PINPolicy: profiles.PINOnce, Decrypt: true, NoSign: true},
	}
	objs := objects(keys, []int{0, 1})
	want := map[string][2]bool{"sig": {true, false}, "dec": {false, true}} // CKA_SIGN, CKA_DERIVE
	found := 0
	for _, o := range objs {
		if o.Attributes[ckaClass] != uint64(ckoPrivateKey) {
			continue
		}
		found++
		id := keys[o.Attributes[ckaID].([]byte)[0]-1].ID
		if got := [2]bool{o.Attributes[ckaSign].(bool), o.Attributes[ckaDerive].(bool)}; got != want[id] {
			t.Errorf("key %s: CKA_SIGN, CKA_DERIVE = %v, want %v", id, got, want[id])
		}
	}
	if found != 2 {
		t.Fatalf("%d private key objects, want 2", found)
	}
}
