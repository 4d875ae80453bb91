package esteid

import (
	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// Redact is the EstEID card's profiles.Redactor: besides the PINs and the
// PUK of VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER, the
// answer of PSO:DECIPHER (2A 80 86), the shared secret of a key agreement
// with the authentication key.
func Redact(cmd apdu.Command) (secretCommand, secretResponse bool) {
	secretCommand, secretResponse = profiles.RedactISO(cmd)
	if cmd.INS == 0x2A && cmd.P1 == 0x80 && cmd.P2 == 0x86 {
		secretResponse = true
	}
	return secretCommand, secretResponse
}
