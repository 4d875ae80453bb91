package pivsim

import (
	"crypto"
	"fmt"

	"github.com/pscs/pscs/profiles/simkit"
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

// kitAlg maps a PIV key algorithm to the kit's.
func kitAlg(alg Algorithm) simkit.Alg {
	switch alg {
	case RSA1024:
		return simkit.RSA1024
	case RSA2048:
		return simkit.RSA2048
	case ECCP256:
		return simkit.ECCP256
	case ECCP384:
		return simkit.ECCP384
	}
	return 0
}

// generateKey makes a key of alg, from seed when it is not nil.
func generateKey(alg Algorithm, seed []byte, label string) (crypto.Signer, error) {
	if kitAlg(alg) == 0 {
		return nil, fmt.Errorf("pivsim: unsupported algorithm %v", alg)
	}
	return simkit.GenerateSigner(kitAlg(alg), seed, label)
}
