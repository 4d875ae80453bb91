package server

import (
	"errors"
	"testing"

	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/transport"
)

// TestSessionPINFor: a signature with a key takes the real PIN of the
// key's card PIN from the session (or from the PINs opened afresh for a
// PIN-always key): the card's default PIN from slot "", another from the
// slot of its ID; a PIN the owner did not register is refused with
// CodeNoPIN, a session logged out meanwhile with CodeNotLoggedIn.
func TestSessionPINFor(t *testing.T) {
	eid := []profiles.PINInfo{{ID: "pin1", Min: 4, Max: 12}, {ID: "pin2", Min: 5, Max: 12}}
	s := &session{pins: map[string][]byte{"": []byte("1111"), "pin2": []byte("22222")}}
	for id, want := range map[string]string{"pin1": "1111", "pin2": "22222"} {
		got, err := s.pinFor(nil, eid, id)
		if err != nil || string(got) != want {
			t.Errorf("pinFor(%s) = %q, %v; want %q", id, got, err, want)
		}
		got[0] = 'x' // a copy: the session's stays
	}
	if string(s.pins[""]) != "1111" {
		t.Error("pinFor handed out the session's own PIN")
	}
	fresh := map[string][]byte{"pin2": []byte("33333")}
	if got, err := s.pinFor(fresh, eid, "pin2"); err != nil || string(got) != "33333" {
		t.Errorf("pinFor(fresh, pin2) = %q, %v", got, err)
	}
	if _, err := s.pinFor(fresh, eid, "pin1"); !errors.Is(err, &transport.Error{Code: transport.CodeNoPIN}) {
		t.Errorf("pinFor(fresh without pin1): %v, want CodeNoPIN", err)
	}
	only := &session{pins: map[string][]byte{"": []byte("1111")}}
	if _, err := only.pinFor(nil, eid, "pin2"); !errors.Is(err, &transport.Error{Code: transport.CodeNoPIN}) {
		t.Errorf("pinFor(unregistered pin2): %v, want CodeNoPIN", err)
	}
	piv := []profiles.PINInfo{{ID: "piv-pin", Min: 6, Max: 8}}
	if got, err := only.pinFor(nil, piv, "piv-pin"); err != nil || string(got) != "1111" {
		t.Errorf("pinFor(piv-pin) = %q, %v: the PIV PIN is the default PIN", got, err)
	}
	only.wipe()
	if _, err := only.pinFor(nil, piv, "piv-pin"); !errors.Is(err, &transport.Error{Code: transport.CodeNotLoggedIn}) {
		t.Errorf("pinFor after logout: %v, want CodeNotLoggedIn", err)
	}
}
