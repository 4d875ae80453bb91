package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pscs/pscs/internal/durable"
)

func TestAppendReadBack(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, testKey, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if seq, h := l.Head(); seq != 0 || !bytes.Equal(h, make([]byte, HashSize)) {
		t.Errorf("empty log: Head() = %d, %x", seq, h)
	}
	var want []*Record
	for i := 1; i <= 4; i++ {
		r := testRecord(i)
		if i == 2 {
			r.Time = 1234 // kept when set
			r.Evidence = nil
			r.Timings = nil
		}
		in := *r
		seq, err := l.Append(context.Background(), r)
		if err != nil || seq != uint64(i) {
			t.Fatalf("Append #%d = %d, %v", i, seq, err)
		}
		if !reflect.DeepEqual(*r, in) {
			t.Errorf("Append modified its argument")
		}
		want = append(want, r)
	}
	headSeq, headHash := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	var got []*Record
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := ReadAll(f, func(r *Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ReadAll: %d records, want %d", len(got), len(want))
	}
	prev := make([]byte, HashSize)
	for i, g := range got {
		w := *want[i]
		w.Seq = uint64(i + 1)
		if w.Time == 0 {
			w.Time = fixedNow().UnixMilli()
		}
		w.Prev, w.MAC = g.Prev, g.MAC
		if !reflect.DeepEqual(*g, w) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i+1, *g, w)
		}
		if !bytes.Equal(g.Prev, prev) {
			t.Errorf("record %d: Prev %x, want %x", i+1, g.Prev, prev)
		}
		data, err := encMode.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		var p [HashSize]byte
		copy(p[:], prev)
		h := link(formatVersion, p, data)
		prev = h[:]
	}
	if headSeq != 4 || !bytes.Equal(headHash, prev) {
		t.Errorf("Head() = %d, %x; want 4, %x", headSeq, headHash, prev)
	}

	// Reopening continues the chain.
	l, err = Open(path, testKey, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if l.Recovered() != nil {
		t.Errorf("Recovered() = %+v on an intact log", l.Recovered())
	}
	if s, h := l.Head(); s != headSeq || !bytes.Equal(h, headHash) {
		t.Errorf("reopened: Head() = %d, %x; want %d, %x", s, h, headSeq, headHash)
	}
	if seq, err := l.Append(context.Background(), testRecord(5)); seq != 5 || err != nil {
		t.Errorf("Append after reopen = %d, %v", seq, err)
	}
	l.Close()
	if n, err := verifyFile(t, path, testKey, ExpectHead(Anchor{headSeq, headHash})); n != 5 || err != nil {
		t.Errorf("Verify = %d, %v", n, err)
	}
}

func TestAppendErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, testKey, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		r    *Record
		want error
	}{
		{"nil record", ctx, nil, ErrInvalidRecord},
		{"identity not UTF-8", ctx, &Record{Identity: "\xff"}, ErrInvalidRecord},
		{"timing key not UTF-8", ctx, &Record{Timings: map[string]int64{"\xc3": 1}}, ErrInvalidRecord},
		{"too large", ctx, &Record{Result: make([]byte, MaxRecordSize)}, ErrTooLarge},
		{"canceled", canceled, &Record{Op: "sign"}, context.Canceled},
	}
	for _, tt := range tests {
		if _, err := l.Append(tt.ctx, tt.r); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// None of them used a sequence number; the largest record that fits does.
	big := &Record{Result: make([]byte, MaxRecordSize-200)}
	if seq, err := l.Append(ctx, big); seq != 1 || err != nil {
		t.Errorf("Append after refusals = %d, %v; want 1, nil", seq, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, &Record{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if n, err := verifyFile(t, path, testKey); n != 1 || err != nil {
		t.Errorf("Verify = %d, %v", n, err)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, testKey, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, testKey, Options{NoSync: true}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	l.Close()
	l, err = Open(path, testKey, Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	l.Close()
}

// TestDurableBeforeReturn: whenever Append returns seq, the durable head
// has reached seq, and fsync ran after the record was written.
func TestDurableBeforeReturn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, testKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var synced atomic.Int64 // file size at the last fsync
	l.sync = func(f *os.File) error {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		err = durable.Sync(f)
		synced.Store(fi.Size())
		return err
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Go(func() {
			for i := 0; i < 20; i++ {
				seq, err := l.Append(context.Background(), testRecord(i))
				if err != nil {
					t.Error(err)
					return
				}
				if head, _ := l.Head(); head < seq {
					t.Errorf("Append returned %d with the durable head at %d", seq, head)
				}
				// Every byte up to this record was in the file when fsync ran.
				// (The size at the last fsync is read before the file's: the
				// file only grows, and other goroutines' batches may be
				// written and fsynced in between.)
				at := synced.Load()
				fi, _ := os.Stat(path)
				if at > fi.Size() || at < int64(headerSize) {
					t.Errorf("fsynced size %d, file size %d", at, fi.Size())
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if synced.Load() != fi.Size() {
		t.Errorf("last fsync covered %d bytes of %d", synced.Load(), fi.Size())
	}
	if n, err := verifyFile(t, path, testKey); n != 320 || err != nil {
		t.Errorf("Verify = %d, %v", n, err)
	}
}

// TestGroupCommit: with a slow disk, concurrent appenders share fsyncs.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, testKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.sync = func(f *os.File) error {
		time.Sleep(2 * time.Millisecond)
		return nil
	}
	const goroutines, each = 64, 10
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Go(func() {
			for i := 0; i < each; i++ {
				if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	st := l.Stats()
	l.Close()
	t.Logf("%+v: %.3f fsyncs per append", st, float64(st.Syncs)/float64(st.Appends))
	if st.Appends != goroutines*each || st.Syncs != st.Batches {
		t.Errorf("Stats = %+v", st)
	}
	if st.Syncs > st.Appends/8 {
		t.Errorf("%d fsyncs for %d appends: not sharing", st.Syncs, st.Appends)
	}
}

// TestGroupCommitWindow: with a window, records arriving within it share
// one write and one fsync even when the disk is idle.
func TestGroupCommitWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		l, err := Open(path, testKey, Options{GroupCommitWindow: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var syncs atomic.Int32
		l.sync = func(*os.File) error { syncs.Add(1); return nil }
		start := time.Now()
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Go(func() {
				if _, err := l.Append(context.Background(), testRecord(i)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if d := time.Since(start); d != 5*time.Millisecond {
			t.Errorf("Appends took %v, want the 5ms window", d)
		}
		if st := l.Stats(); st.Batches != 1 || syncs.Load() != 1 {
			t.Errorf("Stats = %+v, syncs %d; want one batch, one fsync", st, syncs.Load())
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestContextWhileWaiting: a canceled wait reports the seq and that
// durability is unconfirmed; the record is still written.
func TestContextWhileWaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, testKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	l.sync = func(*os.File) error { <-release; return nil }
	ctx, cancel := context.WithCancelCause(context.Background())
	errGone := errors.New("client gone")
	done := make(chan struct{})
	var seq uint64
	go func() {
		defer close(done)
		seq, err = l.Append(ctx, testRecord(1))
	}()
	for l.Stats().Appends == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel(errGone)
	<-done
	if seq != 1 || !errors.Is(err, errGone) || !strings.Contains(err.Error(), "not confirmed") {
		t.Errorf("Append = %d, %v; want 1 and an error wrapping the cause", seq, err)
	}
	close(release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := verifyFile(t, path, testKey); n != 1 || err != nil {
		t.Errorf("Verify = %d, %v; want the record written", n, err)
	}
}

// TestSyncErrorSticky: after a failed fsync nothing more is accepted, and
// reopening the file finds what was written.
func TestSyncErrorSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, testKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	errDisk := errors.New("EIO")
	l.sync = func(*os.File) error { return errDisk }
	if _, err := l.Append(context.Background(), testRecord(1)); !errors.Is(err, errDisk) {
		t.Errorf("Append: %v, want EIO", err)
	}
	l.sync = durable.Sync
	if _, err := l.Append(context.Background(), testRecord(2)); !errors.Is(err, errDisk) {
		t.Errorf("Append after the failure: %v, want EIO", err)
	}
	if err := l.Close(); !errors.Is(err, errDisk) {
		t.Errorf("Close: %v, want EIO", err)
	}
	l, err = Open(path, testKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if seq, _ := l.Head(); seq != 1 {
		t.Errorf("reopened: head %d, want 1 (written, fsync result unknown)", seq)
	}
}

// TestOpenScan: Open hands every record it checks to Options.Scan, in
// order, so that a caller reads nothing twice at start.
func TestOpenScan(t *testing.T) {
	path, _ := createLog(t, t.TempDir(), 5)
	var seqs []uint64
	l, err := Open(path, testKey, Options{NoSync: true, Scan: func(r *Record) { seqs = append(seqs, r.Seq) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5}) {
		t.Errorf("Scan saw %v, want records 1 to 5", seqs)
	}
}

// A log written in format version 1 (each link the record's own SHA-256)
// still verifies, opens, and takes new records in version 1.
func TestVersion1Log(t *testing.T) {
	seed, err := os.ReadFile("testdata/version1.fuzzseed")
	if err != nil {
		t.Fatal(err)
	}
	// The file holds a fuzz corpus entry: go test fuzz v1, then []byte("…").
	_, quoted, _ := strings.Cut(string(seed), "[]byte(")
	text, err := strconv.Unquote(strings.TrimSuffix(strings.TrimSpace(quoted), ")"))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(text)
	if binary.BigEndian.Uint16(data[14:]) != 1 {
		t.Fatal("not a version 1 log")
	}
	n, err := Verify(bytes.NewReader(data), testKey, nil)
	if err != nil || n != 3 {
		t.Fatalf("version 1 log: %d records, %v", n, err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	os.WriteFile(path, data, 0o600)
	l, err := Open(path, testKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), testRecord(9)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	b, _ := os.ReadFile(path)
	if n, err := Verify(bytes.NewReader(b), testKey, nil); err != nil || n != 4 || binary.BigEndian.Uint16(b[14:]) != 1 {
		t.Fatalf("after an append: %d records, %v, version %d", n, err, binary.BigEndian.Uint16(b[14:]))
	}
}

// TestPolicyRoundTrip: a record's Policy (key 13) reads back as written,
// and text in it must be UTF-8.
func TestPolicyRoundTrip(t *testing.T) {
	path, _ := createLog(t, t.TempDir(), 3)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []*Policy
	if _, err := Verify(f, testKey, func(r *Record) error { got = append(got, r.Policy); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != nil || got[2] != nil || got[1] == nil || *got[1] != *testRecord(2).Policy {
		t.Errorf("policies read back: %+v, want %+v in record 2 only", got, testRecord(2).Policy)
	}
	l, err := Open(filepath.Join(t.TempDir(), "audit.log"), testKey, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(context.Background(), &Record{Op: "sign", Policy: &Policy{Serial: 1, Card: "\xff"}}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("a Policy card that is not UTF-8: %v, want ErrInvalidRecord", err)
	}
}
