package token

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/transport"
)

// Each test here holds one point of the PKCS #11 v2.40 base specification
// (OASIS Standard plus Errata 01), cited by section. The order of checks
// across every C entry is held by client/pkcs11/e2e's TestCheckOrder.

// TestDigestAfterUpdate: section 5.10.2, C_Digest: "C_Digest cannot be
// used to terminate a multi-part operation, and must be called after
// C_DigestInit without intervening C_DigestUpdate calls", answered with
// CKR_OPERATION_ACTIVE (one of C_Digest's return values); and "A call to
// C_Digest always terminates the active digest operation unless it returns
// CKR_BUFFER_TOO_SMALL or is a successful call ... to determine the length":
// after the refusal, C_DigestFinal finds no operation
// (CKR_OPERATION_NOT_INITIALIZED) and C_DigestInit starts a new one.
func TestDigestAfterUpdate(t *testing.T) {
	m, _ := fakeModule(t)
	h := fakeSession(t, m, false)
	sha := Mechanism{Type: ckmSHA256}
	out := make([]byte, 32)
	for _, hasOut := range []bool{false, true} { // the length query too
		if err := m.DigestInit(h, sha); err != nil {
			t.Fatal(err)
		}
		if err := m.DigestUpdate(h, []byte("part")); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Digest(h, []byte("all"), out, hasOut); !errors.Is(err, ErrOperationActive) {
			t.Errorf("C_Digest (output %v) after C_DigestUpdate: %v, want CKR_OPERATION_ACTIVE", hasOut, err)
		}
		if _, err := m.DigestFinal(h, out, true); !errors.Is(err, ErrOperationNotInitialized) {
			t.Errorf("C_DigestFinal after the refused C_Digest: %v, want CKR_OPERATION_NOT_INITIALIZED (the operation ended)", err)
		}
	}
	// A single-part digest is untouched: a length query and a buffer too
	// small leave it active (section 5.2), the call with room ends it.
	if err := m.DigestInit(h, sha); err != nil {
		t.Fatalf("C_DigestInit after the refusal: %v", err)
	}
	if n, err := m.Digest(h, []byte("abc"), nil, false); n != 32 || err != nil {
		t.Fatalf("length query: %d %v", n, err)
	}
	if _, err := m.Digest(h, []byte("abc"), make([]byte, 8), true); !errors.Is(err, ErrBufferTooSmall) {
		t.Fatalf("short buffer: %v", err)
	}
	if n, err := m.Digest(h, []byte("abc"), out, true); n != 32 || err != nil {
		t.Fatalf("C_Digest: %d %v", n, err)
	}
	if _, err := m.Digest(h, []byte("abc"), out, true); !errors.Is(err, ErrOperationNotInitialized) {
		t.Errorf("C_Digest after the digest: %v, want CKR_OPERATION_NOT_INITIALIZED", err)
	}
}

// TestObjectSize: section 5.7.4, C_GetObjectSize. The object must be one
// the session sees (CKR_OBJECT_HANDLE_INVALID otherwise: a private object
// before login, a handle that names nothing), and its size is
// CK_UNAVAILABLE_INFORMATION, consistent with the token's memory fields
// (section 3.2: ulTotalPublicMemory etc. may be CK_UNAVAILABLE_INFORMATION);
// see Module.ObjectSize for why.
func TestObjectSize(t *testing.T) {
	m, _ := fakeModule(t)
	h := fakeSession(t, m, false)
	info, err := m.TokenInfo(3)
	if err != nil {
		t.Fatal(err)
	}
	if info.FreePrivate != Unavailable {
		t.Fatalf("ulFreePrivateMemory %d: the object size below is chosen to match it", info.FreePrivate)
	}
	for _, tc := range []struct {
		name   string
		object uint64
		size   uint64
		err    error
	}{
		{"public key", 2, Unavailable, nil},
		{"certificate", 3, Unavailable, nil},
		{"private key before login", 1, 0, ErrObjectHandleInvalid},
		{"no such object", 99, 0, ErrObjectHandleInvalid},
		{"handle 0", 0, 0, ErrObjectHandleInvalid},
	} {
		size, err := m.ObjectSize(h, tc.object)
		if size != tc.size || !errors.Is(err, tc.err) && (err != nil || tc.err != nil) {
			t.Errorf("%s: %d %v, want %d %v", tc.name, size, err, tc.size, tc.err)
		}
	}
	if err := m.Login(h, ckuUser, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	if size, err := m.ObjectSize(h, 1); size != Unavailable || err != nil {
		t.Errorf("private key after login: %d %v", size, err)
	}
	if _, err := m.ObjectSize(h+100, 2); !errors.Is(err, ErrSessionHandleInvalid) {
		t.Errorf("no such session: %v, want CKR_SESSION_HANDLE_INVALID", err)
	}
}

// TestLoginSO: C_Login with CKU_SO on a token that has no security officer
// (section 5.6.7, C_Login, and the codes of section 5.1.6):
// CKR_SESSION_READ_ONLY_EXISTS while a read-only session with the token is
// open ("If the application calling C_Login has a R/O session open with
// the token, then it will be unable to log the SO into a session"), before
// anything else; then CKR_USER_ANOTHER_ALREADY_LOGGED_IN while the normal
// user is logged in; else CKR_PIN_INCORRECT. Never CKR_USER_TYPE_INVALID
// (CKU_SO is a valid CK_USER_TYPE), never a request to the server, and the
// virtual PIN's state is untouched.
func TestLoginSO(t *testing.T) {
	f := &fake{cat: testCatalogue(t), events: make(chan *transport.Event, 4)}
	cb := &countingBackend{Backend: f}
	m := New(Options{Connect: func(context.Context) (Backend, error) { return cb, nil }, Timeout: 5 * time.Second})
	t.Cleanup(func() { m.Finalize() })

	ro, err := m.OpenSession(3, ckfSerialSession)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := m.OpenSession(3, ckfSerialSession|ckfRWSession)
	if err != nil {
		t.Fatal(err)
	}
	for _, pin := range [][]byte{nil, []byte("1"), []byte("12345678"), make([]byte, 200)} {
		for _, h := range []uint64{ro, rw} {
			if err := m.Login(h, ckuSO, pin); !errors.Is(err, ErrSessionReadOnlyExists) {
				t.Errorf("SO login in session %d with a R/O session open, PIN of %d bytes: %v, want CKR_SESSION_READ_ONLY_EXISTS", h, len(pin), err)
			}
		}
	}
	if err := m.CloseSession(ro); err != nil {
		t.Fatal(err)
	}
	if err := m.Login(rw, ckuSO, []byte("12345678")); !errors.Is(err, ErrPINIncorrect) {
		t.Errorf("SO login with only R/W sessions: %v, want CKR_PIN_INCORRECT", err)
	}
	if info, _ := m.SessionInfo(rw); info.State != cksRWPublic {
		t.Errorf("session state %d after the refused SO login, want CKS_RW_PUBLIC_SESSION", info.State)
	}
	if flags := tokenFlags(t, m, 3); flags&(ckfUserPINCountLow|ckfUserPINFinalTry|ckfUserPINLocked) != 0 {
		t.Errorf("token flags %#x after a refused SO login: the user's PIN state changed", flags)
	}
	if err := m.Login(rw, ckuUser, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	if err := m.Login(rw, ckuSO, []byte("12345678")); !errors.Is(err, ErrUserAnotherAlreadyLoggedIn) {
		t.Errorf("SO login while the user is logged in: %v, want CKR_USER_ANOTHER_ALREADY_LOGGED_IN", err)
	}
	ro2, err := m.OpenSession(3, ckfSerialSession)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Login(rw, ckuSO, nil); !errors.Is(err, ErrSessionReadOnlyExists) {
		t.Errorf("SO login while logged in with a R/O session open: %v, want CKR_SESSION_READ_ONLY_EXISTS first", err)
	}
	m.CloseSession(ro2)
	if n := cb.logins.Load(); n != 1 {
		t.Errorf("%d logins reached the server, want 1 (the user's)", n)
	}
}

func tokenFlags(t *testing.T, m *Module, slot uint64) uint64 {
	t.Helper()
	info, err := m.TokenInfo(slot)
	if err != nil {
		t.Fatal(err)
	}
	return info.Flags
}

// TestPINFlags: section 3.2, CK_TOKEN_INFO's flags follow the delegation's
// virtual PIN on a real server whose delegation locks after three wrong
// vPINs in a row: CKF_USER_PIN_COUNT_LOW "An incorrect user login PIN has
// been entered at least once since the last successful authentication",
// CKF_USER_PIN_FINAL_TRY "Supplying an incorrect user PIN will cause it to
// become locked", CKF_USER_PIN_LOCKED "The user PIN has been locked". The
// server says how many tries are left (transport.Response field 7).
func TestPINFlags(t *testing.T) {
	r := rig.New(t) // delegation d1: MaxWrongVPIN 3
	m := moduleFor(t, r, 10*time.Second)
	h := openSession(t, m)
	const pinFlags = ckfUserPINCountLow | ckfUserPINFinalTry | ckfUserPINLocked
	check := func(when string, want uint64) {
		t.Helper()
		if got := tokenFlags(t, m, 1) & pinFlags; got != want {
			t.Errorf("%s: PIN flags %#x, want %#x", when, got, want)
		}
	}
	check("at first", 0)
	if err := m.Login(h, ckuUser, []byte("0000")); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("wrong vPIN: %v", err)
	}
	check("after one wrong vPIN of three", ckfUserPINCountLow)
	if err := m.Login(h, ckuUser, []byte("0000")); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("wrong vPIN: %v", err)
	}
	check("after two wrong vPINs of three", ckfUserPINCountLow|ckfUserPINFinalTry)
	if err := m.Login(h, ckuUser, []byte(testVPIN)); err != nil {
		t.Fatal(err)
	}
	check("after the right vPIN", 0)
	if err := m.Logout(h); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := m.Login(h, ckuUser, []byte("0000"))
		if want := map[bool]RV{true: ErrPINLocked, false: ErrPINIncorrect}[i == 2]; !errors.Is(err, want) {
			t.Fatalf("wrong vPIN %d: %v, want %v", i+1, err, want)
		}
	}
	check("after three wrong vPINs", ckfUserPINLocked)

	// On the wire: the refusal carries the tries left.
	r.Book.Unlock("d1")
	c, err := client.Dial(context.Background(), r.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for want := uint32(2); want >= 1; want-- {
		_, err := c.Login(ctx, 1, []byte("0000"))
		te, ok := errors.AsType[*transport.Error](err)
		if !ok || te.Code != transport.CodeWrongPIN || te.TriesLeft != want {
			t.Errorf("wrong vPIN: %v, want code %d with %d tries left", err, transport.CodeWrongPIN, want)
		}
	}
}

// droppingServer is a UDP socket on loopback that reads and drops every
// packet: a server that does not answer.
func droppingServer(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return pc.LocalAddr().String()
}

// dialRecorder is a Connect that dials a real client and records the
// deadline of every attempt.
type dialRecorder struct {
	cfg       client.Config
	mu        sync.Mutex
	deadlines []time.Time
}

func (d *dialRecorder) connect(ctx context.Context) (Backend, error) {
	dl, _ := ctx.Deadline()
	d.mu.Lock()
	d.deadlines = append(d.deadlines, dl)
	d.mu.Unlock()
	return client.Dial(ctx, d.cfg)
}

func (d *dialRecorder) attempts() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.deadlines...)
}

// TestUnreachableOneTimeout: with a server that does not answer and no
// stored catalogue, C_GetSlotList waits for one timeout, not two: the
// connection the module starts with is the only attempt, and it has a
// deadline. (Before, a call whose wait ended just before the background
// attempt had recorded its failure started a second attempt with a
// timeout of its own: 2 × PSCS_TIMEOUT.) The structure is asserted, not
// the time; BenchmarkUnreachableSlotList measures it.
func TestUnreachableOneTimeout(t *testing.T) {
	r := rig.New(t)
	d := &dialRecorder{cfg: r.Config}
	d.cfg.Addr = droppingServer(t)
	const timeout = time.Second
	for _, tokenPresent := range []bool{false, true} {
		before := len(d.attempts())
		m := New(Options{Timeout: timeout, Connect: d.connect})
		start := time.Now() // the call; the module's own attempt began before
		slots, err := m.SlotList(tokenPresent)
		if err != nil || len(slots) != 0 {
			t.Errorf("SlotList: %v %v, want no slot", slots, err)
		}
		// A second call within the five seconds after a failed attempt
		// tries nothing again.
		if _, err := m.SlotList(false); err != nil {
			t.Error(err)
		}
		m.Finalize()
		got := d.attempts()[before:]
		if len(got) != 1 {
			t.Errorf("%d connection attempts, want 1", len(got))
		}
		for _, dl := range got {
			if dl.IsZero() || dl.Sub(start) > 2*timeout {
				t.Errorf("an attempt's deadline is %v after the call began: not bounded by the timeout", dl.Sub(start))
			}
		}
	}
}

// BenchmarkUnreachableSlotList measures C_GetSlotList's wait with a server
// that does not answer, no stored catalogue and a timeout of 200 ms.
func BenchmarkUnreachableSlotList(b *testing.B) {
	r := rig.New(b)
	d := &dialRecorder{cfg: r.Config}
	d.cfg.Addr = droppingServer(b)
	const timeout = 200 * time.Millisecond
	for b.Loop() {
		m := New(Options{Timeout: timeout, Connect: d.connect})
		m.SlotList(false)
		m.Finalize()
	}
	b.ReportMetric(float64(len(d.attempts()))/float64(b.N), "dials/op")
}

// TestPINFlagsContextSpecific: a virtual PIN given with a signature (a
// CKA_ALWAYS_AUTHENTICATE key's context-specific login) counts like one
// given to C_Login: the server's wrong-PIN answer with one try left sets
// CKF_USER_PIN_COUNT_LOW and CKF_USER_PIN_FINAL_TRY (section 3.2), and a
// right one clears them.
func TestPINFlagsContextSpecific(t *testing.T) {
	f := &fake{cat: testCatalogue(t), events: make(chan *transport.Event, 4)}
	f.cat.Slots[0].Objects[3].Attributes[ckaAlwaysAuth] = true
	m := New(Options{Connect: func(context.Context) (Backend, error) { return f, nil }, Timeout: 5 * time.Second})
	t.Cleanup(func() { m.Finalize() })
	h := fakeSession(t, m, true)
	out := make([]byte, 256)
	sign := func(pin string) error {
		if err := m.SignInit(h, Mechanism{Type: ckmSHA256RSAPKCS}, 4); err != nil {
			t.Fatal(err)
		}
		if err := m.Login(h, ckuContextSpecific, []byte(pin)); err != nil {
			t.Fatalf("context-specific login: %v", err)
		}
		_, err := m.Sign(h, []byte("data"), out, true)
		return err
	}
	if err := sign("1234"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.err = &transport.Error{Code: transport.CodeWrongPIN, TriesLeft: 1, Remote: true}
	f.mu.Unlock()
	if err := sign("0000"); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("signature with a wrong vPIN: %v", err)
	}
	const both = ckfUserPINCountLow | ckfUserPINFinalTry
	if got := tokenFlags(t, m, 3) & (both | ckfUserPINLocked); got != both {
		t.Errorf("after a wrong vPIN with one try left: PIN flags %#x, want %#x", got, uint64(both))
	}
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	if err := sign("1234"); err != nil {
		t.Fatal(err)
	}
	if got := tokenFlags(t, m, 3) & (both | ckfUserPINLocked); got != 0 {
		t.Errorf("after a right vPIN: PIN flags %#x, want none", got)
	}
}
