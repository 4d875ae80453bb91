package vault

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrGuessLimit means the TPM's dictionary-attack counter is so close to
// lockout that the vault refuses to test a vPIN now: only the reserve
// ([DA.Reserve]) is left, or the TPM is in lockout. Nothing was sent to the
// TPM as an authorization, and the vPIN was neither right nor wrong. The
// TPM forgets one failure every [DA.Recovery]; try later.
var ErrGuessLimit = errors.New("vault: TPM guess limit reached, try later")

// DA configures the TPM's dictionary-attack (DA) protection, which limits
// how many vPINs anyone can test, pscsd or a thief holding the appliance.
//
// A TPM counts failed authorizations of DA-protected objects (failedTries,
// TPM_PT_LOCKOUT_COUNTER). When the count reaches MaxTries
// (TPM_PT_MAX_AUTH_FAIL) the TPM is in lockout: it refuses every
// DA-protected object, even with the right authorization, until the count
// decays, by one every Recovery (TPM_PT_LOCKOUT_INTERVAL), or until someone
// with the lockout hierarchy's authorization resets it. These are TPM-wide
// settings: they govern every DA-protected object of every user of the TPM.
// The vault key (NoDA) is not governed: MACs and version 1 entries work in
// lockout.
type DA struct {
	// MaxTries is the number of failed authorizations that puts the TPM in
	// lockout. Default 32.
	MaxTries uint32
	// Recovery is the time after which the TPM forgets one failed
	// authorization, in whole seconds, at least 1 s. After MaxTries
	// failures, one more vPIN can be tried per Recovery: 3600/Recovery
	// guesses per hour for whoever holds the TPM. Default 60 s.
	Recovery time.Duration
	// LockoutRecovery is how long the lockout hierarchy stays unusable
	// after a wrong lockout authorization, in whole seconds; 0 means until
	// the next TPM reset. Default 24 h.
	LockoutRecovery time.Duration
	// Reserve is how many failures before lockout the vault keeps unused:
	// Unseal of a version 2 entry refuses with [ErrGuessLimit], before any
	// TPM command, when MaxTries minus the TPM's counter is Reserve or less.
	// pscsd's wrong vPINs therefore never put the TPM in lockout, so a right
	// vPIN keeps working for everyone until the reserve is reached, and the
	// TPM's other DA-protected users keep Reserve tries of their own. At
	// least 1. Default 4.
	Reserve uint32
	// DiscardLockoutAuth makes [Open], when the lockout hierarchy's
	// authorization is empty, set it to 32 random bytes that it does not
	// keep. Without it, anyone with the TPM can reset the counter
	// (TPM2_DictionaryAttackLockReset with the empty authorization) and
	// test vPINs at Argon2id speed again. With it, nobody can reset the
	// counter or change these parameters again, short of a TPM clear from
	// the platform firmware, which destroys every entry too. Default false
	// in this package; pscsd's configuration turns it on.
	DiscardLockoutAuth bool
}

// DefaultDA is the DA configuration of [Open] without [WithDA].
var DefaultDA = DA{MaxTries: 32, Recovery: time.Minute, LockoutRecovery: 24 * time.Hour, Reserve: 4}

// Validate reports whether d is usable.
func (d DA) Validate() error {
	switch {
	case d.Reserve < 1:
		return errors.New("vault: DA reserve must be at least 1")
	case d.MaxTries <= d.Reserve:
		return fmt.Errorf("vault: DA max tries %d must exceed the reserve %d", d.MaxTries, d.Reserve)
	case d.Recovery < time.Second || d.Recovery%time.Second != 0 || d.Recovery > maxDASeconds*time.Second:
		return fmt.Errorf("vault: DA recovery %v: want whole seconds, at least 1 s", d.Recovery)
	case d.LockoutRecovery < 0 || d.LockoutRecovery%time.Second != 0 || d.LockoutRecovery > maxDASeconds*time.Second:
		return fmt.Errorf("vault: DA lockout recovery %v: want whole seconds", d.LockoutRecovery)
	}
	return nil
}

const maxDASeconds = 1<<32 - 1

// WithDA sets the DA configuration (default [DefaultDA]).
func WithDA(d DA) Option { return func(v *Vault) { v.da = d } }

// DAStatus is the TPM's dictionary-attack state, as [Vault.DAStatus] reads
// it.
type DAStatus struct {
	Counter         uint32        // TPM_PT_LOCKOUT_COUNTER: failed authorizations now counted
	MaxTries        uint32        // TPM_PT_MAX_AUTH_FAIL
	Recovery        time.Duration // TPM_PT_LOCKOUT_INTERVAL
	LockoutRecovery time.Duration // TPM_PT_LOCKOUT_RECOVERY
	InLockout       bool          // TPMA_PERMANENT.inLockout
	LockoutAuthSet  bool          // TPMA_PERMANENT.lockoutAuthSet
	Reserve         uint32        // the vault's reserve ([DA.Reserve])
}

// Left is how many vPINs the vault may still test before it refuses with
// [ErrGuessLimit]: MaxTries - Counter - Reserve, or 0.
func (s DAStatus) Left() uint32 {
	if s.InLockout || s.Counter+s.Reserve >= s.MaxTries {
		return 0
	}
	return s.MaxTries - s.Counter - s.Reserve
}

// matches reports whether the TPM's parameters are d's.
func (s DAStatus) matches(d DA) bool {
	return s.MaxTries == d.MaxTries && s.Recovery == d.Recovery && s.LockoutRecovery == d.LockoutRecovery
}

// DAStatus reads the TPM's dictionary-attack state.
func (v *Vault) DAStatus() (DAStatus, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return DAStatus{}, ErrClosed
	}
	st, err := readDA(v.tpm)
	st.Reserve = v.da.Reserve
	return st, err
}

// readDA reads the TPM properties of dictionary-attack protection.
func readDA(tpm transport.TPM) (DAStatus, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTPermanent),
		PropertyCount: uint32(tpm2.TPMPTLockoutRecovery-tpm2.TPMPTPermanent) + 1,
	}.Execute(tpm)
	if err != nil {
		return DAStatus{}, fmt.Errorf("vault: TPM GetCapability (DA): %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return DAStatus{}, fmt.Errorf("vault: TPM GetCapability (DA): %w", err)
	}
	var st DAStatus
	seen := 0
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTPermanent:
			st.LockoutAuthSet = p.Value&(1<<2) != 0
			st.InLockout = p.Value&(1<<9) != 0
		case tpm2.TPMPTLockoutCounter:
			st.Counter = p.Value
		case tpm2.TPMPTMaxAuthFail:
			st.MaxTries = p.Value
		case tpm2.TPMPTLockoutInterval:
			st.Recovery = time.Duration(p.Value) * time.Second
		case tpm2.TPMPTLockoutRecovery:
			st.LockoutRecovery = time.Duration(p.Value) * time.Second
		default:
			continue
		}
		seen++
	}
	if seen != 5 {
		return DAStatus{}, fmt.Errorf("vault: TPM GetCapability (DA): %d of 5 properties", seen)
	}
	return st, nil
}

// setupDA applies d to the TPM when its lockout authorization is empty,
// then checks that the TPM's parameters (ours or not) leave room above the
// reserve. It runs once, in Open.
func setupDA(tpm transport.TPM, d DA) (DAStatus, error) {
	st, err := readDA(tpm)
	if err != nil {
		return st, err
	}
	if !st.LockoutAuthSet {
		if !st.matches(d) {
			params := binary.BigEndian.AppendUint32(nil, d.MaxTries)
			params = binary.BigEndian.AppendUint32(params, uint32(d.Recovery/time.Second))
			params = binary.BigEndian.AppendUint32(params, uint32(d.LockoutRecovery/time.Second))
			if err := lockoutCommand(tpm, tpm2.TPMCCDictionaryAttackParameters, params); err != nil {
				return st, fmt.Errorf("vault: TPM DictionaryAttackParameters: %w", err)
			}
		}
		if d.DiscardLockoutAuth {
			if err := discardLockoutAuth(tpm); err != nil {
				return st, err
			}
		}
		if st, err = readDA(tpm); err != nil {
			return st, err
		}
	}
	st.Reserve = d.Reserve
	if st.Recovery == 0 {
		// A TPM counts no failure at all with a recovery time of zero
		// (Part 1, 19.8; TPM 2.0 reference code, SessionProcess.c): vPIN
		// guesses would be unlimited.
		return st, errors.New("vault: the TPM's dictionary-attack protection is disabled (recovery time 0) and its lockout authorization is set, so the vault cannot enable it")
	}
	if st.MaxTries <= d.Reserve {
		return st, fmt.Errorf("vault: the TPM locks out after %d failed authorizations, no more than the reserve %d, and its lockout authorization is set, so the vault cannot change that", st.MaxTries, d.Reserve)
	}
	return st, nil
}

// discardLockoutAuth sets the lockout hierarchy's authorization, now empty,
// to random bytes that are dropped at once. The new value travels encrypted
// (a salted session with parameter encryption).
func discardLockoutAuth(tpm transport.TPM) error {
	s, err := createSRK(tpm)
	if err != nil {
		return err
	}
	defer flush(tpm, s.handle)
	auth := make([]byte, 32)
	rand.Read(auth)
	defer clear(auth)
	sess := tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(s.handle, s.pub),
		tpm2.AESEncryption(128, tpm2.EncryptIn))
	// The empty authorization goes in a password session; the salted
	// session only encrypts the new value. (Authorized by an HMAC session,
	// the TPM would compute the response HMAC with the new value, which
	// go-tpm does not expect.)
	_, err = tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)},
		NewAuth:    tpm2.TPM2BAuth{Buffer: auth},
	}.Execute(tpm, sess)
	if err != nil {
		return fmt.Errorf("vault: TPM HierarchyChangeAuth (lockout): %w", err)
	}
	return nil
}

// lockoutCommand runs a command whose only handle is TPM_RH_LOCKOUT,
// authorized by the empty password, followed by params. go-tpm has no
// TPM2_DictionaryAttackParameters or TPM2_DictionaryAttackLockReset, and
// both are that simple (Part 3, sections 25.2 and 25.3). The empty password
// is the only one sent this way, so nothing secret crosses the bus.
func lockoutCommand(tpm transport.TPM, cc tpm2.TPMCC, params []byte) error {
	cmd := make([]byte, 0, 64)
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 0) // size, below
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(cc))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRHLockout))
	cmd = binary.BigEndian.AppendUint32(cmd, 9) // authorization area: one password session
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRSPW))
	cmd = binary.BigEndian.AppendUint16(cmd, 0) // nonce
	cmd = append(cmd, 0)                        // session attributes
	cmd = binary.BigEndian.AppendUint16(cmd, 0) // the empty password
	cmd = append(cmd, params...)
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	rsp, err := tpm.Send(cmd)
	if err != nil {
		return err
	}
	if len(rsp) < 10 {
		return fmt.Errorf("response of %d bytes", len(rsp))
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return rc
	}
	return nil
}
