// Package openpgp is the profile driver of OpenPGP cards (OpenPGP Smart
// Card Application 3.4: YubiKey 5, Nitrokey, …), built on the driver kit
// of package profiles; its simulator is pgpsim.
//
//	card, err := openpgp.Open(ctx, t) // t: any profiles.Transmitter
//	err = card.VerifyPIN(ctx, openpgp.PINSign, pin)
//	sig, err := card.Sign(ctx, "sig", digest, crypto.SHA256)
//
// Keys "sig" (PSO: COMPUTE DIGITAL SIGNATURE, PIN "pw1-sign"), "dec" (PSO:
// DECIPHER, PIN "pw1", Key.NoSign) and "aut" (INTERNAL AUTHENTICATE, PIN
// "pw1"); "pw3" is for the owner, no key needs it. RSA 2048 to 4096,
// ECDSA/ECDH on P-256, P-384, P-521, Ed25519, X25519. The card pads RSA
// itself (PKCS #1 v1.5): PSS and OAEP are refused with
// profiles.ErrKeyUsage. Signatures are checked under the key before they
// are returned. PW1 good for one signature (C4's first byte 00) makes
// "sig" PIN-always. A wrong PIN (69 82 on a YubiKey) is a
// *profiles.PINError with the tries read from C4. The signature counter
// is in Info's label. Cards whose PINs go through a KDF are refused
// ([ErrKDF]). Extended length when the card announces it, else chaining.
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
