package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/pscs/pscs/internal/cborpolicy"
)

// sampleEntry is a well-formed version 1 entry with recognisable bytes; it
// was not made by a TPM, which the codec does not need.
func sampleEntry() *Entry {
	return &Entry{
		Version:    entryVersionNoDA,
		KeyID:      append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{0x11}, 32)...),
		Params:     DefaultParams,
		Salt:       bytes.Repeat([]byte{0x22}, saltSize),
		Nonce:      bytes.Repeat([]byte{0x33}, nonceSize),
		Check:      bytes.Repeat([]byte{0x44}, checkSize),
		Ciphertext: bytes.Repeat([]byte{0x55}, tagSize+8),
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := sampleEntry()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	var d Entry
	if err := d.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	again, err := d.MarshalBinary()
	if err != nil || !bytes.Equal(again, b) {
		t.Errorf("MarshalBinary(UnmarshalBinary(b)) = %x, %v; want %x", again, err, b)
	}
}

// The header the TPM authenticates is the entry minus Check and Ciphertext,
// under the same key numbers.
func TestEntryHeaderMatchesEntry(t *testing.T) {
	e := sampleEntry()
	h, err := e.header()
	if err != nil {
		t.Fatal(err)
	}
	var hm, em map[int]cbor.RawMessage
	if err := cborpolicy.DecMode.Unmarshal(h, &hm); err != nil {
		t.Fatal(err)
	}
	b, _ := e.MarshalBinary()
	if err := cborpolicy.DecMode.Unmarshal(b, &em); err != nil {
		t.Fatal(err)
	}
	delete(em, 6)
	delete(em, 7)
	if len(hm) != len(em) {
		t.Fatalf("header has keys %v, entry minus check and ciphertext %v", hm, em)
	}
	for k, v := range em {
		if !bytes.Equal(hm[k], v) {
			t.Errorf("key %d: header %x, entry %x", k, hm[k], v)
		}
	}
}

func TestEntryRejects(t *testing.T) {
	enc := func(v any) []byte {
		b, err := encMode.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good, _ := sampleEntry().MarshalBinary()
	var m map[int]any
	if err := cborpolicy.DecMode.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	with := func(k int, v any) []byte {
		c := make(map[int]any, len(m))
		for k, v := range m {
			c[k] = v
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return enc(c)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "EOF"},
		{"not a map", enc([]int{1}), "cannot unmarshal"},
		{"version 3", with(1, 3), "version 3"},
		{"version 2 without an entry key", with(1, 2), "entry key public area of 0 bytes"},
		{"version 1 with an entry key", with(8, sampleEntryV2().Public), "version 1 with an entry key"},
		{"no salt", with(4, nil), "salt of 0 bytes"},
		{"short nonce", with(5, []byte{1}), "nonce of 1 bytes"},
		{"no check", with(6, nil), "check of 0 bytes"},
		{"no key id", with(2, nil), "key id of 0 bytes"},
		{"ciphertext only a tag", with(7, make([]byte, tagSize)), "ciphertext of 16 bytes"},
		{"huge memory", with(3, map[int]any{1: 2, 2: MaxMemory + 1, 3: 2}), "memory"},
		{"zero time", with(3, map[int]any{1: 0, 2: 64, 3: 1}), "time 0"},
		{"unknown field", with(10, 1), "unknown field"},
		{"text for bytes", with(4, strings.Repeat("x", saltSize)), "cannot unmarshal"},
		{"trailing byte", append(bytes.Clone(good), 0), "extraneous data"},
		{"duplicate key", append([]byte{0xa8, 0x01, 0x01}, good[1:]...), "duplicate"},
		{"too long", make([]byte, maxEntrySize+1), "at most"},
		// 0x18 0x01 is 1 in two bytes: valid CBOR, not ours.
		{"non-minimal integer", bytes.Replace(good, []byte{0x01, 0x01}, []byte{0x01, 0x18, 0x01}, 1), "deterministic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sampleEntry()
			before, _ := e.MarshalBinary()
			err := e.UnmarshalBinary(tc.in)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UnmarshalBinary = %v; want ErrCorrupt mentioning %q", err, tc.want)
			}
			if after, _ := e.MarshalBinary(); !bytes.Equal(before, after) {
				t.Errorf("failed UnmarshalBinary changed the entry")
			}
		})
	}
}

func TestParamsValidate(t *testing.T) {
	for _, tc := range []struct {
		p  Params
		ok bool
	}{
		{DefaultParams, true},
		{Params{Time: 1, Memory: 8, Threads: 1}, true},
		{Params{Time: MaxTime, Memory: MaxMemory, Threads: MaxThreads}, true},
		{Params{Time: 0, Memory: 64, Threads: 1}, false},
		{Params{Time: MaxTime + 1, Memory: 64, Threads: 1}, false},
		{Params{Time: 1, Memory: 15, Threads: 2}, false},
		{Params{Time: 1, Memory: MaxMemory + 1, Threads: 1}, false},
		{Params{Time: 1, Memory: 64, Threads: 0}, false},
		{Params{Time: 1, Memory: 1024, Threads: MaxThreads + 1}, false},
	} {
		if err := tc.p.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}

// FuzzUnmarshalBinary: UnmarshalBinary never panics, and what it accepts is
// a valid entry whose encoding is exactly the input (one encoding per entry,
// so no two byte strings on disk mean the same entry).
// Seeds: f.Add below and testdata/fuzz/FuzzUnmarshalBinary (made by
// TestWriteFuzzSeeds with PSCS_WRITE_FUZZ_SEEDS=1).
func FuzzUnmarshalBinary(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Entry
		if err := e.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if err := e.validate(); err != nil {
			t.Fatalf("accepted an invalid entry: %v", err)
		}
		again, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of an accepted entry: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, re-encodes as %x", data, again)
		}
	})
}

func fuzzSeeds() [][]byte {
	var seeds [][]byte
	add := func(e *Entry) {
		b, err := e.MarshalBinary()
		if err != nil {
			panic(err)
		}
		seeds = append(seeds, b)
	}
	add(sampleEntry())
	e := sampleEntry()
	e.Params = Params{Time: 1, Memory: 64, Threads: 1}
	e.Ciphertext = make([]byte, tagSize+MaxSecretSize)
	add(e)
	e = sampleEntry()
	e.KeyID = make([]byte, maxKeyID)
	e.Ciphertext = make([]byte, tagSize+1)
	add(e)
	good := seeds[0]
	trunc := bytes.Clone(good[:len(good)/2])
	flipped := bytes.Clone(good)
	flipped[3] ^= 0xff
	return append(seeds, trunc, flipped, []byte{0xa0}, []byte{0xbf, 0xff})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzUnmarshalBinary from
// fuzzSeeds when PSCS_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshalBinary")
	if os.Getenv("PSCS_WRITE_FUZZ_SEEDS") != "1" {
		// Without the variable: the committed seeds must be there.
		if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
			t.Fatalf("no seeds in %s (PSCS_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./server/vault): %v", dir, err)
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"default", "max-secret", "max-keyid", "truncated", "flipped", "empty-map", "indefinite-map"}
	for i, s := range fuzzSeeds() {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n[]byte(")
		b.WriteString(strconv.Quote(string(s)))
		b.WriteString(")\n")
		if err := os.WriteFile(filepath.Join(dir, names[i]), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkArgon2id is the vPIN's share of Seal and Unseal.
func BenchmarkArgon2id(b *testing.B) {
	v := &Vault{argon: make(chan struct{}, 1)}
	salt := make([]byte, saltSize)
	for b.Loop() {
		clear(v.argon2id([]byte("482913"), salt, DefaultParams))
	}
}
