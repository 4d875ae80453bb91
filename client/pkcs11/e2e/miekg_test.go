//go:build cgo

package e2e

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pscs/pscs/internal/netsim"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestGoMiekg loads the module into this process through
// github.com/miekg/pkcs11 (a second Go runtime in the process) and signs
// from 32 goroutines at once against pscsd --demo, each signature checked
// against the token's certificate; initialising and finalising again
// leaks no file descriptor. Signing with the PIN-always key goes as with
// OpenSC and a local PIV card (pinAlwaysWant). Then, through the network simulator, a warm
// signature in an open session costs one round trip.
//
// The module is loaded once per process (it cannot be unloaded): each
// test that loads it in process (this one, TestCardChangesUnderModule)
// initialises and finalises it with its own PSCS_CONFIG, which
// C_Initialize reads.
func TestGoMiekg(t *testing.T) {
	d := startDemo(t)
	proxy, err := netsim.New(d.addr, netsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	// The delegate's configuration, pointed at the simulator.
	b, err := os.ReadFile(d.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(filepath.Dir(d.conf), "via-proxy.conf")
	if err := os.WriteFile(conf, []byte(replaceServer(t, string(b), proxy.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PSCS_CONFIG", conf)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(d.dir, "cache"))

	p := pkcs11.New(d.so)
	if p == nil {
		t.Fatal("miekg/pkcs11 could not load the module")
	}
	var fds int
	for cycle := range 3 {
		if err := p.Initialize(); err != nil {
			t.Fatalf("cycle %d: Initialize: %v", cycle, err)
		}
		if cycle == 0 {
			if err := p.Initialize(); err == nil || err.(pkcs11.Error) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
				t.Errorf("second Initialize: %v, want CKR_CRYPTOKI_ALREADY_INITIALIZED", err)
			}
		}
		n := 32
		if cycle > 0 {
			n = 4
		}
		signConcurrently(t, p, d.vpin, n)
		if cycle == 1 {
			slots, _ := p.GetSlotList(true)
			if got := pinAlwaysSequence(t, p, slots[0], d.vpin); !slices.Equal(got, pinAlwaysWant) {
				t.Errorf("PIV 9C through the module:\n got %q\nwant %q", got, pinAlwaysWant)
			}
		}
		if cycle == 2 {
			warmRoundTrip(t, p, d.vpin, proxy)
		}
		if err := p.Finalize(); err != nil {
			t.Fatalf("cycle %d: Finalize: %v", cycle, err)
		}
		// The simulator keeps one socket per client address it saw.
		open := func() int { return openFDs(t) - proxy.Stats().Mappings }
		if cycle == 0 {
			fds = open()
		} else {
			// Sockets close as their goroutines end: wait for the count
			// to come back (the deadline is a hang guard), which it
			// never does if a cycle leaks.
			n := open()
			for deadline := time.Now().Add(30 * time.Second); n > fds && time.Now().Before(deadline); n = open() {
				time.Sleep(10 * time.Millisecond)
			}
			if n > fds {
				t.Errorf("cycle %d: %d open file descriptors after Finalize, %d after the first", cycle, n, fds)
			}
		}
	}
	if _, err := p.GetSlotList(true); err == nil || err.(pkcs11.Error) != pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED {
		t.Errorf("GetSlotList after Finalize: %v", err)
	}
}

// replaceServer points a client.conf at addr.
func replaceServer(t *testing.T, conf, addr string) string {
	t.Helper()
	var f map[string]any
	if err := json.Unmarshal([]byte(conf), &f); err != nil {
		t.Fatal(err)
	}
	f["server"] = addr
	b, _ := json.Marshal(f)
	return string(b)
}

// signConcurrently logs in and signs from n goroutines, each in its own
// session, four signatures each.
func signConcurrently(t *testing.T, p *pkcs11.Ctx, vpin string, n int) {
	t.Helper()
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) != 1 {
		t.Fatalf("GetSlotList: %v %v", slots, err)
	}
	s0, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s0)
	if err := p.Login(s0, pkcs11.CKU_USER, vpin); err != nil {
		t.Fatalf("Login: %v", err)
	}
	cert := findOne(t, p, s0, pkcs11.CKO_CERTIFICATE, 1)
	attrs, err := p.GetAttributeValue(s0, cert, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(attrs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	pub := c.PublicKey.(*ecdsa.PublicKey)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	bad := make(chan int, n)
	for g := range n {
		wg.Go(func() {
			s, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
			if err != nil {
				errs <- err
				return
			}
			defer p.CloseSession(s)
			key, err := find(p, s, pkcs11.CKO_PRIVATE_KEY, 1)
			if err != nil {
				errs <- err
				return
			}
			for i := range 4 {
				doc := []byte{byte(g), byte(i), 'd', 'o', 'c'}
				if err := p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA_SHA256, nil)}, key); err != nil {
					errs <- err
					return
				}
				sig, err := p.Sign(s, doc)
				if err != nil {
					errs <- err
					return
				}
				sum := sha256.Sum256(doc)
				h := len(sig) / 2
				if !ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:h]), new(big.Int).SetBytes(sig[h:])) {
					bad <- g
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	close(bad)
	for err := range errs {
		t.Errorf("a goroutine: %v", err)
	}
	for g := range bad {
		t.Errorf("goroutine %d: a signature does not verify", g)
	}
}

func find(p *pkcs11.Ctx, s pkcs11.SessionHandle, class uint, id byte) (pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{id})}); err != nil {
		return 0, err
	}
	objs, _, err := p.FindObjects(s, 2)
	p.FindObjectsFinal(s)
	if err != nil {
		return 0, err
	}
	if len(objs) != 1 {
		return 0, pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID)
	}
	return objs[0], nil
}

func findOne(t *testing.T, p *pkcs11.Ctx, s pkcs11.SessionHandle, class uint, id byte) pkcs11.ObjectHandle {
	t.Helper()
	h, err := find(p, s, class, id)
	if err != nil {
		t.Fatalf("finding class %d id %d: %v", class, id, err)
	}
	return h
}

// warmRoundTrip measures one signature (C_SignInit, then C_Sign asked for
// the length and then for the signature, as miekg/pkcs11 does) in an open,
// logged-in session, at 300 ms RTT: the card's own time (about 90 ms for
// P-256) stays well under half a round trip.
func warmRoundTrip(t *testing.T, p *pkcs11.Ctx, vpin string, proxy *netsim.Proxy) {
	t.Helper()
	slots, _ := p.GetSlotList(true)
	s, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)
	if err := p.Login(s, pkcs11.CKU_USER, vpin); err != nil && err.(pkcs11.Error) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		t.Fatal(err)
	}
	key := findOne(t, p, s, pkcs11.CKO_PRIVATE_KEY, 1)
	proxy.SetConfig(netsim.Config{Delay: 150 * time.Millisecond})
	defer proxy.SetConfig(netsim.Config{})
	if err := p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA_SHA256, nil)}, key); err != nil {
		t.Fatal(err)
	}
	proxy.ResetCounters()
	start := time.Now()
	if _, err := p.Sign(s, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	rt := proxy.RoundTrips()
	t.Logf("warm signature through the module at 300 ms RTT: %d round trip(s), %v", rt, took.Round(time.Millisecond))
	if rt != 1 {
		t.Errorf("warm signature: %d round trips, want 1", rt)
	}
}
