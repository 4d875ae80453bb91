package simkit

import "time"

// Latency is how long a card takes for each kind of operation. The zero
// value answers at once; a field left zero takes no time.
type Latency struct {
	// Other is every command without a figure of its own.
	Other time.Duration
	// Verify is a PIN comparison (VERIFY, CHANGE REFERENCE DATA, RESET
	// RETRY COUNTER) that reached the comparison.
	Verify time.Duration

	// Signatures (and RSA decryption, which costs the same).
	SignECCP256, SignECCP384, SignECCP521, SignEd25519 time.Duration
	SignRSA2048, SignRSA3072, SignRSA4096              time.Duration

	// ECDH key agreement (PSO:DECIPHER with an ECC key).
	ECDHP256, ECDHP384, ECDHP521, ECDHX25519 time.Duration

	// On-card key generation.
	GenerateECCP256, GenerateECCP384, GenerateECCP521, GenerateEd25519 time.Duration
	GenerateRSA2048, GenerateRSA3072, GenerateRSA4096                  time.Duration

	// FactoryReset is a factory reset (OpenPGP ACTIVATE FILE).
	FactoryReset time.Duration
}

// YubiKey5 is a YubiKey 5.4.3, measured from real-card transcripts
// (/work/shared/reference/cards.md section 6; OpenPGP application, the gap
// from one APDU to the next). RSA signatures were not measured: the figures
// are the middle of the published 150-500 ms range, scaled by the cube of
// the size.
var YubiKey5 = Latency{
	Other:           1 * time.Millisecond,
	Verify:          10 * time.Millisecond,
	SignECCP256:     76 * time.Millisecond,
	SignECCP384:     126 * time.Millisecond,
	SignECCP521:     270 * time.Millisecond,
	SignEd25519:     108 * time.Millisecond,
	SignRSA2048:     300 * time.Millisecond,
	SignRSA3072:     1000 * time.Millisecond,
	SignRSA4096:     2400 * time.Millisecond,
	ECDHP256:        70 * time.Millisecond,
	ECDHP384:        120 * time.Millisecond,
	ECDHP521:        260 * time.Millisecond,
	ECDHX25519:      100 * time.Millisecond,
	GenerateECCP256: 296 * time.Millisecond,
	GenerateECCP384: 445 * time.Millisecond,
	GenerateECCP521: 770 * time.Millisecond,
	GenerateEd25519: 109 * time.Millisecond,
	GenerateRSA2048: 6260 * time.Millisecond,
	GenerateRSA3072: 21300 * time.Millisecond,
	GenerateRSA4096: 49800 * time.Millisecond,
	FactoryReset:    600 * time.Millisecond,
}

// Sign returns the time of a signature (or RSA decryption) with alg.
// RSA-1024 has no figure of its own and takes RSA-2048's.
func (l Latency) Sign(alg Alg) time.Duration {
	switch alg {
	case ECCP256:
		return l.SignECCP256
	case ECCP384:
		return l.SignECCP384
	case ECCP521:
		return l.SignECCP521
	case Ed25519:
		return l.SignEd25519
	case RSA1024, RSA2048:
		return l.SignRSA2048
	case RSA3072:
		return l.SignRSA3072
	case RSA4096:
		return l.SignRSA4096
	}
	return l.Other
}

// Decipher returns the time of a decryption (RSA) or key agreement (ECC).
func (l Latency) Decipher(alg Alg) time.Duration {
	switch alg {
	case ECCP256:
		return l.ECDHP256
	case ECCP384:
		return l.ECDHP384
	case ECCP521:
		return l.ECDHP521
	case X25519:
		return l.ECDHX25519
	}
	return l.Sign(alg)
}

// Generate returns the time of generating a key of alg.
func (l Latency) Generate(alg Alg) time.Duration {
	switch alg {
	case ECCP256:
		return l.GenerateECCP256
	case ECCP384:
		return l.GenerateECCP384
	case ECCP521:
		return l.GenerateECCP521
	case Ed25519, X25519:
		return l.GenerateEd25519
	case RSA1024, RSA2048:
		return l.GenerateRSA2048
	case RSA3072:
		return l.GenerateRSA3072
	case RSA4096:
		return l.GenerateRSA4096
	}
	return l.Other
}
