package token

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/asn1"
	"testing"

	"github.com/pscs/pscs/transport"
)

// FuzzPublicKeyAttributes: whatever CKA_KEY_TYPE, CKA_EC_PARAMS and
// CKA_EC_POINT a catalogue holds, reading the public key of a public key
// object is nil or a key of the type the attributes name, whose point is
// the one given (bare or in a DER OCTET STRING), and that x509 can
// encode; a key object built from them never panics. Seeds in
// testdata/fuzz/FuzzPublicKeyAttributes: Ed25519 and X25519 in both
// CKA_EC_PARAMS forms, a P-256 point, and near misses.
func FuzzPublicKeyAttributes(f *testing.F) {
	f.Fuzz(func(t *testing.T, keyType uint64, params, point []byte) {
		attrs := map[uint64][]byte{ckaKeyType: ulongs(keyType), ckaECParams: params, ckaECPoint: point}
		pub := publicKey(attrs)
		var raw []byte
		if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) != 0 {
			raw = point
		}
		switch p := pub.(type) {
		case nil:
		case ed25519.PublicKey:
			if keyType != ckkECEdwards || !bytes.Equal(p, raw) {
				t.Fatalf("Ed25519 key %x from type %#x, point %x", p, keyType, point)
			}
		case *ecdh.PublicKey:
			if keyType != ckkECMontgomery || !bytes.Equal(p.Bytes(), raw) {
				t.Fatalf("X25519 key %x from type %#x, point %x", p.Bytes(), keyType, point)
			}
		case *ecdsa.PublicKey:
			if keyType == ckkECEdwards || keyType == ckkECMontgomery {
				t.Fatalf("an ECDSA key from type %#x", keyType)
			}
		default:
			t.Fatalf("a %T from EC attributes", pub)
		}
		if pub != nil {
			if _, err := x509.MarshalPKIXPublicKey(pub); err != nil {
				t.Fatalf("x509 cannot encode %T: %v", pub, err)
			}
		}
		objs := buildObjects([]transport.Object{
			{Handle: 1, Attributes: map[uint64]any{ckaClass: uint64(ckoPrivateKey), ckaKeyType: keyType, ckaID: []byte{1}, ckaECParams: params}},
			{Handle: 2, Attributes: map[uint64]any{ckaClass: uint64(ckoPublicKey), ckaKeyType: keyType, ckaID: []byte{1}, ckaECParams: params, ckaECPoint: point}},
		})
		if len(objs) != 2 || (pub != nil && objs[0].pub == nil) {
			t.Fatalf("objects %d, the private key's public key %v (want %v)", len(objs), objs[0].pub, pub)
		}
	})
}
