package transport

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

// Tests that each protocol limit is enforced with a clear error and never a
// panic.

// nestedResponse is a Response with depth-1 Original responses below it:
// depth nested CBOR maps.
func nestedResponse(tb testing.TB, depth int) []byte {
	tb.Helper()
	var r *Response
	for i := 0; i < depth; i++ {
		r = &Response{Version: ProtocolVersion, Status: CodeReplay, Original: r}
	}
	b, err := Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// requestWithBody is a Request {1: 1, 2: 6, 3: body} with body as raw CBOR.
func requestWithBody(body []byte) []byte {
	return append([]byte{0xA3, 0x01, 0x01, 0x02, 0x06, 0x03}, body...)
}

// nestedArrays is depth nested one-element arrays around 0.
func nestedArrays(depth int) []byte {
	return append(bytes.Repeat([]byte{0x81}, depth), 0x00)
}

// arrayOf is a CBOR array of n zeros.
func arrayOf(n int) []byte {
	b := []byte{0x99, byte(n >> 8), byte(n)}
	return append(b, make([]byte, n)...)
}

// objectWith is an Object with n attributes.
func objectWith(tb testing.TB, n int) []byte {
	tb.Helper()
	o := Object{Handle: 1, Attributes: map[uint64]any{}}
	for i := 0; i < n; i++ {
		o.Attributes[uint64(i)] = true
	}
	b, err := Marshal(&o)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// validRequest is a signed Login request by the fuzz key, with a secret.
func validRequest(tb testing.TB) []byte {
	tb.Helper()
	body, _ := Marshal(&LoginRequest{Slot: 1})
	s, err := SignPayload(fuzzKey(tb), &SignedPayload{Op: OpLogin, Nonce: make([]byte, NonceSize), Time: 1764115200000, Body: body, Binding: make([]byte, BindingSize)})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := Marshal(&Request{Version: ProtocolVersion, Op: OpLogin, Signed: s, Secret: []byte("1234")})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestUnmarshalLimits(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		v    func() any
		ok   bool
	}{
		{"valid request", validRequest(t), func() any { return new(Request) }, true},
		{"duplicate key", []byte{0xA2, 0x01, 0x01, 0x01, 0x01}, func() any { return new(Request) }, false},
		{"duplicate key, other value", []byte{0xA3, 0x01, 0x01, 0x02, 0x06, 0x01, 0x02}, func() any { return new(Request) }, false},
		{"duplicate unknown key", []byte{0xA3, 0x01, 0x01, 0x18, 0x63, 0x00, 0x18, 0x63, 0x00}, func() any { return new(Request) }, false},
		{"duplicate attribute", []byte{0xA2, 0x01, 0x01, 0x02, 0xA2, 0x01, 0xF5, 0x01, 0xF4}, func() any { return new(Object) }, false},
		{"indefinite map", []byte{0xBF, 0x01, 0x01, 0x02, 0x06, 0xFF}, func() any { return new(Request) }, false},
		{"indefinite byte string", []byte{0xA3, 0x01, 0x01, 0x02, 0x02, 0x05, 0x5F, 0x41, 0x31, 0xFF}, func() any { return new(Request) }, false},
		{"indefinite text string", []byte{0xA3, 0x01, 0x01, 0x02, 0x0F, 0x04, 0x7F, 0x61, 0x61, 0xFF}, func() any { return new(Response) }, false},
		{"indefinite array in body", requestWithBody([]byte{0x9F, 0x00, 0xFF}), func() any { return new(Request) }, false},
		{"response with its original", nestedResponse(t, 2), func() any { return new(Response) }, true},
		{"original of an original", nestedResponse(t, 3), func() any { return new(Response) }, false},
		{"responses nested 1000 deep", nestedResponse(t, 1000), func() any { return new(Response) }, false},
		// The request map is one level: its body may nest MaxNesting-1 more.
		{"arrays nested to MaxNesting in body", requestWithBody(nestedArrays(MaxNesting - 1)), func() any { return new(Request) }, true},
		{"arrays nested past MaxNesting in body", requestWithBody(nestedArrays(MaxNesting)), func() any { return new(Request) }, false},
		{"arrays nested 100000 deep in body", requestWithBody(nestedArrays(100000)), func() any { return new(Request) }, false},
		{"MaxElements array", requestWithBody(arrayOf(MaxElements)), func() any { return new(Request) }, true},
		{"MaxElements+1 array", requestWithBody(arrayOf(MaxElements + 1)), func() any { return new(Request) }, false},
		{"array announcing 2^32 elements", requestWithBody([]byte{0x9A, 0xFF, 0xFF, 0xFF, 0xFF}), func() any { return new(Request) }, false},
		{"MaxElements attributes", objectWith(t, MaxElements), func() any { return new(Object) }, true},
		{"MaxElements+1 attributes", objectWith(t, MaxElements+1), func() any { return new(Object) }, false},
		{"invalid UTF-8 message", []byte{0xA3, 0x01, 0x01, 0x02, 0x0A, 0x04, 0x62, 0xC3, 0x28}, func() any { return new(Response) }, false},
		{"invalid UTF-8 attribute", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x03, 0x61, 0xFF}, func() any { return new(Object) }, false},
		{"trailing byte", append(validRequest(t), 0x00), func() any { return new(Request) }, false},
		{"two requests", append(validRequest(t), validRequest(t)...), func() any { return new(Request) }, false},
		{"empty", nil, func() any { return new(Request) }, false},
		{"not a map", []byte{0x01}, func() any { return new(Request) }, false},
		{"negative op", []byte{0xA2, 0x01, 0x01, 0x02, 0x20}, func() any { return new(Request) }, false},
		{"version over uint32", []byte{0xA1, 0x01, 0x1B, 0, 0, 0, 1, 0, 0, 0, 0}, func() any { return new(Request) }, false},
		{"negative attribute key", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x20, 0xF5}, func() any { return new(Object) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Unmarshal(tt.data, tt.v())
			if tt.ok {
				if err != nil {
					t.Fatalf("Unmarshal: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Unmarshal accepted it")
			}
			if !errors.Is(err, ErrMalformed) || CodeOf(err) != CodeMalformed {
				t.Fatalf("error %v (code %v) is not ErrMalformed", err, CodeOf(err))
			}
		})
	}
}

// TestRawFieldsChecked: the embedded body of a request or response is held
// to the rules of a message: invalid UTF-8, duplicate keys and tags inside
// it make the whole message malformed.
func TestRawFieldsChecked(t *testing.T) {
	for _, tt := range []struct {
		name string
		body []byte
	}{
		{"invalid UTF-8", []byte{0x61, 0xFF}},
		{"duplicate key", []byte{0xA2, 0x01, 0x01, 0x01, 0x01}},
		{"tag 0 around an integer", []byte{0xA1, 0x01, 0xC0, 0x00}},
		{"tag 1 around a byte string", []byte{0x81, 0xC1, 0x41, 0x00}},
		{"tag 2 around a text string", []byte{0x81, 0xC2, 0x61, 0x61}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if err := Unmarshal(requestWithBody(tt.body), &r); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal: %v, want ErrMalformed", err)
			}
		})
	}
}

func TestUnmarshalTruncated(t *testing.T) {
	for _, tt := range []struct {
		data []byte
		v    func() any
	}{
		{validRequest(t), func() any { return new(Request) }},
		{nestedResponse(t, 2), func() any { return new(Response) }},
	} {
		if err := Unmarshal(tt.data, tt.v()); err != nil {
			t.Fatalf("whole message: %v", err)
		}
		for n := 0; n < len(tt.data); n++ {
			err := Unmarshal(tt.data[:n:n], tt.v())
			if err == nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("prefix of %d of %d bytes: %v", n, len(tt.data), err)
			}
		}
	}
}

func TestUnknownFields(t *testing.T) {
	data, err := Marshal(map[uint64]any{1: uint64(1), 2: uint64(OpPing), 99: "from the future"})
	if err != nil {
		t.Fatal(err)
	}
	var r Request
	if err := Unmarshal(data, &r); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if want := (Request{Version: 1, Op: OpPing}); !reflect.DeepEqual(r, want) {
		t.Fatalf("Unmarshal = %#v, want %#v", r, want)
	}
	err = unmarshalStrict(data, new(Request))
	if err == nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("unmarshalStrict: %v, want ErrMalformed", err)
	}
	// Without the unknown field, strict decoding accepts it.
	data, _ = Marshal(&Request{Version: 1, Op: OpPing})
	if err := unmarshalStrict(data, new(Request)); err != nil {
		t.Fatalf("unmarshalStrict of a known request: %v", err)
	}
}

// countingReader is an endless stream of zeros that counts what was read.
type countingReader struct{ n int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	clear(p)
	r.n += int64(len(p))
	return len(p), nil
}

func TestReadAll(t *testing.T) {
	b, err := readAll(bytes.NewReader(make([]byte, MaxRequestSize)), MaxRequestSize)
	if err != nil || len(b) != MaxRequestSize {
		t.Fatalf("readAll of MaxRequestSize bytes: %d bytes, %v", len(b), err)
	}
	b, err = readAll(bytes.NewReader(make([]byte, MaxRequestSize+1)), MaxRequestSize)
	if err == nil || CodeOf(err) != CodeTooLarge || !errors.Is(err, ErrTooLarge) || b != nil {
		t.Fatalf("readAll of MaxRequestSize+1 bytes: %d bytes, %v", len(b), err)
	}
	// An endless stream is not buffered whole.
	r := &countingReader{}
	if _, err := readAll(r, MaxRequestSize); CodeOf(err) != CodeTooLarge {
		t.Fatalf("readAll of an endless stream: %v", err)
	}
	if r.n > 2*MaxRequestSize {
		t.Fatalf("readAll read %d bytes of an endless stream", r.n)
	}
	// A failing stream is an error.
	boom := errors.New("boom")
	if _, err := readAll(io.MultiReader(bytes.NewReader([]byte{1}), iotestErr{boom}), MaxRequestSize); !errors.Is(err, boom) {
		t.Fatalf("readAll of a failing stream: %v", err)
	}
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

// trapReader fails the test if the frame body is read.
type trapReader struct{ t *testing.T }

func (r trapReader) Read([]byte) (int, error) {
	r.t.Error("the body of an oversized frame was read")
	return 0, io.EOF
}

func TestReadEventFrameLimits(t *testing.T) {
	// An event whose encoding is exactly MaxEventSize bytes.
	ev := &Event{Kind: EventRevoked}
	base, _ := Marshal(ev)
	ev.Message = strings.Repeat("m", MaxEventSize-len(base)-4) // key 3 and a 3-byte text header
	if b, _ := Marshal(ev); len(b) != MaxEventSize {
		t.Fatalf("test event is %d bytes, want %d", len(b), MaxEventSize)
	}
	max, err := AppendEventFrame(nil, ev)
	if err != nil {
		t.Fatalf("AppendEventFrame of a MaxEventSize event: %v", err)
	}
	if n, _ := readVarint(bytes.NewReader(max)); n != MaxEventSize {
		t.Fatalf("test event is %d bytes, want %d", n, MaxEventSize)
	}
	got, err := ReadEventFrame(bufio.NewReader(bytes.NewReader(max)))
	if err != nil || !reflect.DeepEqual(got, ev) {
		t.Fatalf("ReadEventFrame of a MaxEventSize event: %v", err)
	}
	ev.Message += "m"
	if b, err := AppendEventFrame([]byte{7}, ev); CodeOf(err) != CodeTooLarge || !bytes.Equal(b, []byte{7}) {
		t.Fatalf("AppendEventFrame of MaxEventSize+1 bytes: %x, %v", b, err)
	}

	valid, _ := AppendEventFrame(nil, &Event{Kind: EventSlot, Slot: 3, Message: "card removed"})
	tests := []struct {
		name string
		data []byte
		code Code // 0: io.EOF
	}{
		{"empty stream", nil, 0},
		{"truncated 2-byte length", []byte{0x40}, CodeMalformed},
		{"truncated 4-byte length", []byte{0x80, 0x00, 0x01}, CodeMalformed},
		{"truncated 8-byte length", []byte{0xC0, 0, 0, 0, 0, 0, 0}, CodeMalformed},
		{"truncated body", valid[:len(valid)-1], CodeMalformed},
		{"length only", valid[:1], CodeMalformed},
		{"empty frame", []byte{0x00}, CodeMalformed},
		{"not CBOR", []byte{0x01, 0xFF}, CodeMalformed},
		{"trailing byte in frame", append(appendVarint(nil, uint64(len(valid))), append(valid[1:], 0)...), CodeMalformed},
		{"not an event", []byte{0x01, 0x01}, CodeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ReadEventFrame(bufio.NewReader(bytes.NewReader(tt.data)))
			if ev != nil {
				t.Fatalf("got an event %#v", ev)
			}
			if tt.code == 0 {
				if err != io.EOF {
					t.Fatalf("ReadEventFrame: %v, want io.EOF", err)
				}
				return
			}
			if CodeOf(err) != tt.code {
				t.Fatalf("ReadEventFrame: %v, want code %v", err, tt.code)
			}
			if tt.code == CodeMalformed && !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadEventFrame: %v, want ErrMalformed", err)
			}
		})
	}

	// Oversized lengths are refused before the body is read or allocated.
	for _, n := range []uint64{MaxEventSize + 1, 1 << 29, 1 << 40, 1<<62 - 1} {
		r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(appendVarint(nil, n)), trapReader{t}), 16)
		ev, err := ReadEventFrame(r)
		if ev != nil || CodeOf(err) != CodeTooLarge || !errors.Is(err, ErrTooLarge) {
			t.Fatalf("frame of %d bytes: %v, want CodeTooLarge", n, err)
		}
	}
	allocs := testing.AllocsPerRun(10, func() {
		ReadEventFrame(bufio.NewReader(bytes.NewReader(appendVarint(nil, 1<<62-1))))
	})
	if allocs > 10 {
		t.Errorf("%v allocations for an oversized frame", allocs)
	}
}

func TestReplayCache(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	exp := t0.Add(time.Minute)

	t.Run("same key twice", func(t *testing.T) {
		c := newReplayCache(10, 10*time.Second)
		e1, fresh, err := c.begin(nk("k"), exp, t0)
		if err != nil || !fresh || e1 == nil {
			t.Fatalf("first begin: %v %v %v", e1, fresh, err)
		}
		e2, fresh, err := c.begin(nk("k"), exp, t0)
		if err != nil || fresh || e2 != e1 {
			t.Fatalf("second begin: fresh %v, err %v, same entry %v", fresh, err, e2 == e1)
		}
		resp := &Response{Status: CodeOK}
		c.finish(e1, resp, t0)
		<-e2.done
		if e2.resp != resp {
			t.Fatal("second begin does not see the first response")
		}
		// Finished and even expired, it is still a replay until swept.
		if _, fresh, _ := c.begin(nk("k"), exp, t0.Add(time.Hour)); fresh {
			t.Fatal("finished key fresh again")
		}
	})

	t.Run("full of unexpired entries", func(t *testing.T) {
		c := newReplayCache(4, 10*time.Second)
		for i := 0; i < 4; i++ {
			e, fresh, err := c.begin(nk(string(rune('a'+i))), exp, t0)
			if err != nil || !fresh {
				t.Fatalf("begin %d: %v", i, err)
			}
			c.finish(e, &Response{}, t0)
		}
		e, fresh, err := c.begin(nk("e"), exp, t0.Add(time.Second))
		if err == nil || CodeOf(err) != CodeReplayMemoryFull || e != nil || fresh {
			t.Fatalf("begin on a full cache: %v, %v, %v, want CodeReplayMemoryFull", e, fresh, err)
		}
		// A known key is still reported as a replay when full.
		if _, fresh, err := c.begin(nk("a"), exp, t0); err != nil || fresh {
			t.Fatalf("replay on a full cache: %v %v", fresh, err)
		}
		if c.len() != 4 {
			t.Fatalf("len %d", c.len())
		}
	})

	t.Run("expired but running entries are kept", func(t *testing.T) {
		c := newReplayCache(4, 10*time.Second)
		for i := 0; i < 4; i++ {
			c.begin(nk(string(rune('a'+i))), exp, t0)
		}
		if _, _, err := c.begin(nk("e"), exp, exp.Add(time.Hour)); CodeOf(err) != CodeReplayMemoryFull {
			t.Fatalf("begin with only running entries: %v, want CodeReplayMemoryFull", err)
		}
	})

	t.Run("expired finished entries are swept", func(t *testing.T) {
		const max = 8
		c := newReplayCache(max, 10*time.Second)
		var running *replayEntry
		for i := 0; i < max; i++ {
			e, fresh, err := c.begin(nk(string(rune('a'+i))), exp, t0)
			if err != nil || !fresh {
				t.Fatalf("begin %d: %v", i, err)
			}
			if i == 0 {
				running = e // never finished
				continue
			}
			c.finish(e, &Response{}, t0)
		}
		later := exp.Add(time.Millisecond)
		for i := 0; i < max-1; i++ {
			_, fresh, err := c.begin(nk(string(rune('A'+i))), later.Add(time.Minute), later)
			if err != nil || !fresh {
				t.Fatalf("begin %d after expiry: %v", i, err)
			}
		}
		if c.len() != max {
			t.Fatalf("len %d, want %d", c.len(), max)
		}
		if _, fresh, _ := c.begin(nk("a"), exp, later); fresh {
			t.Fatal("a running expired entry was swept")
		}
		if _, _, err := c.begin(nk("z"), later, later); CodeOf(err) != CodeReplayMemoryFull {
			t.Fatalf("begin on a full cache: %v", err)
		}
		c.finish(running, &Response{}, t0)
		// An entry expiring exactly now is not yet expired.
		if _, _, err := c.begin(nk("z"), later, exp); CodeOf(err) != CodeReplayMemoryFull {
			t.Fatalf("begin at the expiry instant: %v", err)
		}
		if _, fresh, err := c.begin(nk("z"), later, later); err != nil || !fresh {
			t.Fatalf("begin after the running entry finished: %v", err)
		}
	})

	t.Run("periodic sweep", func(t *testing.T) {
		c := newReplayCache(1<<20, 10*time.Second)
		for i := 0; i < 1023; i++ {
			e, _, _ := c.begin(nk(string(rune(0x1000+i))), exp, t0)
			c.finish(e, &Response{}, t0)
		}
		// The 1024th insert sweeps although the cache is far from full.
		c.begin(nk("last"), exp.Add(time.Hour), exp.Add(time.Second))
		if c.len() != 1 {
			t.Fatalf("len %d after the periodic sweep, want 1", c.len())
		}
	})
}

// signRaw makes a COSE_Sign1 by hand, for headers SignPayload never writes.
func signRaw(t *testing.T, alg cose.Algorithm, key *ecdsa.PrivateKey, kid, payload, aad []byte) []byte {
	t.Helper()
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	if kid != nil {
		msg.Headers.Protected[cose.HeaderLabelKeyID] = kid
	}
	msg.Payload = payload
	s, err := cose.NewSigner(alg, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.Sign(rand.Reader, aad, s); err != nil {
		t.Fatal(err)
	}
	b, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyPayloadRefusals(t *testing.T) {
	key := fuzzKey(t)
	pub := &key.PublicKey
	kid, _ := KeyID(pub)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	good := &SignedPayload{Op: OpSign, Nonce: bytes.Repeat([]byte{1}, NonceSize), Time: 1764115200000, Body: []byte{0xA0}, Binding: bytes.Repeat([]byte{2}, BindingSize)}
	sign := func(k *ecdsa.PrivateKey, p *SignedPayload) []byte {
		s, err := SignPayload(k, p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	goodRaw := sign(key, good)
	payload, _ := Marshal(good)

	got, err := VerifyPayload(goodRaw, pub)
	if err != nil || !reflect.DeepEqual(got, good) {
		t.Fatalf("VerifyPayload of a good request: %#v, %v", got, err)
	}
	early := *good
	early.Binding = nil
	if _, err := VerifyPayload(sign(key, &early), pub); err != nil {
		t.Fatalf("VerifyPayload of an early-data request: %v", err)
	}

	tampered := bytes.Clone(goodRaw)
	tampered[len(tampered)-1] ^= 1
	// The same payload signed by the other key, carrying our kid.
	forged := signRaw(t, cose.AlgorithmES256, other, kid, payload, externalAAD)
	withAlg := func(alg cose.Algorithm) []byte {
		msg := cose.NewSign1Message()
		msg.Headers.Protected.SetAlgorithm(alg)
		msg.Headers.Protected[cose.HeaderLabelKeyID] = kid
		msg.Payload = payload
		msg.Signature = make([]byte, 96)
		b, err := msg.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	noAlg := func() []byte {
		msg := cose.NewSign1Message()
		msg.Headers.Protected[cose.HeaderLabelKeyID] = kid
		msg.Payload = payload
		msg.Signature = make([]byte, 64)
		b, err := msg.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	p := *good
	p.Nonce = p.Nonce[:4]
	shortNonce := sign(key, &p)
	p = *good
	p.Nonce = nil
	noNonce := sign(key, &p)
	p = *good
	p.Binding = p.Binding[:5]
	shortBinding := sign(key, &p)
	p = *good
	p.Binding = append(p.Binding, 0)
	longBinding := sign(key, &p)

	tests := []struct {
		name string
		raw  []byte
		pub  any
		code Code
	}{
		{"signed by another key", sign(other, good), pub, CodeBadSignature},
		{"another key's signature with our kid", forged, pub, CodeBadSignature},
		{"tampered signature", tampered, pub, CodeBadSignature},
		{"another protocol's AAD", signRaw(t, cose.AlgorithmES256, key, kid, payload, []byte("pscs/2")), pub, CodeBadSignature},
		{"no kid", signRaw(t, cose.AlgorithmES256, key, nil, payload, externalAAD), pub, CodeBadSignature},
		{"algorithm ES384 for a P-256 key", withAlg(cose.AlgorithmES384), pub, CodeBadSignature},
		{"algorithm EdDSA for a P-256 key", withAlg(cose.AlgorithmEdDSA), pub, CodeBadSignature},
		{"no algorithm", noAlg, pub, CodeBadSignature},
		{"P-384 signature for a P-256 identity", sign(p384, good), pub, CodeBadSignature},
		{"Ed25519 identity", goodRaw, edPub, CodeBadSignature},
		{"identity key without algorithm", goodRaw, "not a key", CodeBadSignature},
		{"payload not a SignedPayload", signRaw(t, cose.AlgorithmES256, key, kid, []byte{0x01}, externalAAD), pub, CodeMalformed},
		{"payload with trailing bytes", signRaw(t, cose.AlgorithmES256, key, kid, append(bytes.Clone(payload), 0), externalAAD), pub, CodeMalformed},
		{"4-byte nonce", shortNonce, pub, CodeMalformed},
		{"no nonce", noNonce, pub, CodeMalformed},
		{"5-byte binding", shortBinding, pub, CodeMalformed},
		{"33-byte binding", longBinding, pub, CodeMalformed},
		{"not COSE", []byte{0xA0}, pub, CodeMalformed},
		{"empty", nil, pub, CodeMalformed},
		{"truncated", goodRaw[:len(goodRaw)-1], pub, CodeMalformed},
		{"trailing byte", append(bytes.Clone(goodRaw), 0), pub, CodeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := VerifyPayload(tt.raw, tt.pub)
			if err == nil || p != nil {
				t.Fatalf("VerifyPayload accepted it: %#v", p)
			}
			if CodeOf(err) != tt.code {
				t.Fatalf("VerifyPayload: %v, want code %v", err, tt.code)
			}
		})
	}
}

// TestObjectAttributeValues: attribute values of the documented types
// (unsigned integer, boolean, byte string, text string) round-trip.
func TestObjectAttributeValues(t *testing.T) {
	o := Object{Handle: 7, Attributes: map[uint64]any{0: uint64(3), 1: true, 2: false, 3: "label", 0x102: []byte{1, 2}, 0x11: []byte{}}}
	b, err := Marshal(&o)
	if err != nil {
		t.Fatal(err)
	}
	var got Object
	if err := Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("round trip: %#v, %v", got, err)
	}

	// Nothing else is an attribute value: no tags, floats, negative
	// integers, nulls, arrays or maps.
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"tag 1 epoch time", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0xC1, 0x00}},
		{"tag 0 date", append([]byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0xC0, 0x74}, "2026-11-26T00:00:00Z"...)},
		{"tag 2 bignum", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0xC2, 0x41, 0x01}},
		{"float", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0xF9, 0x3C, 0x00}},
		{"negative integer", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0x20}},
		{"null", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0xF6}},
		{"array", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0x80}},
		{"map", []byte{0xA2, 0x01, 0x01, 0x02, 0xA1, 0x01, 0xA0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var o Object
			if err := Unmarshal(tt.data, &o); !errors.Is(err, ErrMalformed) {
				t.Errorf("Unmarshal = %v (%#v), want ErrMalformed", err, o.Attributes)
			}
		})
	}
}

// nk is s as a nonce key (the first NonceSize bytes, zero-padded).
func nk(s string) nonceKey {
	var k nonceKey
	copy(k[:], s)
	return k
}
