//go:build cgo

package pcsc

import (
	"errors"
	"strings"
	"testing"

	"github.com/ebfe/scard"

	"github.com/pscs/pscs/cards"
)

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		code scard.Error
		want error // nil: no sentinel
	}{
		{scard.ErrRemovedCard, cards.ErrCardRemoved},
		{scard.ErrResetCard, cards.ErrCardReset},
		{scard.ErrNoSmartcard, cards.ErrNoCard},
		{scard.ErrUnknownReader, cards.ErrNoReader},
		{scard.ErrReaderUnavailable, cards.ErrNoReader},
		{scard.ErrNoReadersAvailable, cards.ErrNoReader},
		{scard.ErrNoService, cards.ErrServiceUnavailable},
		{scard.ErrServiceStopped, cards.ErrServiceUnavailable},
		{scard.ErrInvalidHandle, cards.ErrServiceUnavailable},
		{scard.ErrCommError, cards.ErrServiceUnavailable},
		{scard.ErrShutdown, cards.ErrServiceUnavailable},
		{scard.ErrSharingViolation, cards.ErrSharingViolation},
		{scard.ErrTimeout, nil},
		{scard.ErrCancelled, nil},
		{scard.ErrNotTransacted, nil},
		{scard.ErrInsufficientBuffer, nil},
		{scard.ErrUnresponsiveCard, nil},
		{scard.ErrInternalError, nil},
	} {
		t.Run(tc.code.Error(), func(t *testing.T) {
			if got := kindOf(tc.code); got != tc.want {
				t.Errorf("kindOf(0x%08X) = %v, want %v", uint32(tc.code), got, tc.want)
			}
			err := mapErr("SCardTransmit", "R 00 00", tc.code)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("mapErr = %T, want *Error", err)
			}
			if e.Code != uint32(tc.code) || e.Op != "SCardTransmit" || e.Reader != "R 00 00" {
				t.Errorf("mapErr = %+v", e)
			}
			for _, s := range []error{cards.ErrCardRemoved, cards.ErrCardReset, cards.ErrNoCard, cards.ErrNoReader,
				cards.ErrServiceUnavailable, cards.ErrSharingViolation, cards.ErrClosed} {
				if got, want := errors.Is(err, s), s == tc.want; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
				}
			}
			if msg := err.Error(); !strings.Contains(msg, "SCardTransmit") || strings.Contains(msg, "scard: ") {
				t.Errorf("message %q", msg)
			}
		})
	}
	if mapErr("op", "", nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
	if err := mapErr("op", "r", errors.New("other")); err == nil || !strings.Contains(err.Error(), "other") {
		t.Errorf("mapErr(other) = %v", err)
	}
}
