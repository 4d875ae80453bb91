//go:build !cgo

package pcsc

import (
	"errors"
	"testing"
)

func TestOpenWithoutCgo(t *testing.T) {
	if _, err := Open(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Open() = %v, want an error wrapping errors.ErrUnsupported", err)
	}
}
