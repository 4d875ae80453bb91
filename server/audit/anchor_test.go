package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// memCounter is an in-memory Counter for the package's fast tests; pscsd's
// tests run the TPM's (server/anchor on swtpm).
type memCounter struct {
	mu   sync.Mutex
	v    uint64
	ok   bool
	fail bool // the next Increment fails (a crash after the fsync)
}

func (c *memCounter) Read(context.Context) (uint64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v, c.ok, nil
}

func (c *memCounter) Increment(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail {
		c.fail = false
		return errors.New("power cut")
	}
	if !c.ok {
		c.v, c.ok = 1000, true // a TPM starts a new counter at its highest value yet
		return nil
	}
	c.v++
	return nil
}

type softSigner struct{ k *ecdsa.PrivateKey }

func (s softSigner) SignDigest(_ context.Context, d []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, s.k, d)
}

func newSigner(t testing.TB) softSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return softSigner{k}
}

// anchoredLog writes records to a new anchored, checkpointed log and
// closes it; every third record asks to be anchored.
func anchoredLog(t *testing.T, path string, c *memCounter, s softSigner, n int) {
	t.Helper()
	l, err := Open(path, testKey, Options{Counter: c, Signer: s, CheckpointRecords: 7})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := testRecord(i)
		r.Anchor = i%3 == 0
		if _, err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// frames returns the byte offsets of each frame's end.
func frameEnds(t *testing.T, path string) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := newScanner(f, nil, Anchor{})
	var ends []int64
	for {
		_, err := s.next()
		if err == io.EOF {
			return ends
		}
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, s.off)
	}
}

func TestAnchorRefusals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	c := &memCounter{}
	s := newSigner(t)
	anchoredLog(t, path, c, s, 20)
	old, _ := os.ReadFile(path) // an old copy
	anchoredLog(t, path, c, s, 5)
	good, _ := os.ReadFile(path)
	ends := frameEnds(t, path)

	cases := []struct {
		name  string
		setup func()
		want  string
	}{
		{"intact", func() {}, ""},
		{"last record cut", func() { os.WriteFile(path, good[:ends[len(ends)-2]], 0o600) }, "older than its anchor"},
		{"last 5 records cut", func() { os.WriteFile(path, good[:ends[len(ends)-6]], 0o600) }, "older than its anchor"},
		{"deleted", func() { os.Remove(path) }, "was deleted"},
		{"emptied", func() { os.WriteFile(path, nil, 0o600) }, "is empty"},
		{"header only", func() { os.WriteFile(path, good[:headerSize], 0o600) }, "is empty"},
		{"older copy", func() { os.WriteFile(path, old, 0o600) }, "older than its anchor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(path, good, 0o600)
			tc.setup()
			l, err := Open(path, testKey, Options{Counter: c, Signer: s})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				l.Close()
				good, _ = os.ReadFile(path) // Close added a checkpoint only if records followed the last
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("opened; want a refusal saying %q", tc.want)
			}
			var re *RollbackError
			if !errors.As(err, &re) || !errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want a RollbackError saying %q", err, tc.want)
			}
		})
	}
}

// A crash after an anchor record's fsync and before the counter moved:
// the log is one ahead, and Open catches the counter up.
func TestAnchorCrashBeforeIncrement(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	c := &memCounter{}
	l, err := Open(path, testKey, Options{Counter: c})
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := c.Read(context.Background())
	c.mu.Lock()
	c.fail = true
	c.mu.Unlock()
	r := testRecord(1)
	r.Anchor = true
	if _, err := l.Append(context.Background(), r); err == nil {
		t.Fatal("Append returned before its anchor moved the counter")
	}
	l.Close()
	l, err = Open(path, testKey, Options{Counter: c})
	if err != nil {
		t.Fatalf("reopen after a crash between fsync and increment: %v", err)
	}
	defer l.Close()
	if v, _, _ := c.Read(context.Background()); v != before+1 {
		t.Fatalf("counter %d after catching up, want %d", v, before+1)
	}
}

// Records asking for an anchor return only once the counter moved; others
// move it not at all (the cost of a signature under no limit is unchanged).
func TestAnchorOnlyWhenAsked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	c := &memCounter{}
	l, err := Open(path, testKey, Options{Counter: c})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	v0, _, _ := c.Read(context.Background())
	for i := range 10 {
		if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	if v, _, _ := c.Read(context.Background()); v != v0 {
		t.Fatalf("counter moved %d times for records that did not ask", v-v0)
	}
	r := testRecord(11)
	r.Anchor = true
	if _, err := l.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := c.Read(context.Background()); v != v0+1 {
		t.Fatalf("counter %d after an anchored record, want %d", v, v0+1)
	}
}

// rewrite reads the log at path, lets edit change the records, and writes
// them back with the hash chain recomputed and MACs made with a key that
// is not the server's: what an attacker with the file can do.
func rewrite(t *testing.T, path string, edit func([]*Record) []*Record) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*Record
	if err := ReadAll(f, func(r *Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	f.Close()
	recs = edit(recs)
	out, err := Build(recs, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCheckpointsOffline(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	s := newSigner(t)
	anchoredLog(t, path, &memCounter{}, s, 30)
	good, _ := os.ReadFile(path)
	ends := frameEnds(t, path)
	verify := func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = Verify(f, nil, nil, VerifyCheckpoints(&s.k.PublicKey))
		return err
	}
	if err := verify(); err != nil {
		t.Fatalf("intact log: %v", err)
	}
	cases := []struct {
		name   string
		tamper func()
		kind   error
		want   string
	}{
		{"record flipped", func() {
			b := bytes.Clone(good)
			b[ends[3]-10] ^= 1
			os.WriteFile(path, b, 0o600)
		}, ErrCorrupt, "checksum"},
		{"edited, chain recomputed", func() {
			rewrite(t, path, func(rs []*Record) []*Record { rs[4].Result = []byte("forged"); return rs })
		}, ErrTampered, "checkpoint signature"},
		{"deleted, chain recomputed", func() {
			rewrite(t, path, func(rs []*Record) []*Record { return append(rs[:4], rs[5:]...) })
		}, ErrTampered, "checkpoint signature"},
		{"last record cut", func() { os.WriteFile(path, good[:ends[len(ends)-2]], 0o600) }, ErrMissingTail, "after the last checkpoint"},
		{"last 5 records cut", func() { os.WriteFile(path, good[:ends[len(ends)-6]], 0o600) }, ErrMissingTail, "after the last checkpoint"},
		{"emptied", func() { os.WriteFile(path, good[:headerSize], 0o600) }, ErrMissingTail, "no checkpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(path, good, 0o600)
			tc.tamper()
			err := verify()
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want %v saying %q", err, tc.kind, tc.want)
			}
		})
	}
	// Another server's key does not verify this log's checkpoints.
	os.WriteFile(path, good, 0o600)
	other := newSigner(t)
	f, _ := os.Open(path)
	defer f.Close()
	if _, err := Verify(f, nil, nil, VerifyCheckpoints(&other.k.PublicKey)); !errors.Is(err, ErrTampered) {
		t.Fatalf("another key: %v", err)
	}
}

// Checkpoints come by count, by time, and at Close.
func TestCheckpointsDue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s := newSigner(t)
	l, err := Open(path, testKey, Options{Signer: s, CheckpointRecords: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	var st CheckpointStats
	n, err := Verify(f, testKey, nil, VerifyCheckpoints(&s.k.PublicKey), CountCheckpoints(&st))
	if err != nil {
		t.Fatal(err)
	}
	// 12 records with at most 5 between checkpoints, the last at Close.
	if st.Checkpoints < 3 || st.Covered != uint64(n) {
		t.Fatalf("%d checkpoints, last at %d of %d records", st.Checkpoints, st.Covered, n)
	}
}

// A checkpoint's signature covers every field of the record but its MAC:
// a field added to the last checkpoint of a log (nothing after it would
// show the change in the chain) is detected.
func TestCheckpointCoversItsFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s := newSigner(t)
	anchoredLog(t, path, &memCounter{}, s, 10)
	good, _ := os.ReadFile(path)
	ends := frameEnds(t, path)
	var last *Record
	ReadAll(bytes.NewReader(good), func(r *Record) error { last = r; return nil })
	if last.Op != OpCheckpoint {
		t.Fatalf("the log ends with %q", last.Op)
	}
	last.Result, last.Card = []byte("a signature nobody made"), "another card"
	data, err := seal(last, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := appendFrame(bytes.Clone(good[:ends[len(ends)-2]]), data)
	_, err = Verify(bytes.NewReader(forged), nil, nil, VerifyCheckpoints(&s.k.PublicKey))
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "checkpoint signature") {
		t.Fatalf("got %v", err)
	}
}

// A log with a counter and no checkpoint key is anchored at Close.
func TestAnchorAtCloseWithoutSigner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	c := &memCounter{}
	l, err := Open(path, testKey, Options{Counter: c})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(context.Background(), testRecord(1))
	l.Close()
	b, _ := os.ReadFile(path)
	ends := frameEnds(t, path)
	os.WriteFile(path, b[:ends[len(ends)-2]], 0o600)
	if _, err := Open(path, testKey, Options{Counter: c}); !errors.Is(err, ErrRollback) {
		t.Fatalf("the record before Close was not anchored: %v", err)
	}
}
