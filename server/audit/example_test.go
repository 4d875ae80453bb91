package audit_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pscs/pscs/server/audit"
)

// hmacKey is a MACer for the example; pscsd uses the vault's TPM-held key.
type hmacKey []byte

func (k hmacKey) MAC(label string, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(label))
	m.Write(data)
	return m.Sum(nil), nil
}

func Example() {
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.log")
	key := hmacKey("example key")

	// pscsd: append before replying, keep the head outside the file.
	log, err := audit.Open(path, key, audit.Options{Now: func() time.Time { return time.UnixMilli(1e12) }})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, who := range []string{"alice", "bob", "carol"} {
		seq, err := log.Append(context.Background(), &audit.Record{Identity: who, Op: "sign", Evidence: []byte("COSE_Sign1…")})
		if err != nil {
			fmt.Println(err) // no reply may be sent
			return
		}
		fmt.Println("durable:", seq)
	}
	headSeq, headHash := log.Head()
	log.Close()

	// An owner: check the log against the anchor.
	f, _ := os.Open(path)
	n, err := audit.Verify(f, key, nil, audit.ExpectHead(audit.Anchor{Seq: headSeq, Hash: headHash}))
	f.Close()
	fmt.Println("verified:", n, err)

	// Someone flips one byte of record 2.
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 1
	os.WriteFile(path, data, 0o600)
	f, _ = os.Open(path)
	n, err = audit.Verify(f, key, nil)
	f.Close()
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		fmt.Println("good:", n, "first bad record:", ve.Seq, errors.Is(err, audit.ErrCorrupt))
	}
	// Output:
	// durable: 1
	// durable: 2
	// durable: 3
	// verified: 3 <nil>
	// good: 1 first bad record: 2 true
}
