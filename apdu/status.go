package apdu

import (
	"errors"
	"fmt"
)

// StatusWord is the SW1 SW2 trailer of a response APDU, as one big-endian
// number (0x9000 is SW1 = 90, SW2 = 00).
//
// Every status word other than [SWSuccess] is an error: it implements error,
// and [StatusWord.Is] matches it against the class sentinels ([ErrWrongPIN],
// [ErrNotFound], …), so callers write errors.Is(err, apdu.ErrWrongPIN) or
// errors.As(err, &sw) through any amount of fmt.Errorf("%w") wrapping.
// [SWSuccess] is not an error value: use [StatusWord.Err] to turn a status
// word into a possibly nil error.
//
// StatusWord is an integer value and safe for concurrent use.
type StatusWord uint16

// Status words of ISO/IEC 7816-4 §5.6 used on PIV, OpenPGP and similar
// cards. Status words that carry a number in SW2 (61xx, 6Cxx, 63Cx) are
// built with [SWMoreData], [SWWrongLe] and [SWRetries].
const (
	SWSuccess                    StatusWord = 0x9000 // normal processing
	SWWarningNoInfo              StatusWord = 0x6200 // warning, state unchanged, no information
	SWEndOfFile                  StatusWord = 0x6282 // end of file or record reached before reading Ne bytes
	SWVerifyFailedNoInfo         StatusWord = 0x6300 // warning, state changed, no information
	SWExecutionError             StatusWord = 0x6400 // execution error, state unchanged
	SWMemoryFailure              StatusWord = 0x6581 // memory failure
	SWWrongLength                StatusWord = 0x6700 // wrong length, no further indication
	SWLogicalChannelNotSupported StatusWord = 0x6881 // logical channel not supported
	SWSecureMessagingUnsupported StatusWord = 0x6882 // secure messaging not supported
	SWLastCommandExpected        StatusWord = 0x6883 // last command of the chain expected
	SWChainingNotSupported       StatusWord = 0x6884 // command chaining not supported
	SWCommandNotAllowed          StatusWord = 0x6900 // command not allowed, no information
	SWIncompatibleFile           StatusWord = 0x6981 // command incompatible with file structure
	SWSecurityStatusNotSatisfied StatusWord = 0x6982 // security status not satisfied
	SWAuthBlocked                StatusWord = 0x6983 // authentication method blocked
	SWRefDataNotUsable           StatusWord = 0x6984 // reference data not usable
	SWConditionsNotSatisfied     StatusWord = 0x6985 // conditions of use not satisfied
	SWNoCurrentEF                StatusWord = 0x6986 // command not allowed (no current EF)
	SWWrongParams                StatusWord = 0x6A00 // wrong parameters P1-P2, no information
	SWWrongData                  StatusWord = 0x6A80 // incorrect parameters in the data field
	SWFuncNotSupported           StatusWord = 0x6A81 // function not supported
	SWFileNotFound               StatusWord = 0x6A82 // file or application not found
	SWRecordNotFound             StatusWord = 0x6A83 // record not found
	SWNotEnoughMemory            StatusWord = 0x6A84 // not enough memory space in the file
	SWNcInconsistentTLV          StatusWord = 0x6A85 // Nc inconsistent with TLV structure
	SWIncorrectP1P2              StatusWord = 0x6A86 // incorrect parameters P1-P2
	SWNcInconsistentP1P2         StatusWord = 0x6A87 // Nc inconsistent with parameters P1-P2
	SWRefNotFound                StatusWord = 0x6A88 // referenced data or reference data not found
	SWFileExists                 StatusWord = 0x6A89 // file already exists
	SWWrongP1P2                  StatusWord = 0x6B00 // wrong parameters P1-P2
	SWINSNotSupported            StatusWord = 0x6D00 // instruction code not supported or invalid
	SWCLANotSupported            StatusWord = 0x6E00 // class not supported
	SWUnknown                    StatusWord = 0x6F00 // no precise diagnosis
)

// Sentinel errors for classes of status words. They are matched by
// [StatusWord.Is]; a StatusWord is never equal to them, so use errors.Is.
var (
	ErrWrongPIN        = errors.New("apdu: verification failed")             // 63Cx, 630x
	ErrBlocked         = errors.New("apdu: authentication method blocked")   // 6983
	ErrSecurityStatus  = errors.New("apdu: security status not satisfied")   // 6982
	ErrNotFound        = errors.New("apdu: not found")                       // 6A82, 6A88
	ErrWrongLength     = errors.New("apdu: wrong length")                    // 6700, 6Cxx
	ErrWrongData       = errors.New("apdu: wrong data")                      // 6A80
	ErrConditions      = errors.New("apdu: conditions of use not satisfied") // 6985
	ErrNotSupported    = errors.New("apdu: not supported")                   // 6A81, 6D00, 6E00
	ErrIncorrectParams = errors.New("apdu: incorrect parameters P1-P2")      // 6A86, 6B00
	ErrNoSpace         = errors.New("apdu: not enough memory")               // 6A84
	ErrRefDataUnusable = errors.New("apdu: reference data not usable")       // 6984
)

// NewStatusWord returns the status word SW1 SW2.
func NewStatusWord(sw1, sw2 byte) StatusWord { return StatusWord(uint16(sw1)<<8 | uint16(sw2)) }

// SWMoreData returns 61xx: n more response bytes are available with GET
// RESPONSE. n is taken modulo 256, so 256 (or more) is 6100.
func SWMoreData(n int) StatusWord { return 0x6100 | StatusWord(n&0xFF) }

// SWWrongLe returns 6Cxx: wrong Le, resend with Ne = n. n is taken modulo
// 256, so 256 is 6C00.
func SWWrongLe(n int) StatusWord { return 0x6C00 | StatusWord(n&0xFF) }

// SWRetries returns 63Cx: verification failed, n tries left. n is clamped
// to 0..15.
func SWRetries(n int) StatusWord { return 0x63C0 | StatusWord(min(max(n, 0), 15)) }

// SW1 returns the first status byte.
func (sw StatusWord) SW1() byte { return byte(sw >> 8) }

// SW2 returns the second status byte.
func (sw StatusWord) SW2() byte { return byte(sw) }

// OK reports whether sw is 9000. Other 9xxx values and warnings (62xx, 63xx)
// are not OK.
func (sw StatusWord) OK() bool { return sw == SWSuccess }

// Err returns nil for 9000 and sw itself otherwise.
func (sw StatusWord) Err() error {
	if sw == SWSuccess {
		return nil
	}
	return sw
}

// MoreData reports for 61xx the number of bytes that GET RESPONSE can fetch
// (6100 means 256 or more).
func (sw StatusWord) MoreData() (int, bool) {
	if sw.SW1() != 0x61 {
		return 0, false
	}
	return shortNe(sw.SW2()), true
}

// WrongLe reports for 6Cxx the Ne the card asks the command to be resent
// with (6C00 means 256).
func (sw StatusWord) WrongLe() (int, bool) {
	if sw.SW1() != 0x6C {
		return 0, false
	}
	return shortNe(sw.SW2()), true
}

// Retries reports the number of verification tries left: x for 63Cx, and
// also for 6301–630F as sent by old YubiKeys (see piv-go issue 60), and 0
// for 6983 (blocked). 6300 is ISO 7816-4's "no information given", not a
// count. Other status words report (0, false).
func (sw StatusWord) Retries() (int, bool) {
	switch {
	case sw&0xFFF0 == 0x63C0, sw&0xFFF0 == 0x6300 && sw != SWVerifyFailedNoInfo:
		return int(sw & 0x0F), true
	case sw == SWAuthBlocked:
		return 0, true
	}
	return 0, false
}

// Is reports whether sw belongs to the class of target, one of the sentinel
// errors of this package:
//
//	ErrWrongPIN         63Cx, 6301–630F
//	ErrBlocked          6983
//	ErrSecurityStatus   6982
//	ErrNotFound         6A82, 6A88
//	ErrWrongLength      6700, 6Cxx
//	ErrWrongData        6A80
//	ErrConditions       6985
//	ErrNotSupported     6A81, 6D00, 6E00
//	ErrIncorrectParams  6A86, 6B00
//	ErrNoSpace          6A84
//	ErrRefDataUnusable  6984
//
// Comparison with another StatusWord is done by errors.Is itself (==).
func (sw StatusWord) Is(target error) bool {
	switch target {
	case ErrWrongPIN:
		return sw&0xFFF0 == 0x63C0 || (sw&0xFFF0 == 0x6300 && sw != SWVerifyFailedNoInfo)
	case ErrBlocked:
		return sw == SWAuthBlocked
	case ErrSecurityStatus:
		return sw == SWSecurityStatusNotSatisfied
	case ErrNotFound:
		return sw == SWFileNotFound || sw == SWRefNotFound
	case ErrWrongLength:
		return sw == SWWrongLength || sw.SW1() == 0x6C
	case ErrWrongData:
		return sw == SWWrongData
	case ErrConditions:
		return sw == SWConditionsNotSatisfied
	case ErrNotSupported:
		return sw == SWFuncNotSupported || sw == SWINSNotSupported || sw == SWCLANotSupported
	case ErrIncorrectParams:
		return sw == SWIncorrectP1P2 || sw == SWWrongP1P2
	case ErrNoSpace:
		return sw == SWNotEnoughMemory
	case ErrRefDataUnusable:
		return sw == SWRefDataNotUsable
	}
	return false
}

// Error returns a description such as
// "apdu: status 6983 (authentication method blocked)". Every status word
// gets at least the description of its class.
func (sw StatusWord) Error() string {
	return fmt.Sprintf("apdu: status %04X (%s)", uint16(sw), sw.description())
}

// String is the same as Error without the "apdu: " prefix, for logs.
func (sw StatusWord) String() string {
	return fmt.Sprintf("%04X (%s)", uint16(sw), sw.description())
}

var swText = map[StatusWord]string{
	SWSuccess:                    "success",
	SWWarningNoInfo:              "warning, state unchanged",
	0x6281:                       "warning: part of returned data may be corrupted",
	SWEndOfFile:                  "warning: end of file or record reached before reading Ne bytes",
	0x6283:                       "warning: selected file deactivated",
	0x6284:                       "warning: file control information not formatted correctly",
	0x6285:                       "warning: selected file in termination state",
	0x6286:                       "warning: no input data available from a sensor",
	SWExecutionError:             "execution error, state unchanged",
	0x6401:                       "execution error: immediate response required by the card",
	0x6500:                       "execution error, state changed",
	SWMemoryFailure:              "execution error: memory failure",
	0x6600:                       "security-related issue",
	SWWrongLength:                "wrong length",
	0x6800:                       "function in CLA not supported",
	SWLogicalChannelNotSupported: "logical channel not supported",
	SWSecureMessagingUnsupported: "secure messaging not supported",
	SWLastCommandExpected:        "last command of the chain expected",
	SWChainingNotSupported:       "command chaining not supported",
	SWCommandNotAllowed:          "command not allowed",
	SWIncompatibleFile:           "command incompatible with file structure",
	SWSecurityStatusNotSatisfied: "security status not satisfied",
	SWAuthBlocked:                "authentication method blocked",
	SWRefDataNotUsable:           "reference data not usable",
	SWConditionsNotSatisfied:     "conditions of use not satisfied",
	SWNoCurrentEF:                "command not allowed: no current EF",
	0x6987:                       "expected secure messaging data objects missing",
	0x6988:                       "incorrect secure messaging data objects",
	SWWrongParams:                "wrong parameters P1-P2",
	SWWrongData:                  "incorrect parameters in the data field",
	SWFuncNotSupported:           "function not supported",
	SWFileNotFound:               "file or application not found",
	SWRecordNotFound:             "record not found",
	SWNotEnoughMemory:            "not enough memory space in the file",
	SWNcInconsistentTLV:          "Nc inconsistent with TLV structure",
	SWIncorrectP1P2:              "incorrect parameters P1-P2",
	SWNcInconsistentP1P2:         "Nc inconsistent with parameters P1-P2",
	SWRefNotFound:                "referenced data or reference data not found",
	SWFileExists:                 "file already exists",
	0x6A8A:                       "DF name already exists",
	SWWrongP1P2:                  "wrong parameters P1-P2",
	SWINSNotSupported:            "instruction not supported",
	SWCLANotSupported:            "class not supported",
	SWUnknown:                    "no precise diagnosis",
}

func (sw StatusWord) description() string {
	if s, ok := swText[sw]; ok {
		return s
	}
	sw2 := int(sw.SW2())
	switch sw.SW1() {
	case 0x61:
		n, _ := sw.MoreData()
		return fmt.Sprintf("%d more bytes available", n)
	case 0x6C:
		n, _ := sw.WrongLe()
		return fmt.Sprintf("wrong Le, %d bytes available", n)
	case 0x62:
		return "warning, state unchanged"
	case 0x63:
		if sw == SWVerifyFailedNoInfo {
			// ISO 7816-4: "no information given"; after VERIFY, a wrong
			// PIN with no count of the tries left.
			return "warning, state changed, no information given"
		}
		if sw2&0xF0 == 0xC0 || sw2&0xF0 == 0x00 {
			return fmt.Sprintf("verification failed, %d tries left", sw2&0x0F)
		}
		return "warning, state changed"
	case 0x64:
		return "execution error, state unchanged"
	case 0x65:
		return "execution error, state changed"
	case 0x66:
		return "security-related issue"
	case 0x67:
		return "wrong length"
	case 0x68:
		return "function in CLA not supported"
	case 0x69:
		return "command not allowed"
	case 0x6A:
		return "wrong parameters P1-P2"
	case 0x6B:
		return "wrong parameters P1-P2"
	case 0x6D:
		return "instruction not supported"
	case 0x6E:
		return "class not supported"
	case 0x6F:
		return "no precise diagnosis"
	case 0x90:
		return "proprietary success-class status"
	}
	if sw.SW1()&0xF0 == 0x90 {
		return "proprietary status"
	}
	return "unknown status"
}
