// Package openpgp is the profile of OpenPGP cards (OpenPGP Smart Card
// Application 3.4). So far it holds what traces must hide of the card's
// APDUs ([Redact]); the simulator is pgpsim.
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
