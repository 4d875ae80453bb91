package token

import (
	"context"
	"errors"
	"fmt"

	"github.com/pscs/pscs/transport"
)

// RV is a PKCS #11 return value (CK_RV). Every error of this package is an
// RV or wraps one; [RVOf] finds it.
type RV uint64

// Return values (CKR_*), PKCS #11 v2.40 section 3.6.
const (
	OK                         RV = 0x000
	ErrHostMemory              RV = 0x002
	ErrSlotIDInvalid           RV = 0x003
	ErrGeneral                 RV = 0x005
	ErrFunctionFailed          RV = 0x006
	ErrArgumentsBad            RV = 0x007
	ErrNoEvent                 RV = 0x008
	ErrNeedToCreateThreads     RV = 0x009
	ErrCantLock                RV = 0x00A
	ErrAttributeSensitive      RV = 0x011
	ErrAttributeTypeInvalid    RV = 0x012
	ErrDataInvalid             RV = 0x020
	ErrDataLenRange            RV = 0x021
	ErrEncryptedDataInvalid    RV = 0x040
	ErrEncryptedDataLenRange   RV = 0x041
	ErrActionProhibited        RV = 0x01B
	ErrTemplateInconsistent    RV = 0x0D1
	ErrDeviceError             RV = 0x030
	ErrDeviceMemory            RV = 0x031
	ErrDeviceRemoved           RV = 0x032
	ErrFunctionCanceled        RV = 0x050
	ErrFunctionNotParallel     RV = 0x051
	ErrFunctionNotSupported    RV = 0x054
	ErrKeyHandleInvalid        RV = 0x060
	ErrKeyTypeInconsistent     RV = 0x063
	ErrKeyFunctionNotPermitted RV = 0x068
	ErrMechanismInvalid        RV = 0x070
	ErrMechanismParamInvalid   RV = 0x071
	ErrObjectHandleInvalid     RV = 0x082
	ErrOperationActive         RV = 0x090
	ErrOperationNotInitialized RV = 0x091
	ErrPINIncorrect            RV = 0x0A0
	ErrPINLenRange             RV = 0x0A2
	ErrPINLocked               RV = 0x0A4
	ErrSessionClosed           RV = 0x0B0
	ErrSessionHandleInvalid    RV = 0x0B3
	ErrSessionParallelNotSupp  RV = 0x0B4
	ErrTokenNotPresent         RV = 0x0E0
	ErrUserAlreadyLoggedIn     RV = 0x100
	ErrUserNotLoggedIn         RV = 0x101
	ErrUserTypeInvalid         RV = 0x103
	ErrRandomSeedNotSupported  RV = 0x120
	ErrBufferTooSmall          RV = 0x150
	ErrNotInitialized          RV = 0x190
	ErrAlreadyInitialized      RV = 0x191
	ErrFunctionRejected        RV = 0x200
)

var rvNames = map[RV]string{
	OK: "CKR_OK", ErrHostMemory: "CKR_HOST_MEMORY", ErrSlotIDInvalid: "CKR_SLOT_ID_INVALID",
	ErrGeneral: "CKR_GENERAL_ERROR", ErrFunctionFailed: "CKR_FUNCTION_FAILED", ErrArgumentsBad: "CKR_ARGUMENTS_BAD",
	ErrNoEvent: "CKR_NO_EVENT", ErrNeedToCreateThreads: "CKR_NEED_TO_CREATE_THREADS", ErrCantLock: "CKR_CANT_LOCK",
	ErrAttributeSensitive: "CKR_ATTRIBUTE_SENSITIVE", ErrAttributeTypeInvalid: "CKR_ATTRIBUTE_TYPE_INVALID",
	ErrEncryptedDataInvalid: "CKR_ENCRYPTED_DATA_INVALID", ErrEncryptedDataLenRange: "CKR_ENCRYPTED_DATA_LEN_RANGE",
	ErrActionProhibited: "CKR_ACTION_PROHIBITED", ErrTemplateInconsistent: "CKR_TEMPLATE_INCONSISTENT",
	ErrDataInvalid: "CKR_DATA_INVALID", ErrDataLenRange: "CKR_DATA_LEN_RANGE", ErrDeviceError: "CKR_DEVICE_ERROR",
	ErrDeviceMemory: "CKR_DEVICE_MEMORY", ErrDeviceRemoved: "CKR_DEVICE_REMOVED", ErrFunctionCanceled: "CKR_FUNCTION_CANCELED",
	ErrFunctionNotParallel: "CKR_FUNCTION_NOT_PARALLEL", ErrFunctionNotSupported: "CKR_FUNCTION_NOT_SUPPORTED",
	ErrKeyHandleInvalid: "CKR_KEY_HANDLE_INVALID", ErrKeyTypeInconsistent: "CKR_KEY_TYPE_INCONSISTENT",
	ErrKeyFunctionNotPermitted: "CKR_KEY_FUNCTION_NOT_PERMITTED", ErrMechanismInvalid: "CKR_MECHANISM_INVALID",
	ErrMechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID", ErrObjectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID",
	ErrOperationActive: "CKR_OPERATION_ACTIVE", ErrOperationNotInitialized: "CKR_OPERATION_NOT_INITIALIZED",
	ErrPINIncorrect: "CKR_PIN_INCORRECT", ErrPINLenRange: "CKR_PIN_LEN_RANGE", ErrPINLocked: "CKR_PIN_LOCKED",
	ErrSessionClosed: "CKR_SESSION_CLOSED", ErrSessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID",
	ErrSessionParallelNotSupp: "CKR_SESSION_PARALLEL_NOT_SUPPORTED", ErrTokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
	ErrUserAlreadyLoggedIn: "CKR_USER_ALREADY_LOGGED_IN", ErrUserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN",
	ErrUserTypeInvalid: "CKR_USER_TYPE_INVALID", ErrRandomSeedNotSupported: "CKR_RANDOM_SEED_NOT_SUPPORTED",
	ErrBufferTooSmall: "CKR_BUFFER_TOO_SMALL", ErrNotInitialized: "CKR_CRYPTOKI_NOT_INITIALIZED",
	ErrAlreadyInitialized: "CKR_CRYPTOKI_ALREADY_INITIALIZED", ErrFunctionRejected: "CKR_FUNCTION_REJECTED",
}

func (r RV) Error() string {
	if s, ok := rvNames[r]; ok {
		return s
	}
	return fmt.Sprintf("CKR_0x%X", uint64(r))
}

// rvError is an RV with the error that caused it, for logs.
type rvError struct {
	rv  RV
	err error
}

func (e *rvError) Error() string { return e.rv.Error() + ": " + e.err.Error() }
func (e *rvError) Unwrap() []error {
	return []error{e.rv, e.err}
}

// RVOf is the return value for err: OK for nil, the RV in err's chain, or
// CKR_GENERAL_ERROR for any other error.
func RVOf(err error) RV {
	if err == nil {
		return OK
	}
	var rv RV
	if errors.As(err, &rv) {
		return rv
	}
	return ErrGeneral
}

// remoteError maps an error of the pscs client to the return value
// applications understand (the stable codes of transport/codes.go), keeping
// the cause for logs. inSession tells whether the caller works in a session
// (a card gone is then CKR_DEVICE_REMOVED, else CKR_TOKEN_NOT_PRESENT).
func remoteError(err error, inSession bool) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[RV](err); ok {
		return err
	}
	gone := ErrTokenNotPresent
	if inSession {
		gone = ErrDeviceRemoved
	}
	rv := ErrDeviceError // unreachable, timed out, refused the connection
	var te *transport.Error
	switch {
	case errors.As(err, &te):
		switch te.Code {
		case transport.CodeWrongPIN:
			rv = ErrPINIncorrect
		case transport.CodeLocked:
			rv = ErrPINLocked
		case transport.CodeDenied, transport.CodeRevoked, transport.CodeOutsideWindow,
			transport.CodeLimitReached, transport.CodeDocumentRefused, transport.CodeKeyNotDelegated, transport.CodeWarrantyRaw:
			rv = ErrFunctionRejected
		case transport.CodeNotLoggedIn:
			rv = ErrUserNotLoggedIn
		case transport.CodeNoSuchSlot, transport.CodeCardUnavailable:
			rv = gone
		case transport.CodeNoSuchKey, transport.CodeKeyGone:
			rv = ErrKeyHandleInvalid
		case transport.CodeMechanism:
			rv = ErrMechanismInvalid
		case transport.CodeTooLarge:
			rv = ErrDataLenRange
		case transport.CodeDecryption:
			rv = ErrEncryptedDataInvalid
		}
	case errors.Is(err, context.Canceled):
		rv = ErrFunctionCanceled
	}
	return &rvError{rv: rv, err: err}
}
