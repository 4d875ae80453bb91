//go:build cgo

package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/cards/vpcd"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/internal/pcscdtest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
)

// plugRemovable plugs card into reader i of pcscd (vpcd) and returns
// the function that pulls it out (also called when the test ends).
func plugRemovable(t *testing.T, pcscd *pcscdtest.PCSCD, i int, card vpcd.Card) (pull func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&vpcd.Server{}).Plug(ctx, pcscd.CardAddr(i), card)
	}()
	pull = func() { cancel(); <-done }
	t.Cleanup(pull)
	return pull
}

// keyTypeOf names a public key exactly.
func keyTypeOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}

// TestPoolPullThroughPCSCD: pscsd serves a parallel remote card of three
// simulated PIV cards (serials 7411-7413) in readers of a private pcscd
// (vpcd), with same_keys false, each card's 9A of another key type
// (RSA-2048, P-256, P-384). The delegate signs 30 documents (CAdES, the
// Go client): every card signs exactly 10, each SignedData verifies in
// openssl cms -verify against the certificate it carries, that of the
// card that signed, of that card's key type. Then the third card is
// pulled out of its reader: pscsd logs that it left (card and members
// left), pscs_cards_present says 2, the delegate's catalogue no longer
// shows its keys, and the two cards left sign the next 10 documents in
// turn, 5 each, each answer carrying only its own card's certificate.
func TestPoolPullThroughPCSCD(t *testing.T) {
	need(t, "swtpm", "openssl")
	pcscd := privatePCSCD(t)
	_, pscsd := binaries(t)
	dir := t.TempDir()
	serials := []string{"7411", "7412", "7413"}
	algs := []pivsim.Algorithm{pivsim.RSA2048, pivsim.ECCP256, pivsim.ECCP384}
	types := []string{"RSA-2048", "P-256", "P-384"}
	var pulls []func()
	byCert := map[string]string{} // DER certificate -> serial of the card holding its key
	for i := range serials {
		sim, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name() + serials[i]), Serial: uint32(7411 + i),
			Slots: map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: algs[i]}}})
		if err != nil {
			t.Fatal(err)
		}
		cert := sim.Certificate(pivsim.SlotAuthentication)
		if cert == nil {
			t.Fatalf("card %s has no 9A certificate", serials[i])
		}
		if got := keyTypeOf(cert.PublicKey); got != types[i] {
			t.Fatalf("card %s: a %s key, want %s", serials[i], got, types[i])
		}
		byCert[string(cert.Raw)] = serials[i]
		pulls = append(pulls, plugRemovable(t, pcscd, readerPool+i, sim))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	site := startSite(t, pscsd, dir, pcscd.Env(), siteCard{serial: serials[0], others: serials[1:], differentKeys: true,
		pins: map[string]string{"": "123456"}, metrics: metricsAddr})
	present := func() string {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`(?m)^pscs_cards_present\{card="mayor"\} (\S+)$`).FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("no pscs_cards_present{card=\"mayor\"} in /metrics:\n%s", b)
		}
		return m[1]
	}
	if n := present(); n != "3" {
		t.Errorf("pscs_cards_present{card=\"mayor\"} %s, want 3", n)
	}
	conf := site.delegate(t, "dora")
	cfg, err := client.LoadConfig(conf.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// cardsIn returns the serials of the cards whose keys a fresh login's
	// catalogue shows, and a 9A key's handle.
	cardsIn := func() (map[string]bool, uint64) {
		t.Helper()
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		login, err := c.Login(ctx, 1, []byte(conf.vpin))
		if err != nil {
			t.Fatal(err)
		}
		shown, key := map[string]bool{}, uint64(0)
		for _, o := range login.Catalogue.Slots[0].Objects {
			l, _ := o.Attributes[p11.CKALabel].(string)
			if o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) && strings.HasPrefix(l, "piv:") {
				card, _, _ := strings.Cut(strings.TrimPrefix(l, "piv:"), ": ")
				shown[card] = true
				if key == 0 && strings.HasSuffix(l, "(9a)") {
					key = o.Handle
				}
			}
		}
		return shown, key
	}
	shown, key := cardsIn()
	if len(shown) != 3 || key == 0 {
		t.Fatalf("the catalogue shows the keys of cards %v (a 9A: %d), want 3 cards", shown, key)
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, 1, []byte(conf.vpin)); err != nil {
		t.Fatal(err)
	}
	// sign signs n documents; it returns how many each card signed.
	sign := func(phase string, n int) map[string]int {
		t.Helper()
		by := map[string]int{}
		for i := range n {
			doc := []byte(fmt.Sprintf("%s: order %d of the mayor.\n", phase, i))
			sd, err := c.SignCAdES(ctx, bytes.NewReader(doc), client.CAdESOptions{Slot: 1, Key: key})
			if err != nil {
				t.Fatalf("%s, document %d: %v", phase, i, err)
			}
			card, ok := byCert[string(sd.Certificate.Raw)]
			if !ok {
				t.Fatalf("%s, document %d: signed under a certificate of no card (%s)", phase, i, sd.Certificate.Subject)
			}
			by[card]++
			if out, ok := cmstest.Verify(t, sd.CMS, doc, sd.Certificate); !ok {
				t.Errorf("%s, document %d: openssl cms -verify against the certificate it carries (card %s):\n%s", phase, i, card, out)
			}
			parsed, err := cms.Parse(sd.CMS)
			if err != nil {
				t.Fatal(err)
			}
			if len(parsed.Certificates) != 1 || !parsed.Certificates[0].Equal(sd.Certificate) || !parsed.Signers[0].Certificate.Equal(sd.Certificate) {
				t.Errorf("%s, document %d: the SignedData carries %d certificates, want card %s's alone", phase, i, len(parsed.Certificates), card)
			}
		}
		t.Logf("%s: documents by card %v", phase, by)
		return by
	}
	by := sign("three cards", 30)
	for _, s := range serials {
		if by[s] != 10 {
			t.Errorf("three cards: documents by card %v, want 10 each", by)
			break
		}
	}

	// The third card is pulled out of its reader.
	pulls[2]()
	site.log.waitFor(t, `"card left" rsc=mayor card=piv:7413 members=2`)
	for deadline := time.Now().Add(30 * time.Second); present() != "2"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pscs_cards_present{card=\"mayor\"} %s after the card left, want 2", present())
		}
	}
	if shown, _ := cardsIn(); len(shown) != 2 || shown["7413"] {
		t.Errorf("after the pull the catalogue shows the keys of cards %v, want 7411 and 7412", shown)
	}
	by = sign("two cards", 10)
	if by["7411"] != 5 || by["7412"] != 5 || by["7413"] != 0 {
		t.Errorf("two cards: documents by card %v, want 5 each of 7411 and 7412", by)
	}
}
