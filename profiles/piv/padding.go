package piv

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/pscs/pscs/profiles"
)

// ErrDigest: the digest does not fit the hash or the key.
var ErrDigest = errors.New("piv: digest does not match the hash or the key size")

// emsaPKCS1v15Encode builds the RSASSA-PKCS1-v1_5 block
// 00 01 FF… 00 DigestInfo (RFC 8017, 9.2). With hash 0 the digest is taken
// to be an encoded DigestInfo already (PKCS #11 CKM_RSA_PKCS).
func emsaPKCS1v15Encode(digest []byte, k int, hash crypto.Hash) ([]byte, error) {
	var t []byte
	if hash == 0 {
		t = digest
	} else {
		prefix, ok := profiles.DigestInfoPrefix(hash)
		if !ok || len(digest) != hash.Size() {
			return nil, fmt.Errorf("%w: %v with %d bytes", ErrDigest, hash, len(digest))
		}
		t = append(append([]byte{}, prefix...), digest...)
	}
	if len(t)+11 > k {
		return nil, fmt.Errorf("%w: %d bytes for a %d-byte key", ErrDigest, len(t), k)
	}
	em := make([]byte, k)
	em[1] = 0x01
	for i := 2; i < k-len(t)-1; i++ {
		em[i] = 0xFF
	}
	copy(em[k-len(t):], t)
	return em, nil
}

// emsaPSSEncode builds the EMSA-PSS block for an RSA key (RFC 8017, 9.1.1)
// with MGF1 over the same hash, left-padded to the modulus length.
func emsaPSSEncode(digest []byte, pub *rsa.PublicKey, opts *rsa.PSSOptions) ([]byte, error) {
	hash := opts.Hash
	if hash == 0 || !hash.Available() || len(digest) != hash.Size() {
		return nil, fmt.Errorf("%w: PSS needs a supported hash", ErrDigest)
	}
	emBits := pub.N.BitLen() - 1
	emLen := (emBits + 7) / 8
	hLen := hash.Size()
	sLen := opts.SaltLength
	switch sLen {
	case rsa.PSSSaltLengthEqualsHash:
		sLen = hLen
	case rsa.PSSSaltLengthAuto:
		sLen = emLen - hLen - 2
	}
	if sLen < 0 || emLen < hLen+sLen+2 {
		return nil, fmt.Errorf("%w: salt too long for key", ErrDigest)
	}
	salt := make([]byte, sLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	h := hash.New()
	h.Write(make([]byte, 8))
	h.Write(digest)
	h.Write(salt)
	mHash := h.Sum(nil)

	db := make([]byte, emLen-hLen-1)
	db[len(db)-sLen-1] = 0x01
	copy(db[len(db)-sLen:], salt)
	mask := mgf1(hash, mHash, len(db))
	for i := range db {
		db[i] ^= mask[i]
	}
	db[0] &= 0xFF >> (8*emLen - emBits)

	em := make([]byte, 0, pub.Size())
	em = append(em, make([]byte, pub.Size()-emLen)...)
	em = append(em, db...)
	em = append(em, mHash...)
	em = append(em, 0xBC) // below the modulus: the top bits of db are masked
	return em, nil
}

// mgf1 is the mask generation function of RFC 8017, B.2.1.
func mgf1(hash crypto.Hash, seed []byte, n int) []byte {
	out := make([]byte, 0, n+hash.Size())
	var ctr [4]byte
	for len(out) < n {
		h := hash.New()
		h.Write(seed)
		h.Write(ctr[:])
		out = h.Sum(out)
		for i := 3; i >= 0; i-- {
			ctr[i]++
			if ctr[i] != 0 {
				break
			}
		}
	}
	return out[:n]
}
