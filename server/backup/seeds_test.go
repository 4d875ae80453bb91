package backup_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/pscs/pscs/internal/cms"
	"github.com/pscs/pscs/server/backup"
)

var writeSeeds = flag.Bool("seeds", false, "write the fuzz seeds to testdata/fuzz")

// seed writes one seed of fuzz target name with -seeds; without, it
// checks that testdata holds a seed of that name (the contents differ
// from run to run: keys and times are new).
func seed(t *testing.T, name, file string, p []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", name)
	if !*writeSeeds {
		if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
			t.Errorf("seed %s/%s is not in testdata (go test -run TestFuzzSeeds ./server/backup -args -seeds): %v", name, file, err)
		}
		return
	}
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, file), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", p)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFuzzSeeds writes the seeds of FuzzParseArchive, FuzzOpen and
// FuzzReadEntity in testdata/fuzz, genuine and hostile, made by the
// encoders here (go test -run TestFuzzSeeds ./server/backup -args -seeds);
// every seed the parsers refuse is also checked to be refused. Without
// -seeds it makes them all, checks the refusals and that testdata holds
// every seed, and writes nothing.
func TestFuzzSeeds(t *testing.T) {
	ca, signer, owners := pki(t)
	raw, err := sampleArchive().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// The archive.
	magic := []byte(backup.Magic)
	cb := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return append(append([]byte{}, magic...), b...)
	}
	files := func(names ...string) []any {
		var out []any
		for _, n := range names {
			out = append(out, map[int]any{1: n, 2: []byte("x"), 3: []byte{0x2d, 0x71}})
		}
		return out
	}
	flipped := []byte(strings.Replace(string(raw), "wrapped", "wrappee", 1))
	archives := map[string][]byte{
		"genuine":        raw,
		"digest":         flipped,
		"traversal":      cb(map[int]any{1: 1, 2: "s", 6: files("store", "audit.log", "checkpoint.pem", "vault/vault-key", "../vault/vault-key")}),
		"unknown-key":    cb(map[int]any{1: 1, 2: "s", 4: 1, 6: files("store")}),
		"duplicate-key":  append(append([]byte{}, magic...), 0xa2, 0x01, 0x01, 0x01, 0x02),
		"huge-length":    append(append([]byte{}, magic...), 0xa1, 0x06, 0x81, 0xa1, 0x02, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"huge-array":     append(append([]byte{}, magic...), 0xa1, 0x06, 0x9b, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00),
		"deep":           append(append([]byte{}, magic...), []byte(strings.Repeat("\x81", 5000))...),
		"indefinite":     append(append([]byte{}, magic...), 0xbf, 0x01, 0x01, 0xff),
		"tagged":         append(append([]byte{}, magic...), 0xc1, 0xa0),
		"magic-only":     magic,
		"trailing":       append(append([]byte{}, raw...), 0x00),
		"other-magic":    append([]byte("pscs-backup v2\n\x00"), raw[len(magic):]...),
		"negative-time":  cb(map[int]any{1: -1, 2: "s", 6: files("store", "audit.log", "checkpoint.pem", "vault/vault-key")}),
		"string-as-data": cb(map[int]any{1: 1, 6: []any{map[int]any{1: "store", 2: "text", 3: []byte{}}}}),
	}
	for name, p := range archives {
		if _, err := backup.ParseArchive(p); err == nil && name != "genuine" {
			t.Errorf("archive %s: accepted", name)
		}
		seed(t, "FuzzParseArchive", name, p)
	}

	// The mail.
	mail := func(env []byte) []byte {
		return backup.Mail("pscsd@example", "owner@example", "pscsd backup", time.Unix(1e9, 0), env)
	}
	env, _ := backup.Seal(raw, signer, []*x509.Certificate{owners[1].cert})
	signed, _ := signer.SignedEntity(raw)
	v15, _ := backup.SealEntity(signed, []*x509.Certificate{owners[0].cert}, cms.KeyTransportPKCS1v15)
	nested, _ := cms.Encrypt(mail(env), []*x509.Certificate{owners[1].cert})
	bare, _ := cms.Encrypt(raw, []*x509.Certificate{owners[1].cert})
	cpKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cp, _ := ca.IssueCheckpoint(cpKey.Public())
	foreign, _ := backup.Seal(raw, &backup.Signer{Key: cpKey, Certificate: cp, Chain: []*x509.Certificate{ca.Cert}}, []*x509.Certificate{owners[1].cert})
	hdr := "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	mails := map[string][]byte{
		"genuine":           mail(env),
		"signed-entity":     signed,
		"pkcs1v15":          mail(v15),
		"enveloped-twice":   mail(nested),
		"bare-archive":      mail(bare),
		"foreign-signer":    mail(foreign),
		"multipart-signed":  []byte("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"),
		"quoted-printable":  []byte(strings.Replace(string(mail(env)), "base64", "quoted-printable", 1)),
		"no-body":           []byte(hdr),
		"bad-base64":        []byte(hdr + "AAA=AAAA\r\n"),
		"nul-in-header":     []byte("Content-Type: application/pkcs7-mime;\x00 smime-type=enveloped-data\r\n\r\nAA==\r\n"),
		"long-header":       []byte("X: " + strings.Repeat("a", 70000) + "\r\n" + hdr + "AA==\r\n"),
		"empty-der":         []byte(hdr + "\r\n"),
		"certs-only":        []byte(strings.Replace(hdr, "enveloped-data", "certs-only", 1) + "AA==\r\n"),
		"smime-type-quoted": []byte(strings.Replace(hdr, "smime-type=enveloped-data", `smime-type="enveloped-data"; smime-type=signed-data`, 1) + "AA==\r\n"),
	}
	for name, p := range mails {
		if _, err := backup.Open(p, owners[1].key, nil); err == nil {
			t.Errorf("mail %s: opened without roots", name)
		}
		seed(t, "FuzzOpen", name, p)
		seed(t, "FuzzReadEntity", name, p)
	}
}
