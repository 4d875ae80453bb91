package profiles

import (
	"context"
	"crypto"
	"errors"
)

// Decrypter is an optional interface of a [Card] whose keys decrypt (RSA)
// or agree keys (ECDH), found by type assertion:
//
//	d, ok := card.(profiles.Decrypter)
//
// It is separate from Card because not every card application decrypts,
// and a profile adds it without changing what every profile implements.
//
// # Contract
//
//   - Decrypt decrypts ciphertext, exactly the size of the key's modulus,
//     with the RSA key id. opts selects the padding the way
//     crypto.Decrypter's opts do: nil or *rsa.PKCS1v15DecryptOptions for
//     PKCS #1 v1.5, *rsa.OAEPOptions (Hash = MGFHash: SHA-1 or SHA-256;
//     Label) for OAEP. A card that does the raw RSA operation leaves the
//     padding to the driver, which removes it without branching on secret
//     data; any padding failure is the one error [ErrDecryption], which says
//     nothing about where it failed (Bleichenbacher, Manger).
//   - DeriveECDH answers the x coordinate of the shared point (the ECDH
//     primitive of SEC 1, 3.3.1; PKCS #11 CKM_ECDH1_DERIVE with CKD_NULL)
//     of the EC key id with peer, an uncompressed point on the key's curve.
//     For an X25519 key (*ecdh.PublicKey of ecdh.X25519()), peer is the
//     32-byte u-coordinate (RFC 7748) and the answer the 32-byte shared
//     secret, as the card computes it: a driver need not refuse an
//     all-zero secret (a small-order peer), pscsd does.
//   - Keys that need the PIN need it as for [Card.Sign]: VerifyPIN before,
//     and before every operation for [PINAlways].
//   - A key that does not decrypt (or is of the other kind) is refused
//     with an error wrapping [ErrKeyUsage]; an unknown key with [ErrNoKey].
//   - What the card answers is secret: a driver never puts it in an error,
//     and the trace redacts it (cards.Trace).
//
// [Key.Decrypt] tells which keys a card offers for these operations.
type Decrypter interface {
	Decrypt(ctx context.Context, id string, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error)
	DeriveECDH(ctx context.Context, id string, peer []byte) ([]byte, error)
}

// ErrDecryption: the plaintext's padding is wrong (or the ciphertext is not
// for this key). It is deliberately the only padding error.
var ErrDecryption = errors.New("profiles: decryption error")

// ErrKeyUsage: the key does not do this operation (a signature-only key
// asked to decrypt, an RSA key asked for ECDH).
var ErrKeyUsage = errors.New("profiles: the key does not allow this operation")
