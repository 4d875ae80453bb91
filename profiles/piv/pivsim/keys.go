package pivsim

import (
	"crypto"
	"crypto/ecdsa"
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

// Algorithm is a PIV key algorithm (SP 800-78-4 Table 6-2).
type Algorithm byte

const (
	RSA1024 Algorithm = 0x06
	RSA2048 Algorithm = 0x07
	ECCP256 Algorithm = 0x11
	ECCP384 Algorithm = 0x14

	// Management-key algorithms.
	TDES   Algorithm = 0x03
	AES128 Algorithm = 0x08
	AES192 Algorithm = 0x0A
	AES256 Algorithm = 0x0C
)

func (a Algorithm) String() string {
	switch a {
	case RSA1024:
		return "RSA1024"
	case TDES:
		return "TDES"
	case AES128:
		return "AES128"
	case AES192:
		return "AES192"
	case AES256:
		return "AES256"
	case RSA2048:
		return "RSA2048"
	case ECCP256:
		return "ECCP256"
	case ECCP384:
		return "ECCP384"
	}
	return fmt.Sprintf("Algorithm(%#02x)", byte(a))
}

// seedStream is a deterministic byte stream derived from a seed and a label:
// SHA-256(seed || label || counter) blocks. It makes keys reproducible for
// tests; it is not a cryptographic DRBG and the simulator's keys are not
// secrets.
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

// generateKey makes a key of alg, from seed when it is not nil.
func generateKey(alg Algorithm, seed []byte, label string) (crypto.Signer, error) {
	var stream io.Reader
	if seed != nil {
		stream = &seedStream{seed: seed, label: []byte(label)}
	}
	switch alg {
	case ECCP256, ECCP384:
		curve := elliptic.P256()
		if alg == ECCP384 {
			curve = elliptic.P384()
		}
		if stream == nil {
			return ecdsa.GenerateKey(curve, rand.Reader)
		}
		size := (curve.Params().BitSize + 7) / 8
		nMinus1 := new(big.Int).Sub(curve.Params().N, big.NewInt(1))
		buf := make([]byte, size+8)
		io.ReadFull(stream, buf)
		d := new(big.Int).SetBytes(buf)
		d.Mod(d, nMinus1).Add(d, big.NewInt(1))
		return ecdsa.ParseRawPrivateKey(curve, d.FillBytes(make([]byte, size)))
	case RSA1024, RSA2048:
		bits := 2048
		if alg == RSA1024 {
			bits = 1024
		}
		if stream == nil {
			return rsa.GenerateKey(rand.Reader, bits)
		}
		return deterministicRSA(stream, bits)
	}
	return nil, fmt.Errorf("pivsim: unsupported algorithm %v", alg)
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
	n := new(big.Int).Mul(p, q)
	phi := new(big.Int).Mul(new(big.Int).Sub(p, big.NewInt(1)), new(big.Int).Sub(q, big.NewInt(1)))
	d := new(big.Int).ModInverse(e, phi)
	if d == nil {
		return nil, errors.New("pivsim: no inverse of e")
	}
	k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 65537}, D: d, Primes: []*big.Int{p, q}}
	k.Precompute()
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return k, nil
}

// selfSigned makes a certificate for key, signed by itself.
func selfSigned(key crypto.Signer, cn string, serial *big.Int, notBefore time.Time) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"pscs simulated card"}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}
