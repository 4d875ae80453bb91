package server

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/pscs/pscs/server/policy"
	"github.com/pscs/pscs/server/store"
	"github.com/pscs/pscs/server/vault"
	"github.com/pscs/pscs/transport"
)

// StateReader reads what administration kept (server/store).
type StateReader interface {
	List(kind string) ([]string, error)
	Get(kind, key string) ([]byte, error)
}

// LoadState puts back what administration kept in st: enrolled
// identities, delegations with their revocations, and the sealed PINs of
// owners and delegations. pscsd calls it at start.
func LoadState(st StateReader, book *policy.Book, enroll *transport.StaticEnrollment, pins *VaultPINs) error {
	ids, err := st.List(store.KindIdentity)
	if err != nil {
		return err
	}
	for _, id := range ids {
		der, err := st.Get(store.KindIdentity, id)
		if err != nil {
			return err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("identity %s: %w", id, err)
		}
		enroll.Add(id, cert)
	}
	revoked := map[string]time.Time{}
	cfgs, err := st.List(store.KindConfig)
	if err != nil {
		return err
	}
	for _, k := range cfgs {
		if id, ok := strings.CutPrefix(k, revokedKey); ok {
			b, err := st.Get(store.KindConfig, k)
			if err != nil {
				return err
			}
			var t time.Time
			t.UnmarshalText(b)
			revoked[id] = t
		}
	}
	dels, err := st.List(store.KindDelegation)
	if err != nil {
		return err
	}
	for _, id := range dels {
		b, err := st.Get(store.KindDelegation, id)
		if err != nil {
			return err
		}
		d, err := store.DecodeDelegation(b)
		if err != nil {
			return fmt.Errorf("delegation %s: %w", id, err)
		}
		book.Grant(d)
		if _, ok := revoked[id]; ok {
			book.Revoke(id)
		}
	}
	keys, err := st.List(store.KindVault)
	if err != nil {
		return err
	}
	for _, k := range keys {
		card, owner := strings.CutPrefix(k, ownerPINKey)
		did, _ := SplitPINName(k)
		if _, _, ok := book.Get(did); !ok && !owner {
			continue // not a delegation's (the CA key's, say)
		}
		if _, ok := revoked[did]; ok {
			continue
		}
		b, err := st.Get(store.KindVault, k)
		if err != nil {
			return err
		}
		var e vault.Entry
		if err := e.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("sealed PIN %s: %w", k, err)
		}
		if owner {
			pins.LoadOwnerPIN(card, &e)
		} else {
			pins.Load(k, &e)
		}
	}
	return nil
}
