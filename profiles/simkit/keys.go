package simkit

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"
)

// Alg is a key algorithm a simulated card may hold.
type Alg int

const (
	RSA1024 Alg = iota + 1
	RSA2048
	RSA3072
	RSA4096
	ECCP256
	ECCP384
	ECCP521
	Ed25519
	X25519 // key agreement only: its key is an *ecdh.PrivateKey
)

func (a Alg) String() string {
	switch a {
	case RSA1024, RSA2048, RSA3072, RSA4096:
		return fmt.Sprintf("RSA-%d", a.RSABits())
	case ECCP256:
		return "P-256"
	case ECCP384:
		return "P-384"
	case ECCP521:
		return "P-521"
	case Ed25519:
		return "Ed25519"
	case X25519:
		return "X25519"
	}
	return fmt.Sprintf("Alg(%d)", int(a))
}

// RSABits returns the modulus size of an RSA algorithm, 0 for others.
func (a Alg) RSABits() int {
	switch a {
	case RSA1024:
		return 1024
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	case RSA4096:
		return 4096
	}
	return 0
}

// Curve returns the NIST curve of an ECC algorithm, nil for others.
func (a Alg) Curve() elliptic.Curve {
	switch a {
	case ECCP256:
		return elliptic.P256()
	case ECCP384:
		return elliptic.P384()
	case ECCP521:
		return elliptic.P521()
	}
	return nil
}

// seedStream is SHA-256(seed || label || counter) blocks: a deterministic
// byte stream for reproducible test keys. It is not a cryptographic DRBG,
// and the keys it makes are not secrets.
type seedStream struct {
	seed, label []byte
	ctr         uint64
	buf         []byte
}

func (s *seedStream) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(s.buf) == 0 {
			h := sha256.New()
			h.Write(s.seed)
			h.Write(s.label)
			var c [8]byte
			binary.BigEndian.PutUint64(c[:], s.ctr)
			h.Write(c[:])
			s.ctr++
			s.buf = h.Sum(nil)
		}
		k := copy(p[n:], s.buf)
		s.buf = s.buf[k:]
		n += k
	}
	return n, nil
}

// SeedReader returns the deterministic stream of seed and label, or
// crypto/rand's reader when seed is nil.
func SeedReader(seed []byte, label string) io.Reader {
	if seed == nil {
		return rand.Reader
	}
	return &seedStream{seed: seed, label: []byte(label)}
}

// GenerateKey makes a key of alg: from seed and label when seed is not nil
// (the same key every time), from crypto/rand otherwise. It returns an
// *rsa.PrivateKey (e = 65537), an *ecdsa.PrivateKey, an
// ed25519.PrivateKey or, for X25519, an *ecdh.PrivateKey.
func GenerateKey(alg Alg, seed []byte, label string) (crypto.PrivateKey, error) {
	stream := SeedReader(seed, label)
	switch alg {
	case ECCP256, ECCP384, ECCP521:
		curve := alg.Curve()
		if seed == nil {
			return ecdsa.GenerateKey(curve, rand.Reader)
		}
		size := (curve.Params().BitSize + 7) / 8
		nMinus1 := new(big.Int).Sub(curve.Params().N, big.NewInt(1))
		buf := make([]byte, size+8)
		io.ReadFull(stream, buf)
		d := new(big.Int).SetBytes(buf)
		d.Mod(d, nMinus1).Add(d, big.NewInt(1))
		return ecdsa.ParseRawPrivateKey(curve, d.FillBytes(make([]byte, size)))
	case Ed25519:
		s := make([]byte, ed25519.SeedSize)
		io.ReadFull(stream, s)
		return ed25519.NewKeyFromSeed(s), nil
	case X25519:
		s := make([]byte, 32)
		io.ReadFull(stream, s)
		return ecdh.X25519().NewPrivateKey(s)
	case RSA1024, RSA2048, RSA3072, RSA4096:
		if seed == nil {
			return rsa.GenerateKey(rand.Reader, alg.RSABits())
		}
		return deterministicRSA(stream, alg.RSABits())
	}
	return nil, fmt.Errorf("simkit: unsupported algorithm %v", alg)
}

// GenerateSigner is GenerateKey for signature algorithms.
func GenerateSigner(alg Alg, seed []byte, label string) (crypto.Signer, error) {
	k, err := GenerateKey(alg, seed, label)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("simkit: %v does not sign", alg)
	}
	return s, nil
}

// deterministicRSA derives an RSA key with e = 65537 from stream.
func deterministicRSA(stream io.Reader, bits int) (*rsa.PrivateKey, error) {
	e := big.NewInt(65537)
	prime := func() *big.Int {
		buf := make([]byte, bits/16)
		io.ReadFull(stream, buf)
		buf[0] |= 0xC0 // top two bits: the product has exactly bits bits
		buf[len(buf)-1] |= 1
		p := new(big.Int).SetBytes(buf)
		one := big.NewInt(1)
		two := big.NewInt(2)
		for {
			if p.ProbablyPrime(20) {
				pm1 := new(big.Int).Sub(p, one)
				if new(big.Int).GCD(nil, nil, e, pm1).Cmp(one) == 0 {
					return p
				}
			}
			p.Add(p, two)
		}
	}
	p := prime()
	q := prime()
	for p.Cmp(q) == 0 {
		q = prime()
	}
	return RSAFromPrimes(p, q)
}

// RSAFromPrimes builds the RSA key with e = 65537 of primes p and q, and
// checks it: what a card does with an imported key.
func RSAFromPrimes(p, q *big.Int) (*rsa.PrivateKey, error) {
	one := big.NewInt(1)
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	d := new(big.Int).ModInverse(big.NewInt(65537), phi)
	if d == nil {
		return nil, errors.New("simkit: e is not invertible")
	}
	k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537}, D: d, Primes: []*big.Int{p, q}}
	k.Precompute()
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return k, nil
}

// RawRSA is the private-key operation m^d mod n with the CRT values
// rsa.PrivateKey.Precompute filled in, for cards where the host pads (PIV).
// The caller checks m < n.
func RawRSA(k *rsa.PrivateKey, m *big.Int) *big.Int {
	p, q, pc := k.Primes[0], k.Primes[1], k.Precomputed
	m1 := new(big.Int).Exp(m, pc.Dp, p)
	m2 := new(big.Int).Exp(m, pc.Dq, q)
	h := new(big.Int).Sub(m1, m2)
	h.Mul(h, pc.Qinv).Mod(h, p)
	return h.Mul(h, q).Add(h, m2)
}

// SignECDSARaw signs hash (truncated to the order's size as ECDSA does) and
// returns r‖s, each as long as the order: the OpenPGP card's format.
func SignECDSARaw(k *ecdsa.PrivateKey, hash []byte) ([]byte, error) {
	r, s, err := ecdsa.Sign(rand.Reader, k, hash)
	if err != nil {
		return nil, err
	}
	size := (k.Curve.Params().BitSize + 7) / 8
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}

// ECDH returns the shared secret of priv (an *ecdsa.PrivateKey of a NIST
// curve or an *ecdh.PrivateKey) with the peer's public point (uncompressed
// 04‖X‖Y for NIST curves, 32 bytes for X25519): the X coordinate, as ECDH
// cards answer.
func ECDH(priv crypto.PrivateKey, point []byte) ([]byte, error) {
	var k *ecdh.PrivateKey
	switch p := priv.(type) {
	case *ecdh.PrivateKey:
		k = p
	case *ecdsa.PrivateKey:
		var err error
		if k, err = p.ECDH(); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("simkit: not a key-agreement key")
	}
	pub, err := k.Curve().NewPublicKey(point)
	if err != nil {
		return nil, err
	}
	return k.ECDH(pub)
}

// SelfSigned makes a certificate for key, signed by itself, for
// signatures (digitalSignature, contentCommitment).
func SelfSigned(key crypto.Signer, cn string, serial *big.Int, notBefore time.Time) ([]byte, error) {
	return SelfSignedFor(key, cn, serial, notBefore, x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment)
}

// SelfSignedFor is SelfSigned with the key usage of the caller's choosing:
// a decryption key's certificate says keyEncipherment (RSA) or
// keyAgreement (EC), which middleware such as OpenSC reads to offer the
// key for decryption or derivation.
func SelfSignedFor(key crypto.Signer, cn string, serial *big.Int, notBefore time.Time, usage x509.KeyUsage) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"pscs simulated card"}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(20, 0, 0),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}
