package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseFilter: the audit page's query never panics, and a filter it
// accepts round-trips through its query.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "card=mayor", "delegate=demo-delegate&outcome=refused", "from=2026-12-05T08:00&to=2026-12-05T09:30",
		"outcome=allowed&card=ceo&from=2026-01-01T00:00", "from=yesterday", "outcome=maybe", "card=%ZZ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		flt, err := parseFilter(v)
		if err != nil {
			return
		}
		v2, err := url.ParseQuery(flt.query())
		if err != nil {
			t.Fatalf("query %q: %v", flt.query(), err)
		}
		again, err := parseFilter(v2)
		if err != nil || again.query() != flt.query() {
			t.Fatalf("%q → %q → %v %q", q, flt.query(), err, again.query())
		}
	})
}

// FuzzDelegationForm: the new delegation form never panics, and what it
// accepts names a card, a delegate and an operation.
func FuzzDelegationForm(f *testing.F) {
	for _, s := range []string{
		"card=mayor&delegate=bob&ops=sign&passphrase=secret-pass",
		"card=mayor&delegate=bob&ops=sign&ops=decrypt&keys=9a,9c&key=9d&not_before=2026-12-05T08:00&not_after=2027-01-05T08:00&days=1&days=5&hours_from=08:00&hours_to=18:30&per_hour=10&total=100&warranty=on&digests=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
		"card=mayor&delegate=bob&ops=sign&days=9", "card=mayor&delegate=bob&ops=sign&hours_from=08:00",
		"card=mayor&delegate=bob&ops=sign&per_hour=-1", "card=&delegate=", "card=mayor&delegate=bob&ops=sign&digests=zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r, err := http.NewRequest(http.MethodPost, "https://console.test/delegations", strings.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if r.ParseForm() != nil {
			return
		}
		d, _, err := delegationForm(r)
		if err != nil {
			return
		}
		if d.Card == "" || d.Delegate == "" || len(d.Ops) == 0 {
			t.Fatalf("accepted %q as %+v", body, d)
		}
	})
}
