//go:build cgo

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/internal/cms/cmstest"
	"github.com/pscs/pscs/internal/pdfsig"
	"github.com/pscs/pscs/internal/pdfsig/pdfsigtest"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/transport"
)

// TestWarrantyThroughModule: pscsd as a site serves a simulated PIV card
// in a reader of a private pcscd; the owner delegates it with warranty,
// for one document. The delegate's PKCS #11 application (miekg/pkcs11
// through the module) logs in, and its raw C_Sign is refused
// (CKR_FUNCTION_REJECTED; pscsd logs the refusal, code 120); the delegate's CAdES
// signature of the document (the Go client) verifies in openssl cms and
// carries the notice; another document is refused with 107, and pscsd
// logs its digest. Then PDF signatures (padesThroughSite).
func TestWarrantyThroughModule(t *testing.T) {
	need(t, "swtpm", "openssl")
	pcscd := privatePCSCD(t)
	so, pscsd := binaries(t)
	dir := t.TempDir()
	sim, err := pivsim.New(pivsim.Config{Seed: []byte(t.Name()), Serial: 7300})
	if err != nil {
		t.Fatal(err)
	}
	plugCard(t, pcscd, readerWarranty, sim)

	doc, other := []byte("Ordinance 3: the market moves to the square.\n"), []byte("Ordinance 4: the market stays.\n")
	sum, otherSum := sha256.Sum256(doc), sha256.Sum256(other)
	site := startSite(t, pscsd, dir, pcscd.Env())
	conf := site.delegateAs(t, "carol", transport.AdminDelegation{Warranty: true, Documents: [][]byte{sum[:]}})
	t.Setenv("PSCS_CONFIG", conf.path)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("PSCS_TIMEOUT", "20s")

	// Raw signing through the PKCS #11 module.
	p := pkcs11.New(so)
	if p == nil {
		t.Fatal("miekg/pkcs11 could not load the module")
	}
	if err := p.Initialize(); err != nil {
		t.Fatalf("C_Initialize: %v", err)
	}
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) != 1 {
		t.Fatalf("C_GetSlotList: %v %v", slots, err)
	}
	s, err := p.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(s, pkcs11.CKU_USER, conf.vpin); err != nil {
		t.Fatalf("C_Login: %v", err)
	}
	key := findOne(t, p, s, pkcs11.CKO_PRIVATE_KEY, 1) // PIV 9A, ECC P-256
	if err := p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA_SHA256, nil)}, key); err != nil {
		t.Fatalf("C_SignInit: %v", err)
	}
	_, err = p.Sign(s, doc)
	var rv pkcs11.Error
	if !errors.As(err, &rv) || uint(rv) != pkcs11.CKR_FUNCTION_REJECTED {
		t.Errorf("C_Sign under warranty: %v, want CKR_FUNCTION_REJECTED", err)
	}
	site.log.waitFor(t, `msg="request refused" op=sign identity=carol delegation=`+conf.delegation+` code="`+transport.CodeWarrantyRaw.String()+`"`)

	// A document signature through the Go client.
	cfg, err := client.LoadConfig(conf.path)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c, err := client.Dial(cctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(cctx, 1, []byte(conf.vpin)); err != nil {
		t.Fatal(err)
	}
	sd, err := c.SignCAdES(cctx, bytes.NewReader(doc), client.CAdESOptions{Slot: 1, Key: 1, Enveloping: true})
	if err != nil {
		t.Fatalf("CAdES of the allowed document: %v", err)
	}
	if out, ok := cmstest.Verify(t, sd.CMS, nil, sd.Certificate); !ok {
		t.Errorf("openssl cms -verify refuses it:\n%s", out)
	}
	if printed := cmstest.Print(t, sd.CMS); !strings.Contains(printed, "("+cms.Arc+".1)") || !strings.Contains(printed, ":carol") {
		t.Errorf("openssl shows no delegation notice naming carol:\n%s", printed)
	}
	_, err = c.SignCAdES(cctx, bytes.NewReader(other), client.CAdESOptions{Slot: 1, Key: 1})
	if transport.CodeOf(err) != transport.CodeDocumentRefused {
		t.Errorf("CAdES of another document: %v, want code 107", err)
	}
	site.log.waitFor(t, `code="`+transport.CodeDocumentRefused.String()+`" digest=`+hex.EncodeToString(otherSum[:]))

	padesThroughSite(t, site, c, cctx)
}

// padesThroughSite: PAdES through the site of TestWarrantyThroughModule.
// carol's delegation is limited to one document: her PDF signature is
// refused (107, the reason given). dave's has warranty alone: his PDF
// signature of a ghostscript PDF, then a second one on the signed file,
// are valid in pdfsig, and the CMS in the file, as openssl prints it,
// has the delegation notice naming dave.
func padesThroughSite(t *testing.T, site *site, carol *client.Client, cctx context.Context) {
	pdf := pdfsigtest.MakePDF(t, true)
	var out bytes.Buffer
	_, err := carol.SignPAdES(cctx, bytes.NewReader(pdf), &out, client.PAdESOptions{Slot: 1, Key: 1})
	if transport.CodeOf(err) != transport.CodeDocumentRefused || !strings.Contains(err.Error(), "/ByteRange") || out.Len() != 0 {
		t.Errorf("PAdES under a document-limited delegation: %v (%d bytes written), want code 107 with the reason", err, out.Len())
	}
	conf := site.delegateAs(t, "dave", transport.AdminDelegation{Warranty: true})
	cfg, err := client.LoadConfig(conf.path)
	if err != nil {
		t.Fatal(err)
	}
	dave, err := client.Dial(cctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dave.Close()
	if _, err := dave.Login(cctx, 1, []byte(conf.vpin)); err != nil {
		t.Fatal(err)
	}
	signed := pdf
	var names []string
	for _, key := range []uint64{1, 1} {
		var out bytes.Buffer
		sd, err := dave.SignPAdES(cctx, bytes.NewReader(signed), &out, client.PAdESOptions{Slot: 1, Key: key})
		if err != nil {
			t.Fatalf("PAdES under warranty: %v", err)
		}
		if !sd.Notice {
			t.Error("no notice under warranty")
		}
		signed = out.Bytes()
		names = append(names, sd.Certificate.Subject.CommonName)
	}
	pdfsigtest.Check(t, signed, names...)
	doc, err := pdfsig.Read(bytes.NewReader(signed))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := doc.Signatures()
	if err != nil || len(sigs) != 2 {
		t.Fatalf("signatures in the file: %d, %v", len(sigs), err)
	}
	for _, s := range sigs {
		if printed := cmstest.Print(t, s.Contents); !strings.Contains(printed, "("+cms.Arc+".1)") || !strings.Contains(printed, ":dave") {
			t.Errorf("openssl shows no delegation notice naming dave in %s:\n%s", s.Field, printed)
		}
	}
}
