package server_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/memcard"
	testrig "github.com/pscs/pscs/internal/rig"
	"github.com/pscs/pscs/internal/testpki"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// TestCAdESEd25519: an Ed25519 key signs documents as RFC 8419 says:
// id-Ed25519 as the signatureAlgorithm (no parameters), pure EdDSA over
// the signed attributes' DER, SHA-512 as the digest algorithm. GnuTLS's
// certtool accepts the signature, detached and enveloping, and refuses it
// for another document; openssl reads it (cms -cmsout -print) but its cms
// -verify cannot judge Ed25519 with signed attributes (see
// cmstest.VerifyGnuTLS). A digest other than SHA-512 is refused with 202
// before the card is asked.
func TestCAdESEd25519(t *testing.T) {
	ca := testpki.NewCA("EdDSA CA")
	key := memcard.Ed25519("cades")
	cert := ca.Issue("Ed25519 signer", testpki.Options{Key: key}).Leaf
	card := memcard.New(memcard.Config{Serial: "ed", Keys: []memcard.Key{{ID: "sig", Label: "Signature", Private: key, Certificate: cert}}})
	r := testrig.Start(t, testrig.Options{Slot: 7, Audit: &memAudit{},
		Delegates: []testrig.Delegate{{Name: "alice", VPIN: "2718", Delegation: policy.Delegation{ID: "d-alice", MaxWrongVPIN: 5}}}})
	if err := r.Pool.Add(testrig.ProfileMember(t, "ed", cards.Direct(card), card.Profile(), nil)); err != nil {
		t.Fatal(err)
	}
	c := r.Dial(t, r.Certs["alice"])
	if _, err := c.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	doc := []byte("Decree 2026/77: Edwards curves for the city hall.\n")
	for _, env := range []bool{false, true} {
		sd, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1, Hash: crypto.SHA512, Enveloping: env})
		if err != nil {
			t.Fatalf("enveloping=%v: %v", env, err)
		}
		if _, ok := sd.Certificate.PublicKey.(ed25519.PublicKey); !ok {
			t.Fatalf("signed under a %T key", sd.Certificate.PublicKey)
		}
		content := doc
		if env {
			content = nil
		}
		if out, ok := cmstest.VerifyGnuTLS(t, sd.CMS, content, sd.Certificate); !ok {
			t.Errorf("enveloping=%v: certtool --p7-verify: %s", env, out)
		}
		if !env {
			if _, ok := cmstest.VerifyGnuTLS(t, sd.CMS, []byte("another document\n"), sd.Certificate); ok {
				t.Error("certtool accepts the signature for another document")
			}
		}
		parsed, err := cms.Parse(sd.CMS)
		if err != nil {
			t.Fatal(err)
		}
		if got := parsed.Signers[0].SignatureAlgorithm.String(); got != "1.3.101.112" {
			t.Errorf("signatureAlgorithm %s, want id-Ed25519", got)
		}
		if printed := cmstest.Print(t, sd.CMS); !strings.Contains(printed, "ED25519") || !strings.Contains(printed, "sha512") {
			t.Errorf("openssl does not read an Ed25519 signature with SHA-512:\n%s", printed)
		}
	}
	before := card.Signatures()
	_, err := c.SignCAdES(ctx(t), bytes.NewReader(doc), client.CAdESOptions{Slot: 7, Key: 1, Hash: crypto.SHA256})
	if transport.CodeOf(err) != transport.CodeMechanism {
		t.Errorf("Ed25519 with SHA-256: %v, want code 202", err)
	}
	if card.Signatures() != before {
		t.Error("the card signed a refused request")
	}
}
