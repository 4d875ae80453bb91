package server_test

import (
	"crypto"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/netsim"
	inrig "github.com/pscs/pscs/internal/rig"
)

// document is a 200 MiB pseudo-random stream (ChaCha8 from a fixed seed):
// nothing on the way could compress it.
func document(size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{'p', 's', 'c', 's'}), size)
}

// TestOnlyTheDigestTravels: a 200 MiB document signed detached through
// the Go client costs the link a few kilobytes, counted at a UDP proxy
// between client and pscsd: the document stays with the delegate, only
// its digest goes to the server (issue 12, build item 1), while the
// client reads every byte of it.
func TestOnlyTheDigestTravels(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: hashes 200 MiB")
	}
	r := newRig(t, 1)
	p, err := netsim.New(r.addr, netsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := inrig.Dial(t, client.Config{Addr: p.Addr(), ServerName: "127.0.0.1", Certificate: r.alice, RootCAs: r.ca.Pool})
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	const size = 200 << 20
	p.ResetCounters()
	var seen int64
	doc := io.TeeReader(document(size), writerFunc(func(b []byte) { seen += int64(len(b)) }))
	sd, err := c.SignCAdES(ctx(t), doc, client.CAdESOptions{Slot: 7, Key: 1, Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	up := p.Stats().ClientToServer.Bytes
	t.Logf("200 MiB document: %d bytes from client to server", up)
	if seen != size {
		t.Fatalf("the client read %d bytes of the document, want %d", seen, size)
	}
	if up > 16<<10 {
		t.Errorf("%d bytes went to the server for a detached signature of 200 MiB; only the digest should", up)
	}
	h := sha256.New()
	io.Copy(h, document(size))
	parsed, err := cms.Parse(sd.CMS)
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.Signers[0].Verify(h.Sum(nil)); err != nil {
		t.Errorf("the signature does not verify over the document's digest: %v", err)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }
