package token

// secret holds the virtual PIN of a login in process memory only, for
// the two uses the module has for it after C_Login: the first signature
// with a key that wants the PIN with every signature, and logging in
// again after the server forgot the login (see the package doc). It is
// never written anywhere, and wiped when the login ends.
type secret struct {
	b       []byte
	release func() // wipes and frees b
}

func heapSecret(b []byte) *secret {
	c := append([]byte(nil), b...)
	return &secret{b: c, release: func() { clear(c) }}
}

// bytes returns a copy of the secret, which the caller wipes.
func (s *secret) bytes() []byte {
	if s == nil {
		return nil
	}
	return append([]byte(nil), s.b...)
}

// wipe wipes and frees the secret; a nil secret is fine.
func (s *secret) wipe() {
	if s == nil || s.release == nil {
		return
	}
	s.release()
	s.release, s.b = nil, nil
}
