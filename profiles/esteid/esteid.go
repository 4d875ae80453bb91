// Package esteid is the profile of the Estonian ID card of the 2018
// generation (EstEID 2018, IDEMIA Cosmo), the card OpenSC's esteid2018
// driver and web-eid's libelectronic-id serve. Its simulator is eidsim.
//
// # The card as the driver sees it
//
// Open selects the main application (the IAS-ECC AID, which also logs out
// both PINs). The card has two ECC keys, both P-384 on the cards of 2018:
//
//	ID  key ref  DF    certificate      PIN                   policy
//	81  81       ADF1  ADF1/3401 (3402) pin1 (ref 01, global)  once
//	9f  9F       ADF2  ADF2/341F (341E) pin2 (ref 85, ADF2)    always
//
// Key 81 authenticates (MSE:SET A4, INTERNAL AUTHENTICATE) and agrees keys
// ([Card.DeriveECDH]: MSE:SET B8, PSO:DECIPHER); key 9f makes qualified
// signatures (MSE:SET B6, PSO:COMPUTE DIGITAL SIGNATURE), one per VERIFY of
// PIN2. Both answer the raw signature r‖s, which Sign returns in ASN.1
// DER after checking it under the key's public key. The public keys come
// from the certificates, read with SELECT (FCP, for the size) and READ
// BINARY. The serial is the document number (3F00/D003, as OpenSC shows
// it). PINs are digits, padded with FF to 12 bytes; their tries left come
// from the PIN information objects (GET DATA 3F FF, as OpenSC reads them),
// which spend no try; an empty VERIFY says whether a PIN is verified. The
// PUK (ref 02) unblocks PINs and is not offered: no key needs it.
package esteid

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Profile is the EstEID profile.
type Profile struct{}

var (
	_ profiles.Profile   = Profile{}
	_ profiles.Redactor  = Profile{}
	_ profiles.Card      = (*Card)(nil)
	_ profiles.KeyCache  = (*Card)(nil)
	_ profiles.Decrypter = (*Card)(nil)
)

// Name returns "esteid".
func (Profile) Name() string { return "esteid" }

// Redact implements profiles.Redactor with [Redact].
func (Profile) Redact(cmd apdu.Command) (secretCommand, secretResponse bool) { return Redact(cmd) }

// Open selects the main application; see [Open].
func (Profile) Open(ctx context.Context, t profiles.Transmitter) (profiles.Card, error) {
	return Open(ctx, t)
}

// PIN IDs.
const (
	PIN1 = "pin1" // authentication and key agreement (key 81)
	PIN2 = "pin2" // qualified signature (key 9f)
)

var pins = []profiles.PINInfo{
	{ID: PIN1, Label: "PIN1 (authentication)", Min: 4, Max: 12},
	{ID: PIN2, Label: "PIN2 (signature)", Min: 5, Max: 12},
}

// pinRefs are the card's references of the PINs.
var pinRefs = map[string]byte{PIN1: 0x01, PIN2: 0x85}

// File identifiers.
const (
	fidMF   = 0x3F00
	fidADF1 = 0xADF1
	fidADF2 = 0xADF2
	fidDoc  = 0xD003 // document number: 04 LL …
)

// AID is the main (IAS-ECC) application OpenSC selects to match the card.
var AID = []byte{0xA0, 0x00, 0x00, 0x00, 0x77, 0x01, 0x08, 0x00, 0x07, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x01, 0x00}

// adfNames are the application names of ADF1 (authentication) and ADF2
// (QSCD).
var adfNames = map[uint16][]byte{
	fidADF1: {0xE8, 0x28, 0xBD, 0x08, 0x0F, 0xF2, 0x50, 0x4F, 0x54, 0x20, 0x41, 0x57, 0x50},
	fidADF2: []byte("QSCD Application"),
}

// keyInfo is what the driver knows of the two keys.
var keyInfo = []struct {
	id, label, pin string
	ref            byte
	df             uint16
	certs          []uint16 // certificate EFs, the usual one first
	policy         profiles.PINPolicy
	decrypt        bool
}{
	{"81", "Authentication", PIN1, 0x81, fidADF1, []uint16{0x3401, 0x3402}, profiles.PINOnce, true},
	{"9f", "Qualified signature", PIN2, 0x9F, fidADF2, []uint16{0x341F, 0x341E}, profiles.PINAlways, false},
}

// Card is an open EstEID application.
type Card struct {
	profiles.Keyring // implements profiles.KeyCache
	conn             apdu.Conn
	df               uint16 // the DF the driver last selected
}

// Open selects the main application on the card behind t, which logs out
// both PINs. The error wraps [profiles.ErrNotPresent] when the card has
// no such application.
func Open(ctx context.Context, t profiles.Transmitter) (*Card, error) {
	c := &Card{conn: apdu.Conn{T: t}}
	if _, err := c.conn.Do(ctx, apdu.Command{INS: 0xA4, P1: 0x04, P2: 0x0C, Data: AID}); err != nil {
		if errors.Is(err, apdu.ErrNotFound) {
			return nil, fmt.Errorf("esteid: select: %w (%w)", profiles.ErrNotPresent, err)
		}
		return nil, fmt.Errorf("esteid: select: %w", err)
	}
	c.df = fidMF
	return c, nil
}

// selectDF makes fid (the MF, ADF1 or ADF2) the current DF, unless the
// driver selected it last: the MF by its identifier, the ADFs by their
// application names, as web-eid selects them.
func (c *Card) selectDF(ctx context.Context, fid uint16) error {
	if c.df == fid {
		return nil
	}
	cmd := apdu.Command{INS: 0xA4, P1: 0x04, P2: 0x0C, Data: adfNames[fid]}
	if fid == fidMF {
		cmd.P1 = 0x00
	}
	c.df = 0 // unknown until the card confirms
	if _, err := c.conn.Do(ctx, cmd); err != nil {
		return fmt.Errorf("esteid: select %04X: %w", fid, err)
	}
	c.df = fid
	return nil
}

// maxFile bounds the size of a file the driver reads.
const maxFile = 16 << 10

// readFile selects EF fid of DF df and reads it whole.
func (c *Card) readFile(ctx context.Context, df, fid uint16) ([]byte, error) {
	if err := c.selectDF(ctx, df); err != nil {
		return nil, err
	}
	fcp, err := c.conn.Do(ctx, apdu.Command{INS: 0xA4, P1: 0x09, P2: 0x04, Data: binary.BigEndian.AppendUint16(nil, fid), Ne: 256})
	if err != nil {
		return nil, fmt.Errorf("esteid: select %04X: %w", fid, err)
	}
	size, err := parseFCPSize(fcp)
	if err != nil {
		return nil, fmt.Errorf("esteid: select %04X: %w", fid, err)
	}
	data := make([]byte, 0, size)
	for len(data) < size {
		n := min(size-len(data), 0xB5) // the chunk web-eid reads
		chunk, err := c.conn.Do(ctx, apdu.Command{INS: 0xB0, P1: byte(len(data) >> 8), P2: byte(len(data)), Ne: n})
		if err != nil {
			return nil, fmt.Errorf("esteid: read %04X at %d: %w", fid, len(data), err)
		}
		if len(chunk) == 0 || len(chunk) > n {
			return nil, fmt.Errorf("esteid: read %04X at %d: %d bytes for %d: %w", fid, len(data), len(chunk), n, apdu.ErrMalformed)
		}
		data = append(data, chunk...)
	}
	return data, nil
}

// parseFCPSize reads the size of an EF (80, or 81) from the FCP (62) or
// FCI (6F) a SELECT answered.
func parseFCPSize(b []byte) (int, error) {
	for _, tag := range []uint32{0x62, 0x6F} {
		fcp, ok, err := apdu.FindTLV(b, tag)
		if err != nil || !ok {
			continue
		}
		for _, st := range []uint32{0x80, 0x81} {
			v, ok, err := apdu.FindTLV(fcp, st)
			if err != nil || !ok || len(v) == 0 || len(v) > 2 {
				continue
			}
			n := int(v[0])
			if len(v) == 2 {
				n = n<<8 | int(v[1])
			}
			if n == 0 || n > maxFile {
				return 0, fmt.Errorf("file size %d: %w", n, apdu.ErrMalformed)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no file size in the FCP: %w", apdu.ErrMalformed)
}

// Info reads the document number (3F00/D003), the serial OpenSC shows.
func (c *Card) Info(ctx context.Context) (profiles.Info, error) {
	b, err := c.readFile(ctx, fidMF, fidDoc)
	if err != nil {
		return profiles.Info{}, err
	}
	doc, err := parseDocumentNumber(b)
	if err != nil {
		return profiles.Info{}, fmt.Errorf("esteid: document number: %w", err)
	}
	return profiles.Info{Profile: "esteid", Serial: doc, Label: "ID-kaart " + doc}, nil
}

// parseDocumentNumber reads the document number from the value of tag 04
// in EF D003: printable ASCII, two letters and digits on real cards.
func parseDocumentNumber(b []byte) (string, error) {
	v, ok, err := apdu.FindTLV(b, 0x04)
	if err != nil || !ok || len(v) == 0 || len(v) > 16 {
		return "", fmt.Errorf("no document number (04): %w", apdu.ErrMalformed)
	}
	for _, ch := range v {
		if ch < '0' || ch > 'z' || (ch > '9' && ch < 'A') || (ch > 'Z' && ch < 'a') {
			return "", fmt.Errorf("document number is not alphanumeric: %w", apdu.ErrMalformed)
		}
	}
	return string(v), nil
}

// Keys reads both certificates and lists the keys whose certificate the
// card has. A certificate that does not parse or holds no EC key is an
// error: the driver cannot use the key.
func (c *Card) Keys(ctx context.Context) ([]profiles.Key, error) {
	var keys []profiles.Key
	for _, ki := range keyInfo {
		var cert *x509.Certificate
		for _, fid := range ki.certs {
			b, err := c.readFile(ctx, ki.df, fid)
			if errors.Is(err, apdu.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if cert, err = parseCertificate(b); err != nil {
				return nil, fmt.Errorf("esteid: key %s: certificate %04X: %w", ki.id, fid, err)
			}
			break
		}
		if cert == nil {
			continue
		}
		keys = append(keys, profiles.Key{ID: ki.id, Label: ki.label, Algorithm: profiles.AlgorithmOf(cert.PublicKey),
			Decrypt: ki.decrypt, Public: cert.PublicKey, Certificate: cert, PINPolicy: ki.policy, PIN: ki.pin})
	}
	c.UseKeys(keys)
	return keys, nil
}

// parseCertificate parses a certificate file, which may have padding after
// the DER, and accepts ECDSA keys on the NIST curves only.
func parseCertificate(b []byte) (*x509.Certificate, error) {
	s := cryptobyte.String(b)
	var der cryptobyte.String
	if !s.ReadASN1Element(&der, asn1.SEQUENCE) {
		return nil, fmt.Errorf("not a DER certificate: %w", apdu.ErrMalformed)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(profiles.AlgorithmOf(cert.PublicKey), "ECCP") {
		return nil, fmt.Errorf("key %T is not ECDSA on a NIST curve", cert.PublicKey)
	}
	return cert, nil
}

// key finds key id with its reference and DF.
func (c *Card) key(ctx context.Context, id string) (profiles.Key, byte, uint16, error) {
	k, err := c.Key(ctx, id, c.Keys)
	if err != nil {
		return k, 0, 0, fmt.Errorf("esteid: %w", err)
	}
	for _, ki := range keyInfo {
		if ki.id == id {
			return k, ki.ref, ki.df, nil
		}
	}
	return k, 0, 0, fmt.Errorf("esteid: key %q: %w", id, profiles.ErrNoKey)
}

// PINs returns PIN1 and PIN2, PIN1 first.
func (c *Card) PINs() []profiles.PINInfo { return slices.Clone(pins) }

// pinDF selects where PIN id lives (PIN2 is local to ADF2) and returns
// its reference.
func (c *Card) pinDF(ctx context.Context, id string) (byte, error) {
	ref, ok := pinRefs[id]
	if !ok {
		return 0, fmt.Errorf("esteid: PIN %q: %w", id, profiles.ErrNoPIN)
	}
	if ref == 0x85 {
		return ref, c.selectDF(ctx, fidADF2)
	}
	return ref, nil
}

// VerifyPIN presents PIN pinID, padded with FF to 12 bytes. The PIN never
// appears in errors.
func (c *Card) VerifyPIN(ctx context.Context, pinID string, pin []byte) error {
	if _, err := profiles.CheckPIN(pins, pinID, pin); err != nil {
		return fmt.Errorf("esteid: %w", err)
	}
	if bytes.ContainsFunc(pin, func(r rune) bool { return r < '0' || r > '9' }) {
		return fmt.Errorf("esteid: a PIN is digits: %w", profiles.ErrPINFormat)
	}
	ref, err := c.pinDF(ctx, pinID)
	if err != nil {
		return err
	}
	padded := bytes.Repeat([]byte{0xFF}, 12)
	copy(padded, pin)
	_, err = c.conn.Do(ctx, apdu.Command{INS: 0x20, P2: ref, Data: padded})
	clear(padded)
	if err != nil {
		return fmt.Errorf("esteid: verify: %w", profiles.NewPINError(pinID, err, -1))
	}
	return nil
}

// PINStatus reads the tries left from the PIN information object (GET
// DATA) and whether the PIN is verified from an empty VERIFY; neither
// spends a try.
func (c *Card) PINStatus(ctx context.Context, pinID string) (profiles.PINStatus, error) {
	ref, err := c.pinDF(ctx, pinID)
	if err != nil {
		return profiles.PINStatus{}, err
	}
	q := apdu.AppendTLV(nil, 0xBF8100|uint32(ref&0x0F), apdu.AppendTLV(nil, 0xA0, []byte{0x80}))
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: 0xCB, P1: 0x3F, P2: 0xFF,
		Data: apdu.AppendTLV(nil, 0x4D, apdu.AppendTLV(nil, 0x70, q)), Ne: 256})
	if err != nil {
		return profiles.PINStatus{}, fmt.Errorf("esteid: %s info: %w", pinID, err)
	}
	left, err := parsePINInfo(rsp, ref)
	if err != nil {
		return profiles.PINStatus{}, fmt.Errorf("esteid: %s info: %w", pinID, err)
	}
	st := profiles.PINStatus{Retries: left, Blocked: left == 0}
	if !st.Blocked {
		_, err := c.conn.Do(ctx, apdu.Command{INS: 0x20, P2: ref})
		var sw apdu.StatusWord
		if err != nil && !errors.As(err, &sw) {
			return profiles.PINStatus{}, fmt.Errorf("esteid: %s status: %w", pinID, err)
		}
		st.Verified = err == nil
	}
	return st, nil
}

// parsePINInfo reads the tries left (9B) of PIN ref from its information
// object, 70 { BF 81 0r { A0 { 9A max, 9B left, … } } }.
func parsePINInfo(b []byte, ref byte) (int, error) {
	v, ok, err := apdu.FindTLV(b, 0x70)
	if err == nil && ok {
		v, ok, err = apdu.FindTLV(v, 0xBF8100|uint32(ref&0x0F))
	}
	if err == nil && ok {
		v, ok, err = apdu.FindTLV(v, 0xA0)
	}
	if err == nil && ok {
		v, ok, err = apdu.FindTLV(v, 0x9B)
	}
	if err != nil || !ok || len(v) != 1 || v[0] > 15 {
		return 0, fmt.Errorf("no tries left (9B) in the PIN object: %w", apdu.ErrMalformed)
	}
	return int(v[0]), nil
}

// Logout selects the main application again, which logs out both PINs
// (as OpenSC logs out).
func (c *Card) Logout(ctx context.Context) error {
	c.df = 0
	if _, err := c.conn.Do(ctx, apdu.Command{INS: 0xA4, P1: 0x04, P2: 0x0C, Data: AID}); err != nil {
		return fmt.Errorf("esteid: log out: %w", err)
	}
	c.df = fidMF
	return nil
}

// setEnv selects the key's DF and sets the security environment crt
// (A4, B6, B8) with algorithm alg and key ref.
func (c *Card) setEnv(ctx context.Context, df uint16, crt, alg, ref byte) error {
	if err := c.selectDF(ctx, df); err != nil {
		return err
	}
	data := apdu.AppendTLV(apdu.AppendTLV(nil, 0x80, []byte{alg}), 0x84, []byte{ref})
	if _, err := c.conn.Do(ctx, apdu.Command{INS: 0x22, P1: 0x41, P2: crt, Data: data}); err != nil {
		return fmt.Errorf("esteid: set security environment %02X: %w", crt, err)
	}
	return nil
}

// Sign signs digest with key id: INTERNAL AUTHENTICATE (81) or PSO:
// COMPUTE DIGITAL SIGNATURE (9f) of the digest fitted to the curve, the
// raw r‖s returned in DER once it verifies under the key.
func (c *Card) Sign(ctx context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k, ref, df, err := c.key(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(digest) == 0 {
		return nil, fmt.Errorf("esteid: sign with %s: empty digest", id)
	}
	curve := k.Public.(*ecdsa.PublicKey).Curve
	input := profiles.ECDSADigest(curve, digest) // zero-padded to 48 bytes, as OpenSC sends
	cmd := apdu.Command{INS: 0x2A, P1: 0x9E, P2: 0x9A, Data: input, Ne: 256}
	crt, alg := byte(0xB6), byte(0x54)
	if ref == 0x81 {
		cmd.INS, cmd.P1, cmd.P2 = 0x88, 0, 0
		crt, alg = 0xA4, 0x04
	}
	if err := c.setEnv(ctx, df, crt, alg, ref); err != nil {
		return nil, err
	}
	raw, err := c.conn.Do(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("esteid: sign with %s: %w", id, err)
	}
	sig, err := profiles.ECDSAFromRaw(raw, profiles.CurveSize(curve))
	if err == nil {
		sig, err = profiles.CheckSigned(k, digest, sig, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("esteid: sign with %s: %w", id, err)
	}
	return sig, nil
}

// Decrypt refuses: EstEID keys are EC; key 81 agrees keys ([Card.DeriveECDH]).
func (c *Card) Decrypt(ctx context.Context, id string, _ []byte, _ crypto.DecrypterOpts) ([]byte, error) {
	if _, _, _, err := c.key(ctx, id); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("esteid: decrypt with %s: %w", id, profiles.ErrKeyUsage)
}

// DeriveECDH agrees a key with key 81 (PIN1): MSE:SET B8, then PSO:
// DECIPHER of the peer's point after the padding indicator 00. The
// answer, the shared X coordinate, is secret and appears in no error.
func (c *Card) DeriveECDH(ctx context.Context, id string, peer []byte) ([]byte, error) {
	k, ref, df, err := c.key(ctx, id)
	if err != nil {
		return nil, err
	}
	if !k.Decrypt {
		return nil, fmt.Errorf("esteid: derive with %s: %w", id, profiles.ErrKeyUsage)
	}
	pub, err := k.Public.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		return nil, fmt.Errorf("esteid: derive with %s: %w", id, err)
	}
	if _, err := pub.Curve().NewPublicKey(peer); err != nil {
		return nil, fmt.Errorf("esteid: derive with %s: the peer is not an uncompressed point on the key's curve", id)
	}
	if err := c.setEnv(ctx, df, 0xB8, 0x0B, ref); err != nil {
		return nil, err
	}
	secret, err := c.conn.Do(ctx, apdu.Command{INS: 0x2A, P1: 0x80, P2: 0x86, Data: append([]byte{0}, peer...), Ne: 256})
	if err != nil {
		return nil, fmt.Errorf("esteid: derive with %s: %w", id, err)
	}
	if want := (len(peer) - 1) / 2; len(secret) != want {
		clear(secret)
		return nil, fmt.Errorf("esteid: derive with %s: a shared secret of %d bytes, want %d: %w", id, len(secret), want, apdu.ErrMalformed)
	}
	return secret, nil
}
