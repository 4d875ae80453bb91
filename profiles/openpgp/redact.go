// Package openpgp is the profile driver of OpenPGP cards (OpenPGP Smart
// Card Application 3.4; YubiKey 5, Nitrokey, GnuPG's own), built on the
// driver kit of package profiles; the simulator is pgpsim.
//
// # Use
//
//	card, err := openpgp.Open(ctx, t) // t: any profiles.Transmitter
//	keys, err := card.Keys(ctx)
//	err = card.VerifyPIN(ctx, openpgp.PINSign, pin)
//	sig, err := card.Sign(ctx, "sig", digest, crypto.SHA256)
//
// # Conventions
//
//   - Keys "sig" (PSO: COMPUTE DIGITAL SIGNATURE, PIN "pw1-sign"), "dec"
//     (PSO: DECIPHER, PIN "pw1"; it does not sign: Key.NoSign) and "aut"
//     (INTERNAL AUTHENTICATE, PIN "pw1"); "pw3" is listed for the owner and
//     needed by no key. A slot without a fingerprint (C5) has no key.
//   - RSA-2048 to 4096, ECDSA and ECDH on P-256, P-384, P-521, Ed25519 and
//     X25519. The card pads RSA signatures (PKCS #1 v1.5 of a DigestInfo)
//     and removes the padding of decryptions: PSS and OAEP are refused with
//     profiles.ErrKeyUsage. ECDSA signatures come back as DER, Ed25519
//     signs the message. Every signature is checked under the key's public
//     key before it is returned.
//   - When C4's first byte is 00, PW1 is good for one signature: the
//     signature key's PIN policy is then "always".
//   - A YubiKey answers a wrong PIN with 69 82, not 63 Cx: the error is a
//     *profiles.PINError with the tries left read from the PW status bytes
//     (C4), matching apdu.ErrWrongPIN or apdu.ErrBlocked.
//   - The signature counter (7A/93) is in Info's label.
//   - Cards whose PINs go through a KDF (KDF-DO F9) are refused by Open
//     with [ErrKDF].
//   - Extended length is used when the historical bytes announce it, up to
//     the card's maximum (7F66); command chaining and GET RESPONSE
//     otherwise (apdu.Conn).
package openpgp

import (
	"bytes"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// Redact is the OpenPGP card's profiles.Redactor: besides the PINs of
// VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER, a private key
// imported with PUT DATA (DB 3F FF, extended header list 4D), the
// resetting code and secure-messaging keys put with PUT DATA (DA 00 D1,
// D2, D3); the answer of PSO:DECIPHER (2A 80 86), a session key or shared
// secret.
func Redact(cmd apdu.Command) (secretCommand, secretResponse bool) {
	secretCommand, secretResponse = profiles.RedactISO(cmd)
	switch {
	case cmd.INS == 0xDB && cmd.P1 == 0x3F && cmd.P2 == 0xFF:
		head := cmd.Data[:min(len(cmd.Data), 12)]
		secretCommand = secretCommand || bytes.IndexByte(head, 0x4D) >= 0
	case cmd.INS == 0xDA && cmd.P1 == 0x00 && cmd.P2 >= 0xD1 && cmd.P2 <= 0xD3:
		secretCommand = true
	case cmd.INS == 0x2A && cmd.P1 == 0x80 && cmd.P2 == 0x86:
		secretResponse = true
	}
	return secretCommand, secretResponse
}
