package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/pscs/pscs/internal/cborpolicy"
)

// sampleKeyPublic is an entry key's public area as the TPM returns it from
// TPM2_Create, with a recognisable unique field.
func sampleKeyPublic(attrs tpm2.TPMAObject) []byte {
	t := entryKeyTemplate
	t.ObjectAttributes = attrs
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{0x77}, 32)})
	return tpm2.Marshal(tpm2.New2B(t))
}

// sampleEntryV2 is a well-formed version 2 entry. Its private area is
// opaque to the codec (only the TPM can read it), so any bytes do.
func sampleEntryV2() *Entry {
	e := sampleEntry()
	e.Version = EntryVersion
	e.Public = sampleKeyPublic(entryKeyAttributes)
	e.Private = tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: bytes.Repeat([]byte{0x66}, 146)})
	return e
}

func TestEntryV2RoundTrip(t *testing.T) {
	e := sampleEntryV2()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	var d Entry
	if err := d.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if again, err := d.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
		t.Errorf("MarshalBinary(UnmarshalBinary(b)) = %x, %v; want %x", again, err, b)
	}
	// The header covers the entry key: altering it is caught by the check.
	h1, _ := e.header()
	e.Private = tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: bytes.Repeat([]byte{0x67}, 146)})
	if h2, _ := e.header(); bytes.Equal(h1, h2) {
		t.Errorf("header does not cover the entry key's private area")
	}
	t.Logf("version 2 entry of a %d-byte secret: %d bytes", len(e.Ciphertext)-tagSize, len(b))
}

func TestEntryV2Rejects(t *testing.T) {
	good, _ := sampleEntryV2().MarshalBinary()
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
		b, err := encMode.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	noDA := entryKeyAttributes
	noDA.NoDA = true
	pub := sampleEntryV2().Public
	inner := append(bytes.Clone(pub), 0) // a byte inside the 2B, after the structure
	inner[0], inner[1] = byte((len(inner)-2)>>8), byte(len(inner)-2)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"no public area", with(8, nil), "public area of 0 bytes"},
		{"no private area", with(9, nil), "private area of 0 bytes"},
		{"NoDA entry key", with(8, sampleKeyPublic(noDA)), "object attributes"},
		{"the vault key's attributes", with(8, sampleKeyPublic(keyAttributes)), "object attributes"},
		{"public area with a trailing byte", with(8, append(bytes.Clone(pub), 0)), "not canonical"},
		{"public structure with a trailing byte", with(8, inner), "not canonical"},
		{"private area with a trailing byte", with(9, append(tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: []byte{1}}), 0)), "not canonical"},
		{"private area cut", with(9, []byte{0x00, 0x10, 1}), "private area"},
		{"huge public area", with(8, make([]byte, maxPublic+1)), "public area of"},
		{"huge private area", with(9, make([]byte, maxPrivate+1)), "private area of"},
		{"public area of garbage", with(8, []byte("not a TPM2B_PUBLIC")), "public area"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Entry
			err := e.UnmarshalBinary(tc.in)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UnmarshalBinary = %v; want ErrCorrupt mentioning %q", err, tc.want)
			}
		})
	}
}

// FuzzEntryKey: whatever bytes stand in an entry's public and private
// areas, an entry that validates has a DA-protected HMAC key of exactly the
// entry key's template, and encodes and decodes to itself. Byte flips of
// FuzzUnmarshalBinary rarely get past the CBOR layer into the TPM
// structures; this target starts there. Seeds: testdata/fuzz/FuzzEntryKey.
func FuzzEntryKey(f *testing.F) {
	for _, s := range entryKeySeeds() {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, public, private []byte) {
		e := sampleEntryV2()
		e.Public, e.Private = public, private
		b, err := e.MarshalBinary()
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		pub, _, _, err := e.entryKey()
		if err != nil {
			t.Fatalf("MarshalBinary accepted an entry whose key does not parse: %v", err)
		}
		c, err := pub.Contents()
		if err != nil || c.ObjectAttributes.NoDA || c.ObjectAttributes != entryKeyAttributes {
			t.Fatalf("accepted entry key %+v, %v", c, err)
		}
		var d Entry
		if err := d.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary(MarshalBinary(e)): %v", err)
		}
		if !bytes.Equal(d.Public, public) || !bytes.Equal(d.Private, private) {
			t.Fatalf("round trip changed the entry key")
		}
	})
}

func entryKeySeeds() [][2][]byte {
	e := sampleEntryV2()
	noDA := entryKeyAttributes
	noDA.NoDA = true
	flipped := bytes.Clone(e.Public)
	flipped[len(flipped)/2] ^= 0xff
	return [][2][]byte{
		{e.Public, e.Private},
		{sampleKeyPublic(noDA), e.Private},
		{flipped, e.Private},
		{append(bytes.Clone(e.Public), 0), e.Private[:len(e.Private)-1]},
		{nil, nil},
	}
}

// TestWriteEntryKeySeeds regenerates testdata/fuzz/FuzzEntryKey and the
// version 2 seeds of FuzzUnmarshalBinary when PSCS_WRITE_FUZZ_SEEDS=1;
// without it, it checks that they are there.
func TestWriteEntryKeySeeds(t *testing.T) {
	keyDir := filepath.Join("testdata", "fuzz", "FuzzEntryKey")
	entryDir := filepath.Join("testdata", "fuzz", "FuzzUnmarshalBinary")
	v2, _ := sampleEntryV2().MarshalBinary()
	flipped := bytes.Clone(v2)
	flipped[len(flipped)-40] ^= 0x01 // inside the private area
	entrySeeds := map[string][][]byte{"v2-default": {v2}, "v2-flipped": {flipped}, "v2-truncated": {v2[:len(v2)-100]}}
	keySeeds := map[string][][]byte{}
	for i, s := range entryKeySeeds() {
		keySeeds[[]string{"default", "noda", "flipped", "trailing", "empty"}[i]] = [][]byte{s[0], s[1]}
	}
	write := os.Getenv("PSCS_WRITE_FUZZ_SEEDS") == "1"
	for dir, seeds := range map[string]map[string][][]byte{keyDir: keySeeds, entryDir: entrySeeds} {
		for name, args := range seeds {
			path := filepath.Join(dir, name)
			if !write {
				if _, err := os.Stat(path); err != nil {
					t.Errorf("seed missing (PSCS_WRITE_FUZZ_SEEDS=1 go test -run TestWriteEntryKeySeeds ./server/vault): %v", err)
				}
				continue
			}
			var b strings.Builder
			b.WriteString("go test fuzz v1\n")
			for _, a := range args {
				b.WriteString("[]byte(" + strconv.Quote(string(a)) + ")\n")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
