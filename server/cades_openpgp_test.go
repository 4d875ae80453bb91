package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/p11"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/profiles/openpgp"
	"github.com/pscs/pscs/profiles/openpgp/pgpsim"
	"github.com/pscs/pscs/profiles/simkit"
	"github.com/pscs/pscs/server/policy"
)

// TestCAdESOpenPGPCardEd25519: the card simulator with Ed25519 (pgpsim,
// an OpenPGP card 3.4, through the openpgp driver) signs documents with
// its signature key, whose certificate (7F21, occurrence 2) an
// administrator put on the card: detached and enveloping, GnuTLS's
// certtool verifies each against the card's certificate (openssl cms
// cannot judge Ed25519 with signed attributes, see cmstest.VerifyGnuTLS)
// unless it holds the delegation notice, whose OID certtool cannot read
// (asserted: docs/protocol.md, "The delegation notice"),
// the answer's certificate is exactly the card's Ed25519 one, and
// openssl cms -cmsout -print shows the notice attribute under a
// delegation with warranty and not under one without.
func TestCAdESOpenPGPCardEd25519(t *testing.T) {
	for _, warranty := range []bool{false, true} {
		t.Run(fmt.Sprintf("warranty=%v", warranty), func(t *testing.T) {
			sim, err := pgpsim.New(pgpsim.Config{Seed: []byte(t.Name()), Serial: 0x7500,
				Keys: map[pgpsim.Key]simkit.Alg{pgpsim.KeySign: simkit.Ed25519, pgpsim.KeyDecrypt: simkit.X25519, pgpsim.KeyAuth: simkit.Ed25519}})
			if err != nil {
				t.Fatal(err)
			}
			pub, ok := sim.PublicKey(pgpsim.KeySign).(ed25519.PublicKey)
			if !ok {
				t.Fatalf("the signature key is a %T", sim.PublicKey(pgpsim.KeySign))
			}
			cert := testpki.NewCA("OpenPGP card CA").Issue("Ed25519 signer on an OpenPGP card", testpki.Options{Key: publicOnly{pub}}).Leaf
			// The administrator's APDUs: SELECT the OpenPGP application,
			// VERIFY PW3, SELECT DATA of 7F21
			// occurrence 2 (the signature key's), PUT DATA 7F21
			// (extended length).
			put := append([]byte{0x00, 0xDA, 0x7F, 0x21, 0x00, byte(len(cert.Raw) >> 8), byte(len(cert.Raw))}, cert.Raw...)
			for _, cmd := range [][]byte{
				{0x00, 0xA4, 0x04, 0x00, 0x06, 0xD2, 0x76, 0x00, 0x01, 0x24, 0x01, 0x00},
				append([]byte{0x00, 0x20, 0x00, 0x83, 0x08}, "12345678"...),
				{0x00, 0xA5, 0x02, 0x04, 0x06, 0x60, 0x04, 0x5C, 0x02, 0x7F, 0x21},
				put,
			} {
				rsp, err := sim.Transmit(context.Background(), cmd)
				if err != nil || !bytes.HasSuffix(rsp, []byte{0x90, 0x00}) {
					t.Fatalf("% X: % X %v", cmd[:4], rsp, err)
				}
			}
			aud := &memAudit{}
			r := testrig.Start(t, testrig.Options{Slot: 7, Audit: aud,
				Delegates: []testrig.Delegate{{Name: "alice", VPIN: "2718", Delegation: policy.Delegation{ID: "d-alice", Owner: "mayor", MaxWrongVPIN: 5,
					Warranty: warranty, NotBefore: time.Now().Add(-time.Hour)}}}})
			if err := r.Pool.Add(testrig.ProfileMember(t, "pgp", cards.Direct(sim), openpgp.Profile{}, nil)); err != nil {
				t.Fatal(err)
			}
			c := r.Dial(t, r.Certs["alice"])
			login, err := c.Login(ctx(t), 7, []byte("2718"))
			if err != nil {
				t.Fatal(err)
			}
			var key uint64
			for _, o := range login.Catalogue.Slots[0].Objects {
				if l, _ := o.Attributes[p11.CKALabel].(string); o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) && strings.Contains(l, "(sig)") {
					key = o.Handle
				}
			}
			if key == 0 {
				t.Fatalf("no signature key in the catalogue: %+v", login.Catalogue.Slots[0].Objects)
			}
			doc := []byte("Decree 2026/78: an OpenPGP card signs for the city hall.\n")
			for _, env := range []bool{false, true} {
				before := sim.SignatureCount()
				sd, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: key, Hash: crypto.SHA512, Enveloping: env,
					VPIN: []byte("2718")})
				if err != nil {
					t.Fatalf("enveloping=%v: %v", env, err)
				}
				if sim.SignatureCount() != before+1 {
					t.Errorf("enveloping=%v: the card's signature counter went from %d to %d", env, before, sim.SignatureCount())
				}
				if !sd.Certificate.Equal(cert) || keyType(sd.Certificate.PublicKey) != "Ed25519" {
					t.Errorf("enveloping=%v: signed under %s, a %s key, not the card's Ed25519 certificate", env, sd.Certificate.Subject, keyType(sd.Certificate.PublicKey))
				}
				content := doc
				if env {
					content = nil
				}
				out, ok := cmstest.VerifyGnuTLS(t, sd.CMS, content, cert)
				switch {
				case !warranty && !ok:
					t.Errorf("enveloping=%v: certtool --p7-verify: %s", env, out)
				case warranty && (ok || !strings.Contains(out, "Error in DER parsing")):
					// GnuTLS's libtasn1 (certtool 3.7.9, libtasn1 4.19)
					// reads no OID with a subidentifier over 64 bits,
					// and the notice's arc under 2.25 has one of 128:
					// it cannot read a SignedData with the notice. If
					// this changes, certtool judges these too.
					t.Errorf("enveloping=%v: certtool --p7-verify with the notice: ok=%v, want its DER parsing error:\n%s", env, ok, out)
				}
				parsed, err := cms.Parse(sd.CMS)
				if err != nil {
					t.Fatal(err)
				}
				if s := parsed.Signers[0]; s.Verify(s.ContentDigest(doc)) != nil || (s.Notice != nil) != warranty {
					t.Errorf("enveloping=%v: our reader: %v, notice %v", env, s.Verify(s.ContentDigest(doc)), s.Notice)
				}
				if !env && !warranty {
					if _, ok := cmstest.VerifyGnuTLS(t, sd.CMS, []byte("another decree\n"), cert); ok {
						t.Error("certtool accepts the signature for another document")
					}
				}
				printed := cmstest.Print(t, sd.CMS)
				if !strings.Contains(printed, "ED25519") {
					t.Errorf("enveloping=%v: openssl does not read an Ed25519 signature:\n%s", env, printed)
				}
				if got := strings.Contains(printed, "object: undefined ("+cms.Arc+".1)"); got != warranty || sd.Notice != warranty {
					t.Errorf("enveloping=%v: openssl shows the notice attribute: %v, the answer says %v, want %v", env, got, sd.Notice, warranty)
				}
			}
		})
	}
}

// publicOnly is a crypto.Signer of which testpki needs only the public
// key (to certify it); it cannot sign.
type publicOnly struct{ pub crypto.PublicKey }

func (p publicOnly) Public() crypto.PublicKey { return p.pub }
func (p publicOnly) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("public key only")
}
