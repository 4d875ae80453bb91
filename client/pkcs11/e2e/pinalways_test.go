//go:build cgo

package e2e

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// pinAlwaysWant is what an application sees, step by step, signing with
// the PIV 9C key (CKA_ALWAYS_AUTHENTICATE) of a PIV card in a local reader
// under OpenSC: the login's PIN authorizes the first signature; the next
// one wants a context-specific login. Twice: a login, two signatures;
// then a new login, a signature, one after a context-specific login and
// one without. TestOpenSCPINAlways checks the list against OpenSC and the
// simulator; TestGoMiekg against the module.
var pinAlwaysWant = []string{
	"CKA_ALWAYS_AUTHENTICATE true",
	"C_Login(CKU_USER) CKR_OK",
	"C_Sign CKR_OK",
	"C_Sign CKR_USER_NOT_LOGGED_IN",
	"C_Login(CKU_USER) CKR_OK",
	"C_Sign CKR_OK",
	"C_Login(CKU_CONTEXT_SPECIFIC) CKR_OK",
	"C_Sign CKR_OK",
	"C_Sign CKR_USER_NOT_LOGGED_IN",
}

// pinAlwaysSequence logs in to the token in slot and signs with its PIV 9C
// key (CKA_ID 02) as pinAlwaysWant lists, each signature verified against
// the certificate of the same CKA_ID; it returns what each step answered.
func pinAlwaysSequence(t *testing.T, p *pkcs11.Ctx, slot uint, pin string) []string {
	t.Helper()
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	defer p.CloseSession(s)
	var got []string
	rv := func(err error) string {
		if err == nil {
			return "CKR_OK"
		}
		var e pkcs11.Error
		if errors.As(err, &e) {
			return ckrName(uint(e))
		}
		return err.Error()
	}
	certObj := findOne(t, p, s, pkcs11.CKO_CERTIFICATE, 2)
	attrs, err := p.GetAttributeValue(s, certObj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(attrs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("PIV 9C holds a %T, want RSA", cert.PublicKey)
	}
	err = p.Login(s, pkcs11.CKU_USER, pin)
	key := findOne(t, p, s, pkcs11.CKO_PRIVATE_KEY, 2)
	a, aerr := p.GetAttributeValue(s, key, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, nil)})
	got = append(got, fmt.Sprintf("CKA_ALWAYS_AUTHENTICATE %v", aerr == nil && len(a[0].Value) == 1 && a[0].Value[0] == 1))
	got = append(got, "C_Login(CKU_USER) "+rv(err))
	doc := []byte("signed with PIV 9C")
	sum := sha256.Sum256(doc)
	sign := func(contextLogin bool) {
		if err := p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_RSA_PKCS, nil)}, key); err != nil {
			got = append(got, "C_SignInit "+rv(err))
			return
		}
		if contextLogin {
			got = append(got, "C_Login(CKU_CONTEXT_SPECIFIC) "+rv(p.Login(s, pkcs11.CKU_CONTEXT_SPECIFIC, pin)))
		}
		sig, err := p.Sign(s, doc)
		got = append(got, "C_Sign "+rv(err))
		if err == nil {
			if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
				t.Errorf("signature %d: %v", len(got), err)
			}
		}
	}
	sign(false)
	sign(false)
	// OpenSC forgets the login after the refusal (a context-specific
	// login now answers CKR_OPERATION_NOT_INITIALIZED); pscs does not.
	// Both log in again after C_Logout.
	p.Logout(s)
	got = append(got, "C_Login(CKU_USER) "+rv(p.Login(s, pkcs11.CKU_USER, pin)))
	sign(false)
	sign(true)
	sign(false)
	p.Logout(s)
	return got
}

func ckrName(rv uint) string {
	switch rv {
	case pkcs11.CKR_USER_NOT_LOGGED_IN:
		return "CKR_USER_NOT_LOGGED_IN"
	case pkcs11.CKR_OPERATION_NOT_INITIALIZED:
		return "CKR_OPERATION_NOT_INITIALIZED"
	case pkcs11.CKR_PIN_INCORRECT:
		return "CKR_PIN_INCORRECT"
	case pkcs11.CKR_USER_ALREADY_LOGGED_IN:
		return "CKR_USER_ALREADY_LOGGED_IN"
	}
	return fmt.Sprintf("CKR_%#x", rv)
}

const openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// judgePCSCD is the private pcscd of the tests with a card in a reader
// (TestOpenSCPINAlways, TestCardChangesUnderModule): libpcsclite reads
// where pcscd is once per process, so there is one per test binary,
// stopped by TestMain. Each test has its reader.
var (
	judgeOnce  sync.Once
	judgePCSCD *pcscdtest.PCSCD
	judgeErr   error
)

// The readers of judgePCSCD's tests.
const (
	readerOpenSC   = 0 // TestOpenSCPINAlways
	readerChanging = 1 // TestCardChangesUnderModule
	readerOpenPGP  = 2 // TestOpenPGPDelegate
	readerEdDSA    = 3 // TestEdDSAThroughPscsd
	readerEstEID   = 4 // TestEstEIDThroughPSCSD
	readerWarranty = 5 // TestWarrantyThroughModule
	readerPool     = 6 // TestPoolOfDifferentKeysThroughPCSCD: 6, 7 and 8
)

// plugCard plugs card into reader i of pcscd (vpcd) until the test ends.
func plugCard(t *testing.T, pcscd *pcscdtest.PCSCD, i int, card vpcd.Card) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&vpcd.Server{}).Plug(ctx, pcscd.CardAddr(i), card)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// privatePCSCD starts judgePCSCD, once per test binary.
func privatePCSCD(t *testing.T) *pcscdtest.PCSCD {
	t.Helper()
	if err := pcscdtest.Check(); err != nil {
		if os.Getenv(pcscdtest.SkipEnv) == "1" {
			t.Skipf("no private pcscd (%s=1): %v", pcscdtest.SkipEnv, err)
		}
		t.Fatalf("no private pcscd: %v (make deps, or %s=1 to skip)", err, pcscdtest.SkipEnv)
	}
	judgeOnce.Do(func() {
		judgePCSCD, judgeErr = pcscdtest.Start(context.Background(), pcscdtest.Options{Entries: 5})
	})
	if judgeErr != nil {
		t.Fatal(judgeErr)
	}
	return judgePCSCD
}

// TestOpenSCPINAlways is the reference for pinAlwaysWant: OpenSC's own
// PKCS #11 module, loaded in this process, with the PIV simulator in a
// reader of a private pcscd (vpcd), does what the list says.
func TestOpenSCPINAlways(t *testing.T) {
	if _, err := os.Stat(openscModule); err != nil {
		t.Fatalf("no %s: %s", openscModule, debianPackagesNeeded)
	}
	pcscd := privatePCSCD(t)
	card, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	plugCard(t, pcscd, readerOpenSC, card)

	conf := filepath.Join(t.TempDir(), "opensc.conf")
	// No file caching: simulated cards would share the cache.
	os.WriteFile(conf, []byte("app default {\n framework pkcs15 {\n  use_file_caching = no;\n }\n}\n"), 0o644)
	t.Setenv("OPENSC_CONF", conf)
	t.Setenv("PCSCLITE_CSOCK_NAME", pcscd.Socket)
	p := pkcs11.New(openscModule)
	if p == nil {
		t.Fatal("miekg/pkcs11 could not load OpenSC's module")
	}
	if err := p.Initialize(); err != nil {
		t.Fatalf("C_Initialize: %v", err)
	}
	defer p.Finalize()
	var slots []uint
	for deadline := time.Now().Add(60 * time.Second); len(slots) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("OpenSC sees no token within 60 s")
		}
		slots, _ = p.GetSlotList(true)
	}
	got := pinAlwaysSequence(t, p, slots[0], "123456")
	if !slices.Equal(got, pinAlwaysWant) {
		t.Errorf("OpenSC with a local PIV card:\n got %q\nwant %q", got, pinAlwaysWant)
	}
}
