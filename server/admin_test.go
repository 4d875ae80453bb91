package server_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/pscs/pscs/client"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/rsc"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/server/vault"
	ptransport "github.com/pscs/pscs/transport"
)

// memStore is a server.Store and server.StateReader in memory.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) Put(kind, key string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[kind+"\x00"+key] = append([]byte(nil), v...)
	return nil
}

// snapshot copies every entry.
func (s *memStore) snapshot() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func (s *memStore) Delete(kind, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, kind+"\x00"+key)
	return nil
}

func (s *memStore) Get(kind, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[kind+"\x00"+key]
	if !ok {
		return nil, store.ErrNotFound
	}
	return v, nil
}

func (s *memStore) List(kind string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.m {
		if kd, key, _ := strings.Cut(k, "\x00"); kd == kind {
			out = append(out, key)
		}
	}
	return out, nil
}

type adminRig struct {
	sim    *pivsim.Card
	mayor  *rsc.Pool
	srv    atomic.Pointer[server.Server]
	st     *memStore
	pins   *server.VaultPINs
	book   *policy.Book
	enroll *ptransport.StaticEnrollment
	ca     *testpki.CA
	addr   string
	owner  *client.Client
	other  *client.Client // owns another card
	audit  *memAudit
}

// newAdminRig serves one card "mayor" owned by "alice" and one "ceo" owned
// by "carol", with the vault on the go-tpm-tools TPM simulator.
func newAdminRig(t *testing.T) *adminRig {
	t.Helper()
	tpmSim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpmSim.Close() })
	v, err := vault.Open(transport.FromReadWriteCloser(tpmSim), t.TempDir(), vault.WithParams(vault.Params{Time: 1, Memory: 8 << 10, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	r := &adminRig{st: &memStore{m: map[string][]byte{}}, pins: &server.VaultPINs{Vault: v}, book: policy.NewBook(nil),
		enroll: ptransport.NewStaticEnrollment(), ca: testpki.NewCA("admin CA"), audit: &memAudit{}}
	if r.sim, err = pivsim.New(pivsim.Config{Seed: []byte("admin")}); err != nil {
		t.Fatal(err)
	}
	onChange := func(int) {
		if s := r.srv.Load(); s != nil {
			s.CardChanged("mayor")
		}
	}
	mayor, ceo := rsc.NewPool("mayor", rsc.Options{OnChange: onChange}), rsc.NewPool("ceo", rsc.Options{})
	r.mayor = mayor
	t.Cleanup(mayor.Close)
	t.Cleanup(ceo.Close)
	var resets atomic.Int64
	mayor.Add(member(t, "m", countResets{Card: r.sim, N: &resets}))
	ceoSim, _ := pivsim.New(pivsim.Config{Seed: []byte("admin ceo")})
	ceo.Add(member(t, "c", countResets{Card: ceoSim, N: &resets}))
	ownCA, err := server.NewCA("pscsd CA")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{Book: r.book, Vault: r.pins, Audit: r.audit,
		Cards: []server.Card{{Name: "mayor", Slot: 1, Owner: "alice", Pool: mayor}, {Name: "ceo", Slot: 2, Owner: "carol", Pool: ceo}},
		Admin: &server.Admin{Store: r.st, Enrollment: r.enroll, Pins: r.pins, CA: ownCA}})
	r.srv.Store(srv)
	alice, carol := r.ca.Issue("alice", testpki.Options{}), r.ca.Issue("carol", testpki.Options{})
	r.enroll.Add("alice", alice.Leaf)
	r.enroll.Add("carol", carol.Leaf)
	r.addr = testrig.Serve(t, srv, r.enroll, r.ca, nil)
	r.owner = r.dial(t, alice)
	r.other = r.dial(t, carol)
	return r
}

func (r *adminRig) dial(t *testing.T, cert tls.Certificate) *client.Client {
	t.Helper()
	return testrig.Dial(t, client.Config{Addr: r.addr, Certificate: cert, RootCAs: r.ca.Pool})
}

func adminDo(t *testing.T, c *client.Client, req *ptransport.AdminRequest, sec *ptransport.AdminSecret) (*ptransport.AdminResponse, ptransport.Code) {
	t.Helper()
	var secret []byte
	if sec != nil {
		secret, _ = ptransport.Marshal(sec)
	}
	var resp ptransport.AdminResponse
	err := c.Do(ctx(t), ptransport.OpAdmin, req, secret, &resp)
	var te *ptransport.Error
	if errors.As(err, &te) {
		return nil, te.Code
	}
	if err != nil {
		t.Fatal(err)
	}
	return &resp, 0
}

func TestAdminRefusals(t *testing.T) {
	r := newAdminRig(t)
	pass := []byte("owner passphrase")
	reg := &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"}
	del := &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}}
	steps := []struct {
		name string
		c    *client.Client
		req  *ptransport.AdminRequest
		sec  *ptransport.AdminSecret
		want ptransport.Code
	}{
		{"unknown action", r.owner, &ptransport.AdminRequest{Action: "format-disk"}, nil, ptransport.CodeUnsupported},
		{"bad name", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminIssue, Name: "bob/../x"}, nil, ptransport.CodeMalformed},
		{"pscsd's own name", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminIssue, Name: "PSCSD"}, nil, ptransport.CodeMalformed},
		{"enroll a taken name", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "carol", Certificate: r.ca.Issue("carol", testpki.Options{}).Leaf.Raw}, nil, ptransport.CodeExists},
		{"register another's card", r.other, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}, ptransport.CodeNotOwner},
		{"register an unknown card", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "x"}, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}, ptransport.CodeUnknown},
		// A PIN the card does not have is refused before any card is asked.
		{"unknown PIN ID", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor", PIN: "pin2"}, &ptransport.AdminSecret{PIN: []byte("654321"), Passphrase: pass}, ptransport.CodeMalformed},
		{"short passphrase", r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: []byte("short")}, ptransport.CodeMalformed},
		{"wrong card PIN", r.owner, reg, &ptransport.AdminSecret{PIN: []byte("654321"), Passphrase: pass}, ptransport.CodePINCheck},
		// The card now has 2 tries of 3: no PIN is tried on it, not even the right one.
		{"counter not full", r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}, ptransport.CodePINCheck},
		{"delegate to an unknown identity", r.owner, del, &ptransport.AdminSecret{Passphrase: pass}, ptransport.CodeUnknown},
		{"delegate a key the card lacks", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{
			Delegate: "carol", Card: "mayor", Keys: []string{"9A"}}}, &ptransport.AdminSecret{Passphrase: pass}, ptransport.CodeMalformed},
		{"delegate a key twice", r.owner, &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{
			Delegate: "carol", Card: "mayor", Keys: []string{"9a", "9a"}}}, &ptransport.AdminSecret{Passphrase: pass}, ptransport.CodeMalformed},
	}
	for _, s := range steps {
		if _, code := adminDo(t, s.c, s.req, s.sec); code != s.want {
			t.Errorf("%s: code %d (%v), want %d (%v)", s.name, code, code, s.want, s.want)
		}
	}
	if got := r.sim.PINRetries(); got != 2 {
		t.Fatalf("card PIN tries %d, want 2: one wrong registration, then none tried", got)
	}
	// The owner verifies the right PIN at the card itself, which fills the
	// counter again; now the registration goes through.
	rsp, err := r.sim.Transmit(ctx(t), append([]byte{0x00, 0x20, 0x00, 0x80, 0x08}, "123456\xff\xff"...))
	if err != nil || len(rsp) != 2 || rsp[0] != 0x90 {
		t.Fatalf("VERIFY at the card: % X %v", rsp, err)
	}
	if _, code := adminDo(t, r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration: %v", code)
	}
	// Naming the PIV PIN is registering the default PIN: the sealed entry
	// keeps the name it had before cards had several PINs.
	regPIV := &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor", PIN: "piv-pin"}
	if _, code := adminDo(t, r.owner, regPIV, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration of piv-pin: %v", code)
	}
	if vs, _ := r.st.List(store.KindVault); !slices.Equal(vs, []string{"owner-pin:mayor"}) {
		t.Errorf("sealed entries after registering the PIV PIN twice: %q, want owner-pin:mayor", vs)
	}
	bob := r.ca.Issue("bob", testpki.Options{})
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "bob", Certificate: bob.Leaf.Raw}, nil); code != 0 {
		t.Fatalf("enroll: %v", code)
	}
	for i := range 6 {
		want := ptransport.CodeWrongPIN
		if i == 5 {
			want = ptransport.CodeLocked // even the right one now
		}
		p := []byte("not the passphrase")
		if i == 5 {
			p = pass
		}
		if _, code := adminDo(t, r.owner, del, &ptransport.AdminSecret{Passphrase: p}); code != want {
			t.Errorf("passphrase %d: %v, want %v", i, code, want)
		}
	}
	// Registering the PIN again clears the lock.
	if _, code := adminDo(t, r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration: %v", code)
	}
	if _, code := adminDo(t, r.other, &ptransport.AdminRequest{Action: ptransport.AdminDelegate,
		Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}}, &ptransport.AdminSecret{Passphrase: pass}); code != ptransport.CodeNotOwner {
		t.Errorf("delegation of another's card: %v", code)
	}
	resp, code := adminDo(t, r.owner, del, &ptransport.AdminSecret{Passphrase: pass})
	if code != 0 || resp.VPIN == "" || resp.ID == "" {
		t.Fatalf("delegation: %v %+v", code, resp)
	}
	cb := r.dial(t, bob)
	if _, err := cb.Login(ctx(t), 1, []byte(resp.VPIN)); err != nil {
		t.Fatalf("login with the new vPIN: %v", err)
	}
	if _, err := cb.Sign(ctx(t), &ptransport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1041, Data: make([]byte, 32)}); err != nil {
		t.Fatalf("sign: %v", err)
	}
	if _, code := adminDo(t, cb, &ptransport.AdminRequest{Action: ptransport.AdminList}, nil); code != ptransport.CodeNotOwner {
		t.Errorf("a delegate administering: %v", code)
	}
	if _, code := adminDo(t, r.other, &ptransport.AdminRequest{Action: ptransport.AdminRevoke, ID: resp.ID}, nil); code != ptransport.CodeNotOwner {
		t.Errorf("revocation by another owner: %v", code)
	}
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminUnlock, ID: "d-none"}, nil); code != ptransport.CodeUnknown {
		t.Errorf("unlock of an unknown delegation: %v", code)
	}
	list, _ := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminList}, nil)
	if len(list.Cards) != 1 || list.Cards[0] != "mayor" || len(list.Delegations) != 1 || list.Delegations[0].Used != 1 {
		t.Errorf("list: %+v", list)
	}
	// A second delegation beside a live one is refused: whose keys,
	// window and limits would decide bob's requests?
	second := &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor", Keys: []string{"9a"}}}
	if _, code := adminDo(t, r.owner, second, &ptransport.AdminSecret{Passphrase: pass}); code != ptransport.CodeExists {
		t.Errorf("a second live delegation: %v, want %v", code, ptransport.CodeExists)
	}
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRevoke, ID: resp.ID}, nil); code != 0 {
		t.Fatalf("revoke: %v", code)
	}
	if _, err := cb.Sign(ctx(t), &ptransport.SignRequest{Slot: 1, Key: 1, Mechanism: 0x1041, Data: make([]byte, 32)}); ptransport.CodeOf(err) != ptransport.CodeRevoked {
		t.Errorf("sign after revocation: %v", err)
	}

	// What was kept loads back: identities, the revocation, the owner's
	// sealed PIN (a new delegation can be made from it), and no real PIN.
	book, enroll, pins := policy.NewBook(nil), ptransport.NewStaticEnrollment(), &server.VaultPINs{Vault: r.pins.Vault}
	if err := server.LoadState(r.st, book, enroll, pins); err != nil {
		t.Fatal(err)
	}
	if _, ok := enroll.Certificate("bob"); !ok {
		t.Error("bob not enrolled after loading")
	}
	if _, st, ok := book.Get(resp.ID); !ok || !st.Revoked {
		t.Errorf("delegation after loading: %v, revoked %v", ok, st.Revoked)
	}
	if _, ok := pins.Entry(resp.ID); ok {
		t.Error("the revoked delegation's sealed PIN is still loaded")
	}
	if _, err := pins.Delegate("mayor", "d-new", pass, []byte("11112222")); err != nil {
		t.Errorf("a delegation from the loaded owner PIN: %v", err)
	}
	for k, v := range r.st.m {
		if bytes.Contains(v, []byte("123456")) || bytes.Contains(v, pass) || bytes.Contains(v, []byte(resp.VPIN)) {
			t.Errorf("store record %q holds a secret in clear", k)
		}
	}
}

// TestRegisterPINOnEveryCard: the PIN of a parallel remote card is checked
// on each of its cards; a card with another PIN is named, and only that
// card spends a try.
func TestRegisterPINOnEveryCard(t *testing.T) {
	r := newAdminRig(t)
	other, err := pivsim.New(pivsim.Config{Seed: []byte("admin"), PIN: "999999"})
	if err != nil {
		t.Fatal(err)
	}
	var resets atomic.Int64
	if err := r.mayor.Add(member(t, "n", countResets{Card: other, N: &resets})); err != nil {
		t.Fatal(err)
	}
	_, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"},
		&ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: []byte("owner passphrase")})
	if code != ptransport.CodePINCheck {
		t.Errorf("registration on cards with different PINs: %v, want %v", code, ptransport.CodePINCheck)
	}
	if r.sim.PINRetries() != 3 || other.PINRetries() != 2 {
		t.Errorf("PIN tries %d and %d, want 3 (right PIN) and 2 (the other card)", r.sim.PINRetries(), other.PINRetries())
	}
	// Nothing was registered.
	bob := r.ca.Issue("bob", testpki.Options{})
	adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "bob", Certificate: bob.Leaf.Raw}, nil)
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}},
		&ptransport.AdminSecret{Passphrase: []byte("owner passphrase")}); code != ptransport.CodeNoPIN {
		t.Errorf("delegation after a failed registration: %v, want %v", code, ptransport.CodeNoPIN)
	}
}

// TestCardChangeEvents: a card joining or leaving a remote card is an
// EventSlot on its delegates' connections.
func TestCardChangeEvents(t *testing.T) {
	r := newAdminRig(t)
	pass := []byte("owner passphrase")
	adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"}, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass})
	bob := r.ca.Issue("bob", testpki.Options{})
	adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "bob", Certificate: bob.Leaf.Raw}, nil)
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}},
		&ptransport.AdminSecret{Passphrase: pass}); code != 0 {
		t.Fatalf("delegate: %v", code)
	}
	cb := r.dial(t, bob)
	if _, err := cb.Hello(ctx(t)); err != nil {
		t.Fatal(err)
	}
	second, err := pivsim.New(pivsim.Config{Seed: []byte("admin")})
	if err != nil {
		t.Fatal(err)
	}
	var resets atomic.Int64
	expect := func(what string) {
		t.Helper()
		select {
		case ev := <-cb.Events():
			if ev.Kind != ptransport.EventSlot || ev.Slot != 1 {
				t.Errorf("%s: event %+v, want a slot event for slot 1", what, ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no event", what)
		}
	}
	r.mayor.Add(member(t, "second", countResets{Card: second, N: &resets}))
	expect("a card joined")
	r.mayor.Remove("second")
	expect("a card left")
}

// TestParallelWrongPassphrases: wrong owner passphrases sent at once are
// tested one at a time, so exactly five count and the rest find the card's
// registered PIN locked.
func TestParallelWrongPassphrases(t *testing.T) {
	r := newAdminRig(t)
	pass := []byte("owner passphrase")
	reg := &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"}
	if _, code := adminDo(t, r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration: %v", code)
	}
	// Naming the PIV PIN is registering the default PIN: the sealed entry
	// keeps the name it had before cards had several PINs.
	regPIV := &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor", PIN: "piv-pin"}
	if _, code := adminDo(t, r.owner, regPIV, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration of piv-pin: %v", code)
	}
	if vs, _ := r.st.List(store.KindVault); !slices.Equal(vs, []string{"owner-pin:mayor"}) {
		t.Errorf("sealed entries after registering the PIV PIN twice: %q, want owner-pin:mayor", vs)
	}
	bob := r.ca.Issue("bob", testpki.Options{})
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "bob", Certificate: bob.Leaf.Raw}, nil); code != 0 {
		t.Fatalf("enroll: %v", code)
	}
	del := &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}}
	var mu sync.Mutex
	codes := map[ptransport.Code]int{}
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, code := adminDo(t, r.owner, del, &ptransport.AdminSecret{Passphrase: []byte("not the passphrase")})
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[ptransport.CodeWrongPIN] != 5 || codes[ptransport.CodeLocked] != 7 {
		t.Fatalf("answers %v, want 5 wrong passphrases and 7 locked", codes)
	}
}

// TestNotOwnerRefusalKeepsNoPolicyState: another owner's administrations
// of alice's card and delegation (wrong passphrases past the lockout, a
// wrong card PIN, revoke, unlock, a grant) are refused as not theirs and
// change nothing of alice's: no passphrase count or lock, no try of the
// card's PIN, no delegation or store entry, and their records name and
// keep no state of alice's card or delegation (a restart reads those
// back, and carol's export shows her own records).
func TestNotOwnerRefusalKeepsNoPolicyState(t *testing.T) {
	r := newAdminRig(t)
	pass := []byte("owner passphrase")
	reg := &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"}
	if _, code := adminDo(t, r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration: %v", code)
	}
	bob := r.ca.Issue("bob", testpki.Options{})
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "bob", Certificate: bob.Leaf.Raw}, nil); code != 0 {
		t.Fatalf("enroll: %v", code)
	}
	del := func(to string) *ptransport.AdminRequest {
		return &ptransport.AdminRequest{Action: ptransport.AdminDelegate, Delegation: &ptransport.AdminDelegation{Delegate: to, Card: "mayor"}}
	}
	granted, code := adminDo(t, r.owner, del("bob"), &ptransport.AdminSecret{Passphrase: pass})
	if code != 0 {
		t.Fatalf("delegation: %v", code)
	}
	id := granted.ID
	before, _ := r.book.Mark(id, "")
	storeBefore := r.st.snapshot()
	r.audit.mu.Lock()
	n0 := len(r.audit.records)
	r.audit.mu.Unlock()

	type attempt struct {
		name string
		req  *ptransport.AdminRequest
		sec  *ptransport.AdminSecret
	}
	var attempts []attempt
	for i := range policy.MaxWrongPassphrases + 1 {
		attempts = append(attempts, attempt{fmt.Sprintf("wrong passphrase %d", i), del("carol"), &ptransport.AdminSecret{Passphrase: []byte("not the passphrase")}})
	}
	attempts = append(attempts,
		attempt{"register-pin with a wrong PIN", reg, &ptransport.AdminSecret{PIN: []byte("654321"), Passphrase: []byte("another passphrase")}},
		attempt{"register-pin with the right PIN", reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: []byte("another passphrase")}},
		attempt{"revoke", &ptransport.AdminRequest{Action: ptransport.AdminRevoke, ID: id}, nil},
		attempt{"unlock", &ptransport.AdminRequest{Action: ptransport.AdminUnlock, ID: id}, nil},
		attempt{"grant with the right passphrase", del("carol"), &ptransport.AdminSecret{Passphrase: pass}},
	)
	for _, a := range attempts {
		if _, code := adminDo(t, r.other, a.req, a.sec); code != ptransport.CodeNotOwner {
			t.Errorf("carol's %s: %v, want %v", a.name, code, ptransport.CodeNotOwner)
		}
	}

	after, _ := r.book.Mark(id, "")
	before.Time, after.Time = time.Time{}, time.Time{}
	if after != before {
		t.Errorf("alice's delegation after carol's attempts: %+v, want %+v", after, before)
	}
	if r.book.PassphraseLocked("mayor") || after.WrongPassphrase != 0 {
		t.Errorf("carol's wrong passphrases count for alice's card: locked %v, %d wrong", r.book.PassphraseLocked("mayor"), after.WrongPassphrase)
	}
	if got := r.sim.PINRetries(); got != 3 {
		t.Errorf("the card's PIN tries: %d, want 3 (carol's PIN never tried)", got)
	}
	if ds, _ := r.book.All(); len(ds) != 1 {
		t.Errorf("%d delegations, want alice's one", len(ds))
	}
	if got := r.st.snapshot(); !maps.EqualFunc(got, storeBefore, bytes.Equal) {
		t.Errorf("the store changed: %d entries, had %d", len(got), len(storeBefore))
	}
	r.audit.mu.Lock()
	recs := slices.Clone(r.audit.records[n0:])
	r.audit.mu.Unlock()
	if len(recs) != len(attempts) {
		t.Fatalf("%d records of carol's attempts, want %d", len(recs), len(attempts))
	}
	for i, rec := range recs {
		if rec.Identity != "carol" || rec.Code != ptransport.CodeNotOwner || rec.Delegation != "" || rec.Policy != nil || rec.Anchor {
			t.Errorf("record of carol's %s: identity %s, code %v, delegation %q, policy %+v, anchor %v; want carol's refusal naming nothing of alice's",
				attempts[i].name, rec.Identity, rec.Code, rec.Delegation, rec.Policy, rec.Anchor)
		}
	}
	// alice's own grant still goes through: her card is not locked.
	if resp, code := adminDo(t, r.owner, del("carol"), &ptransport.AdminSecret{Passphrase: pass}); code != 0 || resp.VPIN == "" {
		t.Errorf("alice's grant after carol's attempts: %v", code)
	}
}

// TestShownToRestoreRecords: pscsd restore writes, as pscsd, the state of
// each delegation and card it carries forward or revokes (restore:policy);
// an owner's export and console show those of their own cards only, and
// pscsd's records that name no delegation or card (anchors, checkpoints)
// to every owner.
func TestShownToRestoreRecords(t *testing.T) {
	r := newAdminRig(t)
	pass := []byte("owner passphrase")
	reg := &ptransport.AdminRequest{Action: ptransport.AdminRegisterPIN, Card: "mayor"}
	if _, code := adminDo(t, r.owner, reg, &ptransport.AdminSecret{PIN: []byte("123456"), Passphrase: pass}); code != 0 {
		t.Fatalf("registration: %v", code)
	}
	bob := r.ca.Issue("bob", testpki.Options{})
	if _, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminEnroll, Name: "bob", Certificate: bob.Leaf.Raw}, nil); code != 0 {
		t.Fatalf("enroll: %v", code)
	}
	granted, code := adminDo(t, r.owner, &ptransport.AdminRequest{Action: ptransport.AdminDelegate,
		Delegation: &ptransport.AdminDelegation{Delegate: "bob", Card: "mayor"}}, &ptransport.AdminSecret{Passphrase: pass})
	if code != 0 {
		t.Fatalf("delegation: %v", code)
	}
	srv := r.srv.Load()
	alice, carol := srv.ShownTo("alice"), srv.ShownTo("carol")
	for _, c := range []struct {
		name         string
		rec          audit.Record
		alice, carol bool
	}{
		{"restore:policy of alice's delegation", audit.Record{Identity: audit.Identity, Op: "restore:policy", Delegation: granted.ID,
			Policy: &audit.Policy{Serial: 9, Card: "mayor", Used: 3, Revoked: true}}, true, false},
		{"restore:policy of alice's card", audit.Record{Identity: audit.Identity, Op: "restore:policy", Card: "mayor-1",
			Policy: &audit.Policy{Serial: 9, Card: "mayor", CardLock: 1}}, true, false},
		{"restore:policy of a delegation no longer in the book", audit.Record{Identity: audit.Identity, Op: "restore:policy", Delegation: "gone",
			Policy: &audit.Policy{Serial: 9, Card: "mayor", Revoked: true}}, false, false},
		{"an anchor", audit.Record{Identity: audit.Identity, Op: audit.OpAnchor}, true, true},
		{"the restore", audit.Record{Identity: audit.Identity, Op: "restore", Result: []byte("restore of backup ...")}, true, true},
		{"carol's own request", audit.Record{Identity: "carol", Op: "admin:list"}, false, true},
	} {
		if got := alice(&c.rec); got != c.alice {
			t.Errorf("%s shown to alice: %v, want %v", c.name, got, c.alice)
		}
		if got := carol(&c.rec); got != c.carol {
			t.Errorf("%s shown to carol: %v, want %v", c.name, got, c.carol)
		}
	}
}
