package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// wantVerifyError checks that err is a *VerifyError of the given kind naming
// seq.
func wantVerifyError(t *testing.T, err error, kind error, seq uint64) *VerifyError {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("got error %v, want a *VerifyError", err)
	}
	if !errors.Is(err, kind) {
		t.Errorf("got kind %v (%v), want %v", kindOf(err), err, kind)
	}
	if ve.Seq != seq {
		t.Errorf("got Seq %d (%v), want %d", ve.Seq, err, seq)
	}
	return ve
}

func TestVerifyGoodLog(t *testing.T) {
	path, heads := createLog(t, t.TempDir(), 5)
	for _, mac := range []MACer{testKey, nil} {
		n, err := verifyFile(t, path, mac, ExpectHead(heads[4]))
		if n != 5 || err != nil {
			t.Errorf("Verify(mac=%v) = %d, %v; want 5, nil", mac != nil, n, err)
		}
	}
	// An anchor from earlier in the same log is fine too.
	if n, err := verifyFile(t, path, testKey, ExpectHead(heads[1])); n != 5 || err != nil {
		t.Errorf("Verify with an older anchor = %d, %v; want 5, nil", n, err)
	}
}

// TestFlipEveryByte flips each byte of a log in turn: Verify must name the
// record holding the byte (0 for the header), as damage, never as a torn
// write.
func TestFlipEveryByte(t *testing.T) {
	path, _ := createLog(t, t.TempDir(), 4)
	orig := readFile(t, path)
	spans := frameSpans(t, orig)
	seqAt := func(i int) uint64 {
		for k, s := range spans {
			if i >= s.off && i < s.end {
				return uint64(k + 1)
			}
		}
		return 0
	}
	for i := range orig {
		data := bytes.Clone(orig)
		data[i] ^= 0xff
		n, err := Verify(bytes.NewReader(data), testKey, nil)
		want := seqAt(i)
		ve := wantVerifyError(t, err, ErrCorrupt, want)
		if t.Failed() {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
		if want > 0 && (n != int(want)-1 || ve.Offset != int64(spans[want-1].off)) {
			t.Fatalf("byte %d flipped: got n=%d offset=%d, want %d, %d", i, n, ve.Offset, want-1, spans[want-1].off)
		}
	}
}

// TestOpenRefusesDamage checks that Open names the damaged record and leaves
// the file as it found it.
func TestOpenRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	path, _ := createLog(t, dir, 4)
	orig := readFile(t, path)
	for k, s := range frameSpans(t, orig) {
		data := bytes.Clone(orig)
		data[(s.off+s.end)/2] ^= 0x01
		writeFile(t, path, data)
		l, err := Open(path, testKey, Options{NoSync: true})
		if err == nil {
			l.Close()
			t.Fatalf("record %d damaged: Open succeeded", k+1)
		}
		wantVerifyError(t, err, ErrCorrupt, uint64(k+1))
		if !bytes.Equal(readFile(t, path), data) {
			t.Errorf("record %d damaged: Open changed the file", k+1)
		}
	}
}

// TestTampering covers edits by someone who can write the disk but has no
// key: each is named by the first record that is not what it should be.
func TestTampering(t *testing.T) {
	dir := t.TempDir()
	path, _ := createLog(t, dir, 6)
	orig := readFile(t, path)
	spans := frameSpans(t, orig)
	frame := func(seq int) []byte { s := spans[seq-1]; return orig[s.off:s.end] }
	frames := func(seqs ...int) [][]byte {
		var f [][]byte
		for _, s := range seqs {
			f = append(f, frame(s))
		}
		return f
	}
	// A record from another log under the same key.
	otherPath, _ := createLog(t, filepath.Join(dir, "other"), 0)
	other, err := Open(otherPath, testKey, Options{NoSync: true, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	r := testRecord(1)
	r.Op = "decrypt"
	if _, err := other.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	other.Close()
	otherData := readFile(t, otherPath)
	foreign := otherData[headerSize:]

	// A record edited and re-sealed with a key that is not the log's.
	forged := func(seq int) []byte {
		var rec *Record
		if err := ReadAll(bytes.NewReader(orig), func(r *Record) error {
			if r.Seq == uint64(seq) {
				rec = r
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		rec.Decision = 0 // turn a refusal into an approval
		rec.Identity = "mallory"
		data, err := seal(rec, otherKey)
		if err != nil {
			t.Fatal(err)
		}
		return appendFrame(nil, data)
	}

	tests := []struct {
		name   string
		frames [][]byte
		n      int // good records before the bad one
		seq    uint64
	}{
		{"delete middle record", frames(1, 2, 4, 5, 6), 2, 3},
		{"delete first record", frames(2, 3, 4, 5, 6), 0, 1},
		{"old record copied over a newer one", frames(1, 2, 3, 2, 5, 6), 3, 4},
		{"record duplicated", frames(1, 2, 3, 3, 4, 5, 6), 3, 4},
		{"records swapped", frames(1, 3, 2, 4, 5, 6), 1, 2},
		{"record edited without the key", append(append(frames(1, 2, 3), forged(4)), frames(5, 6)...), 3, 4},
		{"last record edited without the key", append(frames(1, 2, 3, 4, 5), forged(6)), 5, 6},
		{"record from another log", append(frames(1, 2), append([][]byte{foreign}, frames(4, 5, 6)...)...), 2, 3},
		{"other log's record at its own place", append([][]byte{foreign}, frames(2, 3, 4, 5, 6)...), 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "audit.log")
			writeFile(t, p, rebuild(orig, tt.frames))
			n, err := verifyFile(t, p, testKey)
			ve := wantVerifyError(t, err, ErrTampered, tt.seq)
			if n != tt.n {
				t.Errorf("got %d good records, want %d", n, tt.n)
			}
			// The frame named is the first one that differs from the original.
			wantOff := int64(headerSize)
			for i := 0; i < tt.n; i++ {
				wantOff += int64(len(tt.frames[i]))
			}
			if ve.Offset != wantOff {
				t.Errorf("got Offset %d, want %d", ve.Offset, wantOff)
			}
			t.Logf("%v", err)
			if _, err := Open(p, testKey, Options{NoSync: true}); err == nil {
				t.Errorf("Open accepted the log")
			} else {
				wantVerifyError(t, err, ErrTampered, tt.seq)
			}
		})
	}
}

func TestWrongKey(t *testing.T) {
	path, _ := createLog(t, t.TempDir(), 3)
	n, err := verifyFile(t, path, otherKey)
	wantVerifyError(t, err, ErrTampered, 1)
	if n != 0 {
		t.Errorf("got %d good records, want 0", n)
	}
	if _, err := Open(path, otherKey, Options{NoSync: true}); err == nil {
		t.Errorf("Open with the wrong key succeeded")
	}
}

// TestRollback shows the limit of a file on its own: cutting whole records
// off the end leaves a valid log. Only an anchor kept elsewhere catches it.
func TestRollback(t *testing.T) {
	dir := t.TempDir()
	path, heads := createLog(t, dir, 5)
	orig := readFile(t, path)
	spans := frameSpans(t, orig)
	writeFile(t, path, orig[:spans[2].end]) // keep records 1..3

	if n, err := verifyFile(t, path, testKey); n != 3 || err != nil {
		t.Fatalf("without an anchor: Verify = %d, %v; want 3, nil (undetectable)", n, err)
	}
	n, err := verifyFile(t, path, testKey, ExpectHead(heads[4]))
	ve := wantVerifyError(t, err, ErrMissingTail, 4)
	if n != 3 || ve.Offset != int64(spans[2].end) {
		t.Errorf("got n=%d offset=%d, want 3, %d", n, ve.Offset, spans[2].end)
	}
	t.Logf("%v", err)
	if _, err := Open(path, testKey, Options{NoSync: true, Anchor: heads[4]}); err == nil {
		t.Errorf("Open with the anchor accepted a rolled-back log")
	} else {
		wantVerifyError(t, err, ErrMissingTail, 4)
	}
	if l, err := Open(path, testKey, Options{NoSync: true, Anchor: heads[2]}); err != nil {
		t.Errorf("Open with an anchor the log reaches: %v", err)
	} else {
		l.Close()
	}

	// A different log of the same length under the same key (a forked or
	// substituted file): the anchor's hash catches it.
	forkDir := filepath.Join(dir, "fork")
	if err := os.Mkdir(forkDir, 0o700); err != nil {
		t.Fatal(err)
	}
	fork := filepath.Join(forkDir, "audit.log")
	l, err := Open(fork, testKey, Options{NoSync: true, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		r := testRecord(i)
		if i == 3 {
			r.Decision = 0 // record 3 differs, so the chain differs from there
		}
		if _, err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	_, err = verifyFile(t, fork, testKey, ExpectHead(heads[4]))
	wantVerifyError(t, err, ErrTampered, 5)

	// Emptied file: also a rollback.
	writeFile(t, path, nil)
	if _, err := Open(path, testKey, Options{NoSync: true, Anchor: heads[0]}); err == nil {
		t.Errorf("Open with an anchor accepted an emptied log")
	} else {
		wantVerifyError(t, err, ErrMissingTail, 1)
	}
}

// TestTornTail simulates a crash in the middle of writing the last frame.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	path, heads := createLog(t, dir, 5)
	orig := readFile(t, path)
	spans := frameSpans(t, orig)
	last := spans[4]
	zeroEnd := bytes.Clone(orig)
	clear(zeroEnd[len(zeroEnd)-8:])
	zeroLast := bytes.Clone(orig[:last.end])
	clear(zeroLast[last.off+20:])

	tests := []struct {
		name string
		data []byte
		seq  uint64 // the torn record
		off  int
	}{
		{"1 byte of the frame header", orig[:last.off+1], 5, last.off},
		{"7 bytes of the frame header", orig[:last.off+7], 5, last.off},
		{"frame header only", orig[:last.off+8], 5, last.off},
		{"a few record bytes", orig[:last.off+20], 5, last.off},
		{"all but the last byte", orig[:last.end-1], 5, last.off},
		{"record and checksum zero-filled", zeroLast, 5, last.off},
		{"checksum zero-filled", zeroEnd, 5, last.off},
		{"zeros after the last frame", append(bytes.Clone(orig), make([]byte, 5000)...), 6, len(orig)},
		{"a few zeros after the last frame", append(bytes.Clone(orig), 0, 0, 0), 6, len(orig)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "audit.log")
			writeFile(t, p, tt.data)
			n, err := verifyFile(t, p, testKey)
			ve := wantVerifyError(t, err, ErrTorn, tt.seq)
			if n != int(tt.seq)-1 || ve.Offset != int64(tt.off) {
				t.Errorf("got n=%d offset=%d, want %d, %d", n, ve.Offset, tt.seq-1, tt.off)
			}
			// ReadAll delivers the complete records, then says torn.
			var got int
			err = ReadAll(bytes.NewReader(tt.data), func(*Record) error { got++; return nil })
			if got != int(tt.seq)-1 || !errors.Is(err, ErrTorn) {
				t.Errorf("ReadAll: %d records, %v; want %d, ErrTorn", got, err, tt.seq-1)
			}

			l, err := Open(p, testKey, Options{NoSync: true, Now: fixedNow, Anchor: heads[tt.seq-2]})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			rec := l.Recovered()
			if rec == nil || rec.Seq != tt.seq || rec.Offset != int64(tt.off) || rec.Bytes != int64(len(tt.data)-tt.off) {
				t.Errorf("Recovered() = %+v, want Seq %d Offset %d Bytes %d", rec, tt.seq, tt.off, len(tt.data)-tt.off)
			}
			if seq, _ := l.Head(); seq != tt.seq-1 {
				t.Errorf("Head after recovery: %d, want %d", seq, tt.seq-1)
			}
			seq, err := l.Append(context.Background(), testRecord(int(tt.seq)))
			if err != nil || seq != tt.seq {
				t.Errorf("Append after recovery = %d, %v; want %d, nil", seq, err, tt.seq)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if n, err := verifyFile(t, p, testKey); n != int(tt.seq) || err != nil {
				t.Errorf("Verify after recovery = %d, %v; want %d, nil", n, err, tt.seq)
			}
			if tt.seq == 5 && !bytes.Equal(readFile(t, p), orig) {
				t.Errorf("the re-appended record 5 differs from the torn original")
			}
		})
	}

	// A torn tail that swallowed the anchored head is a rollback.
	p := filepath.Join(t.TempDir(), "audit.log")
	writeFile(t, p, orig[:last.off+20])
	_, err := verifyFile(t, p, testKey, ExpectHead(heads[4]))
	wantVerifyError(t, err, ErrMissingTail, 5)
}

// TestHeader covers files that are not logs, or are logs of another kind.
func TestHeader(t *testing.T) {
	good := header()
	other := bytes.Clone(good)
	other[15] = 3 // version 3
	copy(other[20:], appendCRC(other[:20]))
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"short", good[:10]},
		{"not a log", []byte("hello, this is not an audit log at all")},
		{"version 3", other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Verify(bytes.NewReader(tt.data), testKey, nil)
			wantVerifyError(t, err, ErrCorrupt, 0)
			if n != 0 {
				t.Errorf("n = %d", n)
			}
		})
	}
	if n, err := Verify(bytes.NewReader(good), testKey, nil); n != 0 || err != nil {
		t.Errorf("header only: Verify = %d, %v; want 0, nil", n, err)
	}
}

func appendCRC(b []byte) []byte {
	c := crc(b)
	return []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}
}

// TestInterruptedCreate: a crash while creating the file leaves a prefix of
// the header, which Open completes.
func TestInterruptedCreate(t *testing.T) {
	for _, n := range []int{0, 5, headerSize - 1} {
		p := filepath.Join(t.TempDir(), "audit.log")
		writeFile(t, p, header()[:n])
		l, err := Open(p, testKey, Options{NoSync: true})
		if err != nil {
			t.Fatalf("%d header bytes: Open: %v", n, err)
		}
		if got := l.Recovered(); (got != nil) != (n > 0) {
			t.Errorf("%d header bytes: Recovered() = %+v", n, got)
		}
		l.Close()
		if !bytes.Equal(readFile(t, p), header()) {
			t.Errorf("%d header bytes: header not completed", n)
		}
	}
	p := filepath.Join(t.TempDir(), "audit.log")
	writeFile(t, p, []byte("garbage"))
	if _, err := Open(p, testKey, Options{NoSync: true}); err == nil {
		t.Errorf("Open accepted a short file that is not a header prefix")
	}
}

// TestCheck shows the per-record hook, as pscs audit verify uses it for the
// COSE signature in Evidence.
func TestCheck(t *testing.T) {
	path, _ := createLog(t, t.TempDir(), 5)
	errBadSig := errors.New("bad COSE signature")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := Verify(f, testKey, func(r *Record) error {
		if r.Seq == 3 {
			return errBadSig
		}
		return nil
	})
	wantVerifyError(t, err, ErrCheck, 3)
	if !errors.Is(err, errBadSig) || n != 2 {
		t.Errorf("got %d, %v; want 2 and an error wrapping errBadSig", n, err)
	}
}
