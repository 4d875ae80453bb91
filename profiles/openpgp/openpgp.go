package openpgp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// PIN IDs (OpenPGP card 3.4, 7.2.2): PW1 in its two modes and PW3.
const (
	PINSign  = "pw1-sign" // PW1 for PSO:CDS (VERIFY P2 = 81)
	PIN      = "pw1"      // PW1 for decryption and authentication (P2 = 82)
	PINAdmin = "pw3"      // PW3, the admin PIN (P2 = 83); no key needs it
)

// AID is the start of every OpenPGP card's application identifier.
var AID = []byte{0xD2, 0x76, 0x00, 0x01, 0x24, 0x01}

// ErrKDF: the card hashes PINs with a KDF (KDF-DO F9), which this driver
// does not do; sending the plain PIN would cost a try.
var ErrKDF = errors.New("openpgp: the card's PINs use a KDF (KDF-DO F9), which pscs does not support")

// Profile is the OpenPGP card profile.
type Profile struct{}

var _, _ = profiles.Redactor(Profile{}), profiles.Decrypter(&Card{})

// Name returns "openpgp".
func (Profile) Name() string { return "openpgp" }

// Open selects the application; see [Open].
func (Profile) Open(ctx context.Context, t profiles.Transmitter) (profiles.Card, error) {
	return Open(ctx, t)
}

// Redact implements profiles.Redactor with [Redact].
func (Profile) Redact(cmd apdu.Command) (bool, bool) { return Redact(cmd) }

// slot is what the driver knows of each key (OpenPGP card 3.4, 4.4.3).
type slot struct {
	id, label string
	crt       byte // control reference template of GENERATE ASYMMETRIC KEY PAIR
	occ       byte // occurrence of its certificate 7F21 (SELECT DATA)
	pin       string
}

var slots = []slot{
	{"sig", "Signature key", 0xB6, 2, PINSign},
	{"dec", "Decryption key", 0xB8, 1, PIN},
	{"aut", "Authentication key", 0xA4, 0, PIN},
}

// Card is an open OpenPGP application. Its Keyring implements
// profiles.KeyCache.
type Card struct {
	profiles.Keyring
	conn  apdu.Conn
	aid   []byte
	ne    int      // Ne of long answers: 256, or the card's maximum with extended length
	pw    [7]byte  // PW status bytes C4 as Open read them
	attrs [][]byte // C1, C2, C3
	fps   []byte   // C5
}

// Open selects the OpenPGP application on the card behind t and reads its
// application related data (6E): AID, capabilities, algorithm attributes,
// fingerprints and PW status. The error wraps profiles.ErrNotPresent when
// the card has no OpenPGP application, and [ErrKDF] for a card whose PINs
// go through a KDF.
func Open(ctx context.Context, t profiles.Transmitter) (*Card, error) {
	c := &Card{conn: apdu.Conn{T: t}, ne: 256}
	if err := c.selectApp(ctx); err != nil {
		return nil, err
	}
	rsp, err := c.getData(ctx, 0x6E)
	if err != nil {
		return nil, err
	}
	caps, err := c.parseAppData(rsp)
	if err != nil {
		return nil, fmt.Errorf("openpgp: application related data: %w", err)
	}
	if len(caps) > 0 && caps[0]&0x01 != 0 { // the card knows KDF-DO F9
		f9, err := c.getData(ctx, 0xF9)
		if err != nil && !errors.Is(err, apdu.ErrNotFound) {
			return nil, err
		}
		if v, ok, _ := apdu.FindTLV(f9, 0x81); ok && len(v) > 0 && v[0] != 0 {
			return nil, ErrKDF
		}
	}
	return c, nil
}

func (c *Card) selectApp(ctx context.Context) error {
	_, err := profiles.Select(ctx, &c.conn, AID)
	return wrap("select", err)
}

func (c *Card) getData(ctx context.Context, tag uint16) ([]byte, error) {
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: 0xCA, P1: byte(tag >> 8), P2: byte(tag), Ne: c.ne})
	if err != nil {
		return nil, fmt.Errorf("openpgp: get data %X: %w", tag, err)
	}
	return rsp, nil
}

// parseAppData reads the application related data 6E into c and returns
// the extended capabilities C0.
func (c *Card) parseAppData(rsp []byte) (caps []byte, err error) {
	if v, ok, err := apdu.FindTLV(rsp, 0x6E); err == nil && ok {
		rsp = v
	}
	tlvs, err := apdu.ParseTLVs(rsp)
	if err != nil {
		return nil, err
	}
	c.attrs = make([][]byte, 3)
	for i := 0; i < len(tlvs); i++ { // 73's objects are appended to the list
		switch v := tlvs[i].Value; tlvs[i].Tag {
		case 0x4F:
			c.aid = bytes.Clone(v)
		case 0x5F52: // historical bytes: card capabilities in compact TLV 73
			if j := bytes.IndexByte(v, 0x73); len(v) > 0 && v[0] == 0 && j > 0 && j+3 < len(v) && v[j+3]&0x40 != 0 {
				c.conn.Extended = true
			}
		case 0x73:
			dd, err := apdu.ParseTLVs(v)
			if err != nil {
				return nil, err
			}
			tlvs = append(tlvs, dd...)
		case 0xC0:
			caps = v
		case 0xC1, 0xC2, 0xC3:
			c.attrs[tlvs[i].Tag-0xC1] = bytes.Clone(v)
		case 0xC4:
			if len(v) < 7 {
				return nil, fmt.Errorf("PW status of %d bytes: %w", len(v), apdu.ErrMalformed)
			}
			copy(c.pw[:], v)
		case 0xC5:
			c.fps = bytes.Clone(v)
		case 0x7F66: // extended length information: 02 02 <max command> 02 02 <max response>
			if len(v) == 8 && c.conn.Extended {
				c.ne = max(256, int(v[6])<<8|int(v[7]))
			}
		}
	}
	if len(c.aid) != 16 || !bytes.HasPrefix(c.aid, AID) || c.pw[4]|c.pw[6] == 0 && c.pw[1] == 0 {
		return nil, fmt.Errorf("not an OpenPGP card's (AID %X, PW status %X): %w", c.aid, c.pw, apdu.ErrMalformed)
	}
	return caps, nil
}

// Info gives the serial number of the AID as GnuPG shows it (8 hex
// digits; a YubiKey's are its decimal serial), the application version
// and, in the label, the signature counter (7A/93).
func (c *Card) Info(ctx context.Context) (profiles.Info, error) {
	info := profiles.Info{Profile: "openpgp", Serial: fmt.Sprintf("%X", c.aid[10:14]),
		Version: fmt.Sprintf("%d.%d", c.aid[6], c.aid[7]), Label: "OpenPGP card"}
	rsp, err := c.getData(ctx, 0x7A)
	if err != nil {
		return info, err
	}
	if v, ok, _ := apdu.FindTLV(rsp, 0x7A); ok {
		rsp = v
	}
	if n, ok, _ := apdu.FindTLV(rsp, 0x93); ok && len(n) == 3 {
		info.Label += fmt.Sprintf(", %d signatures", int(n[0])<<16|int(n[1])<<8|int(n[2]))
	}
	return info, nil
}

// keyType reads algorithm attributes (4.4.3.9): RSA, ECDSA or ECDH on a
// NIST curve, EdDSA, ECDH on Curve25519. 0: an algorithm this driver does
// not use.
func keyType(attr []byte) profiles.KeyType {
	if len(attr) == 0 {
		return 0
	}
	if attr[0] == 0x01 {
		return profiles.KeyRSA
	}
	t := curves[hex.EncodeToString(bytes.TrimSuffix(attr[1:], []byte{0xFF}))]
	if (attr[0] != 0x12 && attr[0] != 0x13 && attr[0] != 0x16) || (t == profiles.KeyEd25519) != (attr[0] == 0x16) && t != profiles.KeyX25519 {
		return 0
	}
	return t
}

// curves are the curve OIDs of algorithm attributes, in hex.
var curves = map[string]profiles.KeyType{"2a8648ce3d030107": profiles.KeyP256, "2b81040022": profiles.KeyP384,
	"2b81040023": profiles.KeyP521, "2b06010401da470f01": profiles.KeyEd25519, "2b060104019755010501": profiles.KeyX25519}

// Keys reads the public key of each slot with a fingerprint (GENERATE
// ASYMMETRIC KEY PAIR, P1 = 81) and its certificate (7F21). The
// decryption key does not sign (NoSign); the signature key's PIN policy
// is "always" when PW1 is valid for one signature only (C4's first byte 00).
func (c *Card) Keys(ctx context.Context) ([]profiles.Key, error) {
	var keys []profiles.Key
	for i, s := range slots {
		t := keyType(c.attrs[i])
		if t == 0 || len(c.fps) < 20*(i+1) || bytes.Count(c.fps[20*i:20*i+20], []byte{0}) == 20 {
			continue // no key, or one this driver cannot use
		}
		rsp, err := c.conn.Do(ctx, apdu.Command{INS: 0x47, P1: 0x81, Data: []byte{s.crt, 0}, Ne: c.ne})
		if errors.Is(err, apdu.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("openpgp: read public key %s: %w", s.id, err)
		}
		pub, err := profiles.PublicKeyFromTemplate(rsp, t)
		if err != nil {
			return nil, fmt.Errorf("openpgp: key %s: %w", s.id, err)
		}
		k := profiles.Key{ID: s.id, Label: s.label, Algorithm: profiles.AlgorithmOf(pub), Public: pub,
			PINPolicy: profiles.PINOnce, PIN: s.pin, Decrypt: s.id == "dec", NoSign: s.id == "dec"}
		if s.id == "sig" && c.pw[0] == 0 {
			k.PINPolicy = profiles.PINAlways
		}
		if k.Certificate, err = c.certificate(ctx, s); err != nil {
			return nil, err
		}
		if k.Certificate != nil && !profiles.PublicEqual(pub, k.Certificate.PublicKey) {
			k.Certificate = nil // left behind by an earlier key
		}
		keys = append(keys, k)
	}
	c.UseKeys(keys)
	return keys, nil
}

// certificate reads the cardholder certificate of slot s: with SELECT
// DATA on cards of version 3 and later, else the one certificate (of the
// authentication key). nil when there is none.
func (c *Card) certificate(ctx context.Context, s slot) (*x509.Certificate, error) {
	if c.aid[6] >= 3 {
		// 60 { 5C 7F21 } with the length byte first that YubiKeys before
		// 5.4.4 want, as GnuPG sends it; later cards take it too.
		sel := apdu.Command{INS: 0xA5, P1: s.occ, P2: 0x04, Data: []byte{0x06, 0x60, 0x04, 0x5C, 0x02, 0x7F, 0x21}, Ne: 256}
		if _, err := c.conn.Do(ctx, sel); err != nil {
			return nil, fmt.Errorf("openpgp: select certificate of %s: %w", s.id, err)
		}
	} else if s.id != "aut" {
		return nil, nil
	}
	der, err := c.getData(ctx, 0x7F21)
	if len(der) == 0 || errors.Is(err, apdu.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if v, ok, err := apdu.FindTLV(der, 0x7F21); err == nil && ok {
		der = v // some cards wrap it
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("openpgp: certificate of %s: %w", s.id, err)
	}
	return cert, nil
}

// PINs returns PW1 for signing, PW1 and PW3, with the maximum lengths of
// the PW status bytes.
func (c *Card) PINs() []profiles.PINInfo {
	return []profiles.PINInfo{
		{ID: PINSign, Label: "PW1 (user PIN, signing)", Min: 6, Max: max(6, int(c.pw[1]&0x7F))},
		{ID: PIN, Label: "PW1 (user PIN)", Min: 6, Max: max(6, int(c.pw[1]&0x7F))},
		{ID: PINAdmin, Label: "PW3 (admin PIN)", Min: 8, Max: max(8, int(c.pw[3]&0x7F))},
	}
}

// pinRef is the VERIFY reference of PIN id, and its counter in C4.
func pinRef(id string) (ref byte, counter int, err error) {
	r, ok := map[string][2]int{PINSign: {0x81, 4}, PIN: {0x82, 4}, PINAdmin: {0x83, 6}}[id]
	if !ok {
		err = fmt.Errorf("openpgp: PIN %q: %w", id, profiles.ErrNoPIN)
	}
	return byte(r[0]), r[1], err
}

// retries reads the tries left of the counter at index i of C4.
func (c *Card) retries(ctx context.Context, i int) (int, error) {
	rsp, err := c.getData(ctx, 0xC4)
	if err != nil {
		return -1, err
	}
	if len(rsp) != 7 {
		return -1, fmt.Errorf("openpgp: PW status of %d bytes: %w", len(rsp), apdu.ErrMalformed)
	}
	return int(rsp[i]), nil
}

// PINStatus reads the tries left from the PW status bytes (C4) and asks
// with an empty VERIFY whether the PIN is verified; neither spends a try.
func (c *Card) PINStatus(ctx context.Context, id string) (profiles.PINStatus, error) {
	ref, i, err := pinRef(id)
	if err != nil {
		return profiles.PINStatus{}, err
	}
	n, err := c.retries(ctx, i)
	if err != nil {
		return profiles.PINStatus{}, err
	}
	_, err = c.conn.Do(ctx, apdu.Command{INS: 0x20, P2: ref})
	var sw apdu.StatusWord
	if err != nil && !errors.As(err, &sw) {
		return profiles.PINStatus{}, fmt.Errorf("openpgp: PIN status: %w", err)
	}
	return profiles.PINStatus{Verified: err == nil, Retries: n, Blocked: n == 0}, nil
}

// VerifyPIN presents PIN id. A wrong PIN is a *profiles.PINError with the
// tries left read from C4: a YubiKey answers 69 82, not 63 Cx.
func (c *Card) VerifyPIN(ctx context.Context, id string, pin []byte) error {
	ref, i, err := pinRef(id)
	if err != nil {
		return err
	}
	if _, err := profiles.CheckPIN(c.PINs(), id, pin); err != nil {
		return err
	}
	_, err = c.conn.Do(ctx, apdu.Command{INS: 0x20, P2: ref, Data: pin})
	if err == nil || !profiles.PINFailed(err) {
		return wrap("verify "+id, err)
	}
	n, _ := c.retries(ctx, i) // -1 if it cannot be read
	return fmt.Errorf("openpgp: %w", profiles.NewPINError(id, err, n))
}

// Logout forgets every verification (VERIFY P1 = FF, 3.4); a card that
// does not know it is selected again, which resets them.
func (c *Card) Logout(ctx context.Context) error {
	for _, ref := range []byte{0x81, 0x82, 0x83} {
		if _, err := c.conn.Do(ctx, apdu.Command{INS: 0x20, P1: 0xFF, P2: ref}); errors.As(err, new(apdu.StatusWord)) {
			return c.selectApp(ctx) // a card before 3.4
		} else if err != nil {
			return wrap("log out", err)
		}
	}
	return nil
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("openpgp: %s: %w", op, err)
}

// Sign signs with "sig" (PSO: COMPUTE DIGITAL SIGNATURE) or "aut"
// (INTERNAL AUTHENTICATE). RSA: the card pads the DigestInfo with
// PKCS #1 v1.5 itself, so PSS is refused with profiles.ErrKeyUsage.
// ECDSA: the digest as it is; the card's r‖s comes back as DER. Ed25519:
// digest is the message, opts.HashFunc() zero.
func (c *Card) Sign(ctx context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k, err := c.Key(ctx, id, c.Keys)
	if err != nil {
		return nil, err
	}
	if k.NoSign {
		return nil, fmt.Errorf("openpgp: key %s does not sign: %w", id, profiles.ErrKeyUsage)
	}
	input := digest
	switch k.Public.(type) {
	case *rsa.PublicKey:
		if _, ok := opts.(*rsa.PSSOptions); ok {
			return nil, fmt.Errorf("openpgp: key %s: the card signs PKCS #1 v1.5 only, not PSS: %w", id, profiles.ErrKeyUsage)
		}
		if opts.HashFunc() != 0 {
			if input, err = profiles.DigestInfo(opts.HashFunc(), digest); err != nil {
				return nil, fmt.Errorf("openpgp: %w", err)
			}
		}
	case ed25519.PublicKey:
		if opts.HashFunc() != 0 {
			return nil, fmt.Errorf("openpgp: key %s: Ed25519 signs a message, not a %v digest", id, opts.HashFunc())
		}
	}
	if len(input) == 0 {
		return nil, fmt.Errorf("openpgp: key %s: nothing to sign", id)
	}
	cmd := apdu.Command{INS: 0x2A, P1: 0x9E, P2: 0x9A, Data: input, Ne: c.ne}
	if id == "aut" {
		cmd.INS, cmd.P1, cmd.P2 = 0x88, 0, 0
	}
	sig, err := c.conn.Do(ctx, cmd)
	if err != nil {
		return nil, wrap("sign with "+id, err)
	}
	if pub, ok := k.Public.(*ecdsa.PublicKey); ok {
		if sig, err = profiles.ECDSAFromRaw(sig, profiles.CurveSize(pub.Curve)); err != nil {
			return nil, wrap("sign with "+id, err)
		}
	}
	sig, err = profiles.CheckSigned(k, digest, sig, opts)
	return sig, wrap("sign with "+id, err)
}

// decKey is key id if it decrypts.
func (c *Card) decKey(ctx context.Context, id string) (profiles.Key, error) {
	k, err := c.Key(ctx, id, c.Keys)
	if err == nil && !k.Decrypt {
		err = fmt.Errorf("openpgp: key %s does not decrypt: %w", id, profiles.ErrKeyUsage)
	}
	return k, err
}

// decipher runs PSO: DECIPHER; the card's 6A 80 is a failed decryption.
func (c *Card) decipher(ctx context.Context, id string, data []byte) ([]byte, error) {
	out, err := c.conn.Do(ctx, apdu.Command{INS: 0x2A, P1: 0x80, P2: 0x86, Data: data, Ne: c.ne})
	if errors.Is(err, apdu.ErrWrongData) {
		err = fmt.Errorf("%w (%w)", profiles.ErrDecryption, err)
	}
	return out, wrap("decipher with "+id, err)
}

// Decrypt decrypts an RSA PKCS #1 v1.5 ciphertext with the decryption key;
// the card removes the padding (padding indicator 00). OAEP is refused
// with profiles.ErrKeyUsage: the card does not do it.
func (c *Card) Decrypt(ctx context.Context, id string, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	k, err := c.decKey(ctx, id)
	if err != nil {
		return nil, err
	}
	pub, ok := k.Public.(*rsa.PublicKey)
	if _, oaep := opts.(*rsa.OAEPOptions); !ok || oaep {
		return nil, fmt.Errorf("openpgp: key %s decrypts RSA PKCS #1 v1.5 only: %w", id, profiles.ErrKeyUsage)
	}
	if len(ciphertext) != pub.Size() {
		return nil, fmt.Errorf("openpgp: ciphertext of %d bytes for a %d-byte key", len(ciphertext), pub.Size())
	}
	return c.decipher(ctx, id, append([]byte{0}, ciphertext...))
}

// DeriveECDH agrees a key with peer (an uncompressed point, or the 32-byte
// X25519 u-coordinate) through PSO: DECIPHER with A6 { 7F49 { 86 peer } }.
func (c *Card) DeriveECDH(ctx context.Context, id string, peer []byte) ([]byte, error) {
	k, err := c.decKey(ctx, id)
	if err != nil {
		return nil, err
	}
	size := 32
	switch pub := k.Public.(type) {
	case *ecdsa.PublicKey:
		_, err = ecdsa.ParseUncompressedPublicKey(pub.Curve, peer)
		size = profiles.CurveSize(pub.Curve)
	case *ecdh.PublicKey:
		_, err = ecdh.X25519().NewPublicKey(peer)
	default:
		return nil, fmt.Errorf("openpgp: key %s does not agree keys: %w", id, profiles.ErrKeyUsage)
	}
	if err != nil {
		return nil, fmt.Errorf("openpgp: peer is no public key of the key's curve: %w", err)
	}
	out, err := c.decipher(ctx, id, apdu.AppendTLV(nil, 0xA6, apdu.AppendTLV(nil, 0x7F49, apdu.AppendTLV(nil, 0x86, peer))))
	if err == nil && len(out) != size {
		clear(out)
		return nil, fmt.Errorf("openpgp: key agreement: %d bytes, want %d: %w", len(out), size, apdu.ErrMalformed)
	}
	return out, err
}
