// Package registry is the one list of the card profiles pscs knows: pscs
// and pscsd detect cards with [Profiles], trace card exchanges with
// [Redactor], and `pscs sim -profile` names its simulators by the same
// names (the simulators themselves are registered in client/cmd/pscs, so
// that pscsd does not link them).
//
// # Adding a profile
//
// Add an [Entry] to the list in this file: its name (the one users type,
// lower case), its driver when it has one, and its Redact function (the
// driver's profiles.Redactor). Entries without a driver are card families
// whose simulator exists before their driver: their APDUs are redacted
// all the same, and no card is detected as one of them.
package registry

import (
	"github.com/pscs/pscs/apdu"
	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/esteid"
	"github.com/pscs/pscs/profiles/openpgp"
	"github.com/pscs/pscs/profiles/piv"
)

// Entry is one registered profile.
type Entry struct {
	// Name is the profile's name: Profile.Name() when there is a driver.
	Name string
	// Description says what cards it is for, for help texts.
	Description string
	// Profile is the driver; nil when there is none yet.
	Profile profiles.Profile
	// Redact says which of the profile's APDUs carry secrets (see
	// profiles.Redactor).
	Redact func(apdu.Command) (secretCommand, secretResponse bool)
}

var entries = []Entry{
	{Name: "piv", Description: "PIV (NIST SP 800-73-4) with the YubiKey extensions", Profile: piv.Profile{}, Redact: piv.Profile{}.Redact},
	{Name: "openpgp", Description: "OpenPGP card 3.4", Profile: openpgp.Profile{}, Redact: openpgp.Redact},
	{Name: "esteid", Description: "Estonian ID card (EstEID 2018)", Profile: esteid.Profile{}, Redact: esteid.Redact},
}

// All returns the registered profiles, in detection order.
func All() []Entry { return append([]Entry(nil), entries...) }

// Names returns the registered profiles' names, in detection order.
func Names() []string {
	var ns []string
	for _, e := range entries {
		ns = append(ns, e.Name)
	}
	return ns
}

// Lookup returns the entry named name.
func Lookup(name string) (Entry, bool) {
	for _, e := range entries {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// Profiles returns the drivers, in the order in which profiles.Detect
// tries them on a card.
func Profiles() []profiles.Profile {
	var ps []profiles.Profile
	for _, e := range entries {
		if e.Profile != nil {
			ps = append(ps, e.Profile)
		}
	}
	return ps
}

// Redactor returns the cards.Redactor of every registered profile: a
// tracer does not know which application a card runs (it traces the
// detection too), so data is hidden when any profile calls it secret, and
// so is a command that does not parse.
func Redactor() cards.Redactor { return union(entries) }

type union []Entry

func (u union) Redact(raw []byte) (secretCommand, secretResponse bool) {
	cmd, err := apdu.ParseCommand(raw)
	if err != nil {
		return true, true
	}
	cmd.CLA &^= 0x10 // a block of a chain is judged as the whole command
	for _, e := range u {
		c, r := e.Redact(cmd)
		secretCommand = secretCommand || c
		secretResponse = secretResponse || r
	}
	return secretCommand, secretResponse
}
