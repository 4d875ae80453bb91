// Package piv is the profile driver for PIV cards (NIST SP 800-73-4, with the
// YubiKey extensions where a card has them).
//
// # Use
//
//	card, err := piv.Open(ctx, t) // t: any profiles.Transmitter
//	keys, err := card.Keys(ctx)
//	err = card.VerifyPIN(ctx, piv.PIN, pin)
//	sig, err := card.Sign(ctx, "9c", digest, crypto.SHA256)
//
// The driver speaks APDUs only; it never opens hardware. Command chaining,
// GET RESPONSE and 6C xx are handled by apdu.Conn.
//
// # Conventions
//
//   - Keys are named by their slot in lower-case hex: "9a" PIV
//     Authentication, "9c" Digital Signature, "9d" Key Management, "9e" Card
//     Authentication, "82"–"95" retired key management.
//   - The card has one PIN, [PIN] ("piv-pin", key reference 80), for every
//     key; the PUK and the management key are not used.
//   - PINs are 6 to 8 bytes, padded with FF to 8 on the wire (SP 800-73-4
//     Part 2, 3.2.1). A PIN of another length is refused before it reaches
//     the card, so it cannot cost a try.
//   - Signatures: the host pads RSA (PKCS #1 v1.5 or PSS) and the card does
//     the raw private-key operation; ECDSA signatures come back as ASN.1 DER.
//     Every signature is checked against the key's public key before it is
//     returned, which catches faulty cards and corrupted responses (a rogue
//     card could still lie about its public key and certificate together).
//   - Slot 9C has the PIN policy "always": VerifyPIN must come immediately
//     before every Sign. The driver learns the policy from YubiKey metadata
//     (GET METADATA, firmware 5.3 and later) and otherwise assumes the PIV
//     defaults.
//
// # Errors
//
// Every error from the card wraps its apdu.StatusWord: a wrong PIN is a
// [*PINError] that unwraps to 63 Cx, so both errors.As(err, &pinErr) and
// errors.Is(err, apdu.ErrWrongPIN) work; a blocked PIN unwraps to 69 83
// (apdu.ErrBlocked); signing without the PIN unwraps to 69 82
// (apdu.ErrSecurityStatus).
//
// # Concurrency
//
// A Card is not safe for concurrent use.
package piv

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strconv"
	"strings"

	_ "crypto/sha256" // hashes for PSS
	_ "crypto/sha512"

	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/profiles"
)

// Instruction bytes (SP 800-73-4 Part 2, Table 21; YubiKey extensions).
const (
	insSelect      = 0xA4
	insGetData     = 0xCB
	insVerify      = 0x20
	insGeneralAuth = 0x87
	insGetVersion  = 0xFD // YubiKey
	insGetSerial   = 0xF8 // YubiKey
	insGetMetadata = 0xF7 // YubiKey 5.3+
	pinRefPIV      = 0x80
	tagDynAuth     = 0x7C
	tagChallenge   = 0x81
	tagResponse    = 0x82
	tagDataObject  = 0x53
	tagCertificate = 0x70
	tagCertInfo    = 0x71
	tagObjectID    = 0x5C
	maxCertificate = 16 << 10 // bound on a decompressed certificate
	algRSA1024     = 0x06
	algRSA2048     = 0x07
	algRSA3072     = 0x05
	algRSA4096     = 0x16
	algECCP256     = 0x11
	algECCP384     = 0x14
	metaAlgorithm  = 0x01
	metaPolicy     = 0x02
	metaPublicKey  = 0x04
)

// AID is the PIV application identifier (SP 800-73-4 Part 1, 2.2).
var AID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

// Profile is the PIV profile.
type Profile struct{}

var _ profiles.Profile = Profile{}
var _ profiles.Card = (*Card)(nil)
var _ profiles.KeyCache = (*Card)(nil)

// Name returns "piv".
func (Profile) Name() string { return "piv" }

// Open selects the PIV application; see [Open].
func (Profile) Open(ctx context.Context, t profiles.Transmitter) (profiles.Card, error) {
	return Open(ctx, t)
}

// Card is an open PIV application.
type Card struct {
	conn    apdu.Conn
	version [3]byte // zero if the card has no GET VERSION
	keys    map[string]profiles.Key
}

// Open selects the PIV application on the card behind t and reads its
// version if it is a YubiKey. The error wraps [profiles.ErrNotPresent] when
// the card has no PIV application.
func Open(ctx context.Context, t profiles.Transmitter) (*Card, error) {
	c := &Card{conn: apdu.Conn{T: t}}
	if err := c.Select(ctx); err != nil {
		return nil, err
	}
	if v, err := c.conn.Do(ctx, apdu.Command{INS: insGetVersion}); err == nil && len(v) == 3 {
		copy(c.version[:], v)
	} else if err != nil && !isStatus(err) {
		return nil, fmt.Errorf("piv: get version: %w", err)
	}
	return c, nil
}

func isStatus(err error) bool {
	var sw apdu.StatusWord
	return errors.As(err, &sw)
}

// Select selects the PIV application again, as the first command of a
// transaction should. SP 800-73-4 Part 2, 3.1.1.
func (c *Card) Select(ctx context.Context) error {
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: insSelect, P1: 0x04, Data: AID[:5], Ne: 256})
	if err != nil {
		if errors.Is(err, apdu.ErrNotFound) {
			return fmt.Errorf("piv: select: %w (%w)", profiles.ErrNotPresent, err)
		}
		return fmt.Errorf("piv: select: %w", err)
	}
	// The answer is an application property template (61); some cards
	// answer with nothing at all, which is fine.
	if len(rsp) > 0 {
		if _, ok, err := apdu.FindTLV(rsp, 0x61); err != nil || !ok {
			return fmt.Errorf("piv: select: malformed application property template: %w", apdu.ErrMalformed)
		}
	}
	return nil
}

// Version returns the firmware version the card answers to the YubiKey
// GET VERSION command, or "" for cards that do not answer it.
func (c *Card) Version() string {
	if c.version == [3]byte{} {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c.version[0], c.version[1], c.version[2])
}

func (c *Card) hasMetadata() bool {
	v := c.version
	return v[0] > 5 || (v[0] == 5 && v[1] >= 3)
}

// Info reads the serial (GET SERIAL, on cards that answer the YubiKey
// version command) or the CHUID GUID (other cards).
//
// Every card is labelled "PIV card": answering the YubiKey version and
// serial commands does not make a card a YubiKey (PIV applets such as
// PivApplet and OpenFIPS201, other tokens and simulators answer them too),
// and nothing a PIV card answers without a key names its maker (the CHUID
// and discovery object carry none; only the YubiKey attestation, a
// certificate chain to Yubico's CA, would). The version such a card gives
// is Info.Version: the firmware version of the card or applet.
func (c *Card) Info(ctx context.Context) (profiles.Info, error) {
	info := profiles.Info{Profile: "piv", Version: c.Version(), Label: "PIV card"}
	if c.version != [3]byte{} {
		s, err := c.conn.Do(ctx, apdu.Command{INS: insGetSerial})
		if err == nil && len(s) == 4 {
			info.Serial = strconv.FormatUint(uint64(s[0])<<24|uint64(s[1])<<16|uint64(s[2])<<8|uint64(s[3]), 10)
			return info, nil
		}
		if err != nil && !isStatus(err) {
			return info, fmt.Errorf("piv: get serial: %w", err)
		}
	}
	chuid, err := c.getObject(ctx, 0x5FC102)
	if err != nil {
		if errors.Is(err, apdu.ErrNotFound) {
			return info, nil
		}
		return info, err
	}
	if guid, ok, err := apdu.FindTLV(chuid, 0x34); err == nil && ok {
		info.Serial = hex.EncodeToString(guid)
	}
	return info, nil
}

// getObject reads a data object with GET DATA and returns the value of its
// 53 wrapper. SP 800-73-4 Part 2, 3.1.2.
func (c *Card) getObject(ctx context.Context, id uint32) ([]byte, error) {
	var tag []byte
	tag = apdu.AppendTag(tag, id)
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: insGetData, P1: 0x3F, P2: 0xFF,
		Data: apdu.AppendTLV(nil, tagObjectID, tag), Ne: 256})
	if err != nil {
		return nil, fmt.Errorf("piv: get data %X: %w", id, err)
	}
	v, ok, err := apdu.FindTLV(rsp, tagDataObject)
	if err != nil || !ok {
		return nil, fmt.Errorf("piv: get data %X: no data object (53): %w", id, apdu.ErrMalformed)
	}
	return v, nil
}

// slotInfo is what the driver knows of each standard slot.
var slotInfo = []struct {
	id     string
	ref    byte
	object uint32
	label  string
	policy profiles.PINPolicy
}{
	{"9a", 0x9A, 0x5FC105, "PIV Authentication", profiles.PINOnce},
	{"9c", 0x9C, 0x5FC10A, "Digital Signature", profiles.PINAlways},
	{"9d", 0x9D, 0x5FC10B, "Key Management", profiles.PINOnce},
	{"9e", 0x9E, 0x5FC101, "Card Authentication", profiles.PINNever},
}

// Keys lists the keys in slots 9A, 9C, 9D and 9E: from their certificates,
// and from YubiKey metadata when the card has it (then slots without a
// certificate are found too).
func (c *Card) Keys(ctx context.Context) ([]profiles.Key, error) {
	keys := map[string]profiles.Key{}
	var list []profiles.Key
	for _, s := range slotInfo {
		k := profiles.Key{ID: s.id, Label: s.label, PINPolicy: s.policy, Decrypt: s.ref == 0x9D}
		found := false
		if c.hasMetadata() {
			alg, policy, pub, err := c.metadata(ctx, s.ref)
			switch {
			case err == nil:
				k.Algorithm, k.Public, found = alg, pub, true
				if policy != 0 {
					k.PINPolicy = policy
				}
			case errors.Is(err, errUnsupportedAlgorithm):
				continue
			case isStatus(err):
			default:
				return nil, err
			}
		}
		cert, err := c.certificate(ctx, s.object)
		switch {
		case err == nil:
			switch {
			case k.Public == nil:
				k.Certificate = cert
				k.Public = cert.PublicKey
				k.Algorithm = algorithmOf(cert.PublicKey)
				found = true
			case profiles.PublicEqual(k.Public, cert.PublicKey):
				k.Certificate = cert
			default:
				// A certificate left behind when the key was generated
				// again: signatures would not verify under it, so the
				// key is shown without it.
			}
		case errors.Is(err, apdu.ErrNotFound):
		default:
			return nil, err
		}
		if !found {
			continue
		}
		if k.Algorithm == "" {
			continue // a key this driver cannot use
		}
		if k.PINPolicy != profiles.PINNever {
			k.PIN = PIN
		}
		keys[s.id] = k
		list = append(list, k)
	}
	c.keys = keys
	return list, nil
}

// UseKeys implements profiles.KeyCache: Sign uses keys instead of reading
// the card's certificates and metadata again.
func (c *Card) UseKeys(keys []profiles.Key) {
	c.keys = make(map[string]profiles.Key, len(keys))
	for _, k := range keys {
		c.keys[k.ID] = k
	}
}

func algorithmOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ECCP256"
		case elliptic.P384():
			return "ECCP384"
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 1024, 2048, 3072, 4096:
			return "RSA" + strconv.Itoa(k.N.BitLen())
		}
	}
	return ""
}

func algorithmByte(name string) byte {
	switch name {
	case "ECCP256":
		return algECCP256
	case "ECCP384":
		return algECCP384
	case "RSA1024":
		return algRSA1024
	case "RSA2048":
		return algRSA2048
	case "RSA3072":
		return algRSA3072
	case "RSA4096":
		return algRSA4096
	}
	return 0
}

// certificate reads and parses a certificate object: 53 { 70 cert, 71 info,
// FE lrc }. CertInfo 01 means the certificate is gzip-compressed.
func (c *Card) certificate(ctx context.Context, object uint32) (*x509.Certificate, error) {
	v, err := c.getObject(ctx, object)
	if err != nil {
		return nil, err
	}
	return parseCertObject(v)
}

func parseCertObject(v []byte) (*x509.Certificate, error) {
	tlvs, err := apdu.ParseTLVs(v)
	if err != nil {
		return nil, fmt.Errorf("piv: certificate object: %w", err)
	}
	var der []byte
	var info byte
	for _, t := range tlvs {
		switch t.Tag {
		case tagCertificate:
			der = t.Value
		case tagCertInfo:
			if len(t.Value) > 0 {
				info = t.Value[0]
			}
		}
	}
	if len(der) == 0 {
		return nil, fmt.Errorf("piv: certificate object: empty: %w", apdu.SWFileNotFound)
	}
	if info&0x01 != 0 {
		zr, err := gzip.NewReader(bytes.NewReader(der))
		if err != nil {
			return nil, fmt.Errorf("piv: certificate: gzip: %w", err)
		}
		der, err = io.ReadAll(io.LimitReader(zr, maxCertificate+1))
		if err != nil {
			return nil, fmt.Errorf("piv: certificate: gzip: %w", err)
		}
		if len(der) > maxCertificate {
			return nil, fmt.Errorf("piv: certificate: larger than %d bytes: %w", maxCertificate, apdu.ErrMalformed)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("piv: certificate: %w", err)
	}
	return cert, nil
}

// metadata reads YubiKey GET METADATA for a key slot: algorithm, PIN policy
// and public key.
func (c *Card) metadata(ctx context.Context, slot byte) (string, profiles.PINPolicy, crypto.PublicKey, error) {
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: insGetMetadata, P2: slot, Ne: 256})
	if err != nil {
		return "", 0, nil, fmt.Errorf("piv: metadata %02x: %w", slot, err)
	}
	return parseMetadata(rsp)
}

func parseMetadata(rsp []byte) (string, profiles.PINPolicy, crypto.PublicKey, error) {
	tlvs, err := apdu.ParseTLVs(rsp)
	if err != nil {
		return "", 0, nil, fmt.Errorf("piv: metadata: %w", err)
	}
	var alg byte
	var policy profiles.PINPolicy
	var pubTLV []byte
	for _, t := range tlvs {
		switch t.Tag {
		case metaAlgorithm:
			if len(t.Value) == 1 {
				alg = t.Value[0]
			}
		case metaPolicy:
			if len(t.Value) >= 1 {
				switch t.Value[0] {
				case 1:
					policy = profiles.PINNever
				case 2:
					policy = profiles.PINOnce
				case 3:
					policy = profiles.PINAlways
				}
			}
		case metaPublicKey:
			pubTLV = t.Value
		}
	}
	pub, err := parsePublicKey(alg, pubTLV)
	if err != nil {
		return "", 0, nil, err
	}
	return algorithmOf(pub), policy, pub, nil
}

// parsePublicKey decodes the public key template of GENERATE ASYMMETRIC KEY
// PAIR and YubiKey metadata: 81 modulus, 82 exponent (RSA) or 86 point (EC).
// SP 800-73-4 Part 2, 3.3.2.
func parsePublicKey(alg byte, v []byte) (crypto.PublicKey, error) {
	t, ok := map[byte]profiles.KeyType{algECCP256: profiles.KeyP256, algECCP384: profiles.KeyP384, algRSA1024: profiles.KeyRSA,
		algRSA2048: profiles.KeyRSA, algRSA3072: profiles.KeyRSA, algRSA4096: profiles.KeyRSA}[alg]
	if !ok {
		return nil, fmt.Errorf("piv: public key: algorithm %#02x: %w", alg, errUnsupportedAlgorithm)
	}
	pub, err := profiles.PublicKeyFromTemplate(v, t)
	if err != nil {
		return nil, fmt.Errorf("piv: %w", err)
	}
	return pub, nil
}

// errUnsupportedAlgorithm: a slot holds a key of an algorithm this driver
// cannot use (Ed25519 or X25519 on a YubiKey 5.7, say); Keys skips it.
var errUnsupportedAlgorithm = errors.New("algorithm not supported by this driver")

// PINError is a wrong or blocked PIN. It unwraps to the card's status word.
type PINError struct {
	Retries int // tries left; 0: blocked
	SW      apdu.StatusWord
}

func (e *PINError) Error() string {
	if e.Retries == 0 {
		return "piv: PIN blocked"
	}
	return fmt.Sprintf("piv: wrong PIN, %d %s left", e.Retries, plural(e.Retries, "try", "tries"))
}

func (e *PINError) Unwrap() error { return e.SW }

// Is makes a PIN with no tries left (63 C0 as well as 69 83) match
// apdu.ErrBlocked.
func (e *PINError) Is(target error) bool { return target == apdu.ErrBlocked && e.Retries == 0 }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// ErrPINFormat: the PIN is not 6 to 8 bytes; it was not sent to the card.
var ErrPINFormat = errors.New("piv: PIN must be 6 to 8 characters")

// pinError turns the status of a VERIFY into a *PINError where it is one.
func pinError(err error) error {
	var sw apdu.StatusWord
	if errors.As(err, &sw) {
		if n, ok := sw.Retries(); ok {
			return &PINError{Retries: n, SW: sw}
		}
	}
	return err
}

// Redact implements profiles.Redactor: besides the PINs and PUKs of
// VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER, the card
// management key in GENERAL AUTHENTICATE (87, P2 = 9B), YubiKey IMPORT
// KEY (FE) and SET MANAGEMENT KEY (FF); the answer of a GENERAL
// AUTHENTICATE with the key management key (P2 = 9D: the only key this
// driver decrypts with) or with an exponentiation (tag 85 in 7C: key
// agreement, whatever the slot), and of one whose template does not
// parse. Signatures are kept: they are no secret, and a recorded session
// replays only with them (pscs card record).
func (Profile) Redact(cmd apdu.Command) (secretCommand, secretResponse bool) {
	secretCommand, secretResponse = profiles.RedactISO(cmd)
	switch cmd.INS {
	case 0xFE, 0xFF:
		secretCommand = true
	case insGeneralAuth:
		secretCommand = secretCommand || cmd.P2 == 0x9B
		secretResponse = cmd.P2 == 0x9D || agreesKey(cmd.Data)
	}
	return secretCommand, secretResponse
}

// agreesKey reports whether a GENERAL AUTHENTICATE template (7C) asks for
// an exponentiation (85) rather than a signature of a challenge (81), or
// cannot be told (when in doubt, hide). The first block of a chain holds
// the template's start, where the choice sits, so a template cut short
// after it is judged all the same.
func agreesKey(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	if data[0] != 0x7C {
		return true
	}
	_, rest, ok := berLength(data[1:])
	for ok && len(rest) > 0 {
		switch rest[0] {
		case 0x85:
			return true
		case 0x81:
			return false
		}
		var n int
		n, rest, ok = berLength(rest[1:])
		if !ok || n > len(rest) {
			return true
		}
		rest = rest[n:]
	}
	return true
}

// berLength splits a BER length (short form, 81 xx or 82 xxxx) from b.
func berLength(b []byte) (n int, rest []byte, ok bool) {
	switch {
	case len(b) >= 1 && b[0] < 0x80:
		return int(b[0]), b[1:], true
	case len(b) >= 2 && b[0] == 0x81:
		return int(b[1]), b[2:], true
	case len(b) >= 3 && b[0] == 0x82:
		return int(b[1])<<8 | int(b[2]), b[3:], true
	}
	return 0, nil, false
}

// PIN is the ID of the PIV application PIN (key reference 80), the card's
// only PIN.
const PIN = "piv-pin"

var pins = []profiles.PINInfo{{ID: PIN, Label: "PIV PIN", Min: 6, Max: 8}}

// PINs returns the card's one PIN, [PIN].
func (c *Card) PINs() []profiles.PINInfo { return slices.Clone(pins) }

func checkPINID(id string) error {
	if id != PIN {
		return fmt.Errorf("piv: PIN %q: %w", id, profiles.ErrNoPIN)
	}
	return nil
}

// VerifyPIN presents the PIV application PIN ([PIN]). SP 800-73-4 Part 2,
// 3.2.1. The PIN never appears in errors.
func (c *Card) VerifyPIN(ctx context.Context, pinID string, pin []byte) error {
	if err := checkPINID(pinID); err != nil {
		return err
	}
	if len(pin) < 6 || len(pin) > 8 {
		return ErrPINFormat
	}
	var padded [8]byte
	for i := range padded {
		padded[i] = 0xFF
	}
	copy(padded[:], pin)
	_, err := c.conn.Do(ctx, apdu.Command{INS: insVerify, P2: pinRefPIV, Data: padded[:]})
	clear(padded[:])
	if err != nil {
		return fmt.Errorf("piv: verify PIN: %w", pinError(err))
	}
	return nil
}

// PINStatus asks the card with an empty VERIFY, which spends no try.
func (c *Card) PINStatus(ctx context.Context, pinID string) (profiles.PINStatus, error) {
	if err := checkPINID(pinID); err != nil {
		return profiles.PINStatus{}, err
	}
	_, err := c.conn.Do(ctx, apdu.Command{INS: insVerify, P2: pinRefPIV})
	if err == nil {
		st := profiles.PINStatus{Verified: true, Retries: -1}
		// The card does not say how many tries are left once verified;
		// YubiKey metadata does.
		if c.hasMetadata() {
			if rsp, err := c.conn.Do(ctx, apdu.Command{INS: insGetMetadata, P2: pinRefPIV, Ne: 256}); err == nil {
				if v, ok, _ := apdu.FindTLV(rsp, 0x06); ok && len(v) == 2 {
					st.Retries = int(v[1])
				}
			}
		}
		return st, nil
	}
	var sw apdu.StatusWord
	if errors.As(err, &sw) {
		if n, ok := sw.Retries(); ok {
			return profiles.PINStatus{Retries: n, Blocked: n == 0}, nil
		}
	}
	return profiles.PINStatus{}, fmt.Errorf("piv: PIN status: %w", err)
}

// Logout resets the PIN verification state (VERIFY with P1 = FF).
func (c *Card) Logout(ctx context.Context) error {
	if _, err := c.conn.Do(ctx, apdu.Command{INS: insVerify, P1: 0xFF, P2: pinRefPIV}); err != nil {
		return fmt.Errorf("piv: log out: %w", err)
	}
	return nil
}

func slotRef(id string) (byte, bool) {
	b, err := hex.DecodeString(strings.ToLower(id))
	if err != nil || len(b) != 1 {
		return 0, false
	}
	return b[0], true
}

// Sign signs digest with the key in slot id. See the package doc for the
// conventions.
func (c *Card) Sign(ctx context.Context, id string, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if c.keys == nil {
		if _, err := c.Keys(ctx); err != nil {
			return nil, err
		}
	}
	k, ok := c.keys[strings.ToLower(id)]
	if !ok {
		return nil, fmt.Errorf("piv: sign: slot %q: %w", id, profiles.ErrNoKey)
	}
	ref, _ := slotRef(k.ID)
	var input []byte
	switch pub := k.Public.(type) {
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		input = make([]byte, size)
		if len(digest) >= size {
			copy(input, digest[:size]) // FIPS 186-4 6.4: leftmost bits
		} else {
			copy(input[size-len(digest):], digest)
		}
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			input, err = emsaPSSEncode(digest, pub, pss)
		} else {
			input, err = emsaPKCS1v15Encode(digest, pub.Size(), opts.HashFunc())
		}
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("piv: sign: slot %s: unsupported key", k.ID)
	}
	var tmpl []byte
	tmpl = apdu.AppendTLV(tmpl, tagResponse, nil)
	tmpl = apdu.AppendTLV(tmpl, tagChallenge, input)
	rsp, err := c.conn.Do(ctx, apdu.Command{INS: insGeneralAuth, P1: algorithmByte(k.Algorithm), P2: ref,
		Data: apdu.AppendTLV(nil, tagDynAuth, tmpl), Ne: 256})
	if err != nil {
		return nil, fmt.Errorf("piv: sign with %s: %w", k.ID, err)
	}
	sig, err := parseAuthResponse(rsp)
	if err != nil {
		return nil, fmt.Errorf("piv: sign with %s: %w", k.ID, err)
	}
	if err := checkSignature(k.Public, digest, input, sig, opts); err != nil {
		// A faulty card, or a new key in the slot since the keys were
		// read: the caller may read them again and check sig under the
		// new one.
		return nil, fmt.Errorf("piv: sign with %s: %w", k.ID, &profiles.BadSignatureError{Key: k.ID, Signature: sig})
	}
	return sig, nil
}

// parseAuthResponse extracts 82 from 7C { 82 … }.
func parseAuthResponse(rsp []byte) ([]byte, error) {
	tmpl, ok, err := apdu.FindTLV(rsp, tagDynAuth)
	if err != nil || !ok {
		return nil, fmt.Errorf("no dynamic authentication template: %w", apdu.ErrMalformed)
	}
	sig, ok, err := apdu.FindTLV(tmpl, tagResponse)
	if err != nil || !ok || len(sig) == 0 {
		return nil, fmt.Errorf("no response in template: %w", apdu.ErrMalformed)
	}
	return bytes.Clone(sig), nil
}

// ErrBadSignature: the card's signature does not verify under its public
// key. Sign's error is then a *profiles.BadSignatureError, which carries the
// signature.
var ErrBadSignature = profiles.ErrBadSignature

func checkSignature(pub crypto.PublicKey, digest, input, sig []byte, opts crypto.SignerOpts) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, input, sig) {
			return ErrBadSignature
		}
	case *rsa.PublicKey:
		if len(sig) != k.Size() {
			return ErrBadSignature
		}
		// Raw check: sig^e mod n must give back the encoded block.
		s := new(big.Int).SetBytes(sig)
		if s.Cmp(k.N) >= 0 {
			return ErrBadSignature
		}
		m := new(big.Int).Exp(s, big.NewInt(int64(k.E)), k.N)
		if !bytes.Equal(m.FillBytes(make([]byte, k.Size())), input) {
			return ErrBadSignature
		}
	}
	return nil
}
