package profiles

import (
	"crypto/elliptic"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/pscs/pscs/apdu"
)

// ECDSAFromRaw turns the signature most cards answer, r‖s as two
// big-endian integers of the same length (the curve's size), into the
// ASN.1 DER form [Card.Sign] returns (SEQUENCE { r INTEGER, s INTEGER },
// RFC 3279 2.2.3). size is the length of r and of s in bytes (32 for P-256,
// 48 for P-384, 66 for P-521: [CurveSize]); raw must be exactly twice
// that, and neither half zero. Otherwise the error wraps apdu.ErrMalformed.
func ECDSAFromRaw(raw []byte, size int) ([]byte, error) {
	if size <= 0 || len(raw) != 2*size {
		return nil, fmt.Errorf("profiles: ECDSA signature of %d bytes, want %d: %w", len(raw), 2*size, apdu.ErrMalformed)
	}
	r, s := new(big.Int).SetBytes(raw[:size]), new(big.Int).SetBytes(raw[size:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, fmt.Errorf("profiles: ECDSA signature with r or s zero: %w", apdu.ErrMalformed)
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.Bytes()
}

// CurveSize is the length in bytes of a coordinate (and of r and s) on
// curve.
func CurveSize(curve elliptic.Curve) int { return (curve.Params().BitSize + 7) / 8 }

// ECDSADigest is what a card that signs a hash with an EC key is given:
// a string of the curve's size in bytes whose leftmost bits (as many as
// the curve's order has) are the integer FIPS 186-4 (6.4) takes from
// digest, whatever its length. For P-256 and P-384 that is digest cut to
// the curve's size or left-padded with zeros; for P-521 (521 bits in 66
// bytes) the integer is shifted by the 7 bits the card drops.
func ECDSADigest(curve elliptic.Curve, digest []byte) []byte {
	bits, size := curve.Params().N.BitLen(), CurveSize(curve)
	if len(digest) > size {
		digest = digest[:size]
	}
	e := new(big.Int).SetBytes(digest)
	if excess := len(digest)*8 - bits; excess > 0 {
		e.Rsh(e, uint(excess))
	}
	return e.Lsh(e, uint(size*8-bits)).FillBytes(make([]byte, size))
}
