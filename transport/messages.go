package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/pscs/pscs/internal/cborpolicy"
)

// ALPN is the TLS application protocol of pscs. A breaking change of the
// protocol gets a new ALPN ("pscs/2"); everything else is versioned inside
// it by [ProtocolVersion].
const ALPN = "pscs/1"

// ProtocolVersion is the version of the messages inside ALPN "pscs/1".
// Peers send theirs and accept any peer version >= 1, using only what both
// know; fields and operations are only ever added.
//
// History:
//
//	1 (2026-11-26): first version: Hello, Login, Sign, Decrypt, Logout,
//	  Ping, Admin (its bodies, codes 110-115); signed requests
//	  (COSE_Sign1); events; the vPIN beside Sign for keys that want it
//	  with every signature.
//	2 (2026-12-04): Decrypt served (RSA PKCS #1 v1.5 and OAEP), Derive
//	  (ECDH key agreement), code 118 (decryption error); the vPIN beside
//	  Decrypt and Derive as beside Sign.
//	3 (2026-12-05): EdDSA (Ed25519): Sign with CKM_EDDSA carries the whole
//	  message (at most MaxEdDSAMessage bytes); the catalogue has
//	  CKK_EC_EDWARDS and CKK_EC_MONTGOMERY keys; Derive with an X25519
//	  key (32-byte peer and secret).
//	  Delegations limited to keys (AdminDelegation 18, Keys); code 119
//	  (key not delegated).
//	  SignDocument (op 8): CAdES-BES signatures built by the
//	  server from a document's digest, with the delegation notice on
//	  delegations with warranty; codes 120 (a delegation with warranty
//	  refuses raw signatures) and 121 (the key has no certificate).
//	4 (2026-12-05): SignDocument format 2 (PAdES-B-B); Ed25519 in
//	  SignDocument; the signer's chain in the SignedData; remote cards
//	  of different keys; admin actions console and backup (code 128);
//	  code 111 also refuses a second live delegation.
const ProtocolVersion = 4

// Op is an operation. Numbers are never reused.
type Op uint32

const (
	OpHello   Op = 1 // unsigned: server version, time, the identity's catalogue
	OpLogin   Op = 2 // signed: log in to a remote card with the virtual PIN (in Secret)
	OpSign    Op = 3 // signed: a signature with a key of a remote card
	OpDecrypt Op = 4 // signed: a decryption with a key of a remote card
	OpLogout  Op = 5 // signed: log out of a remote card
	OpPing    Op = 6 // unsigned: an empty answer (keepalive, round-trip measurement)
	OpDerive  Op = 7 // signed: a key agreement (ECDH) with a key of a remote card
	// OpSignDocument: signed: a CMS signature (CAdES-BES) of a document's
	// digest with a key of a remote card.
	OpSignDocument Op = 8
	OpAdmin        Op = 16 // signed: owner administration (body defined by the server)
)

var opNames = map[Op]string{OpHello: "hello", OpLogin: "login", OpSign: "sign", OpDecrypt: "decrypt",
	OpLogout: "logout", OpDerive: "derive", OpPing: "ping", OpAdmin: "admin", OpSignDocument: "sign-document"}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("op %d", uint32(o))
}

// Signed reports whether the operation must be a signed request. Unsigned
// operations change nothing, and the server runs them only once the TLS
// handshake is complete (never on replayable 0-RTT data alone).
func (o Op) Signed() bool { return o != OpHello && o != OpPing }

// Limits of the protocol. A message over a limit is refused with
// CodeTooLarge and never buffered whole.
const (
	MaxRequestSize  = 64 << 10               // bytes of one request on a stream
	MaxResponseSize = 4 << 20                // bytes of one response (a catalogue with certificates)
	MaxEventSize    = 64 << 10               // bytes of one event
	MaxNesting      = cborpolicy.MaxNesting  // CBOR nesting depth
	MaxElements     = cborpolicy.MaxElements // CBOR array elements / map pairs
	NonceSize       = 16                     // bytes of a request nonce
	// MaxEdDSAMessage bounds the message of a Sign with CKM_EDDSA: EdDSA
	// signs the whole message, not a digest, so the message travels and
	// the card reads it whole. A longer one is refused with CodeTooLarge.
	MaxEdDSAMessage = 16 << 10
)

// Request is what a client writes on a new bidirectional stream, followed
// by the end of the stream.
type Request struct {
	Version uint32          `cbor:"1,keyasint"`
	Op      Op              `cbor:"2,keyasint"`
	Body    cbor.RawMessage `cbor:"3,keyasint,omitempty"` // unsigned operations
	// Signed is the encoded COSE_Sign1 (tag 18) over a SignedPayload, as a
	// byte string: the exact bytes the audit log keeps as evidence.
	Signed []byte `cbor:"4,keyasint,omitempty"`
	// Secret carries a secret that the operation needs (the virtual PIN of
	// Login, and of Sign with a key whose CKA_ALWAYS_AUTHENTICATE is true),
	// outside the signed payload: the signed payload is evidence and
	// is kept in the audit log; the secret must never be.
	Secret []byte `cbor:"5,keyasint,omitempty"`
}

// SignedPayload is the payload of a request's COSE_Sign1.
type SignedPayload struct {
	Op    Op              `cbor:"1,keyasint"`
	Nonce []byte          `cbor:"2,keyasint"` // NonceSize random bytes, never used twice
	Time  int64           `cbor:"3,keyasint"` // Unix time in milliseconds
	Body  cbor.RawMessage `cbor:"4,keyasint,omitempty"`
	// Binding is the TLS exporter value of the connection the request
	// travels on (label "EXPORTER-pscs request binding", no context, 32
	// bytes). Empty only for requests sent as 0-RTT early data.
	Binding []byte `cbor:"5,keyasint,omitempty"`
}

// Response is what the server writes back on the request's stream.
type Response struct {
	Version uint32          `cbor:"1,keyasint"`
	Status  Code            `cbor:"2,keyasint"`
	Body    cbor.RawMessage `cbor:"3,keyasint,omitempty"`
	Message string          `cbor:"4,keyasint,omitempty"`
	// RetryAfter is a hint in milliseconds with CodeBusy, CodeRateLimited
	// and CodeReplayMemoryFull.
	RetryAfter uint32 `cbor:"5,keyasint,omitempty"`
	// Original, with CodeReplay, is the response the server gave to the
	// first request with this nonce, sent to the same identity only: a
	// client that resent a request after losing its connection learns the
	// outcome without the operation running twice.
	Original *Response `cbor:"6,keyasint,omitempty"`
	// TriesLeft, with CodeWrongPIN, is how many more wrong virtual PINs
	// in a row the delegation takes before it locks (CodeLocked); absent
	// (zero): unknown. The PKCS #11 module shows it in CK_TOKEN_INFO's
	// flags (CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY).
	TriesLeft uint32 `cbor:"7,keyasint,omitempty"`
}

// EventKind is the kind of an [Event].
type EventKind uint32

const (
	EventCatalogue EventKind = 1 // the catalogue changed: fetch it again with Hello
	EventSlot      EventKind = 2 // a remote card changed (a card inserted or removed, or its keys or certificates changed)
	EventRevoked   EventKind = 3 // a delegation of this identity was revoked
	EventShutdown  EventKind = 4 // the server is going away
)

// Event is a message on the server's event stream: a unidirectional stream
// the server opens, carrying events one after another, each preceded by its
// length as a QUIC variable-length integer.
type Event struct {
	Kind    EventKind `cbor:"1,keyasint"`
	Slot    uint64    `cbor:"2,keyasint,omitempty"`
	Message string    `cbor:"3,keyasint,omitempty"`
	Tag     []byte    `cbor:"4,keyasint,omitempty"` // the new catalogue tag
}

// Operation bodies.

// HelloRequest is the body of OpHello.
type HelloRequest struct {
	Client string `cbor:"1,keyasint,omitempty"` // client software and version
	// Tag is the tag of the catalogue the client has; if it is current the
	// reply omits the catalogue.
	Tag []byte `cbor:"2,keyasint,omitempty"`
}

// HelloResponse is the body of the answer to OpHello.
type HelloResponse struct {
	Server         string     `cbor:"1,keyasint,omitempty"`
	Time           int64      `cbor:"2,keyasint"` // server's Unix time, ms (clients correct their request times)
	Identity       string     `cbor:"3,keyasint,omitempty"`
	Catalogue      *Catalogue `cbor:"4,keyasint,omitempty"`
	ReplayWindowMS uint32     `cbor:"5,keyasint,omitempty"`
}

// Catalogue is everything a client needs to answer PKCS #11 metadata calls
// locally: the remote cards it may use, their token information, objects
// with attributes, and mechanisms.
type Catalogue struct {
	Tag   []byte `cbor:"1,keyasint"` // changes whenever the catalogue does
	Slots []Slot `cbor:"2,keyasint"`
}

// Slot is one remote card.
type Slot struct {
	ID          uint64      `cbor:"1,keyasint"`
	Description string      `cbor:"2,keyasint,omitempty"`
	Token       TokenInfo   `cbor:"3,keyasint"`
	Objects     []Object    `cbor:"4,keyasint,omitempty"`
	Mechanisms  []Mechanism `cbor:"5,keyasint,omitempty"`
	Cards       uint32      `cbor:"6,keyasint,omitempty"` // cards serving it (more than one: parallel)
	Present     bool        `cbor:"7,keyasint,omitempty"` // a card can serve now
}

// TokenInfo mirrors PKCS #11 CK_TOKEN_INFO's descriptive fields.
type TokenInfo struct {
	Label        string `cbor:"1,keyasint"`
	Manufacturer string `cbor:"2,keyasint,omitempty"`
	Model        string `cbor:"3,keyasint,omitempty"`
	Serial       string `cbor:"4,keyasint,omitempty"`
	Flags        uint64 `cbor:"5,keyasint,omitempty"` // CKF_*
	MinPIN       uint32 `cbor:"6,keyasint,omitempty"`
	MaxPIN       uint32 `cbor:"7,keyasint,omitempty"`
}

// Object is a PKCS #11 object of a remote card. Attribute values are CBOR
// unsigned integers (CK_ULONG), booleans (CK_BBOOL), byte strings (byte
// arrays, big integers, DER) or text strings (UTF-8 labels), keyed by CKA_*.
type Object struct {
	Handle     uint64         `cbor:"1,keyasint"`
	Attributes map[uint64]any `cbor:"2,keyasint"`
}

// Mechanism mirrors CK_MECHANISM_INFO.
type Mechanism struct {
	Type   uint64 `cbor:"1,keyasint"` // CKM_*
	MinKey uint32 `cbor:"2,keyasint,omitempty"`
	MaxKey uint32 `cbor:"3,keyasint,omitempty"`
	Flags  uint64 `cbor:"4,keyasint,omitempty"` // CKF_*
}

// LoginRequest is the body of OpLogin; the virtual PIN is Request.Secret.
type LoginRequest struct {
	Slot uint64 `cbor:"1,keyasint"`
}

// LoginResponse is the body of the answer to OpLogin.
type LoginResponse struct {
	Catalogue *Catalogue `cbor:"1,keyasint,omitempty"`
}

// SignRequest is the body of OpSign.
type SignRequest struct {
	Slot      uint64 `cbor:"1,keyasint"`
	Key       uint64 `cbor:"2,keyasint"` // handle of the private key object
	Mechanism uint64 `cbor:"3,keyasint"` // CKM_*
	// Params are the mechanism's parameters; none for CKM_EDDSA (pure
	// Ed25519: Ed25519ph and Ed25519ctx are not served).
	Params []byte `cbor:"4,keyasint,omitempty"`
	// Data is what the card signs: a digest (CKM_ECDSA, CKM_RSA_PKCS_PSS),
	// a DigestInfo (CKM_RSA_PKCS), or, for CKM_EDDSA, the whole message
	// (at most MaxEdDSAMessage bytes; it may be empty).
	Data []byte `cbor:"5,keyasint"`
}

// SignResponse is the body of the answer to OpSign.
type SignResponse struct {
	Signature []byte `cbor:"1,keyasint"`
	// Certificate is the DER certificate of the card's key that signed, so
	// that a signature from a parallel remote card can be verified.
	Certificate []byte `cbor:"2,keyasint,omitempty"`
}

// SignDocumentRequest is the body of OpSignDocument. The document never
// travels: the client sends its digest, the server builds the signed
// attributes (content-type, message-digest with Digest, signing-time,
// ESS signing-certificate-v2 of the signing card's certificate, and the
// delegation notice if the delegation has warranty), the card signs
// their DER, and the answer is a detached SignedData. For an enveloping
// signature the client puts the document in (eContent) itself: the
// signature covers the signed attributes only.
type SignDocumentRequest struct {
	Slot uint64 `cbor:"1,keyasint"`
	Key  uint64 `cbor:"2,keyasint"` // handle of the private key object
	// Hash is the digest algorithm of Digest and of the signature:
	// CKM_SHA256, CKM_SHA384 or CKM_SHA512.
	Hash   uint64 `cbor:"3,keyasint"`
	Digest []byte `cbor:"4,keyasint"` // the document's digest
	// Enveloping says that the client will put the document in; the
	// server's answer is the same, and the flag is evidence in the signed
	// request.
	Enveloping bool `cbor:"5,keyasint,omitempty"`
	// PSS asks an RSA key for RSASSA-PSS (salt of the hash's size)
	// instead of PKCS #1 v1.5.
	PSS bool `cbor:"6,keyasint,omitempty"`
	// Format is the signature format: FormatCAdES (0 or 1) or
	// FormatPAdES; unknown ones are refused with CodeMechanism.
	Format uint32 `cbor:"7,keyasint,omitempty"`
}

// Signature formats of SignDocumentRequest.
const (
	FormatCAdES uint32 = 1 // CAdES-BES (ETSI EN 319 122-1); 0 means this too
	// FormatPAdES: the CMS of a PAdES-B-B signature (ETSI EN 319 142-1):
	// Digest is that of the PDF's /ByteRange, and the signed attributes
	// have no signing-time (the time is the signature dictionary's /M).
	FormatPAdES uint32 = 2
)

// SignDocumentResponse is the body of the answer to OpSignDocument.
type SignDocumentResponse struct {
	// CMS is the DER ContentInfo of the detached SignedData, with the
	// signing card's certificate (and its chain, where the server has it).
	CMS []byte `cbor:"1,keyasint"`
	// Certificate is the DER certificate of the card's key that signed.
	Certificate []byte `cbor:"2,keyasint"`
}

// DecryptRequest is the body of OpDecrypt.
type DecryptRequest struct {
	Slot uint64 `cbor:"1,keyasint"`
	Key  uint64 `cbor:"2,keyasint"` // handle of the private key object
	// Mechanism is CKM_RSA_PKCS or CKM_RSA_PKCS_OAEP; Params, for OAEP,
	// is [OAEPParams] in CBOR.
	Mechanism uint64 `cbor:"3,keyasint"`
	Params    []byte `cbor:"4,keyasint,omitempty"`
	Data      []byte `cbor:"5,keyasint"` // the ciphertext
}

// OAEPParams are the parameters of CKM_RSA_PKCS_OAEP
// (CK_RSA_PKCS_OAEP_PARAMS): the hash (CKM_SHA_1, CKM_SHA256, …), the
// MGF1 (CKG_MGF1_SHA1, …) and the label (CKZ_DATA_SPECIFIED source data).
type OAEPParams struct {
	Hash  uint64 `cbor:"1,keyasint"`
	MGF   uint64 `cbor:"2,keyasint"`
	Label []byte `cbor:"3,keyasint,omitempty"`
}

// DecryptResponse is the body of the answer to OpDecrypt.
type DecryptResponse struct {
	Plaintext []byte `cbor:"1,keyasint"`
}

// DeriveRequest is the body of OpDerive: an ECDH key agreement with the
// card's key (CKM_ECDH1_DERIVE with CKD_NULL and no shared data).
type DeriveRequest struct {
	Slot      uint64 `cbor:"1,keyasint"`
	Key       uint64 `cbor:"2,keyasint"` // handle of the private key object
	Mechanism uint64 `cbor:"3,keyasint"` // CKM_ECDH1_DERIVE
	// Data is the peer's public key: an uncompressed point for a NIST
	// curve key, the 32-byte u-coordinate for an X25519 key.
	Data []byte `cbor:"4,keyasint"`
}

// DeriveResponse is the body of the answer to OpDerive.
type DeriveResponse struct {
	// Secret is the shared point's x coordinate (NIST curves) or the
	// 32-byte X25519 shared secret.
	Secret []byte `cbor:"1,keyasint"`
}

// LogoutRequest is the body of OpLogout.
type LogoutRequest struct {
	Slot uint64 `cbor:"1,keyasint"`
}

// Encoding. One immutable encoder and decoder for the package.

// The project's one CBOR policy (internal/cborpolicy).
var (
	encMode = cborpolicy.BufferEncMode
	decMode = cborpolicy.DecMode
	// strictDecMode rejects unknown fields; tests use it to catch drift
	// between the code and docs/protocol.md.
	strictDecMode = cborpolicy.StrictDecMode
)

// Marshal encodes v in the protocol's deterministic CBOR.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// MarshalToBuffer is Marshal into buf, for messages that hold a secret:
// the encoding is made in buf alone (never in a shared buffer pool), so
// that clearing buf's bytes wipes every copy.
func MarshalToBuffer(v any, buf *bytes.Buffer) error {
	return encMode.MarshalToBuffer(v, buf)
}

// Unmarshal decodes one protocol message, with the protocol's limits:
// duplicate keys, indefinite lengths, invalid UTF-8, tags, deep nesting,
// large arrays and trailing bytes are errors, also inside the embedded
// bodies of requests and responses. Unknown fields are ignored.
func Unmarshal(data []byte, v any) error { return unmarshal(decMode, data, v) }

// unmarshalStrict is Unmarshal that also rejects unknown fields.
func unmarshalStrict(data []byte, v any) error { return unmarshal(strictDecMode, data, v) }

func unmarshal(dm cbor.DecMode, data []byte, v any) error {
	if err := dm.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r, ok := v.(interface{ checkRaw() error }); ok {
		return r.checkRaw()
	}
	return nil
}

// checkBody holds an embedded body to the same rules as a message, so
// that whatever decodes also encodes again.
func checkBody(b cbor.RawMessage) error {
	if b == nil {
		return nil
	}
	var v any
	if err := decMode.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	return nil
}

func (r *Request) checkRaw() error { return checkBody(r.Body) }

func (p *SignedPayload) checkRaw() error { return checkBody(p.Body) }

func (r *Response) checkRaw() error {
	if r.Original != nil && r.Original.Original != nil {
		return fmt.Errorf("%w: nested original responses", ErrMalformed)
	}
	if err := checkBody(r.Body); err != nil {
		return err
	}
	if r.Original != nil {
		return checkBody(r.Original.Body)
	}
	return nil
}

// UnmarshalCBOR decodes an object, admitting only the attribute values the
// protocol defines: unsigned integers, booleans, byte and text strings.
func (o *Object) UnmarshalCBOR(data []byte) error {
	var raw struct {
		Handle     uint64                     `cbor:"1,keyasint"`
		Attributes map[uint64]cbor.RawMessage `cbor:"2,keyasint"`
	}
	if err := decMode.Unmarshal(data, &raw); err != nil {
		return err
	}
	o.Handle = raw.Handle
	o.Attributes = make(map[uint64]any, len(raw.Attributes))
	for k, v := range raw.Attributes {
		if len(v) == 0 {
			return fmt.Errorf("attribute %#x: empty", k)
		}
		var val any
		switch v[0] >> 5 {
		case 0: // unsigned integer
			var u uint64
			if err := decMode.Unmarshal(v, &u); err != nil {
				return err
			}
			val = u
		case 2: // byte string
			var b []byte
			if err := decMode.Unmarshal(v, &b); err != nil {
				return err
			}
			if b == nil {
				b = []byte{}
			}
			val = b
		case 3: // text string
			var s string
			if err := decMode.Unmarshal(v, &s); err != nil {
				return err
			}
			val = s
		case 7: // simple values: only true and false
			if v[0] != 0xF4 && v[0] != 0xF5 || len(v) != 1 {
				return fmt.Errorf("attribute %#x: not a boolean, integer or string", k)
			}
			val = v[0] == 0xF5
		default:
			return fmt.Errorf("attribute %#x: not a boolean, integer or string", k)
		}
		o.Attributes[k] = val
	}
	return nil
}

// readAll reads r to its end, at most max bytes: more is ErrTooLarge.
func readAll(r io.Reader, max int) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(max) {
		return nil, Errorf(CodeTooLarge, "message over %d bytes", max)
	}
	return buf.Bytes(), nil
}

// Event stream framing: a QUIC variable-length integer (RFC 9000, 16)
// length, then the CBOR event.

// AppendEventFrame appends ev as a frame.
func AppendEventFrame(b []byte, ev *Event) ([]byte, error) {
	body, err := Marshal(ev)
	if err != nil {
		return b, err
	}
	if len(body) > MaxEventSize {
		return b, ErrTooLarge
	}
	b = appendVarint(b, uint64(len(body)))
	return append(b, body...), nil
}

// ReadEventFrame reads one event frame from r.
func ReadEventFrame(r *bufio.Reader) (*Event, error) {
	n, err := readVarint(r)
	if err != nil {
		return nil, err
	}
	if n > MaxEventSize {
		return nil, Errorf(CodeTooLarge, "event of %d bytes", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: truncated event: %v", ErrMalformed, err)
	}
	var ev Event
	if err := Unmarshal(buf, &ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

// appendVarint appends v (below 2^62) as a QUIC variable-length integer
// (RFC 9000, section 16), in its shortest form.
func appendVarint(b []byte, v uint64) []byte { return quicvarint.Append(b, v) }

// readVarint reads a QUIC variable-length integer: io.EOF before its first
// byte (the stream's clean end), ErrMalformed when it is cut short.
func readVarint(r io.ByteReader) (uint64, error) {
	cr := &byteCounter{r: r}
	v, err := quicvarint.Read(cr)
	if err != nil && cr.n > 0 {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("%w: truncated length: %v", ErrMalformed, err)
	}
	return v, err
}

// byteCounter counts the bytes read through it.
type byteCounter struct {
	r io.ByteReader
	n int
}

func (c *byteCounter) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
