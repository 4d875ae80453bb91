package token

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pscs/pscs/transport"
)

// fake is a Backend that records the signature requests and answers them
// with a fixed signature.
type fake struct {
	mu     sync.Mutex
	cat    *transport.Catalogue
	signed []*transport.SignRequest
	pins   [][]byte // the virtual PINs sent with signatures, in order
	err    error    // returned by Login and Sign
	events chan *transport.Event
	// forgot makes signatures CodeNotLoggedIn until the next login, as a
	// server that restarted; loginErr is then the next login's answer.
	forgot   bool
	loginErr error
	logins   [][]byte // the virtual PINs of the logins, in order
	// sigSize, when not zero, is the length of every signature (a key
	// that changed on the card).
	sigSize int
	// hello, when not nil, receives a channel at each Hello, which
	// answers once the test closes it.
	hello chan chan struct{}
}

func (f *fake) Hello(context.Context) (*transport.HelloResponse, error) {
	f.mu.Lock()
	gate := f.hello
	f.mu.Unlock()
	if gate != nil {
		release := make(chan struct{})
		gate <- release
		<-release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &transport.HelloResponse{Catalogue: f.cat}, nil
}

func (f *fake) Login(_ context.Context, _ uint64, vpin []byte) (*transport.LoginResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins = append(f.logins, append([]byte(nil), vpin...))
	if f.loginErr != nil {
		return nil, f.loginErr
	}
	f.forgot = false
	return &transport.LoginResponse{}, f.err
}

func (f *fake) Sign(_ context.Context, req *transport.SignRequest) (*transport.SignResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.forgot {
		return nil, &transport.Error{Code: transport.CodeNotLoggedIn, Remote: true}
	}
	f.signed = append(f.signed, req)
	size := 64
	if req.Mechanism == ckmRSAPKCS || req.Mechanism == ckmRSAPKCSPSS {
		size = 128
	}
	if f.sigSize != 0 {
		size = f.sigSize
	}
	return &transport.SignResponse{Signature: bytes.Repeat([]byte{7}, size)}, nil
}

func (f *fake) SignWithPIN(ctx context.Context, req *transport.SignRequest, vpin []byte) (*transport.SignResponse, error) {
	f.mu.Lock()
	f.pins = append(f.pins, append([]byte(nil), vpin...))
	f.mu.Unlock()
	return f.Sign(ctx, req)
}

func (f *fake) Logout(context.Context, uint64) error { return nil }
func (f *fake) Events() <-chan *transport.Event      { return f.events }
func (f *fake) Close() error                         { return nil }

// testCatalogue has one slot with a P-256 key (with certificate) and a
// 1024-bit RSA key, objects laid out as pscsd lays them out.
func testCatalogue(t *testing.T) *transport.Catalogue {
	t.Helper()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(5), Subject: pkix.Name{CommonName: "key one"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ec.Public(), ec)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	params, _ := asn1.Marshal(oidP256)
	raw, _ := ec.PublicKey.Bytes()
	point, _ := asn1.Marshal(raw)
	common := func(class uint64, id byte) map[uint64]any {
		return map[uint64]any{ckaClass: class, ckaToken: true, ckaID: []byte{id}, ckaLabel: "key"}
	}
	priv1 := common(ckoPrivateKey, 1)
	priv1[ckaPrivate], priv1[ckaSign], priv1[ckaKeyType], priv1[ckaECParams] = true, true, uint64(ckkEC), params
	pub1 := common(ckoPublicKey, 1)
	pub1[ckaKeyType], pub1[ckaECParams], pub1[ckaECPoint] = uint64(ckkEC), params, point
	cert1 := common(ckoCert, 1)
	cert1[ckaValue], cert1[ckaSubject] = der, cert.RawSubject
	priv2 := common(ckoPrivateKey, 2)
	priv2[ckaPrivate], priv2[ckaSign], priv2[ckaKeyType] = true, true, uint64(ckkRSA)
	priv2[ckaModulus], priv2[ckaPublicExponent] = rs.N.Bytes(), big.NewInt(int64(rs.E)).Bytes()
	return &transport.Catalogue{Tag: []byte{1}, Slots: []transport.Slot{{
		ID: 3, Present: true, Token: transport.TokenInfo{Label: "card", Flags: ckfLoginRequired},
		Objects: []transport.Object{{Handle: 1, Attributes: priv1}, {Handle: 2, Attributes: pub1},
			{Handle: 3, Attributes: cert1}, {Handle: 4, Attributes: priv2}},
		Mechanisms: []transport.Mechanism{{Type: ckmECDSA, Flags: ckfSign}, {Type: ckmRSAPKCS, Flags: ckfSign},
			{Type: ckmRSAPKCSPSS, Flags: ckfSign}},
	}}}
}

func fakeModule(t *testing.T) (*Module, *fake) {
	t.Helper()
	f := &fake{cat: testCatalogue(t), events: make(chan *transport.Event, 4)}
	m := New(Options{Connect: func(context.Context) (Backend, error) { return f, nil }, Timeout: 5 * time.Second})
	t.Cleanup(func() { m.Finalize() })
	return m, f
}

func fakeSession(t *testing.T, m *Module, login bool) uint64 {
	t.Helper()
	h, err := m.OpenSession(3, ckfSerialSession)
	if err != nil {
		t.Fatal(err)
	}
	if login {
		if err := m.Login(h, ckuUser, []byte("1234")); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestAttributes(t *testing.T) {
	m, _ := fakeModule(t)
	h := fakeSession(t, m, false)
	// Before login the private keys are hidden.
	if err := m.FindObjectsInit(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.FindObjectsInit(h, nil); !errors.Is(err, ErrOperationActive) {
		t.Errorf("second FindObjectsInit: %v", err)
	}
	hs, _ := m.FindObjects(h, 100)
	m.FindObjectsFinal(h)
	if len(hs) != 2 {
		t.Errorf("found %v before login, want the public key and the certificate", hs)
	}
	q := []AttrQuery{{Type: ckaSubject}, {Type: ckaLabel, Buf: make([]byte, 1), HasBuf: true},
		{Type: 0x7777}, {Type: ckaPublicKeyInfo}, {Type: ckaKeyType, Buf: make([]byte, 8), HasBuf: true}}
	err := m.GetAttributeValue(h, 2, q)
	if !errors.Is(err, ErrAttributeTypeInvalid) && !errors.Is(err, ErrBufferTooSmall) {
		t.Errorf("GetAttributeValue: %v", err)
	}
	want := []uint64{uint64(len(testCatalogueSubject(t, m))), Unavailable, Unavailable, 91, 8}
	for i, w := range want {
		if q[i].Len != w {
			t.Errorf("attribute %#x: length %d, want %d", q[i].Type, q[i].Len, w)
		}
	}
	if v, _ := ULong(q[4].Buf); v != ckkEC {
		t.Errorf("CKA_KEY_TYPE %d, want CKK_EC", v)
	}
	if err := m.GetAttributeValue(h, 1, q); !errors.Is(err, ErrObjectHandleInvalid) {
		t.Errorf("private key before login: %v", err)
	}
	if err := m.Login(h, ckuUser, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	q = []AttrQuery{{Type: ckaValue}, {Type: ckaSign}, {Type: ckaAlwaysAuth}}
	if err := m.GetAttributeValue(h, 1, q); !errors.Is(err, ErrAttributeSensitive) {
		t.Errorf("CKA_VALUE of a private key: %v", err)
	}
	if q[0].Len != Unavailable || q[1].Len != 1 || q[2].Len != 1 {
		t.Errorf("lengths %d %d %d", q[0].Len, q[1].Len, q[2].Len)
	}
}

func testCatalogueSubject(t *testing.T, m *Module) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slots[3].objects[1].attrs[ckaSubject]
}

// TestSignInputs: hashing mechanisms are computed here and the server gets
// the raw mechanism with the digest (ECDSA), the DigestInfo (RSA PKCS #1)
// or the digest (PSS).
func TestSignInputs(t *testing.T) {
	m, f := fakeModule(t)
	h := fakeSession(t, m, true)
	data := []byte("data")
	sum := sha256.Sum256(data)
	info := append(append([]byte{}, digestInfoPrefix[5]...), sum[:]...) // crypto.SHA256
	for _, tc := range []struct {
		mech       Mechanism
		key        uint64
		data       []byte
		wantMech   uint64
		wantData   []byte
		wantSigLen int
	}{
		{Mechanism{Type: ckmECDSASHA256}, 1, data, ckmECDSA, sum[:], 64},
		{Mechanism{Type: ckmECDSA}, 1, sum[:], ckmECDSA, sum[:], 64},
		{Mechanism{Type: ckmSHA256RSAPKCS}, 4, data, ckmRSAPKCS, info, 128},
		{Mechanism{Type: ckmRSAPKCS}, 4, info, ckmRSAPKCS, info, 128},
		{Mechanism{Type: ckmSHA256RSAPKCSPSS, Param: ulongs(ckmSHA256, ckgMGF1SHA256, 32)}, 4, data, ckmRSAPKCSPSS, sum[:], 128},
		{Mechanism{Type: ckmRSAPKCSPSS, Param: ulongs(ckmSHA256, ckgMGF1SHA256, 32)}, 4, sum[:], ckmRSAPKCSPSS, sum[:], 128},
	} {
		f.signed = nil
		if err := m.SignInit(h, tc.mech, tc.key); err != nil {
			t.Fatalf("%#x: SignInit: %v", tc.mech.Type, err)
		}
		n, err := m.Sign(h, tc.data, nil, false)
		if err != nil || n != tc.wantSigLen {
			t.Errorf("%#x: length query %d %v, want %d", tc.mech.Type, n, err, tc.wantSigLen)
		}
		small := make([]byte, 3)
		if n, err := m.Sign(h, tc.data, small, true); !errors.Is(err, ErrBufferTooSmall) || n != tc.wantSigLen {
			t.Errorf("%#x: small buffer: %d %v", tc.mech.Type, n, err)
		}
		out := make([]byte, 512)
		if n, err = m.Sign(h, tc.data, out, true); err != nil || n != tc.wantSigLen {
			t.Fatalf("%#x: Sign: %d %v", tc.mech.Type, n, err)
		}
		if len(f.signed) != 1 || f.signed[0].Mechanism != tc.wantMech || !bytes.Equal(f.signed[0].Data, tc.wantData) {
			t.Errorf("%#x: sent %+v, want mechanism %#x data %x", tc.mech.Type, f.signed, tc.wantMech, tc.wantData)
		}
		if _, err := m.Sign(h, tc.data, out, true); !errors.Is(err, ErrOperationNotInitialized) {
			t.Errorf("%#x: the operation did not end: %v", tc.mech.Type, err)
		}
	}
	for _, tc := range []struct {
		mech Mechanism
		key  uint64
		want error
	}{
		{Mechanism{Type: ckmECDSASHA256}, 4, ErrKeyTypeInconsistent},
		{Mechanism{Type: ckmSHA256RSAPKCS}, 1, ErrKeyTypeInconsistent},
		{Mechanism{Type: 0x9999}, 1, ErrMechanismInvalid},
		{Mechanism{Type: ckmECDSA}, 2, ErrKeyTypeInconsistent},
		{Mechanism{Type: ckmRSAPKCSPSS}, 4, ErrMechanismParamInvalid},
		{Mechanism{Type: ckmSHA256RSAPKCSPSS, Param: ulongs(ckmSHA256, ckgMGF1SHA256, 20)}, 4, ErrMechanismParamInvalid},
		{Mechanism{Type: ckmSHA384RSAPKCSPSS, Param: ulongs(ckmSHA256, ckgMGF1SHA256, 32)}, 4, ErrMechanismParamInvalid},
		{Mechanism{Type: ckmECDSA}, 77, ErrKeyHandleInvalid},
	} {
		if err := m.SignInit(h, tc.mech, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("SignInit(%#x, key %d): %v, want %v", tc.mech.Type, tc.key, err, tc.want)
			m.mu.Lock()
			for _, s := range m.sessions {
				s.sign = nil
			}
			m.mu.Unlock()
		}
	}
}

func TestDigestAndRandom(t *testing.T) {
	m, _ := fakeModule(t)
	h := fakeSession(t, m, false)
	if err := m.DigestInit(h, Mechanism{Type: ckmSHA256}); err != nil {
		t.Fatal(err)
	}
	m.DigestUpdate(h, []byte("ab"))
	m.DigestUpdate(h, []byte("c"))
	if n, err := m.DigestFinal(h, nil, false); n != 32 || err != nil {
		t.Errorf("length query: %d %v", n, err)
	}
	out := make([]byte, 32)
	m.DigestFinal(h, out, true)
	if want := sha256.Sum256([]byte("abc")); !bytes.Equal(out, want[:]) {
		t.Errorf("digest %x, want %x", out, want)
	}
	buf := make([]byte, 32)
	if err := m.GenerateRandom(h, buf); err != nil || bytes.Equal(buf, make([]byte, 32)) {
		t.Errorf("GenerateRandom: %v %x", err, buf)
	}
}

func TestRemoteErrors(t *testing.T) {
	for code, want := range map[transport.Code]RV{
		transport.CodeWrongPIN: ErrPINIncorrect, transport.CodeLocked: ErrPINLocked,
		transport.CodeRevoked: ErrFunctionRejected, transport.CodeOutsideWindow: ErrFunctionRejected,
		transport.CodeLimitReached: ErrFunctionRejected, transport.CodeDenied: ErrFunctionRejected,
		transport.CodeCardUnavailable: ErrDeviceRemoved, transport.CodeNotLoggedIn: ErrUserNotLoggedIn,
		transport.CodeNoSuchKey: ErrKeyHandleInvalid, transport.CodeKeyGone: ErrKeyHandleInvalid, transport.CodeInternal: ErrDeviceError,
		transport.CodeNotEnrolled: ErrDeviceError,
	} {
		if got := RVOf(remoteError(&transport.Error{Code: code}, true)); got != want {
			t.Errorf("%v: %v, want %v", code, got, want)
		}
	}
	if got := RVOf(remoteError(context.DeadlineExceeded, true)); got != ErrDeviceError {
		t.Errorf("deadline: %v", got)
	}
	if got := RVOf(remoteError(&transport.Error{Code: transport.CodeCardUnavailable}, false)); got != ErrTokenNotPresent {
		t.Errorf("card gone outside a session: %v", got)
	}
}

// TestSlotEvents: a token that goes away is an event; its sessions end.
func TestSlotEvents(t *testing.T) {
	m, f := fakeModule(t)
	h := fakeSession(t, m, true)
	if _, err := m.WaitForSlotEvent(true); !errors.Is(err, ErrNoEvent) {
		// The first catalogue is not an event for a module that had none.
		if _, err := m.WaitForSlotEvent(true); !errors.Is(err, ErrNoEvent) {
			t.Errorf("WaitForSlotEvent: %v, want CKR_NO_EVENT", err)
		}
	}
	cat := *f.cat
	cat.Tag = []byte{2}
	cat.Slots = append([]transport.Slot{}, cat.Slots...)
	cat.Slots[0].Present = false
	f.mu.Lock()
	f.cat = &cat
	f.mu.Unlock()
	got := make(chan uint64)
	go func() { id, _ := m.WaitForSlotEvent(false); got <- id }()
	f.events <- &transport.Event{Kind: transport.EventSlot, Slot: 3}
	if id := <-got; id != 3 {
		t.Errorf("event for slot %d, want 3", id)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ids, _ := m.SlotList(true); len(ids) == 0 {
			break
		}
	}
	if ids, _ := m.SlotList(true); len(ids) != 0 {
		t.Errorf("slots with a token: %v, want none", ids)
	}
	if ids, _ := m.SlotList(false); len(ids) != 1 {
		t.Errorf("slots: %v, want slot 3 without its token", ids)
	}
	if _, err := m.SessionInfo(h); !errors.Is(err, ErrDeviceRemoved) {
		t.Errorf("session of a removed token: %v", err)
	}
	if err := m.CloseSession(h); err != nil {
		t.Errorf("CloseSession: %v", err)
	}
	m.Finalize()
	if _, err := m.WaitForSlotEvent(false); !errors.Is(err, ErrNotInitialized) {
		t.Errorf("after Finalize: %v", err)
	}
}

// TestFileStore: the catalogue survives a process in a 0600 file, and a new
// module answers slot calls from it before the server says anything.
func TestFileStore(t *testing.T) {
	st := FileStore{Path: filepath.Join(t.TempDir(), "cache", "catalogue")}
	cat := testCatalogue(t)
	if err := st.Save(cat); err != nil {
		t.Fatal(err)
	}
	m := New(Options{Store: st, Connect: func(ctx context.Context) (Backend, error) {
		<-ctx.Done() // a server that never answers
		return nil, ctx.Err()
	}})
	defer m.Finalize()
	ids, err := m.SlotList(true)
	if err != nil || len(ids) != 1 || ids[0] != 3 {
		t.Errorf("SlotList from the stored catalogue: %v %v", ids, err)
	}
	if fi, err := os.Stat(st.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file: %v %v, want mode 0600", fi, err)
	}
}

// TestAlwaysAuthenticate: a key with CKA_ALWAYS_AUTHENTICATE signs once
// on the strength of C_Login, as a local PIV card under OpenSC does, then
// only after a context-specific login, each time; neither costs a round
// trip of its own: the PIN goes with the signature request, then is
// forgotten by the operation.
func TestAlwaysAuthenticate(t *testing.T) {
	f := &fake{cat: testCatalogue(t), events: make(chan *transport.Event, 4)}
	f.cat.Slots[0].Objects[3].Attributes[ckaAlwaysAuth] = true
	m := New(Options{Connect: func(context.Context) (Backend, error) { return f, nil }, Timeout: 5 * time.Second})
	t.Cleanup(func() { m.Finalize() })
	h := fakeSession(t, m, true)
	sum := sha256.Sum256([]byte("data"))
	out := make([]byte, 256)
	sign := func(contextPIN string) error {
		if err := m.SignInit(h, Mechanism{Type: ckmSHA256RSAPKCS}, 4); err != nil {
			t.Fatal(err)
		}
		if contextPIN != "" {
			if err := m.Login(h, ckuContextSpecific, []byte(contextPIN)); err != nil {
				t.Fatalf("context-specific login: %v", err)
			}
		}
		_, err := m.Sign(h, sum[:], out, true)
		return err
	}
	if err := sign(""); err != nil {
		t.Errorf("first signature after C_Login without a context-specific login: %v, want CKR_OK", err)
	}
	if err := sign(""); err != ErrUserNotLoggedIn {
		t.Errorf("second signature without a context-specific login: %v, want CKR_USER_NOT_LOGGED_IN", err)
	}
	if err := sign("5678"); err != nil {
		t.Fatalf("signature after a context-specific login: %v", err)
	}
	if err := sign(""); err != ErrUserNotLoggedIn {
		t.Errorf("signature after one with a context-specific login, without a new one: %v", err)
	}
	f.mu.Lock()
	pins, signed := f.pins, len(f.signed)
	f.mu.Unlock()
	if len(pins) != 2 || string(pins[0]) != "1234" || string(pins[1]) != "5678" || signed != 2 { // before the parts above
		t.Errorf("PINs sent with signatures %q (%d signatures), want the login's, then the context PIN", pins, signed)
	}
	// A new login authorizes one more.
	if err := m.Logout(h); err != nil {
		t.Fatal(err)
	}
	if err := m.Login(h, ckuUser, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	if err := sign(""); err != nil {
		t.Errorf("first signature after a new C_Login: %v, want CKR_OK", err)
	}
	if err := sign(""); err != ErrUserNotLoggedIn {
		t.Errorf("second signature after a new C_Login: %v, want CKR_USER_NOT_LOGGED_IN", err)
	}
	// An operation left without its context-specific login (OpenSSH's
	// agent does that) is replaced by the next SignInit; one that took
	// data is not.
	if err := m.SignInit(h, Mechanism{Type: ckmSHA256RSAPKCS}, 4); err != nil {
		t.Fatal(err)
	}
	if err := m.SignInit(h, Mechanism{Type: ckmSHA256RSAPKCS}, 4); err != nil {
		t.Errorf("SignInit over an operation that took no data: %v", err)
	}
	m.SignUpdate(h, []byte("part"))
	if err := m.SignInit(h, Mechanism{Type: ckmECDSA}, 1); err != ErrOperationActive {
		t.Errorf("SignInit over an operation in parts: %v, want CKR_OPERATION_ACTIVE", err)
	}
	m.Login(h, ckuContextSpecific, []byte("5678"))
	m.SignFinal(h, out, true)
	// Keys without the attribute sign after the session login alone.
	if err := m.SignInit(h, Mechanism{Type: ckmECDSA}, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Sign(h, sum[:], out, true); err != nil {
		t.Errorf("ordinary key: %v", err)
	}
}

// TestLateConnection: when the first connection fails, the one a later
// call makes follows the server's events all the same.
func TestLateConnection(t *testing.T) {
	f := &fake{cat: testCatalogue(t), events: make(chan *transport.Event, 4)}
	var calls atomic.Int32
	store := FileStore{Path: filepath.Join(t.TempDir(), "catalogue")}
	if err := store.Save(f.cat); err != nil {
		t.Fatal(err)
	}
	m := New(Options{Store: store, Timeout: 5 * time.Second, Connect: func(context.Context) (Backend, error) {
		if calls.Add(1) == 1 {
			return nil, errors.New("no network yet")
		}
		return f, nil
	}})
	t.Cleanup(func() { m.Finalize() })
	fakeSession(t, m, true) // the login connects
	for {
		if _, err := m.WaitForSlotEvent(true); err != nil {
			break
		}
	}
	f.events <- &transport.Event{Kind: transport.EventRevoked, Slot: 3}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if id, err := m.WaitForSlotEvent(true); err == nil && id == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot event from the connection a login made")
		}
	}
}

// TestPINHandling: a PIN outside the token's lengths is refused without
// a request; a context-specific PIN is wiped when its session closes.
func TestPINHandling(t *testing.T) {
	f := &fake{cat: testCatalogue(t), events: make(chan *transport.Event, 4)}
	f.cat.Slots[0].Token.MinPIN, f.cat.Slots[0].Token.MaxPIN = 4, 8
	f.cat.Slots[0].Objects[3].Attributes[ckaAlwaysAuth] = true
	m := New(Options{Connect: func(context.Context) (Backend, error) { return f, nil }, Timeout: 5 * time.Second})
	t.Cleanup(func() { m.Finalize() })
	h := fakeSession(t, m, false)
	for _, pin := range []string{"", "1", "123456789"} {
		if err := m.Login(h, ckuUser, []byte(pin)); err != ErrPINLenRange {
			t.Errorf("PIN of %d bytes: %v, want CKR_PIN_LEN_RANGE", len(pin), err)
		}
	}
	if err := m.Login(h, ckuUser, []byte("1234")); err != nil {
		t.Fatal(err)
	}
	if err := m.SignInit(h, Mechanism{Type: ckmSHA256RSAPKCS}, 4); err != nil {
		t.Fatal(err)
	}
	if err := m.Login(h, ckuContextSpecific, []byte("5678")); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	pin := m.sessions[h].sign.pin
	m.mu.Unlock()
	if err := m.CloseSession(h); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pin, make([]byte, len(pin))) {
		t.Errorf("the context-specific PIN after the session closed: %q", pin)
	}
}
