package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

const testVPIN = rig.VPIN

// moduleFor starts a Module connected to r.
func moduleFor(t *testing.T, r *rig.Rig, timeout time.Duration) *Module {
	t.Helper()
	cfg := r.Config
	m := New(Options{Timeout: timeout, Connect: func(ctx context.Context) (Backend, error) {
		return client.Dial(ctx, cfg)
	}})
	t.Cleanup(func() { m.Finalize() })
	return m
}

// openSession opens a session on slot 1.
func openSession(t *testing.T, m *Module) uint64 {
	t.Helper()
	h, err := m.OpenSession(1, ckfSerialSession)
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	return h
}

// findKey finds the private key with CKA_ID id.
func findKey(t *testing.T, m *Module, h uint64, class uint64, id byte) uint64 {
	t.Helper()
	if err := m.FindObjectsInit(h, []Attribute{{ckaClass, ulongs(class)}, {ckaID, []byte{id}}}); err != nil {
		t.Fatal(err)
	}
	hs, err := m.FindObjects(h, 10)
	if err != nil {
		t.Fatal(err)
	}
	m.FindObjectsFinal(h)
	if len(hs) != 1 {
		t.Fatalf("found %d objects of class %d with id %d, want 1", len(hs), class, id)
	}
	return hs[0]
}

// certificate reads the certificate with CKA_ID id, with the two-call
// convention.
func certificate(t *testing.T, m *Module, h uint64, id byte) *x509.Certificate {
	t.Helper()
	oh := findKey(t, m, h, ckoCert, id)
	q := []AttrQuery{{Type: ckaValue}}
	if err := m.GetAttributeValue(h, oh, q); err != nil {
		t.Fatal(err)
	}
	q[0].Buf, q[0].HasBuf = make([]byte, q[0].Len), true
	if err := m.GetAttributeValue(h, oh, q); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(q[0].Buf[:q[0].Len])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sign(m *Module, h uint64, mech Mechanism, key uint64, data []byte) ([]byte, error) {
	if err := m.SignInit(h, mech, key); err != nil {
		return nil, err
	}
	if err := contextLogin(m, h, key); err != nil {
		return nil, err
	}
	n, err := m.Sign(h, data, nil, false)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, n)
	n, err = m.Sign(h, data, sig, true)
	return sig[:n], err
}

// contextLogin gives the vPIN again after SignInit for a key that wants it
// before every signature (CKA_ALWAYS_AUTHENTICATE), as applications do.
func contextLogin(m *Module, h, key uint64) error {
	q := []AttrQuery{{Type: ckaAlwaysAuth, Buf: make([]byte, 1), HasBuf: true}}
	if err := m.GetAttributeValue(h, key, q); err != nil {
		return err
	}
	if q[0].Len == 1 && q[0].Buf[0] == 1 {
		return m.Login(h, ckuContextSpecific, []byte(testVPIN))
	}
	return nil
}

func verify(t *testing.T, pub crypto.PublicKey, mech uint64, data, sig []byte) {
	t.Helper()
	digest := sha256.Sum256(data)
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		n := len(sig) / 2
		if !ecdsa.Verify(p, digest[:], new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
			t.Errorf("mechanism %#x: the ECDSA signature does not verify", mech)
		}
	case *rsa.PublicKey:
		var err error
		if mech == ckmSHA256RSAPKCSPSS {
			err = rsa.VerifyPSS(p, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(p, crypto.SHA256, digest[:], sig)
		}
		if err != nil {
			t.Errorf("mechanism %#x: %v", mech, err)
		}
	}
}

// TestAgainstServer signs with every kind of key through a real server in
// process, in one part and in several, and checks each signature against
// the certificate read from the token.
func TestAgainstServer(t *testing.T) {
	r := rig.New(t)
	m := moduleFor(t, r, 10*time.Second)
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if err := m.Login(h, ckuUser, []byte(testVPIN)); !errors.Is(err, ErrUserAlreadyLoggedIn) {
		t.Errorf("second Login: %v, want CKR_USER_ALREADY_LOGGED_IN", err)
	}
	data := []byte("a document to sign")
	for _, tc := range []struct {
		id   byte
		mech Mechanism
	}{
		{1, Mechanism{Type: ckmECDSASHA256}},
		{2, Mechanism{Type: ckmSHA256RSAPKCS}},
		{2, Mechanism{Type: ckmSHA256RSAPKCSPSS, Param: ulongs(ckmSHA256, ckgMGF1SHA256, 32)}},
		{3, Mechanism{Type: ckmECDSASHA256}},
	} {
		t.Run(fmt.Sprintf("id%d/%#x", tc.id, tc.mech.Type), func(t *testing.T) {
			cert := certificate(t, m, h, tc.id)
			key := findKey(t, m, h, ckoPrivateKey, tc.id)
			sig, err := sign(m, h, tc.mech, key, data)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			verify(t, cert.PublicKey, tc.mech.Type, data, sig)
			// The same in parts.
			if err := m.SignInit(h, tc.mech, key); err != nil {
				t.Fatal(err)
			}
			if err := contextLogin(m, h, key); err != nil {
				t.Fatal(err)
			}
			m.SignUpdate(h, data[:5])
			m.SignUpdate(h, data[5:])
			sig = make([]byte, 512)
			n, err := m.SignFinal(h, sig, true)
			if err != nil {
				t.Fatalf("SignFinal: %v", err)
			}
			verify(t, cert.PublicKey, tc.mech.Type, data, sig[:n])
		})
	}
}

// TestServerRefusals: each refusal of the server surfaces as the return
// value applications understand.
func TestServerRefusals(t *testing.T) {
	r := rig.New(t)
	m := moduleFor(t, r, 10*time.Second)
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte("0000")); !errors.Is(err, ErrPINIncorrect) {
		t.Errorf("wrong vPIN: %v, want CKR_PIN_INCORRECT", err)
	}
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatalf("Login: %v", err)
	}
	key := findKey(t, m, h, ckoPrivateKey, 1)
	ecdsa := Mechanism{Type: ckmECDSASHA256}

	// Outside the delegation's window.
	r.Advance(2 * time.Hour)
	if _, err := sign(m, h, ecdsa, key, []byte("late")); !errors.Is(err, ErrFunctionRejected) {
		t.Errorf("outside the window: %v, want CKR_FUNCTION_REJECTED", err)
	}
	r.Advance(-2 * time.Hour)

	// The card leaves: a slot event tells applications, the slot shows no
	// token, and the session's token is gone.
	for {
		if _, err := m.WaitForSlotEvent(true); err != nil {
			break // drain what came before
		}
	}
	r.Pool.Remove(r.Member)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if id, err := m.WaitForSlotEvent(true); err == nil && id == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot event after the card left")
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := m.SlotInfo(1)
		if err == nil && info.Flags&ckfTokenPresent == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot 1 after the card left: flags %#x, %v; want no token", info.Flags, err)
		}
	}
	if _, err := sign(m, h, ecdsa, key, []byte("no card")); !errors.Is(err, ErrDeviceRemoved) {
		t.Errorf("card removed: %v, want CKR_DEVICE_REMOVED", err)
	}
}

// TestRevokedAndLocked: a revoked delegation is CKR_FUNCTION_REJECTED and
// shows as a slot event; wrong vPINs lock the delegation: CKR_PIN_LOCKED.
func TestRevokedAndLocked(t *testing.T) {
	r := rig.New(t)
	m := moduleFor(t, r, 10*time.Second)
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatalf("Login: %v", err)
	}
	key := findKey(t, m, h, ckoPrivateKey, 1)
	if _, err := sign(m, h, Mechanism{Type: ckmECDSASHA256}, key, []byte("before")); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := m.WaitForSlotEvent(true); err != nil {
			break // drain what the start left
		}
	}
	if !r.Server.Revoke("d1") {
		t.Fatal("Revoke failed")
	}
	got := make(chan uint64, 1)
	go func() { id, _ := m.WaitForSlotEvent(false); got <- id }()
	select {
	case id := <-got:
		if id != 1 {
			t.Errorf("slot event for %d, want 1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no slot event after the revocation")
	}
	// The server ended the login; logging in again is refused.
	if err := m.Login(h, ckuUser, []byte(testVPIN)); !errors.Is(err, ErrFunctionRejected) {
		t.Errorf("login after revocation: %v, want CKR_FUNCTION_REJECTED", err)
	}

	r.Book.Grant(policy.Delegation{ID: "d2", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 3})
	var err error
	for range 3 {
		err = m.Login(h, ckuUser, []byte("9999"))
	}
	if !errors.Is(err, ErrPINLocked) {
		t.Errorf("third wrong vPIN: %v, want CKR_PIN_LOCKED", err)
	}
	if err := m.Login(h, ckuUser, []byte(testVPIN)); !errors.Is(err, ErrPINLocked) {
		t.Errorf("right vPIN on a locked delegation: %v, want CKR_PIN_LOCKED", err)
	}
	info, err := m.TokenInfo(1)
	if err != nil || info.Flags&ckfUserPINLocked == 0 {
		t.Errorf("token flags %#x (%v), want CKF_USER_PIN_LOCKED", info.Flags, err)
	}
}

// memStore is a CatalogueStore in memory.
type memStore struct {
	mu  sync.Mutex
	cat *transport.Catalogue
}

func (s *memStore) Load() (*transport.Catalogue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cat == nil {
		return nil, errors.New("empty")
	}
	return s.cat, nil
}

func (s *memStore) Save(c *transport.Catalogue) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cat = c
	return nil
}

// storedCatalogue starts a rig and returns its client configuration and a
// store that holds the catalogue a module fetched from it.
func storedCatalogue(t testing.TB) (client.Config, *memStore) {
	t.Helper()
	r := rig.New(t)
	store := &memStore{}
	cfg := r.Config
	m := New(Options{Store: store, Connect: func(ctx context.Context) (Backend, error) { return client.Dial(ctx, cfg) }})
	if _, err := m.SlotList(false); err != nil {
		t.Fatal(err)
	}
	m.Finalize()
	if store.cat == nil {
		t.Fatal("no catalogue stored")
	}
	return cfg, store
}

// TestUnreachable: with no server answering, metadata calls are answered
// from the stored catalogue (or find no slot), and the calls that need the
// server fail with CKR_DEVICE_ERROR after the timeout, never hang.
func TestUnreachable(t *testing.T) {
	cfg, store := storedCatalogue(t)
	d := &dialRecorder{cfg: cfg}
	d.cfg.Addr = droppingServer(t)
	const timeout = 500 * time.Millisecond
	dead := func(st CatalogueStore) *Module {
		m := New(Options{Store: st, Timeout: timeout, Connect: d.connect})
		t.Cleanup(func() { m.Finalize() })
		return m
	}
	slots, err := dead(nil).SlotList(false)
	if err != nil || len(slots) != 0 {
		t.Errorf("SlotList without a stored catalogue: %v %v, want no slot", slots, err)
	}
	m := dead(store)
	slots, err = m.SlotList(true)
	if err != nil || len(slots) != 1 {
		t.Fatalf("SlotList with a stored catalogue: %v %v, want slot 1", slots, err)
	}
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); !errors.Is(err, ErrDeviceError) {
		t.Errorf("Login: %v, want CKR_DEVICE_ERROR", err)
	}
	// Never hang: every attempt to reach the server had a deadline, and
	// there were at most one per module (its start) and one per call
	// (SlotList, SlotList, Login). How long the calls take is
	// BenchmarkUnreachableSlotList's and BenchmarkUnreachableLogin's.
	got := d.attempts()
	if len(got) == 0 || len(got) > 2+3 {
		t.Errorf("%d connection attempts, want 1 to 5", len(got))
	}
	for i, dl := range got {
		if dl.IsZero() {
			t.Errorf("connection attempt %d has no deadline", i+1)
		}
	}
}

// BenchmarkUnreachableLogin measures C_Login's wait, answered
// CKR_DEVICE_ERROR, with a server that does not answer, a stored catalogue
// and a timeout of 200 ms.
func BenchmarkUnreachableLogin(b *testing.B) {
	cfg, store := storedCatalogue(b)
	d := &dialRecorder{cfg: cfg}
	d.cfg.Addr = droppingServer(b)
	for b.Loop() {
		m := New(Options{Store: store, Timeout: 200 * time.Millisecond, Connect: d.connect})
		if _, err := m.SlotList(true); err != nil {
			b.Fatal(err)
		}
		h, err := m.OpenSession(1, ckfSerialSession)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Login(h, ckuUser, []byte(testVPIN)); !errors.Is(err, ErrDeviceError) {
			b.Fatalf("Login: %v, want CKR_DEVICE_ERROR", err)
		}
		m.Finalize()
	}
	b.ReportMetric(float64(len(d.attempts()))/float64(b.N), "dials/op")
}

// countingBackend counts the logins a Backend sends.
type countingBackend struct {
	Backend
	logins atomic.Int32
}

func (c *countingBackend) Login(ctx context.Context, slot uint64, vpin []byte) (*transport.LoginResponse, error) {
	c.logins.Add(1)
	return c.Backend.Login(ctx, slot, vpin)
}

// TestSurvivesRestart: the server restarts, then loses its connections
// (every login forgotten each time) under a logged-in session; the
// session's objects keep their handles and it signs on, with the PIN-always key after a context-specific login
// too, without the application logging in again: the module did, with
// the vPIN it keeps in memory.
func TestSurvivesRestart(t *testing.T) {
	r := rig.New(t)
	cfg := r.Config
	cb := &countingBackend{}
	m := New(Options{Timeout: 10 * time.Second, Connect: func(ctx context.Context) (Backend, error) {
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		cb.Backend = c
		return cb, nil
	}})
	t.Cleanup(func() { m.Finalize() })
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatalf("Login: %v", err)
	}
	ec, rsaKey := findKey(t, m, h, ckoPrivateKey, 1), findKey(t, m, h, ckoPrivateKey, 2)
	ecCert, rsaCert := certificate(t, m, h, 1), certificate(t, m, h, 2)
	data := []byte("signed across restarts")
	ecdsaMech, rsaMech := Mechanism{Type: ckmECDSASHA256}, Mechanism{Type: ckmSHA256RSAPKCS}
	if sig, err := sign(m, h, ecdsaMech, ec, data); err != nil {
		t.Fatalf("before the restart: %v", err)
	} else {
		verify(t, ecCert.PublicKey, ckmECDSASHA256, data, sig)
	}
	for i, lose := range []func(testing.TB){r.Restart, r.DropConnections} {
		lose(t)
		sig, err := sign(m, h, ecdsaMech, ec, data)
		if err != nil {
			t.Fatalf("loss %d: ECDSA signature: %v", i+1, err)
		}
		verify(t, ecCert.PublicKey, ckmECDSASHA256, data, sig)
		if got := findKey(t, m, h, ckoPrivateKey, 1); got != ec {
			t.Errorf("loss %d: the key's handle changed from %d to %d", i+1, ec, got)
		}
		if n := cb.logins.Load(); n != int32(i+2) {
			t.Errorf("loss %d: %d logins sent, want %d (the application's and one per loss)", i+1, n, i+2)
		}
	}
	r.Restart(t)
	sig, err := sign(m, h, rsaMech, rsaKey, data) // with a context-specific login
	if err != nil {
		t.Fatalf("PIN-always key after a restart: %v", err)
	}
	verify(t, rsaCert.PublicKey, ckmSHA256RSAPKCS, data, sig)
	if info, err := m.SessionInfo(h); err != nil || info.State != cksROUser {
		t.Errorf("session after the restarts: %+v %v, want CKS_RO_USER_FUNCTIONS", info, err)
	}
}

// TestPINAlwaysAfterLogin: with the real server, the PIN-always key (PIV
// 9C) signs once after C_Login without a context-specific login, as a
// local PIV card under OpenSC does, in one request; the next signature
// needs a context-specific login.
func TestPINAlwaysAfterLogin(t *testing.T) {
	r := rig.New(t)
	cfg := r.Config
	cb := &countingBackend{}
	m := New(Options{Timeout: 10 * time.Second, Connect: func(ctx context.Context) (Backend, error) {
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		cb.Backend = c
		return cb, nil
	}})
	t.Cleanup(func() { m.Finalize() })
	h := openSession(t, m)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatalf("Login: %v", err)
	}
	key := findKey(t, m, h, ckoPrivateKey, 2)
	cert := certificate(t, m, h, 2)
	mech := Mechanism{Type: ckmSHA256RSAPKCS}
	data := []byte("one signature per PIN")
	plain := func() ([]byte, error) {
		if err := m.SignInit(h, mech, key); err != nil {
			return nil, err
		}
		sig := make([]byte, 512)
		n, err := m.Sign(h, data, sig, true)
		return sig[:n], err
	}
	sig, err := plain()
	if err != nil {
		t.Fatalf("first signature after C_Login: %v, want CKR_OK", err)
	}
	verify(t, cert.PublicKey, mech.Type, data, sig)
	if n := cb.logins.Load(); n != 1 {
		t.Errorf("%d logins, want 1: the first signature carries the login's vPIN", n)
	}
	if _, err := plain(); !errors.Is(err, ErrUserNotLoggedIn) {
		t.Errorf("second signature without a context-specific login: %v, want CKR_USER_NOT_LOGGED_IN", err)
	}
	if sig, err := sign(m, h, mech, key, data); err != nil {
		t.Errorf("after a context-specific login: %v", err)
	} else {
		verify(t, cert.PublicKey, mech.Type, data, sig)
	}
}
