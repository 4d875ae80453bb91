//go:build !cgo

package pcsc

import (
	"context"
	"errors"
	"fmt"
)

// errNoCgo is returned by everything when the package is built without cgo.
var errNoCgo = fmt.Errorf("pcsc: %w: built without cgo (PC/SC needs libpcsclite)", errors.ErrUnsupported)

// Context is a connection to the PC/SC service. Built without cgo, there
// is none: [Open] fails.
type Context struct{}

// Open fails: the package was built without cgo.
func Open() (*Context, error) { return nil, errNoCgo }

// Close does nothing.
func (c *Context) Close() error { return nil }

// Readers fails: the package was built without cgo.
func (c *Context) Readers(ctx context.Context) ([]Reader, error) { return nil, errNoCgo }

// Watch fails: the package was built without cgo.
func (c *Context) Watch(ctx context.Context, events chan<- Event) error { return errNoCgo }

// Connect fails: the package was built without cgo.
func (c *Context) Connect(ctx context.Context, reader string) (*Card, error) { return nil, errNoCgo }

// Card is a connection to the card in one reader. Built without cgo, there
// is none.
type Card struct{}

// Reader returns "".
func (k *Card) Reader() string { return "" }

// ATR returns nil.
func (k *Card) ATR() []byte { return nil }

// Transmit fails: the package was built without cgo.
func (k *Card) Transmit(ctx context.Context, cmd []byte) ([]byte, error) { return nil, errNoCgo }

// Begin fails: the package was built without cgo.
func (k *Card) Begin(ctx context.Context) error { return errNoCgo }

// End fails: the package was built without cgo.
func (k *Card) End() error { return errNoCgo }

// Reconnect fails: the package was built without cgo.
func (k *Card) Reconnect(ctx context.Context) error { return errNoCgo }

// Close does nothing.
func (k *Card) Close() error { return nil }

// Reset is not available without cgo.
func (k *Card) Reset(ctx context.Context) error { return errNoCgo }

// Check fails: the package was built without cgo.
func (k *Card) Check(ctx context.Context) error { return errNoCgo }
