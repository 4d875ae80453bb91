package server_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/profiles/piv/pivsim"
	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/transport"
)

// privateKeys returns the handles of the private keys of a catalogue's
// first slot by key ID (the label ends with "(<id>)").
func privateKeys(cat *transport.Catalogue) map[string]uint64 {
	out := map[string]uint64{}
	for _, o := range cat.Slots[0].Objects {
		label, _ := o.Attributes[p11.CKALabel].(string)
		if o.Attributes[p11.CKAClass] == uint64(p11.CKOPrivateKey) {
			if i := strings.LastIndex(label, "("); i >= 0 {
				out[strings.TrimSuffix(label[i+1:], ")")] = o.Handle
			}
		}
	}
	return out
}

// TestDelegationLimitedToKeys: alice's delegation names key 9a only: her
// catalogue shows that key alone, under the handle bob (every key) sees it
// by; a signature or key agreement with another key is refused with code
// 119, and counts against no limit.
func TestDelegationLimitedToKeys(t *testing.T) {
	r, _, _ := decryptRig(t, pivsim.ECCP384, policy.Delegation{Keys: []string{"9a"}, Total: 2})
	alice, bob := r.Dial(t, r.Certs["alice"]), r.Dial(t, r.Certs["bob"])
	ha, err := alice.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	hb, err := bob.Hello(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	mine, all := privateKeys(ha.Catalogue), privateKeys(hb.Catalogue)
	if len(mine) != 1 || mine["9a"] == 0 || mine["9a"] != all["9a"] {
		t.Errorf("alice's keys %v, want 9a alone with bob's handle (bob's keys %v)", mine, all)
	}
	if len(all) != 2 || all["9d"] == 0 {
		t.Fatalf("bob's keys %v, want 9a and 9d", all)
	}
	if _, err := alice.Login(ctx(t), 7, []byte("2718")); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("limited"))
	if _, err := alice.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: all["9d"], Mechanism: p11.CKMECDSA, Data: d[:]}); !isCode(err, transport.CodeKeyNotDelegated) {
		t.Errorf("sign with 9d: %v, want code %d", err, transport.CodeKeyNotDelegated)
	}
	peer, _ := ecdh.P384().GenerateKey(rand.Reader)
	if _, err := alice.Derive(ctx(t), &transport.DeriveRequest{Slot: 7, Key: all["9d"], Mechanism: p11.CKMECDH1Derive, Data: peer.PublicKey().Bytes()}, nil); !isCode(err, transport.CodeKeyNotDelegated) {
		t.Errorf("derive with 9d: %v, want code %d", err, transport.CodeKeyNotDelegated)
	}
	for i := range 2 {
		if _, err := alice.Sign(ctx(t), &transport.SignRequest{Slot: 7, Key: mine["9a"], Mechanism: p11.CKMECDSA, Data: d[:]}); err != nil {
			t.Fatalf("sign %d with 9a: %v (the refusals counted?)", i, err)
		}
	}
	if _, st, _ := r.Book.Get("d-alice"); st.Used != 2 {
		t.Errorf("used %d, want 2", st.Used)
	}
}
