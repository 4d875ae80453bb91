package store

import (
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pscs/pscs/server/policy"
)

// goldenDelegation is a delegation record as pscsd wrote it before the
// store decoded with the project's one CBOR policy
// (testdata/delegation-v1.hex, encoded with its decoder of then).
var goldenDelegation = policy.Delegation{ID: "d1", Owner: "alice", Delegate: "bob", Card: "pool", Ops: []string{"sign"},
	NotBefore: time.Unix(1700000000, 5).UTC(), NotAfter: time.Unix(1800000000, 0).UTC(),
	Hours: &policy.Hours{Days: 0x3e, From: 480, To: 1080, Location: time.UTC}, PerHour: 10, Total: 100,
	Documents: [][]byte{{1, 2, 3}}, Warranty: true, MaxWrongVPIN: 3}

func readGolden(t *testing.T) []byte {
	t.Helper()
	h, err := os.ReadFile("testdata/delegation-v1.hex")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStoredDelegationStillLoads: records written before still decode,
// and encode again to the same bytes.
func TestStoredDelegationStillLoads(t *testing.T) {
	b := readGolden(t)
	d, err := DecodeDelegation(b)
	if err != nil {
		t.Fatalf("a stored delegation no longer loads: %v", err)
	}
	if d.ID != "d1" || d.Delegate != "bob" || d.Total != 100 || !d.NotBefore.Equal(goldenDelegation.NotBefore) ||
		d.Hours == nil || d.Hours.From != 480 || len(d.Documents) != 1 || !d.Warranty {
		t.Errorf("decoded %+v", d)
	}
	again, err := EncodeDelegation(d)
	if err != nil || !bytes.Equal(again, b) {
		t.Errorf("encoding again: %x, %v; want %x", again, err, b)
	}
}

// TestDelegationDecodingPolicy: the store refuses what the protocol
// refuses (internal/cborpolicy): indefinite lengths, invalid UTF-8,
// duplicate keys, tags. (It accepted the first two before.)
func TestDelegationDecodingPolicy(t *testing.T) {
	valid := "a10162" + "6431" // {1: "d1"}
	if d, err := DecodeDelegation(unhex(t, valid)); err != nil || d.ID != "d1" {
		t.Fatalf("the valid record: %+v, %v", d, err)
	}
	for _, tc := range []struct{ name, cbor string }{
		{"indefinite map", "bf01626431ff"},                      // {_ 1: "d1"}
		{"indefinite text", "a1017f626431ff"},                   // {1: (_ "d1")}
		{"indefinite array", "a20162643105" + "9f647369676eff"}, // {1: "d1", 5: [_ "sign"]}
		{"indefinite bytes", "a201626431" + "0b815f4101ff"},     // {1: "d1", 11: [(_ h'01')]}
		{"invalid UTF-8", "a20162643102" + "62fffe"},            // {1: "d1", 2: "\xff\xfe"}
		{"duplicate key", "a20162643101" + "626432"},            // {1: "d1", 1: "d2"}
		{"tag", "a20162643107" + "c11a6553f100"},                // {1: "d1", 7: 1(1700000000)}
	} {
		if d, err := DecodeDelegation(unhex(t, tc.cbor)); err == nil {
			t.Errorf("%s: decoded %+v, want an error", tc.name, d)
		}
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDelegationKeys: a delegation limited to keys keeps them; an old
// record (without field 14) loads as a delegation of every key.
func TestDelegationKeys(t *testing.T) {
	d := goldenDelegation
	d.Keys = []string{"9f", "81"}
	b, err := EncodeDelegation(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDelegation(b)
	if err != nil || len(got.Keys) != 2 || got.Keys[0] != "9f" || got.Keys[1] != "81" {
		t.Errorf("keys after a round trip: %v, %v", got.Keys, err)
	}
	old, err := DecodeDelegation(readGolden(t))
	if err != nil || old.Keys != nil || !old.AllowsKey("9c") {
		t.Errorf("an old record: keys %v, %v", old.Keys, err)
	}
}
