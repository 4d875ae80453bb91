package policy

// defaultMaxWrongVPIN is the lockout threshold of a delegation whose
// MaxWrongVPIN is zero.
const defaultMaxWrongVPIN = 5

// wrongVPINLimit is the number of wrong virtual PINs in a row that lock d.
func (d Delegation) wrongVPINLimit() int {
	if d.MaxWrongVPIN > 0 {
		return d.MaxWrongVPIN
	}
	return defaultMaxWrongVPIN
}

// VPINTriesLeft is how many more wrong virtual PINs in a row delegation
// id takes before it locks: its threshold less the wrong ones in a row so
// far. It is 0 for a locked delegation and -1 for an unknown one. The
// server sends it with a wrong-vPIN refusal (transport.Response field 7)
// so that the delegate's PKCS #11 module can set CKF_USER_PIN_COUNT_LOW
// and CKF_USER_PIN_FINAL_TRY as a card's would.
func (b *Book) VPINTriesLeft(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.dels[id]
	if e == nil {
		return -1
	}
	if e.s.Locked {
		return 0
	}
	return max(e.d.wrongVPINLimit()-e.s.WrongVPIN, 0)
}
