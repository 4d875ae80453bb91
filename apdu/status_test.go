package apdu

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

var sentinels = []error{
	ErrWrongPIN, ErrBlocked, ErrSecurityStatus, ErrNotFound, ErrWrongLength, ErrWrongData,
	ErrConditions, ErrNotSupported, ErrIncorrectParams, ErrNoSpace, ErrRefDataUnusable,
}

// TestStatus6300NoCount: 6300 carries no count, so its text gives none
// (it said "0 tries left").
func TestStatus6300NoCount(t *testing.T) {
	s := SWVerifyFailedNoInfo.String()
	if strings.Contains(s, "tries") || !strings.Contains(s, "no information given") {
		t.Errorf("6300 reads %q", s)
	}
	if n, ok := SWVerifyFailedNoInfo.Retries(); ok {
		t.Errorf("6300 reports %d tries left", n)
	}
}

func TestStatusWordErrors(t *testing.T) {
	tests := []struct {
		sw      StatusWord
		want    error // the one sentinel it matches, or nil
		retries int
		hasRet  bool
		text    string // substring of Error()
	}{
		{0x63C0, ErrWrongPIN, 0, true, "0 tries left"},
		{0x63C3, ErrWrongPIN, 3, true, "3 tries left"},
		{0x63CF, ErrWrongPIN, 15, true, "15 tries left"},
		{0x6302, ErrWrongPIN, 2, true, "2 tries left"}, // old YubiKeys, piv-go issue 60
		{0x6303, ErrWrongPIN, 3, true, "6303"},
		{0x6300, nil, 0, false, "no information given"}, // not a count
		{0x6381, nil, 0, false, "warning, state changed"},
		{SWAuthBlocked, ErrBlocked, 0, true, "authentication method blocked"},
		{SWSecurityStatusNotSatisfied, ErrSecurityStatus, 0, false, "security status not satisfied"},
		{SWFileNotFound, ErrNotFound, 0, false, "file or application not found"},
		{SWRefNotFound, ErrNotFound, 0, false, "reference data not found"},
		{SWWrongLength, ErrWrongLength, 0, false, "wrong length"},
		{0x6C10, ErrWrongLength, 0, false, "wrong Le, 16 bytes available"},
		{0x6C00, ErrWrongLength, 0, false, "256 bytes"},
		{SWWrongData, ErrWrongData, 0, false, "incorrect parameters in the data field"},
		{SWConditionsNotSatisfied, ErrConditions, 0, false, "conditions of use"},
		{SWFuncNotSupported, ErrNotSupported, 0, false, "function not supported"},
		{SWINSNotSupported, ErrNotSupported, 0, false, "instruction not supported"},
		{SWCLANotSupported, ErrNotSupported, 0, false, "class not supported"},
		{SWIncorrectP1P2, ErrIncorrectParams, 0, false, "incorrect parameters P1-P2"},
		{SWWrongP1P2, ErrIncorrectParams, 0, false, "wrong parameters P1-P2"},
		{SWNotEnoughMemory, ErrNoSpace, 0, false, "not enough memory"},
		{SWRefDataNotUsable, ErrRefDataUnusable, 0, false, "reference data not usable"},
		{0x6104, nil, 0, false, "4 more bytes"},
		{0x6100, nil, 0, false, "256 more bytes"},
		{SWEndOfFile, nil, 0, false, "end of file"},
		{0x6299, nil, 0, false, "warning, state unchanged"},
		{0x6400, nil, 0, false, "execution error"},
		{0x6581, nil, 0, false, "memory failure"},
		{0x6600, nil, 0, false, "security-related"},
		{SWChainingNotSupported, nil, 0, false, "chaining not supported"},
		{0x68FF, nil, 0, false, "function in CLA"},
		{0x6999, nil, 0, false, "command not allowed"},
		{0x6A99, nil, 0, false, "wrong parameters"},
		{SWUnknown, nil, 0, false, "no precise diagnosis"},
		{0x6F42, nil, 0, false, "no precise diagnosis"},
		{0x9100, nil, 0, false, "proprietary"},
		{0x9F10, nil, 0, false, "proprietary"},
		{0x1234, nil, 0, false, "unknown status"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%04X", uint16(tt.sw)), func(t *testing.T) {
			wrapped := fmt.Errorf("piv: verify: %w", fmt.Errorf("inner: %w", tt.sw))
			for _, s := range sentinels {
				if got, want := errors.Is(wrapped, s), s == tt.want; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", tt.sw, s, got, want)
				}
			}
			if errors.Is(wrapped, ErrMalformed) {
				t.Errorf("errors.Is(%v, ErrMalformed) = true", tt.sw)
			}
			if !errors.Is(wrapped, tt.sw) {
				t.Errorf("errors.Is(wrapped, itself) = false")
			}
			var sw StatusWord
			if !errors.As(wrapped, &sw) || sw != tt.sw {
				t.Errorf("errors.As = %v, want %v", sw, tt.sw)
			}
			n, ok := tt.sw.Retries()
			if n != tt.retries || ok != tt.hasRet {
				t.Errorf("Retries() = %d, %v; want %d, %v", n, ok, tt.retries, tt.hasRet)
			}
			msg := tt.sw.Error()
			if !strings.HasPrefix(msg, fmt.Sprintf("apdu: status %04X (", uint16(tt.sw))) || !strings.Contains(msg, tt.text) {
				t.Errorf("Error() = %q, want prefix %q and %q", msg, fmt.Sprintf("apdu: status %04X", uint16(tt.sw)), tt.text)
			}
			if tt.sw.OK() || tt.sw.Err() == nil {
				t.Errorf("OK() = %v, Err() = %v; want false, non-nil", tt.sw.OK(), tt.sw.Err())
			}
		})
	}
}

func TestStatusWordSuccess(t *testing.T) {
	if !SWSuccess.OK() {
		t.Errorf("SWSuccess.OK() = false")
	}
	if err := SWSuccess.Err(); err != nil {
		t.Errorf("SWSuccess.Err() = %v, want nil", err)
	}
	for _, s := range sentinels {
		if SWSuccess.Is(s) {
			t.Errorf("SWSuccess.Is(%v) = true", s)
		}
	}
	if got, want := SWSuccess.Error(), "apdu: status 9000 (success)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := SWAuthBlocked.Error(), "apdu: status 6983 (authentication method blocked)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := SWAuthBlocked.String(), "6983 (authentication method blocked)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestStatusWordHelpers(t *testing.T) {
	tests := []struct {
		name string
		got  StatusWord
		want StatusWord
	}{
		{"SWMoreData(0x4B)", SWMoreData(0x4B), 0x614B},
		{"SWMoreData(256)", SWMoreData(256), 0x6100},
		{"SWWrongLe(8)", SWWrongLe(8), 0x6C08},
		{"SWWrongLe(256)", SWWrongLe(256), 0x6C00},
		{"SWRetries(3)", SWRetries(3), 0x63C3},
		{"SWRetries(99)", SWRetries(99), 0x63CF},
		{"SWRetries(-1)", SWRetries(-1), 0x63C0},
		{"NewStatusWord(6A, 82)", NewStatusWord(0x6A, 0x82), SWFileNotFound},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %04X, want %04X", tt.name, uint16(tt.got), uint16(tt.want))
		}
	}
	if n, ok := SWMoreData(0).MoreData(); n != 256 || !ok {
		t.Errorf("6100.MoreData() = %d, %v; want 256, true", n, ok)
	}
	if n, ok := StatusWord(0x6C12).WrongLe(); n != 0x12 || !ok {
		t.Errorf("6C12.WrongLe() = %d, %v; want 18, true", n, ok)
	}
	if _, ok := SWSuccess.MoreData(); ok {
		t.Errorf("9000.MoreData() ok")
	}
	if _, ok := SWSuccess.WrongLe(); ok {
		t.Errorf("9000.WrongLe() ok")
	}
	if sw := StatusWord(0x6A82); sw.SW1() != 0x6A || sw.SW2() != 0x82 {
		t.Errorf("SW1/SW2 = %02X %02X", sw.SW1(), sw.SW2())
	}
}
