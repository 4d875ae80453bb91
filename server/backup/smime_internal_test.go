package backup

import (
	"bytes"
	"testing"
)

// FuzzReadEntity: readEntity (the MIME reader of mails and of what
// openssl writes) never panics, returns only the two S/MIME types, and
// reads back what entity writes.
func FuzzReadEntity(f *testing.F) {
	f.Add(entity(typeEnveloped, []byte("\x30\x03\x02\x01\x00"), "From: a@b\r\nTo: c@d\r\nSubject: x\r\nMIME-Version: 1.0\r\n"))
	f.Add(entity(typeSigned, bytes.Repeat([]byte{0xff}, 200), ""))
	f.Add([]byte("Content-Type: application/x-pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: BASE64\n\nAAEC\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		st, der, err := readEntity(p)
		if err != nil {
			return
		}
		if st != typeSigned && st != typeEnveloped {
			t.Fatalf("smime-type %q accepted", st)
		}
		st2, der2, err := readEntity(entity(st, der, ""))
		if err != nil || st2 != st || !bytes.Equal(der2, der) {
			t.Fatalf("written again, read as %q %x: %v", st2, der2, err)
		}
	})
}
