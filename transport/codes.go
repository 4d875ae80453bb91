package transport

import (
	"errors"
	"fmt"
)

// Code is a stable error code of the protocol. Codes are never reused or
// renumbered; docs/protocol.md lists them. They travel in [Response.Status]
// for an answered request, and as the QUIC application error code when the
// server closes a connection.
type Code uint32

// Codes. 0 is success; 1–99 are the transport's own; 100–199 belong to the
// server's policy (pscsd); 200–299 to the card behind a remote card.
const (
	CodeOK Code = 0

	// Refusals of the connection (QUIC application close codes).
	CodeNotEnrolled Code = 1 // the client certificate maps to no enrolled identity
	CodeCertExpired Code = 2 // the client certificate is outside its validity
	CodeShutdown    Code = 3 // the server is shutting down

	// Refusals of a request by the transport.
	CodeMalformed         Code = 10 // the request does not decode, or breaks the rules
	CodeTooLarge          Code = 11 // a size, count or nesting limit was breached
	CodeUnsupported       Code = 12 // unknown operation
	CodeSignatureRequired Code = 13 // the operation must be a signed request
	CodeBadSignature      Code = 14 // the COSE signature does not verify, or is not the connection's identity's
	CodeReplay            Code = 15 // the nonce was seen before: the request is not executed again
	CodeStale             Code = 16 // the request's time is outside the server's window
	CodeBadBinding        Code = 17 // the request is bound to another TLS connection
	CodeBusy              Code = 18 // the server cannot take the request now; retry later
	CodeTimeout           Code = 19 // the request took longer than the server allows
	CodeInternal          Code = 20 // the server failed; details are in its log

	// Refusals for a resource limit (see Limits). Each refuses only the
	// identity that reached its own limit, except CodeServerMemory.
	CodeTooManyConnections Code = 21 // connection close: the identity has Limits.ConnectionsPerIdentity open
	CodeTooManyRequests    Code = 22 // stream reset: the identity has Limits.StreamsPerIdentity unfinished requests
	CodeRateLimited        Code = 23 // the identity passed Limits.RequestRate; field 5 says when to retry
	CodeReplayMemoryFull   Code = 24 // the identity's replay memory (Limits.NoncesPerIdentity) is full; field 5 says when to retry
	CodeIdentityMemory     Code = 25 // the identity's unfinished requests hold Limits.RequestBytesPerIdentity
	CodeServerMemory       Code = 26 // all unfinished requests hold Limits.RequestBytes

	// Policy (pscsd): 100–199.
	CodeDenied          Code = 100 // no delegation allows this
	CodeRevoked         Code = 101 // the delegation was revoked
	CodeOutsideWindow   Code = 102 // outside the delegation's validity window
	CodeLimitReached    Code = 103 // a rate or count limit of the delegation
	CodeWrongPIN        Code = 104 // wrong virtual PIN
	CodeLocked          Code = 105 // too many wrong virtual PINs: the owner must unlock
	CodeNotLoggedIn     Code = 106 // log in to the remote card first
	CodeDocumentRefused Code = 107 // the document is not among those allowed
	CodeNoSuchSlot      Code = 108 // no such remote card for this identity
	CodeNoSuchKey       Code = 109 // no such key on the remote card
	CodeNotOwner        Code = 110 // administration of a card or delegation the requester does not own
	CodeExists          Code = 111 // the name is taken (an identity already enrolled), or the delegate already holds a live delegation on the card
	CodeUnknown         Code = 112 // no such identity, remote card or delegation
	CodeNoPIN           Code = 113 // the owner has not registered the card's PIN
	CodePINCheck        Code = 114 // the card's PIN was not registered: wrong, or the card's retry counter is not full
	CodeNoCA            Code = 115 // the server issues no certificates
	CodeGuessLimit      Code = 116 // the TPM's limit on vPIN guesses is reached for now: try later
	CodeKeyGone         Code = 117 // the key the request names is no longer on the card (another program changed the card)
	CodeDecryption      Code = 118 // the ciphertext does not decrypt under the key (its padding is wrong), or the peer's point is not on the key's curve
	CodeKeyNotDelegated Code = 119 // the delegation is limited to other keys of the card (AdminDelegation.Keys)
	CodeWarrantyRaw     Code = 120 // a delegation with warranty signs documents only (SignDocument): a raw signature cannot carry the delegation notice
	CodeNoCertificate   Code = 121 // the key has no certificate: it cannot make a document signature
	// Backups (the backup helper's 128-129).
	CodeBackupFailed Code = 128 // the backup was not made or not accepted by the mail server for every owner (see pscsd's log)

	// The card: 200–299.
	CodeCardError       Code = 200 // the card answered with an error status
	CodeCardUnavailable Code = 201 // no card of the remote card can serve now
	CodeMechanism       Code = 202 // mechanism not supported by the key
)

var codeNames = map[Code]string{
	CodeOK:                 "ok",
	CodeNotEnrolled:        "not enrolled",
	CodeCertExpired:        "certificate expired",
	CodeShutdown:           "server shutting down",
	CodeMalformed:          "malformed request",
	CodeTooLarge:           "too large",
	CodeUnsupported:        "unsupported operation",
	CodeSignatureRequired:  "signed request required",
	CodeBadSignature:       "bad request signature",
	CodeReplay:             "replayed request",
	CodeStale:              "request time outside the window",
	CodeBadBinding:         "request bound to another connection",
	CodeBusy:               "busy",
	CodeTimeout:            "timeout",
	CodeInternal:           "internal error",
	CodeTooManyConnections: "too many connections",
	CodeTooManyRequests:    "too many unfinished requests",
	CodeRateLimited:        "request rate limited",
	CodeReplayMemoryFull:   "replay memory full",
	CodeIdentityMemory:     "identity's request memory full",
	CodeServerMemory:       "server's request memory full",
	CodeDenied:             "denied",
	CodeRevoked:            "delegation revoked",
	CodeOutsideWindow:      "outside the delegation window",
	CodeLimitReached:       "limit reached",
	CodeWrongPIN:           "wrong virtual PIN",
	CodeLocked:             "delegation locked",
	CodeNotLoggedIn:        "not logged in",
	CodeDocumentRefused:    "document not allowed",
	CodeNoSuchSlot:         "no such remote card",
	CodeNoSuchKey:          "no such key",
	CodeNotOwner:           "not the owner",
	CodeExists:             "already exists",
	CodeUnknown:            "unknown name",
	CodeNoPIN:              "card PIN not registered",
	CodePINCheck:           "card PIN check failed",
	CodeNoCA:               "no certificate authority",
	CodeGuessLimit:         "TPM guess limit reached",
	CodeKeyGone:            "key no longer on the card",
	CodeDecryption:         "decryption error",
	CodeKeyNotDelegated:    "key not delegated",
	CodeWarrantyRaw:        "raw signature refused under a delegation with warranty",
	CodeNoCertificate:      "key without a certificate",
	CodeBackupFailed:       "backup failed",
	CodeCardError:          "card error",
	CodeCardUnavailable:    "card unavailable",
	CodeMechanism:          "mechanism not supported",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// Error is a refusal with a stable code, on either side of the wire. The
// server's handler returns one to choose the code; the client gets one for
// every refusal. Message is for people and never holds secrets.
type Error struct {
	Code    Code
	Message string
	// TriesLeft, with CodeWrongPIN, is how many more wrong PINs in a row
	// are taken before a lock (Response field 7); zero: unknown.
	TriesLeft uint32
	// Remote is true on the client for an error the server sent.
	Remote bool
}

func (e *Error) Error() string {
	if e.TriesLeft > 0 {
		s := fmt.Sprintf("pscs: %v (%d), %d tries left", e.Code, uint32(e.Code), e.TriesLeft)
		if e.Message != "" {
			s += ": " + e.Message
		}
		return s
	}
	if e.Message != "" {
		return fmt.Sprintf("pscs: %v (%d): %s", e.Code, uint32(e.Code), e.Message)
	}
	return fmt.Sprintf("pscs: %v (%d)", e.Code, uint32(e.Code))
}

// Is matches another *Error with the same code, so that
// errors.Is(err, &transport.Error{Code: transport.CodeReplay}) works, and the
// sentinel values below.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Errorf returns an *Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is, one per code that callers commonly test.
var (
	ErrNotEnrolled  = &Error{Code: CodeNotEnrolled}
	ErrCertExpired  = &Error{Code: CodeCertExpired}
	ErrBadSignature = &Error{Code: CodeBadSignature}
	ErrReplay       = &Error{Code: CodeReplay}
	ErrStale        = &Error{Code: CodeStale}
	ErrTooLarge     = &Error{Code: CodeTooLarge}
	ErrMalformed    = &Error{Code: CodeMalformed}
	ErrUnsupported  = &Error{Code: CodeUnsupported}
)

// CodeOf maps an error to its wire code: an *Error in err's chain gives its
// code, anything else is CodeInternal. It is the server's one place for that
// mapping.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
