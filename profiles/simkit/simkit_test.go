package simkit_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/simkit"
)

// echo is a test applet: INS 01 answers the command data, INS 02 answers
// P1*256+P2 bytes, INS 20 checks a PIN; every answer records the command.
type echo struct {
	pin    *simkit.PIN
	last   apdu.Command
	resets int
	delay  time.Duration
}

func (e *echo) Handle(cmd apdu.Command) simkit.Reply {
	e.last = cmd
	switch cmd.INS {
	case 0x01:
		return simkit.OK(cmd.Data)
	case 0x02:
		n := int(cmd.P1)<<8 | int(cmd.P2)
		out := make([]byte, n)
		for i := range out {
			out[i] = byte(i)
		}
		return simkit.Reply{Data: out, Delay: e.delay}
	case 0x20:
		if len(cmd.Data) == 0 {
			return simkit.Status(e.pin.Status(false))
		}
		return simkit.Status(e.pin.Check(cmd.Data))
	}
	return simkit.Status(apdu.SWINSNotSupported)
}

func (e *echo) Reset() { e.resets++ }

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func newEcho() (*echo, *simkit.Card) {
	e := &echo{pin: simkit.NewPIN([]byte("123456"), 3)}
	return e, simkit.New(e, simkit.Options{ATR: []byte{0x3B, 0x00}})
}

func send(t *testing.T, c *simkit.Card, cmd []byte) (data []byte, sw string) {
	t.Helper()
	rsp, err := c.Transmit(context.Background(), cmd)
	if err != nil || len(rsp) < 2 {
		t.Fatalf("%X: %X, %v", cmd, rsp, err)
	}
	return rsp[:len(rsp)-2], strings.ToUpper(hex.EncodeToString(rsp[len(rsp)-2:]))
}

func TestFraming(t *testing.T) {
	e, c := newEcho()
	for _, s := range []struct{ name, cmd, sw string }{
		{"malformed", "00 01 00", "6700"},
		{"Lc longer than the data", "00 01 00 00 05 01", "6700"},
		{"class 80", "80 01 00 00", "6E00"},
		{"GET RESPONSE, nothing pending", "00 C0 00 00 00", "6985"},
		{"unknown INS", "00 77 00 00", "6D00"},
		{"echo", "00 01 00 00 02 AA BB 00", "9000"},
	} {
		if _, got := send(t, c, hx(s.cmd)); got != s.sw {
			t.Errorf("%s: %s, want %s", s.name, got, s.sw)
		}
	}
	if e.resets != 0 {
		t.Errorf("resets %d before Reset", e.resets)
	}
	c.Reset()
	if e.resets != 1 {
		t.Errorf("Reset did not reach the applet")
	}
	if !bytes.Equal(c.ATR(), []byte{0x3B, 0x00}) {
		t.Errorf("ATR %X", c.ATR())
	}
}

// TestResponseChaining: a 600-byte answer comes in pieces of Ne, with
// 61 xx telling what remains (00 for 256 or more), in short and extended
// form; another command drops the rest.
func TestResponseChaining(t *testing.T) {
	_, c := newEcho()
	for _, tc := range []struct {
		name, first string
		firstLen    int
		sw          string
	}{
		{"no Le", "00 02 02 58", 256, "6100"},
		{"Le 00", "00 02 02 58 00", 256, "6100"},
		{"Le 10", "00 02 02 58 10", 16, "6100"},
		{"extended Le 0000", "00 02 02 58 00 00 00", 600, "9000"},
		{"extended Le 0100", "00 02 02 58 00 01 00", 256, "6100"},
	} {
		data, sw := send(t, c, hx(tc.first))
		if len(data) != tc.firstLen || sw != tc.sw {
			t.Errorf("%s: %d bytes %s, want %d %s", tc.name, len(data), sw, tc.firstLen, tc.sw)
			continue
		}
		got := data
		for rounds := 0; strings.HasPrefix(sw, "61"); rounds++ {
			if rounds > 10 {
				t.Fatal("endless 61xx")
			}
			data, sw = send(t, c, hx("00 C0 00 00 "+sw[2:]))
			got = append(got, data...)
		}
		if len(got) != 600 || sw != "9000" || got[599] != byte(599&0xFF) {
			t.Errorf("%s: %d bytes in all, %s", tc.name, len(got), sw)
		}
	}
	// 61 xx with the exact remainder under 256.
	_, sw := send(t, c, hx("00 02 01 2C 00")) // 300 bytes
	if sw != "612C" {
		t.Errorf("300 bytes, Le 256: %s, want 612C", sw)
	}
	send(t, c, hx("00 01 00 00 01 AA"))
	if _, sw := send(t, c, hx("00 C0 00 00 00")); sw != "6985" {
		t.Errorf("GET RESPONSE after another command: %s, want 6985", sw)
	}
}

// TestCommandChaining: blocks with CLA 10 are joined; a block of another
// command starts again; an oversized chain is refused.
func TestCommandChaining(t *testing.T) {
	e, c := newEcho()
	if _, sw := send(t, c, hx("10 01 00 00 02 AA BB")); sw != "9000" {
		t.Fatalf("first block: %s", sw)
	}
	if e.last.INS != 0 {
		t.Fatalf("a chained block reached the applet")
	}
	send(t, c, hx("10 01 00 00 01 CC"))
	data, sw := send(t, c, hx("00 01 00 00 01 DD 00"))
	if sw != "9000" || !bytes.Equal(data, hx("AABBCCDD")) {
		t.Errorf("joined chain: %X %s", data, sw)
	}
	send(t, c, hx("10 01 00 01 01 AA"))
	data, _ = send(t, c, hx("00 01 00 00 01 DD 00"))
	if !bytes.Equal(data, hx("DD")) {
		t.Errorf("chain of another P2 joined: %X", data)
	}
	c.Reset()
	send(t, c, hx("10 01 00 00 01 AA"))
	c.Reset()
	if data, _ = send(t, c, hx("00 01 00 00 01 DD 00")); !bytes.Equal(data, hx("DD")) {
		t.Errorf("chain survived a reset: %X", data)
	}
	big := append(hx("10 01 00 00 00 10 00"), make([]byte, 4096)...)
	if _, sw := send(t, c, big); sw != "9000" {
		t.Fatalf("4096-byte block: %s", sw)
	}
	if _, sw := send(t, c, hx("10 01 00 00 01 AA")); sw != "6700" {
		t.Errorf("chain over 4096 bytes: %s, want 6700", sw)
	}
	if _, sw := send(t, c, hx("00 01 00 00 01 AA")); sw != "9000" || len(e.last.Data) != 1 {
		t.Errorf("after a refused chain: %s, %d bytes", sw, len(e.last.Data))
	}
	// Extended Lc reaches the applet whole.
	ext := append(hx("00 01 00 00 00 01 2C"), make([]byte, 300)...)
	ext = append(ext, 0x00, 0x00)
	if data, sw := send(t, c, ext); sw != "9000" || len(data) != 300 || !e.last.Extended {
		t.Errorf("extended command: %d bytes %s, extended %v", len(data), sw, e.last.Extended)
	}
}

func TestPIN(t *testing.T) {
	p := simkit.NewPIN([]byte("123456"), 3)
	for _, want := range []apdu.StatusWord{0x63C2, 0x63C1, apdu.SWAuthBlocked, apdu.SWAuthBlocked} {
		if got := p.Check([]byte("999999")); got != want {
			t.Fatalf("wrong PIN: %v, want %v", got, want)
		}
	}
	if got := p.Check([]byte("123456")); got != apdu.SWAuthBlocked || !p.Blocked() {
		t.Fatalf("right PIN when blocked: %v", got)
	}
	if got := p.Status(false); got != apdu.SWAuthBlocked {
		t.Errorf("status when blocked: %v", got)
	}
	p.Unblock([]byte("654321"))
	if p.Left != 3 || p.Status(false) != 0x63C3 || p.Status(true) != apdu.SWSuccess {
		t.Errorf("after unblock: left %d, status %v", p.Left, p.Status(false))
	}
	p.Check([]byte("000000"))
	if got := p.Check([]byte("654321")); got != apdu.SWSuccess || p.Left != 3 {
		t.Errorf("right PIN: %v, left %d", got, p.Left)
	}
	if p.Len() != 6 || !p.Is([]byte("654321")) || p.Is([]byte("123456")) {
		t.Errorf("Len/Is")
	}
	// The YubiKey OpenPGP way: 69 82 for a wrong PIN, 69 83 at the end.
	q := simkit.NewPIN([]byte("12345678"), 2)
	q.WrongSW = apdu.SWSecurityStatusNotSatisfied
	if got := q.Check(nil); got != apdu.SWSecurityStatusNotSatisfied {
		t.Errorf("wrong PW3: %v", got)
	}
	if got := q.Check(nil); got != apdu.SWAuthBlocked {
		t.Errorf("last wrong PW3: %v", got)
	}
	q.SetTries(5)
	if q.Left != 5 || q.Max != 5 {
		t.Errorf("SetTries: %d/%d", q.Left, q.Max)
	}
}

// TestLatency: an answer waits for its delay; a cancelled context stops
// the wait. (How long it takes is a benchmark's business: only the lower
// bound is checked.)
func TestLatency(t *testing.T) {
	e, c := newEcho()
	e.delay = 30 * time.Millisecond
	start := time.Now()
	send(t, c, hx("00 02 00 01"))
	if d := time.Since(start); d < e.delay {
		t.Errorf("answer after %v, want at least %v", d, e.delay)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.delay = time.Hour
	go cancel()
	if _, err := c.Transmit(ctx, hx("00 02 00 01")); err == nil {
		t.Error("Transmit with a cancelled context succeeded")
	}
	if simkit.YubiKey5.Sign(simkit.ECCP256) != 76*time.Millisecond || simkit.YubiKey5.Decipher(simkit.X25519) == 0 ||
		simkit.YubiKey5.Generate(simkit.RSA4096) < time.Second || (simkit.Latency{}).Sign(simkit.RSA2048) != 0 {
		t.Error("latency table")
	}
}

// TestSeededKeys: a seed gives the same key every time, another seed or
// label another key; every algorithm signs or agrees.
func TestSeededKeys(t *testing.T) {
	digest := sha256.Sum256([]byte("message"))
	for _, alg := range []simkit.Alg{simkit.RSA1024, simkit.ECCP256, simkit.ECCP384, simkit.ECCP521, simkit.Ed25519, simkit.X25519} {
		a, err := simkit.GenerateKey(alg, []byte("seed"), "label")
		if err != nil {
			t.Fatalf("%v: %v", alg, err)
		}
		b, _ := simkit.GenerateKey(alg, []byte("seed"), "label")
		d, _ := simkit.GenerateKey(alg, []byte("seed"), "other label")
		type equaler interface {
			Equal(x crypto.PrivateKey) bool
		}
		if !a.(equaler).Equal(b) || a.(equaler).Equal(d) {
			t.Errorf("%v: same seed and label must give the same key, another label another", alg)
		}
		switch k := a.(type) {
		case *rsa.PrivateKey:
			if k.N.BitLen() != 1024 || k.E != 65537 {
				t.Errorf("RSA key %d bits, e %d", k.N.BitLen(), k.E)
			}
		case *ecdsa.PrivateKey:
			sig, err := simkit.SignECDSARaw(k, digest[:])
			size := (k.Curve.Params().BitSize + 7) / 8
			if err != nil || len(sig) != 2*size {
				t.Fatalf("%v raw signature: %d bytes, %v", alg, len(sig), err)
			}
			if !verifyRaw(&k.PublicKey, digest[:], sig) {
				t.Errorf("%v raw signature does not verify", alg)
			}
			peer, _ := simkit.GenerateKey(alg, nil, "")
			pt, _ := peer.(*ecdsa.PrivateKey).PublicKey.Bytes()
			s1, err := simkit.ECDH(k, pt)
			mine, _ := k.PublicKey.Bytes()
			s2, err2 := simkit.ECDH(peer, mine)
			if err != nil || err2 != nil || !bytes.Equal(s1, s2) || len(s1) != size {
				t.Errorf("%v ECDH: %v %v", alg, err, err2)
			}
		case ed25519.PrivateKey:
			if !ed25519.Verify(k.Public().(ed25519.PublicKey), digest[:], ed25519.Sign(k, digest[:])) {
				t.Error("Ed25519")
			}
		}
	}
	r1, _ := simkit.GenerateKey(simkit.ECCP256, nil, "x")
	r2, _ := simkit.GenerateKey(simkit.ECCP256, nil, "x")
	if r1.(*ecdsa.PrivateKey).Equal(r2) {
		t.Error("unseeded keys repeat")
	}
}

func verifyRaw(pub *ecdsa.PublicKey, digest, sig []byte) bool {
	n := len(sig) / 2
	r := new(big.Int).SetBytes(sig[:n])
	s := new(big.Int).SetBytes(sig[n:])
	return ecdsa.Verify(pub, digest, r, s)
}
