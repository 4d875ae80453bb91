package server_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/memcard"
	"github.com/pscs/pscs/internal/p11"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// differentKeysRig is a remote card (slot 7, not SameKeys) of three
// in-memory cards "card-a", "card-b", "card-c", each with an ECDSA P-256
// key "sig" of its own whose certificate an intermediate CA issued, the
// intermediate's under root; the remote card's chain holds the
// intermediate (and root, which signatures leave out). alice is logged
// in; it returns her catalogue's slot.
func differentKeysRig(t *testing.T) (*testrig.Rig, *client.Client, transport.Slot, *testpki.CA, map[string]*memcard.Card) {
	t.Helper()
	root := testpki.NewCA("pool root CA")
	inter := root.Intermediate("pool issuing CA")
	r := testrig.Start(t, testrig.Options{Slot: 7, Audit: &memAudit{}, Chain: []*x509.Certificate{root.Cert, inter.Cert},
		Delegates: []testrig.Delegate{{Name: "alice", VPIN: "2718", Delegation: policy.Delegation{ID: "d-alice", MaxWrongVPIN: 5}}}})
	sims := map[string]*memcard.Card{}
	for _, id := range []string{"card-a", "card-b", "card-c"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cert := inter.Issue("signer on "+id, testpki.Options{Key: key}).Leaf
		card := memcard.New(memcard.Config{Serial: id, Keys: []memcard.Key{{ID: "sig", Label: "Signature", Private: key, Certificate: cert}}})
		sims[id] = card
		if err := r.Pool.Add(testrig.ProfileMember(t, id, cards.Direct(card), card.Profile(), nil)); err != nil {
			t.Fatal(err)
		}
	}
	c := r.Dial(t, r.Certs["alice"])
	login, err := c.Login(ctx(t), 7, []byte("2718"))
	if err != nil {
		t.Fatal(err)
	}
	return r, c, login.Catalogue.Slots[0], root, sims
}

// TestPoolOfDifferentKeysSignsInTurn: a parallel remote card of three
// cards with three different keys signs 30 documents in turn, each card
// exactly 10; each signature verifies against the certificate it carries
// (in Go, and in openssl cms -verify trusting the root CA alone: the
// SignedData carries the intermediate CA's certificate, not the root's).
func TestPoolOfDifferentKeysSignsInTurn(t *testing.T) {
	r, c, slot, root, sims := differentKeysRig(t)
	var key uint64
	for _, o := range slot.Objects {
		if o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) {
			key = o.Handle // any card's: a document signature takes the next card
			break
		}
	}
	by := map[string]int{}
	for i := range 30 {
		doc := []byte(fmt.Sprintf("order %d of the mayor\n", i))
		sd, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := cms.Parse(sd.CMS)
		if err != nil {
			t.Fatal(err)
		}
		s := parsed.Signers[0]
		if err := s.Verify(s.ContentDigest(doc)); err != nil {
			t.Errorf("document %d: %v", i, err)
		}
		if !bytes.Equal(s.Certificate.Raw, sd.Certificate.Raw) {
			t.Errorf("document %d: the answer's certificate is not the signer's", i)
		}
		if out, ok := cmstest.VerifyChain(t, sd.CMS, doc, root.Cert); !ok {
			t.Errorf("document %d: openssl cms -verify with the root CA alone: %s", i, out)
		}
		if n := len(parsed.Certificates); n != 2 {
			t.Errorf("document %d: %d certificates in the SignedData, want the card's and the intermediate's", i, n)
		}
		by[strings.TrimPrefix(sd.Certificate.Subject.CommonName, "signer on ")]++
	}
	for id, card := range sims {
		if by[id] != 10 || card.Signatures() != 10 {
			t.Errorf("card %s signed %d documents (the card counts %d), want 10", id, by[id], card.Signatures())
		}
	}
	t.Logf("signatures by card: %v", by)
	for _, m := range r.Pool.Members() {
		if m.Served() != 10 {
			t.Errorf("member %s served %d, want 10", m.ID, m.Served())
		}
	}
}

// TestPoolOfDifferentKeysRaw: the slot of a remote card of different
// keys shows every card's key, certificate and public key as objects of
// their own (distinct CKA_ID, the card named in the label); a raw
// signature with a card's key is made by that card, and verifies under
// the certificate object of the same CKA_ID.
func TestPoolOfDifferentKeysRaw(t *testing.T) {
	_, c, slot, _, sims := differentKeysRig(t)
	type objs struct {
		priv uint64
		cert []byte
	}
	byID := map[string]*objs{}
	labels := map[string]bool{}
	for _, o := range slot.Objects {
		id := string(o.Attributes[p11.CKAID].([]byte))
		if byID[id] == nil {
			byID[id] = &objs{}
		}
		label := o.Attributes[p11.CKALabel].(string)
		switch o.Attributes[p11.CKAClass] {
		case uint64(p11.CKOPrivateKey):
			byID[id].priv = o.Handle
			labels[label] = true
		case uint64(p11.CKOCert):
			byID[id].cert = o.Attributes[p11.CKAValue].([]byte)
		}
	}
	if len(byID) != 3 {
		t.Fatalf("%d CKA_IDs, want 3 (one key per card)", len(byID))
	}
	for id := range sims {
		if !labels[id+": Signature (sig)"] {
			t.Errorf("no private key labelled for %s: %v", id, labels)
		}
	}
	for id, o := range byID {
		cert, err := x509.ParseCertificate(o.cert)
		if err != nil {
			t.Fatalf("CKA_ID %x: %v", id, err)
		}
		card := sims[strings.TrimPrefix(cert.Subject.CommonName, "signer on ")]
		before := card.Signatures()
		for i := range 3 {
			data := []byte(fmt.Sprintf("raw %x %d", id, i))
			resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: o.priv, Mechanism: p11.CKMECDSASHA256, Data: data})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(resp.Certificate, o.cert) {
				t.Errorf("CKA_ID %x: signed with another card's certificate", id)
			}
			digest := sha256.Sum256(data)
			pub := cert.PublicKey.(*ecdsa.PublicKey)
			n := len(resp.Signature) / 2
			if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(resp.Signature[:n]), new(big.Int).SetBytes(resp.Signature[n:])) {
				t.Errorf("CKA_ID %x: the signature does not verify under its certificate object", id)
			}
		}
		if got := card.Signatures() - before; got != 3 {
			t.Errorf("%s made %d of its key's 3 signatures", cert.Subject.CommonName, got)
		}
	}
}

// TestPoolOfDifferentKeysLimitedDelegation: a delegation limited to key
// ID "aut" on a remote card of two cards, each with keys "sig" and "aut"
// of its own, shows both cards' "aut" keys and no "sig" key; raw
// signatures with each card's "aut" key are made by that card, a "sig"
// key is refused with 119, and document signatures with "aut" go to
// both cards in turn.
func TestPoolOfDifferentKeysLimitedDelegation(t *testing.T) {
	ca := testpki.NewCA("limited CA")
	r := testrig.Start(t, testrig.Options{Slot: 7, Audit: &memAudit{},
		Delegates: []testrig.Delegate{{Name: "alice", VPIN: "2718", Delegation: policy.Delegation{ID: "d-alice", MaxWrongVPIN: 5, Keys: []string{"aut"}}}}})
	sims := map[string]*memcard.Card{}
	for _, id := range []string{"card-a", "card-b"} {
		var keys []memcard.Key
		for _, kid := range []string{"sig", "aut"} {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, memcard.Key{ID: kid, Label: kid, Private: key, Certificate: ca.Issue(kid+" on "+id, testpki.Options{Key: key}).Leaf})
		}
		sims[id] = memcard.New(memcard.Config{Serial: id, Keys: keys})
		if err := r.Pool.Add(testrig.ProfileMember(t, id, cards.Direct(sims[id]), sims[id].Profile(), nil)); err != nil {
			t.Fatal(err)
		}
	}
	c := r.Dial(t, r.Certs["alice"])
	login, err := c.Login(ctx(t), 7, []byte("2718"))
	if err != nil {
		t.Fatal(err)
	}
	var auts []uint64
	for _, o := range login.Catalogue.Slots[0].Objects {
		label := o.Attributes[p11.CKALabel].(string)
		if !strings.HasSuffix(label, "(aut)") {
			t.Errorf("object %q shown under a delegation limited to aut", label)
		}
		if o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) {
			auts = append(auts, o.Handle)
		}
	}
	if len(auts) != 2 {
		t.Fatalf("%d private keys shown, want both cards' aut", len(auts))
	}
	for _, h := range auts {
		resp, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: h, Mechanism: p11.CKMECDSASHA256, Data: []byte("raw")})
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(resp.Certificate)
		if !strings.HasPrefix(cert.Subject.CommonName, "aut on ") {
			t.Errorf("raw signature under %q", cert.Subject.CommonName)
		}
	}
	// The sig keys' numbers (the handles the slot does not show).
	for _, k := range r.Pool.Shown() {
		if k.ID != "sig" {
			continue
		}
		_, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: uint64(3*k.Number + 1), Mechanism: p11.CKMECDSASHA256, Data: []byte("raw")})
		if transport.CodeOf(err) != transport.CodeKeyNotDelegated {
			t.Errorf("card %s's sig key: %v, want code %d", k.Card, err, transport.CodeKeyNotDelegated)
		}
	}
	by := map[string]int{}
	for i := range 4 {
		sd, err := c.SignCAdES(ctx(t), bytes.NewReader([]byte(fmt.Sprint("doc ", i))), client.CAdESOptions{Slot: 7, Key: auts[0]})
		if err != nil {
			t.Fatal(err)
		}
		by[sd.Certificate.Subject.CommonName]++
	}
	if by["aut on card-a"] != 2 || by["aut on card-b"] != 2 {
		t.Errorf("documents by certificate %v, want 2 for each card's aut", by)
	}
}
