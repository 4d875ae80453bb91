package server_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// lastRecord is the rig's last audit record.
func (a *memAudit) last() *server.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.records) == 0 {
		return nil
	}
	return a.records[len(a.records)-1]
}

// keyType names a public key exactly: RSA-<bits>, the curve's name, or
// Ed25519.
func keyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// TestCAdES: document signatures from each key type of a simulated PIV
// card served by pscsd (9A P-256, 9C RSA-2048 with PKCS #1 v1.5 and PSS,
// 9E P-384; pivsim has no Ed25519, TestCAdESEd25519 covers it),
// detached and enveloping, verify in openssl cms -verify -binary against
// the certificate of the card's slot that signed: the answer's
// certificate is that slot's, of exactly the key type asked for, and the
// SignedData's signature algorithm is that key's. openssl cms -cmsout
// -print shows the delegation notice attribute on a delegation with
// warranty, for every key type, and not on one without.
func TestCAdES(t *testing.T) {
	doc := []byte("Decree 2026/41: the library opens on Sundays.\n")
	cases := []struct {
		key     uint64
		slot    pivsim.Slot
		hash    crypto.Hash
		pss     bool
		keyType string
		sigAlg  string
	}{
		{1, pivsim.SlotAuthentication, crypto.SHA256, false, "P-256", "1.2.840.10045.4.3.2"},
		{10, pivsim.SlotCardAuthentication, crypto.SHA384, false, "P-384", "1.2.840.10045.4.3.3"},
		{4, pivsim.SlotSignature, crypto.SHA256, false, "RSA-2048", "1.2.840.113549.1.1.11"},
		{4, pivsim.SlotSignature, crypto.SHA512, true, "RSA-2048", "1.2.840.113549.1.1.10"},
	}
	for _, warranty := range []bool{false, true} {
		r := newRig(t, 1)
		if warranty {
			r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5, Warranty: true,
				NotBefore: time.Now().Add(-time.Hour)})
		}
		c := r.dial(t, r.alice)
		if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			for _, env := range []bool{false, true} {
				name := fmt.Sprintf("%s key %d %v pss=%v enveloping=%v warranty=%v", tc.keyType, tc.key, tc.hash, tc.pss, env, warranty)
				sd, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: tc.key, Hash: tc.hash, PSS: tc.pss,
					Enveloping: env, VPIN: []byte("2718")})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if got := keyType(sd.Certificate.PublicKey); got != tc.keyType {
					t.Errorf("%s: signed with a %s key", name, got)
				}
				if want := r.sims[0].Certificate(tc.slot); want == nil || !sd.Certificate.Equal(want) {
					t.Errorf("%s: the answer's certificate is not the one of the card's slot %v", name, tc.slot)
				}
				parsed, err := cms.Parse(sd.CMS)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				s := parsed.Signers[0]
				if s.SignatureAlgorithm.String() != tc.sigAlg || s.Hash != tc.hash || !s.Certificate.Equal(sd.Certificate) {
					t.Errorf("%s: signature algorithm %v, digest %v, signer %v", name, s.SignatureAlgorithm, s.Hash, s.Certificate.Subject)
				}
				content := doc
				if env {
					content = nil
				}
				if out, ok := cmstest.Verify(t, sd.CMS, content, sd.Certificate); !ok {
					t.Errorf("%s: openssl cms -verify -binary refuses it:\n%s", name, out)
				}
				if out, ok := cmstest.Verify(t, sd.CMS, []byte("Decree 2026/41: the library closes on Sundays.\n"), sd.Certificate); ok && !env {
					t.Errorf("%s: openssl accepts it for another document:\n%s", name, out)
				}
				printed := cmstest.Print(t, sd.CMS)
				if got := strings.Contains(printed, "object: undefined ("+cms.Arc+".1)"); got != warranty || sd.Notice != warranty || (s.Notice != nil) != warranty {
					t.Errorf("%s: openssl shows the notice attribute: %v, the answer says %v, want %v", name, got, sd.Notice, warranty)
				}
				// The record keeps the detached SignedData the server made.
				if rec := r.audit.last(); rec.Op != "sign-document" || rec.Code != 0 || !env && !bytes.Equal(rec.Result, sd.CMS) {
					t.Errorf("%s: audit record %s code %v", name, rec.Op, rec.Code)
				}
			}
		}
	}
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	// A key the card wants the PIN for every time wants the vPIN beside
	// the request, as for a raw signature.
	_, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 4})
	if transport.CodeOf(err) != transport.CodeNotLoggedIn {
		t.Errorf("9C without the vPIN: %v", err)
	}
	_, err = c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1, PSS: true})
	if transport.CodeOf(err) != transport.CodeMechanism {
		t.Errorf("PSS with an EC key: %v", err)
	}
	// A stream that cannot be read twice signs detached, not enveloping.
	stream := func() io.Reader { return io.MultiReader(bytes.NewReader(doc[:10]), bytes.NewReader(doc[10:])) }
	if sd, err := c.SignCAdES(ctx(t), stream(), client.CAdESOptions{Slot: 7, Key: 1}); err != nil {
		t.Errorf("detached from a stream: %v", err)
	} else if out, ok := cmstest.Verify(t, sd.CMS, doc, sd.Certificate); !ok {
		t.Errorf("detached from a stream: openssl refuses it:\n%s", out)
	}
	if _, err := c.SignCAdES(ctx(t), stream(), client.CAdESOptions{Slot: 7, Key: 1, Enveloping: true}); err == nil || !strings.Contains(err.Error(), "io.ReadSeeker") {
		t.Errorf("enveloping from a stream: %v", err)
	}
}

// TestWarranty: a delegation with warranty puts the delegation notice in
// every document signature (openssl shows the attribute; it names the
// delegate's certificate, the delegation, its window and owner), and
// refuses raw signatures with CodeWarrantyRaw and an audit record.
func TestWarranty(t *testing.T) {
	r := newRig(t, 1)
	from := time.Now().Add(-time.Hour).Truncate(time.Second)
	until := from.Add(90 * 24 * time.Hour)
	r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5,
		Warranty: true, NotBefore: from, NotAfter: until})
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	doc := []byte("Contract 7: the mayor's delegate signs for the town.\n")
	sd, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 4, VPIN: []byte("2718")})
	if err != nil {
		t.Fatal(err)
	}
	if out, ok := cmstest.Verify(t, sd.CMS, doc, sd.Certificate); !ok {
		t.Errorf("openssl cms -verify refuses it:\n%s", out)
	}
	if printed := cmstest.Print(t, sd.CMS); !strings.Contains(printed, "object: undefined ("+cms.Arc+".1)") {
		t.Errorf("openssl does not show the notice attribute %s.1:\n%s", cms.Arc, printed)
	}
	parsed, err := cms.Parse(sd.CMS)
	if err != nil {
		t.Fatal(err)
	}
	n := parsed.Signers[0].Notice
	if n == nil {
		t.Fatal("no notice")
	}
	if n.Delegation != "d-alice" || n.Owner != "mayor" || n.Subject() != "CN=alice" ||
		n.DelegateCertHash != sha256.Sum256(r.alice.Leaf.Raw) || !n.NotBefore.Equal(from) || !n.NotAfter.Equal(until) {
		t.Errorf("notice %+v", n)
	}
	sum := sha256.Sum256(doc)
	_, err = c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: sum[:]})
	if transport.CodeOf(err) != transport.CodeWarrantyRaw {
		t.Errorf("a raw signature under warranty: %v, want code 120", err)
	}
	if rec := r.audit.last(); rec.Op != "sign" || rec.Code != transport.CodeWarrantyRaw || rec.Delegation != "d-alice" {
		t.Errorf("audit record of the refusal: %s %v %s", rec.Op, rec.Code, rec.Delegation)
	}
	if _, st, _ := r.book.Get("d-alice"); st.Used != 1 {
		t.Errorf("signatures counted: %d, want 1 (the refused raw one is not)", st.Used)
	}
}

// TestDocumentLimitedCAdES: a delegation for certain documents signs them
// as CAdES and refuses any other with CodeDocumentRefused, the refusal's
// audit record keeping the refused document's digest.
func TestDocumentLimitedCAdES(t *testing.T) {
	r := newRig(t, 1)
	doc, other := []byte("the allowed order\n"), []byte("another order\n")
	sum, otherSum := sha256.Sum256(doc), sha256.Sum256(other)
	r.book.Grant(policy.Delegation{ID: "d-alice", Owner: "mayor", Delegate: "alice", Card: "mayor", MaxWrongVPIN: 5, Documents: [][]byte{sum[:]}})
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1}); err != nil {
		t.Errorf("the allowed document: %v", err)
	}
	_, err := c.SignCAdES(ctx(t), bytes.NewReader(other), client.CAdESOptions{Slot: 7, Key: 1})
	if transport.CodeOf(err) != transport.CodeDocumentRefused {
		t.Errorf("another document: %v, want code 107", err)
	}
	if rec := r.audit.last(); rec.Code != transport.CodeDocumentRefused || !bytes.Equal(rec.Result, otherSum[:]) {
		t.Errorf("audit record of the refusal: code %v, result %x, want the digest %x", rec.Code, rec.Result, otherSum)
	}
	// The allowed document's SHA-384 digest is another digest: refused.
	_, err = c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1, Hash: crypto.SHA384})
	if transport.CodeOf(err) != transport.CodeDocumentRefused {
		t.Errorf("the allowed document hashed with SHA-384: %v, want code 107", err)
	}
}

// TestCAdESKeyWithoutCertificate: a key whose card holds no certificate
// for it cannot make a document signature (CodeNoCertificate), and the
// refusal is audited; its raw signatures still work.
func TestCAdESKeyWithoutCertificate(t *testing.T) {
	old := cardSlots
	cardSlots = map[pivsim.Slot]pivsim.SlotConfig{pivsim.SlotAuthentication: {Algorithm: pivsim.ECCP256, NoCertificate: true}}
	defer func() { cardSlots = old }()
	r := newRig(t, 1)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	_, err := c.SignCAdES(ctx(t), bytes.NewReader([]byte("doc")), client.CAdESOptions{Slot: 7, Key: 1})
	if transport.CodeOf(err) != transport.CodeNoCertificate {
		t.Errorf("CAdES with a key without a certificate: %v, want code 121", err)
	}
	if rec := r.audit.last(); rec.Op != "sign-document" || rec.Code != transport.CodeNoCertificate {
		t.Errorf("audit record %s %v", rec.Op, rec.Code)
	}
	sum := sha256.Sum256([]byte("doc"))
	if _, err := c.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: sum[:]}); err != nil {
		t.Errorf("a raw signature with it: %v", err)
	}
}

// TestCAdESPoolOfDifferentKeys: a parallel remote card of three
// simulated PIV cards holding different keys signs 30 documents in turn;
// each signature verifies against the certificate it carries, and every
// card signed exactly 10 (issue 12 item 5).
func TestCAdESPoolOfDifferentKeys(t *testing.T) {
	r := newRig(t, 3)
	c := r.dial(t, r.alice)
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	by := map[string]int{}
	for i := range 30 {
		doc := []byte(fmt.Sprintf("document %d\n", i))
		sd, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1})
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
		by[string(sd.Certificate.Raw)]++
	}
	if len(by) != 3 {
		t.Fatalf("%d certificates signed, want 3", len(by))
	}
	var counts []int
	for _, n := range by {
		counts = append(counts, n)
	}
	t.Logf("signatures by card: %v", counts)
	for _, n := range counts {
		if n != 10 {
			t.Errorf("signatures by card %v, want 10 each", counts)
			break
		}
	}
}

// BenchmarkSignDocument compares a CAdES signature (op 8: the signed
// attributes built, the SignedData assembled, and checked by the client)
// with a raw signature (op 3) of the same key: a warm request from the Go
// client over QUIC on loopback to a zero-latency simulated card, the
// audit record in memory. The difference is pscsd's and the client's CMS
// work; the document is not hashed in the loop.
func BenchmarkSignDocument(b *testing.B) {
	r := newRig(b, 1)
	c := r.dial(b, r.alice)
	if _, err := c.Login(ctx(b), 7, []byte("2718")); err != nil {
		b.Fatal(err)
	}
	b.Run("raw", func(b *testing.B) {
		req := &transport.SignRequest{Slot: 7, Key: 1, Mechanism: 0x1041, Data: make([]byte, 32)}
		for b.Loop() {
			if _, err := c.Sign(ctx(b), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cades", func(b *testing.B) {
		doc := []byte("a short document")
		var size int
		for b.Loop() {
			sd, err := c.SignCAdES(ctx(b), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1})
			if err != nil {
				b.Fatal(err)
			}
			size = len(sd.CMS)
		}
		b.ReportMetric(float64(size), "bytes/signature")
	})
}
