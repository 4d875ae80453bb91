package token

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/pscs/pscs/transport"
)

// TestRelogin: a signature the server refuses because it forgot the login
// (it restarted) logs in again with the login's vPIN, kept in memory, and
// is sent once more: the application sees a signature. A wrong vPIN at
// that login ends the login and is never sent again; an unreachable server
// keeps it for the next call. Logout and Finalize wipe the vPIN.
func TestRelogin(t *testing.T) {
	m, f := fakeModule(t)
	h := fakeSession(t, m, true)
	sum := sha256.Sum256([]byte("data"))
	out := make([]byte, 256)
	sign := func() error {
		if err := m.SignInit(h, Mechanism{Type: ckmECDSA}, 1); err != nil {
			return err
		}
		_, err := m.Sign(h, sum[:], out, true)
		return err
	}
	logins := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.logins)
	}
	set := func(forgot bool, loginErr error) {
		f.mu.Lock()
		f.forgot, f.loginErr = forgot, loginErr
		f.mu.Unlock()
	}

	set(true, nil)
	if err := sign(); err != nil {
		t.Fatalf("signature after the server forgot the login: %v, want CKR_OK", err)
	}
	f.mu.Lock()
	if len(f.logins) != 2 || string(f.logins[1]) != "1234" || len(f.signed) != 1 {
		t.Errorf("logins %q, %d signatures; want the login's vPIN again, one signature", f.logins, len(f.signed))
	}
	f.mu.Unlock()

	// The server is unreachable when the login is replayed: the login
	// stays, and the next call replays it.
	set(true, &rvError{ErrDeviceError, context.DeadlineExceeded})
	if err := sign(); !errors.Is(err, ErrDeviceError) {
		t.Errorf("relogin to an unreachable server: %v, want CKR_DEVICE_ERROR", err)
	}
	set(true, nil)
	if err := sign(); err != nil {
		t.Errorf("signature once the server is back: %v", err)
	}

	// The vPIN is no longer right: one try, then the login is over.
	set(true, &transport.Error{Code: transport.CodeWrongPIN, Remote: true})
	before := logins()
	if err := sign(); !errors.Is(err, ErrUserNotLoggedIn) {
		t.Errorf("relogin with a vPIN the server refuses: %v, want CKR_USER_NOT_LOGGED_IN", err)
	}
	if err := sign(); !errors.Is(err, ErrUserNotLoggedIn) {
		t.Errorf("signature after the refused relogin: %v, want CKR_USER_NOT_LOGGED_IN", err)
	}
	if n := logins() - before; n != 1 {
		t.Errorf("%d logins sent with the refused vPIN, want 1", n)
	}
	if info, _ := m.SessionInfo(h); info.State != cksROPublic {
		t.Errorf("session state %d after the refused relogin, want CKS_RO_PUBLIC_SESSION", info.State)
	}
	if pin := keptPIN(m, 3); pin != nil {
		t.Errorf("vPIN %q kept after the refused relogin", pin)
	}

	// Logout and Finalize wipe it.
	set(false, nil)
	if err := m.Login(h, ckuUser, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	if pin := keptPIN(m, 3); string(pin) != "1234" {
		t.Fatalf("vPIN kept after C_Login: %q", pin)
	}
	m.Logout(h)
	if pin := keptPIN(m, 3); pin != nil {
		t.Errorf("vPIN %q kept after C_Logout", pin)
	}
	m.Login(h, ckuUser, []byte("1234"))
	m.Finalize()
	if pin := keptPIN(m, 3); pin != nil {
		t.Errorf("vPIN %q kept after C_Finalize", pin)
	}
}

// keptPIN returns the vPIN slot id keeps, or nil.
func keptPIN(m *Module, id uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slots[id].pin.bytes()
}

// TestSecret: a secret gives back what it was made of, and is empty once
// wiped.
func TestSecret(t *testing.T) {
	for _, in := range [][]byte{[]byte("1234"), make([]byte, 1<<16)} {
		s := newSecret(in)
		if got := s.bytes(); string(got) != string(in) {
			t.Errorf("secret of %d bytes gives back %d bytes", len(in), len(got))
		}
		s.wipe()
		s.wipe() // twice is fine
		if got := s.bytes(); len(got) != 0 {
			t.Errorf("wiped secret gives back %d bytes", len(got))
		}
	}
	h := heapSecret([]byte("1234"))
	b := h.b
	h.wipe()
	if string(b) != "\x00\x00\x00\x00" {
		t.Errorf("heap secret after wipe: %q", b)
	}
	var none *secret
	none.wipe()
	if none.bytes() != nil {
		t.Error("nil secret gives back bytes")
	}
}
