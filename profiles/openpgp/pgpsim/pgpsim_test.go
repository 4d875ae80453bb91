package pgpsim_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit"
)

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func newCard(t testing.TB, cfg pgpsim.Config) *pgpsim.Card {
	t.Helper()
	if cfg.Seed == nil {
		cfg.Seed = []byte(t.Name())
	}
	c, err := pgpsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// send transmits cmd (hex or bytes) and returns data and SW as hex.
func send(t testing.TB, c *pgpsim.Card, cmd []byte) ([]byte, string) {
	t.Helper()
	rsp, err := c.Transmit(context.Background(), cmd)
	if err != nil || len(rsp) < 2 {
		t.Fatalf("%X: %X %v", cmd, rsp, err)
	}
	return rsp[:len(rsp)-2], strings.ToUpper(hex.EncodeToString(rsp[len(rsp)-2:]))
}

func must(t testing.TB, c *pgpsim.Card, cmd string, want string) []byte {
	t.Helper()
	data, sw := send(t, c, hx(cmd))
	if sw != want {
		t.Fatalf("%s: SW %s, want %s", cmd, sw, want)
	}
	return data
}

func cmd(ins, p1, p2 byte, data []byte, ne int) []byte {
	b, err := apdu.Command{INS: ins, P1: p1, P2: p2, Data: data, Ne: ne, Extended: len(data) > 255 || ne > 256}.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

const (
	selectPGP = "00 A4 04 00 06 D2 76 00 01 24 01"
	verify81  = "00 20 00 81 06 31 32 33 34 35 36"
	verify82  = "00 20 00 82 06 31 32 33 34 35 36"
	verify83  = "00 20 00 83 08 31 32 33 34 35 36 37 38"
)

func TestApplicationData(t *testing.T) {
	c := newCard(t, pgpsim.Config{Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.Ed25519, pgpsim.KeyDecrypt: simkit.X25519, pgpsim.KeyAuth: simkit.ECCP256}})
	must(t, c, "00 CA 00 6E 00", "6D00") // nothing selected yet
	must(t, c, selectPGP, "9000")
	full := append([]byte{0x00, 0xA4, 0x04, 0x00, 0x10}, hx("D2 76 00 01 24 01 03 04 00 06")...)
	serial := c.Serial()
	full = append(full, byte(serial>>24), byte(serial>>16), byte(serial>>8), byte(serial), 0, 0)
	if _, sw := send(t, c, full); sw != "9000" {
		t.Errorf("SELECT by the full AID: %s", sw)
	}
	must(t, c, "00 A4 04 00 06 D2 76 00 01 24 02", "6A82")
	must(t, c, selectPGP, "9000")
	ard := must(t, c, "00 CA 00 6E 00 00 00", "9000")
	inner, ok, err := apdu.FindTLV(ard, 0x6E)
	if err != nil || !ok {
		t.Fatalf("6E: %X", ard)
	}
	disc, _, _ := apdu.FindTLV(inner, 0x73)
	for tag, want := range map[uint32]string{
		0xC1: "16 2B 06 01 04 01 DA 47 0F 01",
		0xC2: "12 2B 06 01 04 01 97 55 01 05 01",
		0xC3: "13 2A 86 48 CE 3D 03 01 07",
		0xC4: "01 7F 7F 7F 03 00 03",
		0xDE: "01 01 02 01 03 01 81 02",
		0xD6: "00 20",
	} {
		if v, _, _ := apdu.FindTLV(disc, tag); !bytes.Equal(v, hx(want)) {
			t.Errorf("%X: %X, want %s", tag, v, want)
		}
	}
	fps, _, _ := apdu.FindTLV(disc, 0xC5)
	for k := pgpsim.KeySign; k <= pgpsim.KeyAuth; k++ {
		fp := c.KeyFingerprint(k)
		if !bytes.Equal(fps[20*int(k):20*int(k)+20], fp[:]) || fp == [20]byte{} {
			t.Errorf("%v fingerprint %X in C5 %X", k, fp, fps)
		}
	}
	// Short Le: 256 bytes and 61 xx; each simple DO alone.
	if _, sw := send(t, c, hx("00 CA 00 6E 00")); !strings.HasPrefix(sw, "61") {
		t.Errorf("6E with a short Le: %s", sw)
	}
	if d := must(t, c, "00 CA 00 C4 00", "9000"); !bytes.Equal(d, hx("01 7F 7F 7F 03 00 03")) {
		t.Errorf("C4 %X", d)
	}
	if d := must(t, c, "00 CA 00 65 00", "9000"); !bytes.Equal(d, hx("65 09 5B 00 5F 2D 00 5F 35 01 39")) {
		t.Errorf("65 %X", d)
	}
	must(t, c, "00 CA 00 7A 00", "9000")
	must(t, c, "00 CA 00 FA 00 00 00", "9000")
	must(t, c, "00 CA 12 34 00", "6A88")
}

// sign asks for a signature over in with the signature key (PSO:CDS).
func psoCDS(t testing.TB, c *pgpsim.Card, in []byte) ([]byte, string) {
	return send(t, c, cmd(0x2A, 0x9E, 0x9A, in, 256))
}

func digestInfo(h []byte) []byte {
	return append(hx("30 31 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20"), h...)
}

func TestSignatures(t *testing.T) {
	msg := sha256.Sum256([]byte("signed by the card"))
	for _, alg := range []simkit.Alg{simkit.RSA2048, simkit.ECCP256, simkit.ECCP384, simkit.ECCP521, simkit.Ed25519} {
		t.Run(alg.String(), func(t *testing.T) {
			c := newCard(t, pgpsim.Config{Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: alg, pgpsim.KeyAuth: alg}, PW1Single: true})
			must(t, c, selectPGP, "9000")
			in := msg[:]
			if alg.RSABits() > 0 {
				in = digestInfo(msg[:])
			}
			if _, sw := psoCDS(t, c, in); sw != "6982" {
				t.Fatalf("PSO:CDS without PW1: %s", sw)
			}
			must(t, c, verify81, "9000")
			sig, sw := psoCDS(t, c, in)
			if sw != "9000" {
				t.Fatalf("PSO:CDS: %s", sw)
			}
			verifySig(t, c.PublicKey(pgpsim.KeySign), msg[:], sig)
			if _, sw := psoCDS(t, c, in); sw != "6982" {
				t.Errorf("second signature on one VERIFY with C4 00: %s", sw)
			}
			if c.SignatureCount() != 1 {
				t.Errorf("signature counter %d", c.SignatureCount())
			}
			if d := must(t, c, "00 CA 00 7A 00", "9000"); !bytes.Equal(d, hx("7A 05 93 03 00 00 01")) {
				t.Errorf("7A %X", d)
			}
			// INTERNAL AUTHENTICATE needs PW1 82.
			ia := cmd(0x88, 0, 0, in, 256)
			if _, sw := send(t, c, ia); sw != "6982" {
				t.Errorf("INTERNAL AUTHENTICATE without PW1 82: %s", sw)
			}
			must(t, c, verify82, "9000")
			sig, sw = send(t, c, ia)
			if sw != "9000" {
				t.Fatalf("INTERNAL AUTHENTICATE: %s", sw)
			}
			verifySig(t, c.PublicKey(pgpsim.KeyAuth), msg[:], sig)
		})
	}
}

func verifySig(t *testing.T, pub crypto.PublicKey, digest, sig []byte) {
	t.Helper()
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(p, crypto.SHA256, digest, sig); err != nil {
			t.Errorf("RSA signature: %v", err)
		}
	case *ecdsa.PublicKey:
		n := len(sig) / 2
		if !ecdsa.Verify(p, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
			t.Errorf("ECDSA r||s signature of %d bytes does not verify", len(sig))
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(p, digest, sig) {
			t.Error("EdDSA signature does not verify")
		}
	default:
		t.Errorf("public key %T", pub)
	}
}

func TestDecipher(t *testing.T) {
	for _, alg := range []simkit.Alg{simkit.RSA2048, simkit.ECCP256, simkit.ECCP384, simkit.X25519} {
		t.Run(alg.String(), func(t *testing.T) {
			c := newCard(t, pgpsim.Config{Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeyDecrypt: alg}})
			must(t, c, selectPGP, "9000")
			var in, want []byte
			switch pub := c.PublicKey(pgpsim.KeyDecrypt).(type) {
			case *rsa.PublicKey:
				want = []byte("session key")
				//lint:ignore SA1019 what GnuPG sends an OpenPGP card is PKCS #1 v1.5
				ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, want)
				if err != nil {
					t.Fatal(err)
				}
				in = append([]byte{0x00}, ct...)
			default:
				var peer *ecdh.PrivateKey
				var mine *ecdh.PublicKey
				switch p := pub.(type) {
				case *ecdsa.PublicKey:
					e, _ := p.ECDH()
					mine = e
				case *ecdh.PublicKey:
					mine = p
				}
				peer, _ = mine.Curve().GenerateKey(rand.Reader)
				want, _ = peer.ECDH(mine)
				in = apdu.AppendTLV(nil, 0xA6, apdu.AppendTLV(nil, 0x7F49, apdu.AppendTLV(nil, 0x86, peer.PublicKey().Bytes())))
			}
			dec := cmd(0x2A, 0x80, 0x86, in, 256)
			if _, sw := send(t, c, dec); sw != "6982" {
				t.Errorf("DECIPHER without PW1 82: %s", sw)
			}
			must(t, c, verify81, "9000")
			if _, sw := send(t, c, dec); sw != "6982" {
				t.Errorf("DECIPHER with PW1 81 only: %s", sw)
			}
			must(t, c, verify82, "9000")
			got, sw := send(t, c, dec)
			if sw != "9000" || !bytes.Equal(got, want) {
				t.Errorf("DECIPHER: %X %s, want %X", got, sw, want)
			}
			// The same in two chained blocks (CLA 10), as clients without
			// extended length send it.
			half := len(in) / 2
			first := cmd(0x2A, 0x80, 0x86, in[:half], 0)
			first[0] = 0x10
			if _, sw := send(t, c, first); sw != "9000" {
				t.Fatalf("first chained block: %s", sw)
			}
			if got, sw := send(t, c, cmd(0x2A, 0x80, 0x86, in[half:], 256)); sw != "9000" || !bytes.Equal(got, want) {
				t.Errorf("chained DECIPHER: %X %s, want %X", got, sw, want)
			}
			bad := bytes.Clone(in)
			bad[len(bad)-1] ^= 1
			if _, sw := send(t, c, cmd(0x2A, 0x80, 0x86, bad[:len(bad)-3], 256)); sw != "6A80" {
				t.Errorf("DECIPHER of garbage: %s", sw)
			}
		})
	}
}

func TestPasswords(t *testing.T) {
	c := newCard(t, pgpsim.Config{Factory: true})
	must(t, c, selectPGP, "9000")
	must(t, c, "00 20 00 81", "63C3")
	must(t, c, "00 20 00 81 05 31 32 33 34 35", "6A80") // too short: no try used
	must(t, c, "00 20 00 81 06 39 39 39 39 39 39", "6982")
	if d := must(t, c, "00 CA 00 C4 00", "9000"); d[4] != 2 {
		t.Errorf("PW1 tries after a wrong PIN: %X", d)
	}
	must(t, c, verify81, "9000")
	must(t, c, "00 20 00 81", "9000")
	must(t, c, "00 20 FF 81", "9000")
	must(t, c, "00 20 00 81", "63C3")
	// CHANGE REFERENCE DATA: old and new concatenated.
	must(t, c, "00 24 00 81 0C 31 32 33 34 35 36 36 35 34 33 32 31", "9000")
	must(t, c, "00 20 00 81 06 36 35 34 33 32 31", "9000")
	// Block PW1, reset it with PW3, then with a resetting code.
	for i := 0; i < 2; i++ {
		must(t, c, "00 20 00 82 06 30 30 30 30 30 30", "6982")
	}
	must(t, c, "00 20 00 82 06 30 30 30 30 30 30", "6983")
	must(t, c, "00 20 00 82 06 36 35 34 33 32 31", "6983")
	must(t, c, "00 2C 02 81 06 31 31 31 31 31 31", "6982")
	must(t, c, verify83, "9000")
	must(t, c, "00 2C 02 81 06 31 31 31 31 31 31", "9000")
	must(t, c, "00 20 00 82 06 31 31 31 31 31 31", "9000")
	must(t, c, "00 2C 00 81 0E 72 65 73 65 74 63 6F 64 31 32 33 34 35 36", "6983") // no resetting code yet
	must(t, c, "00 DA 00 D3 08 72 65 73 65 74 63 6F 64", "9000")
	must(t, c, "00 2C 00 81 0E 72 65 73 65 74 63 6F 64 31 32 33 34 35 36", "9000")
	must(t, c, verify81, "9000")
	if pw1, rc, pw3 := c.PINRetries(); pw1 != 3 || rc != 3 || pw3 != 3 {
		t.Errorf("tries %d %d %d", pw1, rc, pw3)
	}
	// A reset forgets verifications.
	c.Reset()
	must(t, c, selectPGP, "9000")
	must(t, c, "00 20 00 83", "63C3")
}

func TestGenerateImportAndReset(t *testing.T) {
	c := newCard(t, pgpsim.Config{Factory: true})
	must(t, c, selectPGP, "9000")
	must(t, c, "00 47 81 00 02 B6 00 00", "6A88")
	must(t, c, "00 47 80 00 02 B6 00 00", "6982")
	must(t, c, verify83, "9000")
	must(t, c, "00 DA 00 C1 09 13 2A 86 48 CE 3D 03 01 07", "9000")
	pub := must(t, c, "00 47 80 00 05 B6 03 84 01 01 00", "9000")
	if !bytes.HasPrefix(pub, hx("7F 49 43 86 41 04")) {
		t.Errorf("generated P-256 key: %X", pub)
	}
	if again := must(t, c, "00 47 81 00 02 B6 00 00", "9000"); !bytes.Equal(again, pub) {
		t.Errorf("read back %X", again)
	}
	if c.Algorithm(pgpsim.KeySign) != simkit.ECCP256 {
		t.Errorf("algorithm %v", c.Algorithm(pgpsim.KeySign))
	}
	// RSA-2048 public key: longer than a short answer.
	if _, sw := send(t, c, hx("00 47 80 00 02 B8 00")); sw != "610E" {
		t.Errorf("RSA-2048 generation with a short Le: %s, want 610E (270 bytes, as the transcripts show)", sw)
	}
	// Import an Ed25519 authentication key.
	must(t, c, "00 DA 00 C3 0A 16 2B 06 01 04 01 DA 47 0F 01", "9000")
	seed := bytes.Repeat([]byte{0xAB}, 32)
	imp := append(hx("4D 2D A4 03 84 01 03 7F 48 02 92 20 5F 48 20"), seed...)
	must(t, c, hex.EncodeToString(cmd(0xDB, 0x3F, 0xFF, imp, 0)), "9000")
	if pub := c.PublicKey(pgpsim.KeyAuth); !ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey).Equal(pub) {
		t.Errorf("imported key %v", pub)
	}
	// Factory reset needs PW3 verified (or blocked).
	c.Reset()
	must(t, c, selectPGP, "9000")
	must(t, c, "00 E6 00 00", "6982")
	must(t, c, verify83, "9000")
	must(t, c, "00 DA 00 5E 04 6C 6F 67 69", "9000")
	must(t, c, "00 E6 00 00", "9000")
	must(t, c, "00 CA 00 6E 00", "6985")
	must(t, c, selectPGP, "6285")
	must(t, c, "00 44 00 00", "9000")
	if d := must(t, c, "00 CA 00 5E 00", "9000"); len(d) != 0 {
		t.Errorf("login data after reset: %X", d)
	}
	must(t, c, "00 47 81 00 02 B6 00 00", "6A88")
}

func TestChallengeAndOTP(t *testing.T) {
	c := newCard(t, pgpsim.Config{Factory: true})
	must(t, c, selectPGP, "9000")
	if d := must(t, c, "00 84 00 00 00 0B EE", "9000"); len(d) != 3054 {
		t.Errorf("GET CHALLENGE: %d bytes", len(d))
	}
	if d := must(t, c, "00 A4 04 00 07 A0 00 00 05 27 20 01 00", "9000"); !bytes.Equal(d, hx("05 04 03 01 05 00")) {
		t.Errorf("OTP version %X", d)
	}
	must(t, c, "00 CA 00 6E 00", "6D00")
}

// TestLatency: operations take their time (the lower bound only).
func TestLatency(t *testing.T) {
	c := newCard(t, pgpsim.Config{Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.ECCP256}, Latency: simkit.Latency{Verify: 20 * time.Millisecond}})
	must(t, c, selectPGP, "9000")
	start := time.Now()
	must(t, c, verify81, "9000")
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("VERIFY took %v", d)
	}
}

func TestSeedReproducible(t *testing.T) {
	k := map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.ECCP256}
	a := newCard(t, pgpsim.Config{Seed: []byte("same"), Keys: k})
	b := newCard(t, pgpsim.Config{Seed: []byte("same"), Keys: k})
	d := newCard(t, pgpsim.Config{Seed: []byte("other"), Keys: k})
	if a.KeyFingerprint(pgpsim.KeySign) != b.KeyFingerprint(pgpsim.KeySign) || a.Serial() != b.Serial() {
		t.Error("same seed, different card")
	}
	if a.KeyFingerprint(pgpsim.KeySign) == d.KeyFingerprint(pgpsim.KeySign) {
		t.Error("different seeds, same key")
	}
}

// BenchmarkSign: a PSO:CDS through the kit, per algorithm (no latency
// model: the simulator's own cost).
func BenchmarkSign(b *testing.B) {
	digest := sha256.Sum256([]byte("benchmark"))
	for _, alg := range []simkit.Alg{simkit.ECCP256, simkit.Ed25519, simkit.RSA2048} {
		b.Run(alg.String(), func(b *testing.B) {
			c := newCard(b, pgpsim.Config{Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: alg}})
			must(b, c, selectPGP, "9000")
			must(b, c, verify81, "9000")
			in := digest[:]
			if alg.RSABits() > 0 {
				in = digestInfo(in)
			}
			cds := cmd(0x2A, 0x9E, 0x9A, in, 256)
			for b.Loop() {
				if _, sw := send(b, c, cds); sw != "9000" {
					b.Fatal(sw)
				}
			}
		})
	}
}
