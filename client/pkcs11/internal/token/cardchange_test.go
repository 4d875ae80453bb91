package token

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pscs/pscs/transport"
)

// TestSlotEventAfterNewCatalogue: a key changed on the card (the server's
// slot event, then its new catalogue). C_WaitForSlotEvent reports the
// slot only once the new catalogue is in, so that the application it
// wakes finds the new certificate, not the one the event announced the
// end of.
func TestSlotEventAfterNewCatalogue(t *testing.T) {
	m, f := fakeModule(t)
	h := fakeSession(t, m, true)
	for { // the first catalogue's events
		if _, err := m.WaitForSlotEvent(true); errors.Is(err, ErrNoEvent) {
			break
		}
	}
	// The new catalogue: object 3 (the certificate of key 1) is another.
	newCert := testCatalogue(t).Slots[0].Objects[2].Attributes[ckaValue].([]byte)
	f.mu.Lock()
	cat := *f.cat
	cat.Tag = []byte{2}
	cat.Slots = append([]transport.Slot{}, cat.Slots...)
	cat.Slots[0].Objects = append([]transport.Object{}, cat.Slots[0].Objects...)
	attrs := map[uint64]any{}
	for k, v := range cat.Slots[0].Objects[2].Attributes {
		attrs[k] = v
	}
	attrs[ckaValue] = newCert
	cat.Slots[0].Objects[2].Attributes = attrs
	f.cat, f.hello = &cat, make(chan chan struct{})
	f.mu.Unlock()

	f.events <- &transport.Event{Kind: transport.EventSlot, Slot: 3}
	release := <-f.hello // the module asks for the new catalogue
	if id, err := m.WaitForSlotEvent(true); !errors.Is(err, ErrNoEvent) {
		t.Errorf("C_WaitForSlotEvent before the new catalogue came: slot %d, %v; want CKR_NO_EVENT", id, err)
	}
	f.mu.Lock()
	f.hello = nil
	f.mu.Unlock()
	close(release)
	if id, err := m.WaitForSlotEvent(false); err != nil || id != 3 {
		t.Fatalf("C_WaitForSlotEvent: slot %d, %v; want 3", id, err)
	}
	if got := certificate(t, m, h, 1); !bytes.Equal(got.Raw, newCert) {
		t.Error("after the slot event, the certificate object is still the old one")
	}
}

// TestSignatureLongerThanKnown: the card's key changed to a longer one
// (P-256 to P-384) before the module's catalogue did. The signature does
// not fit the length the module gave; C_Sign answers
// CKR_BUFFER_TOO_SMALL with the signature's length and the operation
// stays active with the signature: the next call takes it without a
// second request (which would want another PIN of a PIN-always key).
func TestSignatureLongerThanKnown(t *testing.T) {
	m, f := fakeModule(t)
	h := fakeSession(t, m, true)
	f.mu.Lock()
	f.sigSize = 96
	f.mu.Unlock()
	if err := m.SignInit(h, Mechanism{Type: ckmECDSASHA256}, 1); err != nil {
		t.Fatal(err)
	}
	data := []byte("data")
	n, err := m.Sign(h, data, nil, false)
	if err != nil || n != 64 {
		t.Fatalf("the length query: %d, %v; want 64 (the catalogue's P-256 key)", n, err)
	}
	n, err = m.Sign(h, data, make([]byte, n), true)
	if !errors.Is(err, ErrBufferTooSmall) || n != 96 {
		t.Fatalf("C_Sign with the length it gave: %d, %v; want 96, CKR_BUFFER_TOO_SMALL", n, err)
	}
	if n, err = m.Sign(h, data, nil, false); err != nil || n != 96 {
		t.Errorf("the length query again: %d, %v; want 96", n, err)
	}
	sig := make([]byte, 100)
	n, err = m.Sign(h, data, sig, true)
	if err != nil || n != 96 || !bytes.Equal(sig[:n], bytes.Repeat([]byte{7}, 96)) {
		t.Errorf("C_Sign with a buffer large enough: %d, %v", n, err)
	}
	f.mu.Lock()
	requests := len(f.signed)
	f.mu.Unlock()
	if requests != 1 {
		t.Errorf("%d signature requests, want 1", requests)
	}
	if _, err := m.Sign(h, data, sig, true); !errors.Is(err, ErrOperationNotInitialized) {
		t.Errorf("C_Sign after the signature was taken: %v, want CKR_OPERATION_NOT_INITIALIZED", err)
	}
	// Multi-part, and an application that gives up: a new C_SignInit.
	if err := m.SignInit(h, Mechanism{Type: ckmECDSASHA256}, 1); err != nil {
		t.Fatal(err)
	}
	if err := m.SignUpdate(h, data); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SignFinal(h, make([]byte, 64), true); !errors.Is(err, ErrBufferTooSmall) {
		t.Fatalf("C_SignFinal: %v, want CKR_BUFFER_TOO_SMALL", err)
	}
	if err := m.SignInit(h, Mechanism{Type: ckmECDSASHA256}, 1); err != nil {
		t.Errorf("C_SignInit over a signature nobody took: %v", err)
	}
}
