package transport

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// Fuzz targets of the wire encoding. The seed corpora in
// testdata/fuzz/<Name>/ are real encodings of every message type; they are
// written by TestWriteFuzzSeeds, which runs only with -transport.writeseeds:
//
//	go test ./transport -run '^TestWriteFuzzSeeds$' -transport.writeseeds

var writeSeeds = flag.Bool("transport.writeseeds", false, "write the fuzz seed corpora to testdata/fuzz")

// fuzzKey is the fixed P-256 key of FuzzVerifyPayload's seeds.
func fuzzKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	d := sha256.Sum256([]byte("pscs transport fuzz key"))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// bodyTypes are the types FuzzBodies decodes, chosen by the first input
// byte. Only ever append: the seeds' first bytes index this list.
var bodyTypes = []func() any{
	func() any { return new(HelloRequest) },
	func() any { return new(HelloResponse) },
	func() any { return new(LoginRequest) },
	func() any { return new(LoginResponse) },
	func() any { return new(SignRequest) },
	func() any { return new(SignResponse) },
	func() any { return new(DecryptRequest) },
	func() any { return new(DecryptResponse) },
	func() any { return new(LogoutRequest) },
	func() any { return new(Event) },
	func() any { return new(SignedPayload) },
	func() any { return new(AdminRequest) },
	func() any { return new(AdminSecret) },
	func() any { return new(AdminResponse) },
	func() any { return new(DeriveRequest) },
	func() any { return new(DeriveResponse) },
	func() any { return new(OAEPParams) },
}

// roundTrip decodes data into a new value of newV's type; when that is
// accepted, the value must encode, decode again, and equal the first.
func roundTrip(t *testing.T, data []byte, newV func() any) {
	t.Helper()
	v1 := newV()
	if err := Unmarshal(data, v1); err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Unmarshal error %v is not ErrMalformed", err)
		}
		return
	}
	enc, err := Marshal(v1)
	if err != nil {
		t.Fatalf("Marshal of accepted %#v: %v", v1, err)
	}
	v2 := newV()
	if err := Unmarshal(enc, v2); err != nil {
		t.Fatalf("re-encoding %x of %x does not decode: %v", enc, data, err)
	}
	if !reflect.DeepEqual(v1, v2) && !sameValue(reflect.ValueOf(v1), reflect.ValueOf(v2)) {
		t.Fatalf("round trip changed the value:\ninput   %x\nfirst   %#v\nencoded %x\nsecond  %#v", data, v1, enc, v2)
	}
	// The canonical encoding is a fixed point.
	enc2, err := Marshal(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, enc2) {
		t.Fatalf("canonical encoding not stable: %x then %x", enc, enc2)
	}
}

var (
	timeType   = reflect.TypeFor[time.Time]()
	bigIntType = reflect.TypeFor[big.Int]()
)

// sameValue is reflect.DeepEqual except for differences that the encoding
// cannot carry and that mean nothing: a nil and an empty slice or map (an
// empty byte string under omitempty is omitted and decodes as nil), and NaN,
// which equals itself here.
func sameValue(a, b reflect.Value) bool {
	if !a.IsValid() || !b.IsValid() {
		return a.IsValid() == b.IsValid()
	}
	if a.Type() != b.Type() {
		return false
	}
	switch a.Type() {
	case timeType:
		return a.Interface().(time.Time).Equal(b.Interface().(time.Time))
	case bigIntType:
		x, y := a.Interface().(big.Int), b.Interface().(big.Int)
		return x.Cmp(&y) == 0
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		it := a.MapRange()
		for it.Next() {
			bv := b.MapIndex(it.Key())
			if !bv.IsValid() || !sameValue(it.Value(), bv) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Float32, reflect.Float64:
		x, y := a.Float(), b.Float()
		return x == y || math.IsNaN(x) && math.IsNaN(y)
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.String:
		return a.String() == b.String()
	}
	return false
}

func addSeeds(f *testing.F, dir string) {
	// The files in testdata/fuzz/<Name>/ are used by go test already; nothing
	// to add by hand. This only checks that the corpus exists, so that a lost
	// corpus is noticed.
	if _, err := os.Stat(filepath.Join("testdata", "fuzz", dir)); err != nil {
		f.Errorf("seed corpus: %v (run TestWriteFuzzSeeds with -transport.writeseeds)", err)
	}
}

func FuzzRequest(f *testing.F) {
	addSeeds(f, "FuzzRequest")
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, func() any { return new(Request) })
	})
}

func FuzzResponse(f *testing.F) {
	addSeeds(f, "FuzzResponse")
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, func() any { return new(Response) })
		var r Response
		if Unmarshal(data, &r) == nil {
			depth := 0
			for p := &r; p != nil; p = p.Original {
				depth++
			}
			if depth > MaxNesting {
				t.Fatalf("accepted a response nested %d deep", depth)
			}
		}
	})
}

func FuzzBodies(f *testing.F) {
	addSeeds(f, "FuzzBodies")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		roundTrip(t, data[1:], bodyTypes[int(data[0])%len(bodyTypes)])
	})
}

func FuzzVerifyPayload(f *testing.F) {
	addSeeds(f, "FuzzVerifyPayload")
	key := fuzzKey(f)
	pub := &key.PublicKey
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := VerifyPayload(data, pub)
		if err != nil {
			if c := CodeOf(err); c != CodeMalformed && c != CodeBadSignature {
				t.Fatalf("error %v has code %v", err, c)
			}
			if p != nil {
				t.Fatal("a payload with an error")
			}
			return
		}
		// Accepted: it must really be a valid signature by key over a
		// well-formed payload.
		var msg cose.Sign1Message
		if err := msg.UnmarshalCBOR(data); err != nil {
			t.Fatalf("accepted input that does not parse: %v", err)
		}
		v, err := cose.NewVerifier(cose.AlgorithmES256, pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := msg.Verify(externalAAD, v); err != nil {
			t.Fatalf("accepted an invalid signature: %v", err)
		}
		var q SignedPayload
		if err := Unmarshal(msg.Payload, &q); err != nil {
			t.Fatalf("accepted payload does not decode: %v", err)
		}
		if !reflect.DeepEqual(*p, q) {
			t.Fatalf("payload %#v, want %#v", p, q)
		}
		if len(p.Nonce) != NonceSize || len(p.Binding) != 0 && len(p.Binding) != BindingSize {
			t.Fatalf("accepted nonce %x binding %x", p.Nonce, p.Binding)
		}
	})
}

func FuzzEventFrames(f *testing.F) {
	addSeeds(f, "FuzzEventFrames")
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		var events []*Event
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatalf("%d frames from %d bytes", i, len(data))
			}
			ev, err := ReadEventFrame(r)
			if err != nil {
				if err != io.EOF {
					if c := CodeOf(err); c != CodeMalformed && c != CodeTooLarge {
						t.Fatalf("error %v has code %v", err, c)
					}
				}
				break
			}
			events = append(events, ev)
		}
		// What was read is written back and read again unchanged.
		var out []byte
		for _, ev := range events {
			var err error
			if out, err = AppendEventFrame(out, ev); err != nil {
				t.Fatalf("AppendEventFrame(%#v): %v", ev, err)
			}
		}
		r = bufio.NewReader(bytes.NewReader(out))
		for i, want := range events {
			got, err := ReadEventFrame(r)
			if err != nil {
				t.Fatalf("frame %d written back: %v", i, err)
			}
			if !reflect.DeepEqual(got, want) && !sameValue(reflect.ValueOf(got), reflect.ValueOf(want)) {
				t.Fatalf("frame %d: %#v, want %#v", i, got, want)
			}
		}
		if _, err := ReadEventFrame(r); err != io.EOF {
			t.Fatalf("after the frames: %v, want io.EOF", err)
		}
	})
}

func FuzzVarint(f *testing.F) {
	addSeeds(f, "FuzzVarint")
	f.Fuzz(func(t *testing.T, v uint64, raw []byte) {
		v &= 1<<62 - 1
		b := appendVarint([]byte{0xAA}, v)[1:]
		want := 8
		switch {
		case v < 1<<6:
			want = 1
		case v < 1<<14:
			want = 2
		case v < 1<<30:
			want = 4
		}
		if len(b) != want {
			t.Fatalf("appendVarint(%d) = %x: %d bytes, want %d", v, b, len(b), want)
		}
		r := bytes.NewReader(b)
		got, err := readVarint(r)
		if err != nil || got != v || r.Len() != 0 {
			t.Fatalf("readVarint(%x) = %d, %v (%d bytes left), want %d", b, got, err, r.Len(), v)
		}
		// Any bytes: a value read is below 2^62 and survives re-encoding
		// (possibly shorter: non-minimal encodings are valid).
		r = bytes.NewReader(raw)
		got, err = readVarint(r)
		if err != nil {
			if len(raw) != 0 && !errors.Is(err, ErrMalformed) {
				t.Fatalf("readVarint(%x): %v", raw, err)
			}
			return
		}
		if got >= 1<<62 {
			t.Fatalf("readVarint(%x) = %d", raw, got)
		}
		if n := len(raw) - r.Len(); n != 1<<(raw[0]>>6) {
			t.Fatalf("readVarint(%x) consumed %d bytes", raw, n)
		}
		again, err := readVarint(bytes.NewReader(appendVarint(nil, got)))
		if err != nil || again != got {
			t.Fatalf("re-encoded %d reads as %d, %v", got, again, err)
		}
	})
}

// TestVerifyPayloadSeeds: the signed seeds of FuzzVerifyPayload verify
// with the fixed key, except the two made invalid on purpose.
func TestVerifyPayloadSeeds(t *testing.T) {
	key := fuzzKey(t)
	for i := 0; i < 7; i++ {
		name := filepath.Join("testdata", "fuzz", "FuzzVerifyPayload", fmt.Sprintf("seed-%02d", i))
		data, err := readCorpusBytes(name)
		if err != nil {
			t.Fatal(err)
		}
		_, err = VerifyPayload(data, &key.PublicKey)
		if i < 5 && err != nil || i >= 5 && CodeOf(err) != CodeMalformed {
			t.Errorf("%s: VerifyPayload: %v", name, err)
		}
	}
}

// readCorpusBytes reads a corpus file holding one []byte value.
func readCorpusBytes(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		return nil, fmt.Errorf("%s: not a one-[]byte corpus file", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	return []byte(s), err
}

// Seeds.

func seedMessages(tb testing.TB) (reqs, resps []any, bodies [][]any, signedPayloads []*SignedPayload, events []*Event) {
	nonce := bytes.Repeat([]byte{0x5A}, NonceSize)
	binding := bytes.Repeat([]byte{0xB1}, BindingSize)
	cat := &Catalogue{Tag: []byte{1, 2, 3, 4}, Slots: []Slot{{
		ID: 1, Description: "test card", Present: true, Cards: 2,
		Token: TokenInfo{Label: "Mayor", Manufacturer: "ACME", Model: "M1", Serial: "0001", Flags: 0x40D, MinPIN: 4, MaxPIN: 8},
		Objects: []Object{
			{Handle: 2, Attributes: map[uint64]any{
				0x0000: uint64(3), 0x0100: uint64(3), 0x0003: "Mayor's signing key",
				0x0102: []byte{0x01}, 0x0108: true, 0x0002: false,
			}},
			{Handle: 3, Attributes: map[uint64]any{0x0000: uint64(1), 0x0011: []byte{0x30, 0x82, 0x01, 0x00}}},
		},
		Mechanisms: []Mechanism{{Type: 0x1041, MinKey: 256, MaxKey: 384, Flags: 0x800}, {Type: 0x1}},
	}, {ID: 2, Token: TokenInfo{Label: "Spare"}}}}
	mustMarshal := func(v any) cbor.RawMessage {
		b, err := Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	bodies = [][]any{
		{&HelloRequest{}, &HelloRequest{Client: "pscs-client/1.0", Tag: []byte{1, 2, 3, 4}}},
		{&HelloResponse{Server: "pscsd/1.0", Time: 1764115200000, Identity: "alice", Catalogue: cat, ReplayWindowMS: 30000}, &HelloResponse{Time: -1}},
		{&LoginRequest{Slot: 1}},
		{&LoginResponse{}, &LoginResponse{Catalogue: cat}},
		{&SignRequest{Slot: 1, Key: 2, Mechanism: 0x1041, Data: bytes.Repeat([]byte{0xD1}, 32)}, &SignRequest{Slot: 1, Key: 2, Mechanism: 0x0D, Params: []byte{0x30, 0x00}, Data: []byte("data")}},
		{&SignResponse{Signature: bytes.Repeat([]byte{0x51}, 64)}, &SignResponse{Signature: []byte{1}, Certificate: []byte{0x30, 0x82, 0x01, 0x00}}},
		{&DecryptRequest{Slot: 1, Key: 3, Mechanism: 0x1, Data: bytes.Repeat([]byte{0xE1}, 256)}, &DecryptRequest{Slot: 1, Key: 3, Mechanism: 0x9, Params: []byte{0xA0}, Data: []byte{}}},
		{&DecryptResponse{Plaintext: []byte("secret")}},
		{&LogoutRequest{Slot: 1}},
		{&Event{Kind: EventCatalogue, Tag: []byte{5, 6}}, &Event{Kind: EventSlot, Slot: 1}, &Event{Kind: EventRevoked, Message: "delegation 7"}, &Event{Kind: EventShutdown}},
		{&SignedPayload{Op: OpSign, Nonce: nonce, Time: 1764115200000, Body: mustMarshal(bodies0SignRequest()), Binding: binding}},
		{&AdminRequest{Action: AdminList}, &AdminRequest{Action: AdminDelegate, Delegation: &AdminDelegation{Delegate: "bob", Card: "mayor",
			Ops: []string{"sign"}, NotAfter: 1764115200000, Days: 0x3E, From: 480, To: 1080, PerHour: 10, Documents: [][]byte{bytes.Repeat([]byte{0xD0}, 32)}}},
			&AdminRequest{Action: AdminIssue, Name: "bob", PublicKey: []byte{0x30, 0x59}}},
		{&AdminSecret{PIN: []byte("123456"), Passphrase: []byte("correct horse")}},
		{&AdminResponse{ID: "d-01", VPIN: "12345678"}, &AdminResponse{Cards: []string{"mayor"}, Delegations: []AdminDelegation{{ID: "d-01", Delegate: "bob", Card: "mayor", Used: 3}}},
			&AdminResponse{Records: [][]byte{{0xA1, 0x01, 0x01}}, Certificates: map[string][]byte{"bob": {0x30}}, Next: 9}},
		{&DeriveRequest{Slot: 2, Key: 7, Mechanism: 0x1050, Data: append([]byte{4}, bytes.Repeat([]byte{0xE2}, 64)...)}},
		{&DeriveResponse{Secret: bytes.Repeat([]byte{0x5E}, 32)}},
		{&OAEPParams{Hash: 0x250, MGF: 2, Label: []byte("mail")}, &OAEPParams{Hash: 0x220, MGF: 1}},
	}
	signedPayloads = []*SignedPayload{
		{Op: OpLogin, Nonce: nonce, Time: 1764115200000, Body: mustMarshal(&LoginRequest{Slot: 1}), Binding: binding},
		{Op: OpSign, Nonce: nonce, Time: 1764115200001, Body: mustMarshal(bodies0SignRequest()), Binding: binding},
		{Op: OpDecrypt, Nonce: nonce, Time: 1764115200002, Body: mustMarshal(&DecryptRequest{Slot: 1, Key: 3, Mechanism: 1, Data: []byte{1}})},
		{Op: OpLogout, Nonce: nonce, Time: 1764115200003, Body: mustMarshal(&LogoutRequest{Slot: 1}), Binding: binding},
		{Op: OpAdmin, Nonce: nonce, Time: 1764115200004},
		// Refused by VerifyPayload although correctly signed.
		{Op: OpLogin, Nonce: nonce[:4], Time: 1},
		{Op: OpLogin, Nonce: nonce, Time: 1, Binding: binding[:5]},
	}
	key := fuzzKey(tb)
	sign := func(p *SignedPayload) cbor.RawMessage {
		s, err := SignPayload(key, p)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	reqs = []any{
		&Request{Version: ProtocolVersion, Op: OpHello, Body: mustMarshal(&HelloRequest{Client: "pscs-client/1.0"})},
		&Request{Version: ProtocolVersion, Op: OpPing},
		&Request{Version: ProtocolVersion, Op: OpLogin, Signed: sign(signedPayloads[0]), Secret: []byte("1234")},
		&Request{Version: ProtocolVersion, Op: OpSign, Signed: sign(signedPayloads[1])},
		&Request{Version: ProtocolVersion, Op: OpDecrypt, Signed: sign(signedPayloads[2])},
		&Request{Version: ProtocolVersion, Op: OpLogout, Signed: sign(signedPayloads[3])},
		&Request{Version: 2, Op: OpAdmin, Signed: sign(signedPayloads[4])},
		// Unknown fields are ignored.
		map[uint64]any{1: uint64(1), 2: uint64(6), 99: "future"},
	}
	ok := &Response{Version: ProtocolVersion, Status: CodeOK, Body: mustMarshal(&SignResponse{Signature: []byte{1, 2}})}
	resps = []any{
		&Response{Version: ProtocolVersion, Status: CodeOK, Body: mustMarshal(bodies[1][0])},
		&Response{Version: ProtocolVersion, Status: CodeOK, Body: mustMarshal(&LoginResponse{Catalogue: cat})},
		ok,
		&Response{Version: ProtocolVersion, Status: CodeOK, Body: mustMarshal(&DecryptResponse{Plaintext: []byte("x")})},
		&Response{Version: ProtocolVersion, Status: CodeOK},
		&Response{Version: ProtocolVersion, Status: CodeWrongPIN, Message: "wrong virtual PIN"},
		&Response{Version: ProtocolVersion, Status: CodeBusy, Message: "busy", RetryAfter: 250},
		&Response{Version: ProtocolVersion, Status: CodeReplay, Original: ok},
		&Response{Version: ProtocolVersion, Status: CodeReplay, Original: &Response{Version: 1, Status: CodeReplay, Original: &Response{Version: 1, Status: CodeDenied, Message: "no"}}},
	}
	evs := make([]*Event, len(bodies[9]))
	for i, e := range bodies[9] {
		evs[i] = e.(*Event)
	}
	return reqs, resps, bodies, signedPayloads, evs
}

func bodies0SignRequest() *SignRequest {
	return &SignRequest{Slot: 1, Key: 2, Mechanism: 0x1041, Data: bytes.Repeat([]byte{0xD1}, 32)}
}

// TestWriteFuzzSeeds writes the seed corpora; it is skipped unless
// -transport.writeseeds is given.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		// Without the flag: the corpora must be there.
		for _, name := range []string{"FuzzRequest", "FuzzResponse", "FuzzBodies", "FuzzVerifyPayload", "FuzzEventFrames", "FuzzVarint"} {
			entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", name))
			if err != nil || len(entries) == 0 {
				t.Errorf("no seeds for %s (go test ./transport -run '^TestWriteFuzzSeeds$' -transport.writeseeds): %v", name, err)
			}
		}
		return
	}
	reqs, resps, bodies, payloads, events := seedMessages(t)
	write := func(target, name string, values ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range values {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case uint64:
				fmt.Fprintf(&b, "uint64(%d)\n", v)
			default:
				t.Fatalf("seed value %T", v)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	enc := func(v any) []byte {
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, r := range reqs {
		write("FuzzRequest", fmt.Sprintf("%02d", i), enc(r))
	}
	for i, r := range resps {
		write("FuzzResponse", fmt.Sprintf("%02d", i), enc(r))
	}
	for ti, vs := range bodies {
		for i, v := range vs {
			write("FuzzBodies", fmt.Sprintf("%02d-%d", ti, i), append([]byte{byte(ti)}, enc(v)...))
		}
	}
	key := fuzzKey(t)
	for i, p := range payloads {
		s, err := SignPayload(key, p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = VerifyPayload(s, &key.PublicKey)
		if valid := len(p.Nonce) == NonceSize && (len(p.Binding) == 0 || len(p.Binding) == BindingSize); valid != (err == nil) {
			t.Fatalf("seed %d: VerifyPayload: %v", i, err)
		}
		write("FuzzVerifyPayload", fmt.Sprintf("%02d", i), s)
	}
	var all []byte
	for i, ev := range events {
		one, err := AppendEventFrame(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzEventFrames", fmt.Sprintf("%02d", i), one)
		all = append(all, one...)
	}
	write("FuzzEventFrames", "all", all)
	write("FuzzEventFrames", "huge-length", appendVarint(nil, 1<<62-1))
	write("FuzzEventFrames", "over-limit", appendVarint(nil, MaxEventSize+1))
	for i, v := range []uint64{0, 63, 64, 16383, 16384, 1<<30 - 1, 1 << 30, 1<<62 - 1} {
		write("FuzzVarint", fmt.Sprintf("%02d", i), v, appendVarint(nil, v))
	}
	write("FuzzVarint", "nonminimal", uint64(5), []byte{0xC0, 0, 0, 0, 0, 0, 0, 5})
	write("FuzzVarint", "truncated", uint64(1), []byte{0x80, 1})
}
