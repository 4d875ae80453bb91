package pgpsim

// Algorithm attributes (spec 4.4.3.9), public keys as 7F49 and as OpenPGP
// v4 fingerprints (RFC 4880 12.2), key import (4.4.3.12).

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"math/big"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/simkit"
)

// Algorithm IDs of OpenPGP (RFC 4880 9.1, RFC 6637, draft-koch-eddsa).
const (
	algRSA   = 0x01
	algECDH  = 0x12
	algECDSA = 0x13
	algEdDSA = 0x16
)

var (
	oidP256    = []byte{0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}
	oidP384    = []byte{0x2B, 0x81, 0x04, 0x00, 0x22}
	oidP521    = []byte{0x2B, 0x81, 0x04, 0x00, 0x23}
	oidEd25519 = []byte{0x2B, 0x06, 0x01, 0x04, 0x01, 0xDA, 0x47, 0x0F, 0x01}
	oidCv25519 = []byte{0x2B, 0x06, 0x01, 0x04, 0x01, 0x97, 0x55, 0x01, 0x05, 0x01}
)

func oidOf(alg simkit.Alg) []byte {
	switch alg {
	case simkit.ECCP256:
		return oidP256
	case simkit.ECCP384:
		return oidP384
	case simkit.ECCP521:
		return oidP521
	case simkit.Ed25519:
		return oidEd25519
	case simkit.X25519:
		return oidCv25519
	}
	return nil
}

// attributesOf returns the algorithm attributes of alg for key k, as a
// YubiKey shows them, or nil when k cannot have alg.
func attributesOf(alg simkit.Alg, k Key) []byte {
	if bits := alg.RSABits(); bits >= 2048 {
		return []byte{algRSA, byte(bits >> 8), byte(bits), 0x00, 0x11, 0x00}
	}
	switch {
	case alg == simkit.X25519 && k == KeyDecrypt:
		return append([]byte{algECDH}, oidCv25519...)
	case alg == simkit.Ed25519 && k != KeyDecrypt:
		return append([]byte{algEdDSA}, oidEd25519...)
	case alg.Curve() != nil && k == KeyDecrypt:
		return append([]byte{algECDH}, oidOf(alg)...)
	case alg.Curve() != nil:
		return append([]byte{algECDSA}, oidOf(alg)...)
	}
	return nil
}

// parseAttributes returns the algorithm of attributes attr for key k, or 0.
// It takes what clients write: RSA with any import format, ECC with or
// without the trailing FF (public key with import), and the 16 (EdDSA) ID
// with the Curve25519 OID that go-openpgp-card writes for X25519.
func parseAttributes(attr []byte, k Key) simkit.Alg {
	if len(attr) == 0 {
		return 0
	}
	if attr[0] == algRSA {
		if len(attr) < 5 || binary.BigEndian.Uint16(attr[3:5]) > 32 {
			return 0
		}
		for _, alg := range []simkit.Alg{simkit.RSA2048, simkit.RSA3072, simkit.RSA4096} {
			if int(binary.BigEndian.Uint16(attr[1:3])) == alg.RSABits() {
				return alg
			}
		}
		return 0
	}
	oid := bytes.TrimSuffix(attr[1:], []byte{0xFF})
	for _, alg := range []simkit.Alg{simkit.ECCP256, simkit.ECCP384, simkit.ECCP521, simkit.Ed25519, simkit.X25519} {
		if !bytes.Equal(oid, oidOf(alg)) {
			continue
		}
		switch {
		case alg == simkit.X25519 && k == KeyDecrypt && (attr[0] == algECDH || attr[0] == algEdDSA):
		case alg == simkit.Ed25519 && k != KeyDecrypt && attr[0] == algEdDSA:
		case alg.Curve() != nil && k == KeyDecrypt && attr[0] == algECDH:
		case alg.Curve() != nil && k != KeyDecrypt && attr[0] == algECDSA:
		default:
			return 0
		}
		return alg
	}
	return 0
}

func publicOf(key crypto.PrivateKey) crypto.PublicKey {
	switch k := key.(type) {
	case *ecdh.PrivateKey:
		return k.PublicKey()
	case crypto.Signer:
		return k.Public()
	}
	return nil
}

// point returns the public point of an ECC key as the card shows it in
// 86: 04‖X‖Y for NIST curves, the 32 raw bytes for Ed25519 and X25519.
func point(pub crypto.PublicKey) []byte {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		b, _ := p.Bytes()
		return b
	case ed25519.PublicKey:
		return []byte(p)
	case *ecdh.PublicKey:
		return p.Bytes()
	}
	return nil
}

// publicTemplate is 7F49 { 81 n, 82 e } or 7F49 { 86 point }.
func publicTemplate(pub crypto.PublicKey) []byte {
	var in []byte
	if r, ok := pub.(*rsa.PublicKey); ok {
		in = apdu.AppendTLV(in, 0x81, r.N.Bytes())
		in = apdu.AppendTLV(in, 0x82, big.NewInt(int64(r.E)).Bytes())
	} else {
		in = apdu.AppendTLV(in, 0x86, point(pub))
	}
	return apdu.AppendTLV(nil, 0x7F49, in)
}

func mpi(b []byte) []byte {
	b = bytes.TrimLeft(b, "\x00")
	bits := 0
	if len(b) > 0 {
		bits = (len(b)-1)*8 + big.NewInt(int64(b[0])).BitLen()
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(bits)), b...)
}

// kdfParams are the ECDH KDF parameters GnuPG writes for each curve
// (RFC 6637 9: hash, then key-wrap cipher).
func kdfParams(alg simkit.Alg) []byte {
	switch alg {
	case simkit.ECCP384:
		return []byte{0x03, 0x01, 0x09, 0x08} // SHA-384, AES-192
	case simkit.ECCP521:
		return []byte{0x03, 0x01, 0x0A, 0x09} // SHA-512, AES-256
	}
	return []byte{0x03, 0x01, 0x08, 0x07} // SHA-256, AES-128
}

// PublicKeyPacket returns the body of the OpenPGP v4 public key packet
// (RFC 4880 5.5.2; RFC 6637 9 for ECDH with GnuPG's KDF parameters) of
// key k with algorithm alg, created at t: what fingerprints hash, and
// what a test builds a certificate from.
func PublicKeyPacket(pub crypto.PublicKey, alg simkit.Alg, k Key, t time.Time) []byte {
	body := []byte{0x04}
	body = binary.BigEndian.AppendUint32(body, uint32(t.Unix()))
	switch p := pub.(type) {
	case *rsa.PublicKey:
		body = append(body, algRSA)
		body = append(body, mpi(p.N.Bytes())...)
		body = append(body, mpi(big.NewInt(int64(p.E)).Bytes())...)
		return body
	}
	pt := point(pub)
	oid := oidOf(alg)
	id := byte(algECDSA)
	switch {
	case k == KeyDecrypt:
		id = algECDH
	case alg == simkit.Ed25519:
		id = algEdDSA
	}
	if alg == simkit.Ed25519 || alg == simkit.X25519 {
		pt = append([]byte{0x40}, pt...) // native point format
	}
	body = append(body, id, byte(len(oid)))
	body = append(body, oid...)
	body = append(body, mpi(pt)...)
	if id == algECDH {
		body = append(body, kdfParams(alg)...)
	}
	return body
}

// Fingerprint returns the OpenPGP v4 fingerprint of the public key packet
// of pub (see [PublicKeyPacket]): SHA-1 of 99, the body's length and body.
func Fingerprint(pub crypto.PublicKey, alg simkit.Alg, k Key, t time.Time) [20]byte {
	body := PublicKeyPacket(pub, alg, k, t)
	h := sha1.New()
	h.Write([]byte{0x99, byte(len(body) >> 8), byte(len(body))})
	h.Write(body)
	var fp [20]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// importKey parses the data of PUT DATA DB 3FFF (spec 4.4.3.12):
// 4D { CRT (B6, B8, A4), 7F48 { tags and lengths }, 5F48 { the values
// concatenated } }, and returns the key reference and the key for alg,
// the algorithm of that key's attributes.
func parseImport(data []byte, attrsOf func(Key) simkit.Alg) (Key, simkit.Alg, crypto.PrivateKey, error) {
	body, ok, err := apdu.FindTLV(data, 0x4D)
	if err != nil || !ok {
		return 0, 0, nil, errors.New("no 4D")
	}
	tlvs, err := apdu.ParseTLVs(body)
	if err != nil || len(tlvs) != 3 || tlvs[1].Tag != 0x7F48 || tlvs[2].Tag != 0x5F48 {
		return 0, 0, nil, errors.New("not CRT, 7F48, 5F48")
	}
	k, ok := keyOfCRT(tlvs[0])
	if !ok {
		return 0, 0, nil, errors.New("bad CRT")
	}
	alg := attrsOf(k)
	// 7F48 lists tags and lengths without values.
	list, values := tlvs[1].Value, tlvs[2].Value
	fields := map[byte][]byte{}
	for len(list) > 0 {
		tag := list[0]
		list = list[1:]
		n, used := berLength(list)
		if used == 0 || n > len(values) {
			return 0, 0, nil, errors.New("bad 7F48")
		}
		list = list[used:]
		fields[tag], values = values[:n], values[n:]
	}
	if len(values) != 0 {
		return 0, 0, nil, errors.New("5F48 longer than 7F48 says")
	}
	if bits := alg.RSABits(); bits > 0 {
		e, p, q := fields[0x91], fields[0x92], fields[0x93]
		if new(big.Int).SetBytes(e).Cmp(big.NewInt(65537)) != 0 || len(p) == 0 || len(q) == 0 {
			return 0, 0, nil, errors.New("RSA import needs e = 65537, p and q")
		}
		key, err := simkit.RSAFromPrimes(new(big.Int).SetBytes(p), new(big.Int).SetBytes(q))
		if err != nil || key.N.BitLen() != bits {
			return 0, 0, nil, errors.New("RSA key does not match the attributes")
		}
		return k, alg, key, nil
	}
	d := fields[0x92]
	switch alg {
	case simkit.Ed25519:
		if len(d) != ed25519.SeedSize {
			return 0, 0, nil, errors.New("Ed25519 key of wrong size")
		}
		return k, alg, ed25519.NewKeyFromSeed(d), nil
	case simkit.X25519:
		key, err := ecdh.X25519().NewPrivateKey(d)
		return k, alg, key, err
	case simkit.ECCP256, simkit.ECCP384, simkit.ECCP521:
		size := (alg.Curve().Params().BitSize + 7) / 8
		if len(d) == 0 || len(d) > size {
			return 0, 0, nil, errors.New("ECC key of wrong size")
		}
		key, err := ecdsa.ParseRawPrivateKey(alg.Curve(), append(make([]byte, size-len(d)), d...))
		return k, alg, key, err
	}
	return 0, 0, nil, errors.New("no attributes")
}

// berLength reads a BER length: the length and the bytes it took (0 when
// malformed).
func berLength(b []byte) (int, int) {
	switch {
	case len(b) == 0:
		return 0, 0
	case b[0] < 0x80:
		return int(b[0]), 1
	case b[0] == 0x81 && len(b) >= 2:
		return int(b[1]), 2
	case b[0] == 0x82 && len(b) >= 3:
		return int(binary.BigEndian.Uint16(b[1:3])), 3
	}
	return 0, 0
}

// keyOfCRT returns the key a control reference template names: B6
// signature, B8 decryption, A4 authentication, each empty or with 84 01 xx
// (the 3.4 key reference, which must agree).
func keyOfCRT(t apdu.TLV) (Key, bool) {
	var k Key
	switch t.Tag {
	case 0xB6:
		k = KeySign
	case 0xB8:
		k = KeyDecrypt
	case 0xA4:
		k = KeyAuth
	default:
		return 0, false
	}
	if len(t.Value) == 0 {
		return k, true
	}
	ref, ok, err := apdu.FindTLV(t.Value, 0x84)
	if err != nil || !ok || len(ref) != 1 || ref[0] != byte(k)+1 {
		return 0, false
	}
	return k, true
}
