package piv

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"math/big"
	"testing"

	"github.com/pscs/pscs/profiles"
)

// refUnpadPKCS1v15 is RFC 8017 7.2.2 step 3 written plainly, branching
// on the data: the reference the constant-time version must agree with.
func refUnpadPKCS1v15(em []byte) ([]byte, bool) {
	if len(em) < 11 || em[0] != 0 || em[1] != 2 {
		return nil, false
	}
	i := bytes.IndexByte(em[2:], 0)
	if i < 8 {
		return nil, false
	}
	return em[2+i+1:], true
}

// refUnpadOAEP is RFC 8017 7.1.2 step 3 written plainly.
func refUnpadOAEP(em []byte, hash crypto.Hash, label []byte) ([]byte, bool) {
	hLen := hash.Size()
	if len(em) < 2*hLen+2 || em[0] != 0 {
		return nil, false
	}
	em = bytes.Clone(em)
	seed, db := em[1:hLen+1], em[hLen+1:]
	for i, b := range mgf1(hash, db, hLen) {
		seed[i] ^= b
	}
	for i, b := range mgf1(hash, seed, len(db)) {
		db[i] ^= b
	}
	h := hash.New()
	h.Write(label)
	if !bytes.Equal(db[:hLen], h.Sum(nil)) {
		return nil, false
	}
	rest := db[hLen:]
	for i, b := range rest {
		switch b {
		case 0:
			continue
		case 1:
			return rest[i+1:], true
		}
		return nil, false
	}
	return nil, false
}

// FuzzUnpad: the constant-time unpadding agrees with the plain reference
// on every input, and fails only with ErrDecryption. Seeds: real
// encryptions opened with the raw RSA operation, and their corruptions.
func FuzzUnpad(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		f.Fatal(err)
	}
	raw := func(c []byte) []byte {
		return new(big.Int).Exp(new(big.Int).SetBytes(c), key.D, key.N).FillBytes(make([]byte, key.Size()))
	}
	//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
	v15, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, []byte("seed"))
	oaep, _ := rsa.EncryptOAEP(crypto.SHA256.New(), rand.Reader, &key.PublicKey, []byte("seed"), []byte("L"))
	oaep1, _ := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, &key.PublicKey, []byte{}, nil)
	for _, em := range [][]byte{raw(v15), raw(oaep), raw(oaep1), make([]byte, 128), bytes.Repeat([]byte{0xFF}, 11)} {
		f.Add(em, []byte("L"))
		f.Add(em, []byte(nil))
	}
	f.Fuzz(func(t *testing.T, em, label []byte) {
		got, err := unpadPKCS1v15(em)
		want, ok := refUnpadPKCS1v15(em)
		if (err == nil) != ok || (ok && !bytes.Equal(got, want)) || (err != nil && !errors.Is(err, profiles.ErrDecryption)) {
			t.Fatalf("PKCS #1 v1.5 of %x: got %x, %v; want %x, %v", em, got, err, want, ok)
		}
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
			got, err := unpadOAEP(em, h, label)
			want, ok := refUnpadOAEP(em, h, label)
			if (err == nil) != ok || (ok && !bytes.Equal(got, want)) || (err != nil && !errors.Is(err, profiles.ErrDecryption)) {
				t.Fatalf("OAEP %v of %x: got %x, %v; want %x, %v", h, em, got, err, want, ok)
			}
		}
	})
}
