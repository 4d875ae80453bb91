package piv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/subtle"
	"fmt"
	"math/big"
	"strings"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// tagExponentiation is the "exponentiation" field of the dynamic
// authentication template: the peer's public point of a key agreement
// (SP 800-73-4 Part 2, 3.2.4, Table 7; ECDH example in Appendix A.5).
const tagExponentiation = 0x85

var _ profiles.Decrypter = (*Card)(nil)

// decryptKey finds key id and checks that it is offered for decryption
// (slot 9D, Key Management; [profiles.Key].Decrypt).
func (c *Card) decryptKey(ctx context.Context, op, id string) (profiles.Key, byte, error) {
	if c.keys == nil {
		if _, err := c.Keys(ctx); err != nil {
			return profiles.Key{}, 0, err
		}
	}
	k, ok := c.keys[strings.ToLower(id)]
	if !ok {
		return k, 0, fmt.Errorf("piv: %s: slot %q: %w", op, id, profiles.ErrNoKey)
	}
	if !k.Decrypt {
		return k, 0, fmt.Errorf("piv: %s: slot %s: %w", op, k.ID, profiles.ErrKeyUsage)
	}
	ref, _ := slotRef(k.ID)
	return k, ref, nil
}

// generalAuth runs GENERAL AUTHENTICATE 7C { 82 00, tag input } with the
// key in slot ref and returns the 82 of the answer (SP 800-73-4 Part 2,
// 3.2.4). The answer is secret: it never goes into an error.
func (c *Card) generalAuth(ctx context.Context, k profiles.Key, ref byte, tag uint32, input []byte) ([]byte, error) {
	var tmpl []byte
	tmpl = apdu.AppendTLV(tmpl, tagResponse, nil)
	tmpl = apdu.AppendTLV(tmpl, tag, input)
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: insGeneralAuth, P1: algorithmByte(k.Algorithm), P2: ref,
		Data: apdu.AppendTLV(nil, tagDynAuth, tmpl), Ne: 256})
	if err != nil {
		return nil, err
	}
	out, err := parseAuthResponse(rsp)
	clear(rsp)
	return out, err
}

// Decrypt implements [profiles.Decrypter] for RSA keys: the card does the
// raw private-key operation on the ciphertext (GENERAL AUTHENTICATE with
// the ciphertext as the challenge, 81), and the driver checks the card's
// answer against the public key and removes the padding (PKCS #1 v1.5 or
// OAEP, RFC 8017 7.2.2 and 7.1.2) in constant time, as OpenSC does for
// PIV cards.
func (c *Card) Decrypt(ctx context.Context, id string, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	k, ref, err := c.decryptKey(ctx, "decrypt", id)
	if err != nil {
		return nil, err
	}
	pub, ok := k.Public.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("piv: decrypt: slot %s is not an RSA key: %w", k.ID, profiles.ErrKeyUsage)
	}
	if len(ciphertext) != pub.Size() || new(big.Int).SetBytes(ciphertext).Cmp(pub.N) >= 0 {
		return nil, fmt.Errorf("piv: decrypt with %s: %w", k.ID, profiles.ErrDecryption)
	}
	em, err := c.generalAuth(ctx, k, ref, tagChallenge, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("piv: decrypt with %s: %w", k.ID, err)
	}
	defer clear(em)
	// The card's answer must encrypt back to the ciphertext: a faulty or
	// rogue card, or another key in the slot, is caught here.
	if len(em) != pub.Size() || !bytes.Equal(
		new(big.Int).Exp(new(big.Int).SetBytes(em), big.NewInt(int64(pub.E)), pub.N).FillBytes(make([]byte, pub.Size())),
		ciphertext) {
		return nil, fmt.Errorf("piv: decrypt with %s: the card's answer does not match the key: %w", k.ID, apdu.ErrMalformed)
	}
	var pt []byte
	switch o := opts.(type) {
	//lint:ignore SA1019 PKCS #11's CKM_RSA_PKCS decryption is PKCS #1 v1.5, and cards hold keys that need it
	case nil, *rsa.PKCS1v15DecryptOptions:
		pt, err = unpadPKCS1v15(em)
	case *rsa.OAEPOptions:
		if o.MGFHash != 0 && o.MGFHash != o.Hash {
			return nil, fmt.Errorf("piv: decrypt: OAEP with MGF1 over another hash is not supported: %w", profiles.ErrKeyUsage)
		}
		if !o.Hash.Available() {
			return nil, fmt.Errorf("piv: decrypt: OAEP hash %v not available: %w", o.Hash, profiles.ErrKeyUsage)
		}
		pt, err = unpadOAEP(em, o.Hash, o.Label)
	default:
		return nil, fmt.Errorf("piv: decrypt: options %T: %w", opts, profiles.ErrKeyUsage)
	}
	if err != nil {
		return nil, fmt.Errorf("piv: decrypt with %s: %w", k.ID, err)
	}
	return pt, nil
}

// DeriveECDH implements [profiles.Decrypter] for EC keys: GENERAL
// AUTHENTICATE with the peer's point in 85 answers the shared secret's x
// coordinate in 82 (SP 800-73-4 Part 2, Appendix A.5).
func (c *Card) DeriveECDH(ctx context.Context, id string, peer []byte) ([]byte, error) {
	k, ref, err := c.decryptKey(ctx, "derive", id)
	if err != nil {
		return nil, err
	}
	pub, ok := k.Public.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("piv: derive: slot %s is not an EC key: %w", k.ID, profiles.ErrKeyUsage)
	}
	var curve ecdh.Curve
	switch pub.Curve {
	case elliptic.P256():
		curve = ecdh.P256()
	case elliptic.P384():
		curve = ecdh.P384()
	default:
		return nil, fmt.Errorf("piv: derive: slot %s: curve not supported: %w", k.ID, profiles.ErrKeyUsage)
	}
	if _, err := curve.NewPublicKey(peer); err != nil {
		return nil, fmt.Errorf("piv: derive: the peer's point is not on the key's curve: %w", profiles.ErrDecryption)
	}
	x, err := c.generalAuth(ctx, k, ref, tagExponentiation, peer)
	if err != nil {
		return nil, fmt.Errorf("piv: derive with %s: %w", k.ID, err)
	}
	if size := (pub.Curve.Params().BitSize + 7) / 8; len(x) != size {
		clear(x)
		return nil, fmt.Errorf("piv: derive with %s: the card answered %d bytes for a %d-byte coordinate: %w", k.ID, len(x), size, apdu.ErrMalformed)
	}
	return x, nil
}

// unpadPKCS1v15 removes EME-PKCS1-v1_5 padding, 00 02 PS(≥ 8 non-zero) 00
// M (RFC 8017, 7.2.2 step 3), looking at every byte whatever it finds, as
// crypto/rsa does; every failure is the same ErrDecryption.
func unpadPKCS1v15(em []byte) ([]byte, error) {
	if len(em) < 11 {
		return nil, profiles.ErrDecryption
	}
	first := subtle.ConstantTimeByteEq(em[0], 0)
	second := subtle.ConstantTimeByteEq(em[1], 2)
	looking, index := 1, 0
	for i := 2; i < len(em); i++ {
		zero := subtle.ConstantTimeByteEq(em[i], 0)
		index = subtle.ConstantTimeSelect(looking&zero, i, index)
		looking = subtle.ConstantTimeSelect(zero, 0, looking)
	}
	validPS := subtle.ConstantTimeLessOrEq(2+8, index)
	if first&second&(^looking&1)&validPS != 1 {
		return nil, profiles.ErrDecryption
	}
	return bytes.Clone(em[index+1:]), nil
}

// unpadOAEP removes EME-OAEP padding with hash for the label and MGF1
// (RFC 8017, 7.1.2 step 3) in constant time, as crypto/rsa does; every
// failure is the same ErrDecryption.
func unpadOAEP(em []byte, hash crypto.Hash, label []byte) ([]byte, error) {
	hLen := hash.Size()
	k := len(em)
	if k < 2*hLen+2 {
		return nil, profiles.ErrDecryption
	}
	h := hash.New()
	h.Write(label)
	lHash := h.Sum(nil)

	em = bytes.Clone(em)
	defer clear(em)
	first := subtle.ConstantTimeByteEq(em[0], 0)
	seed, db := em[1:hLen+1], em[hLen+1:]
	xorInto(seed, mgf1(hash, db, len(seed)))
	xorInto(db, mgf1(hash, seed, len(db)))
	lHashGood := subtle.ConstantTimeCompare(lHash, db[:hLen])

	rest := db[hLen:]
	looking, index, invalid := 1, 0, 0
	for i := range rest {
		zero := subtle.ConstantTimeByteEq(rest[i], 0)
		one := subtle.ConstantTimeByteEq(rest[i], 1)
		index = subtle.ConstantTimeSelect(looking&one, i, index)
		looking = subtle.ConstantTimeSelect(one, 0, looking)
		invalid = subtle.ConstantTimeSelect(looking&^zero, 1, invalid)
	}
	if first&lHashGood&^invalid&^looking != 1 {
		return nil, profiles.ErrDecryption
	}
	return bytes.Clone(rest[index+1:]), nil
}

func xorInto(dst, mask []byte) {
	for i := range dst {
		dst[i] ^= mask[i]
	}
	clear(mask)
}
