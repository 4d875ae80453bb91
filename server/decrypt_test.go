package server_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/pscs/pscs/internal/p11"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// logBuffer keeps everything logged, for a search of secrets.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) contains(secret []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.ToLower(l.b.String())
	return bytes.Contains(l.b.Bytes(), secret) || strings.Contains(s, strings.ToLower(string(hexOf(secret))))
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

// decryptRig is a remote card of one simulated card whose 9D key is alg,
// served to alice (sign and decrypt) and bob (sign only), with every log
// line (debug included) kept.
func decryptRig(t *testing.T, alg pivsim.Algorithm, d policy.Delegation) (*testrig.Rig, *memAudit, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	aud := &memAudit{}
	d.ID, d.Ops, d.MaxWrongVPIN = "d-alice", []string{"sign", "decrypt"}, 5
	r := testrig.Start(t, testrig.Options{Cards: 1, Seed: "decrypt", Slot: 7, Audit: aud,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Slots: map[pivsim.Slot]pivsim.SlotConfig{
			pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256},
			pivsim.SlotKeyManagement:  {Algorithm: alg},
		},
		Delegates: []testrig.Delegate{
			{Name: "alice", VPIN: "2718", Delegation: d},
			{Name: "bob", VPIN: "3141", Delegation: policy.Delegation{ID: "d-bob"}},
		}})
	return r, aud, logs
}

// keyWith finds the handle of the private key object with attribute attr true.
func keyWith(t *testing.T, cat *transport.Catalogue, attr uint64) uint64 {
	t.Helper()
	for _, o := range cat.Slots[0].Objects {
		if v, _ := o.Attributes[attr].(bool); v && o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) {
			return o.Handle
		}
	}
	t.Fatalf("no private key with attribute %#x true", attr)
	return 0
}

func mechFlags(cat *transport.Catalogue, mech uint64) uint64 {
	for _, m := range cat.Slots[0].Mechanisms {
		if m.Type == mech {
			return m.Flags
		}
	}
	return 0
}

func TestDelegateDecrypts(t *testing.T) {
	r, aud, logs := decryptRig(t, pivsim.RSA2048, policy.Delegation{Total: 7})
	c := r.Dial(t, r.Certs["alice"])
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	cat := hello.Catalogue
	key := keyWith(t, cat, p11.CKADecrypt)
	if mechFlags(cat, p11.CKMRSAPKCSOAEP)&p11.CKFDecrypt == 0 || mechFlags(cat, p11.CKMRSAPKCS)&p11.CKFDecrypt == 0 {
		t.Errorf("mechanisms %+v: want CKM_RSA_PKCS and CKM_RSA_PKCS_OAEP with CKF_DECRYPT", cat.Slots[0].Mechanisms)
	}
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	pub := r.Sims[0].PublicKey(pivsim.SlotKeyManagement).(*rsa.PublicKey)
	msg := []byte("the mayor's mail: meet at noon")
	//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
	v15, _ := rsa.EncryptPKCS1v15(rand.Reader, pub, msg)
	oaep, _ := rsa.EncryptOAEP(crypto.SHA256.New(), rand.Reader, pub, msg, []byte("lbl"))
	params, _ := transport.Marshal(&transport.OAEPParams{Hash: p11.CKMSHA256, MGF: p11.CKGMGF1SHA256, Label: []byte("lbl")})
	for name, req := range map[string]*transport.DecryptRequest{
		"v1.5": {Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCS, Data: v15},
		"oaep": {Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCSOAEP, Params: params, Data: oaep},
	} {
		resp, err := c.Decrypt(ctx(t), req, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(resp.Plaintext, msg) {
			t.Errorf("%s: plaintext %q, want %q", name, resp.Plaintext, msg)
		}
	}
	// Wrong padding: one code, the card's try not spent, audited.
	if _, err := c.Decrypt(ctx(t), &transport.DecryptRequest{Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCSOAEP, Params: params, Data: v15}, nil); !isCode(err, transport.CodeDecryption) {
		t.Errorf("v1.5 ciphertext as OAEP: %v, want code %d", err, transport.CodeDecryption)
	}
	// A signature-only key, and a mechanism for signatures.
	if _, err := c.Decrypt(ctx(t), &transport.DecryptRequest{Slot: 7, Key: 1, Mechanism: p11.CKMRSAPKCS, Data: v15}, nil); !isCode(err, transport.CodeMechanism) {
		t.Errorf("decrypt with 9A: %v, want code %d", err, transport.CodeMechanism)
	}
	if _, err := c.Decrypt(ctx(t), &transport.DecryptRequest{Slot: 7, Key: key, Mechanism: p11.CKMSHA256RSAPKCS, Data: v15}, nil); !isCode(err, transport.CodeMechanism) {
		t.Errorf("decrypt with CKM_SHA256_RSA_PKCS: %v, want code %d", err, transport.CodeMechanism)
	}
	// The delegation's limit counts decryptions as it counts signatures,
	// from the moment the policy allows one: 2 done, 1 with a wrong
	// padding, 1 with a signature key; 7 allowed in all.
	for range 3 {
		if _, err := c.Decrypt(ctx(t), &transport.DecryptRequest{Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCS, Data: v15}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Decrypt(ctx(t), &transport.DecryptRequest{Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCS, Data: v15}, nil); !isCode(err, transport.CodeLimitReached) {
		t.Errorf("eighth decryption of a seven-use delegation: %v, want code %d", err, transport.CodeLimitReached)
	}
	digest := sha256.Sum256(v15)
	var done int
	aud.mu.Lock()
	for _, rec := range aud.records {
		if rec.Op != "decrypt" {
			continue
		}
		if rec.Code == 0 {
			done++
			if !bytes.Equal(rec.Result, digest[:]) && rec.Result != nil {
				h := sha256.Sum256(oaep)
				if !bytes.Equal(rec.Result, h[:]) {
					t.Errorf("audit record's result %x is not the ciphertext's SHA-256", rec.Result)
				}
			}
		}
		if bytes.Contains(rec.Result, msg) || bytes.Contains(rec.Evidence, msg) {
			t.Error("the plaintext is in an audit record")
		}
	}
	aud.mu.Unlock()
	if done != 5 {
		t.Errorf("%d decryptions audited as done, want 5", done)
	}
	if logs.contains(msg) {
		t.Error("the plaintext is in the log")
	}
	if r.Sims[0].PINRetries() != 3 {
		t.Errorf("card PIN retries %d, want 3", r.Sims[0].PINRetries())
	}
}

func TestDelegateDerives(t *testing.T) {
	r, aud, logs := decryptRig(t, pivsim.ECCP384, policy.Delegation{})
	c := r.Dial(t, r.Certs["alice"])
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	key := keyWith(t, hello.Catalogue, p11.CKADerive)
	if mechFlags(hello.Catalogue, p11.CKMECDH1Derive)&p11.CKFDerive == 0 {
		t.Errorf("mechanisms %+v: want CKM_ECDH1_DERIVE with CKF_DERIVE", hello.Catalogue.Slots[0].Mechanisms)
	}
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	pub, _ := r.Sims[0].PublicKey(pivsim.SlotKeyManagement).(*ecdsa.PublicKey).ECDH()
	peer, _ := ecdh.P384().GenerateKey(rand.Reader)
	want, _ := peer.ECDH(pub)
	resp, err := c.Derive(ctx(t), &transport.DeriveRequest{Slot: 7, Key: key, Mechanism: p11.CKMECDH1Derive, Data: peer.PublicKey().Bytes()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Secret, want) {
		t.Errorf("shared secret %x, want %x", resp.Secret, want)
	}
	other, _ := ecdh.P256().GenerateKey(rand.Reader)
	if _, err := c.Derive(ctx(t), &transport.DeriveRequest{Slot: 7, Key: key, Mechanism: p11.CKMECDH1Derive, Data: other.PublicKey().Bytes()}, nil); !isCode(err, transport.CodeDecryption) {
		t.Errorf("a P-256 point for a P-384 key: %v, want code %d", err, transport.CodeDecryption)
	}
	if logs.contains(want) {
		t.Error("the shared secret is in the log")
	}
	aud.mu.Lock()
	defer aud.mu.Unlock()
	var ok bool
	for _, rec := range aud.records {
		if rec.Op == "derive" && rec.Code == 0 {
			h := sha256.Sum256(peer.PublicKey().Bytes())
			ok = bytes.Equal(rec.Result, h[:])
		}
		if bytes.Contains(rec.Result, want) || bytes.Contains(rec.Evidence, want) {
			t.Error("the shared secret is in an audit record")
		}
	}
	if !ok {
		t.Error("no audit record of the key agreement with the peer point's SHA-256")
	}
}

// TestDecryptNeedsTheOperation: a delegation without "decrypt" is refused
// with CodeDenied, and the refusal is audited; the card is not asked.
func TestDecryptNeedsTheOperation(t *testing.T) {
	r, aud, _ := decryptRig(t, pivsim.RSA2048, policy.Delegation{})
	c := r.Dial(t, r.Certs["bob"])
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	key := keyWith(t, hello.Catalogue, p11.CKADecrypt)
	if _, err := c.Login(ctx(t), 7, []byte("3141")); err != nil {
		t.Fatal(err)
	}
	pub := r.Sims[0].PublicKey(pivsim.SlotKeyManagement).(*rsa.PublicKey)
	//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte("secret"))
	if _, err := c.Decrypt(ctx(t), &transport.DecryptRequest{Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCS, Data: ct}, nil); !isCode(err, transport.CodeDenied) {
		t.Errorf("decrypt under a sign-only delegation: %v, want code %d", err, transport.CodeDenied)
	}
	if _, err := c.Derive(ctx(t), &transport.DeriveRequest{Slot: 7, Key: 1, Mechanism: p11.CKMECDH1Derive, Data: []byte{4}}, nil); !isCode(err, transport.CodeDenied) {
		t.Errorf("derive under a sign-only delegation: %v, want code %d", err, transport.CodeDenied)
	}
	aud.mu.Lock()
	defer aud.mu.Unlock()
	var refused []string
	for _, rec := range aud.records {
		if rec.Code == transport.CodeDenied && rec.Delegation == "d-bob" && rec.Evidence != nil {
			refused = append(refused, rec.Op)
		}
	}
	if len(refused) != 2 || refused[0] != "decrypt" || refused[1] != "derive" {
		t.Errorf("audited refusals %v, want [decrypt derive]", refused)
	}
}

// TestDecryptPINAlways: a 9D key whose card wants the PIN before every
// operation wants the delegate's virtual PIN with every decryption, as
// a PIN-always key does with every signature.
func TestDecryptPINAlways(t *testing.T) {
	logs := &logBuffer{}
	r := testrig.Start(t, testrig.Options{Cards: 1, Seed: "decrypt always", Slot: 7, Audit: &memAudit{},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Slots: map[pivsim.Slot]pivsim.SlotConfig{
			pivsim.SlotKeyManagement: {Algorithm: pivsim.RSA2048, PINPolicy: pivsim.PINPolicyAlways},
		},
		Delegates: []testrig.Delegate{{Name: "alice", VPIN: "2718",
			Delegation: policy.Delegation{ID: "d-alice", Ops: []string{"decrypt"}, MaxWrongVPIN: 5}}}})
	c := r.Dial(t, r.Certs["alice"])
	hello, err := c.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	key := keyWith(t, hello.Catalogue, p11.CKADecrypt)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	pub := r.Sims[0].PublicKey(pivsim.SlotKeyManagement).(*rsa.PublicKey)
	msg := []byte("confirm each one")
	//lint:ignore SA1019 the ciphertexts a PKCS #11 application sends with CKM_RSA_PKCS are PKCS #1 v1.5
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, pub, msg)
	req := &transport.DecryptRequest{Slot: 7, Key: key, Mechanism: p11.CKMRSAPKCS, Data: ct}
	if _, err := c.Decrypt(ctx(t), req, nil); !isCode(err, transport.CodeNotLoggedIn) {
		t.Errorf("decrypt with a PIN-always key without the vPIN: %v, want code %d", err, transport.CodeNotLoggedIn)
	}
	if _, err := c.Decrypt(ctx(t), req, []byte("0000")); !isCode(err, transport.CodeWrongPIN) {
		t.Errorf("decrypt with a wrong vPIN: %v, want code %d", err, transport.CodeWrongPIN)
	}
	for range 2 {
		resp, err := c.Decrypt(ctx(t), req, []byte("2718"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(resp.Plaintext, msg) {
			t.Errorf("plaintext %q, want %q", resp.Plaintext, msg)
		}
	}
	if r.Sims[0].PINRetries() != 3 {
		t.Errorf("card PIN retries %d, want 3", r.Sims[0].PINRetries())
	}
}
