package token

// visible returns object handle oh of the session's token if the session
// may see it: private objects only after login.
func (m *Module) visible(ss *session, oh uint64) (*object, error) {
	if o := ss.derivedObject(oh); o != nil {
		return o, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range ss.slot.objects {
		if o.handle == oh {
			if o.private && !ss.slot.loggedIn {
				return nil, ErrObjectHandleInvalid
			}
			return o, nil
		}
	}
	return nil, ErrObjectHandleInvalid
}

// Attribute is a CK_ATTRIBUTE of a template: a type and its value.
type Attribute struct {
	Type  uint64
	Value []byte
}

// AttrQuery is one CK_ATTRIBUTE of C_GetAttributeValue: the type asked
// for, the caller's buffer (HasBuf false when pValue is NULL), and Len,
// set to the value's length, or to [Unavailable].
type AttrQuery struct {
	Type   uint64
	Buf    []byte
	HasBuf bool
	Len    uint64
}

// GetAttributeValue fills q from object oh, with the two-call convention:
// without a buffer a query gets the length; with one too small it gets
// Unavailable and the result is CKR_BUFFER_TOO_SMALL. Every query is
// answered; the result is the last error met (CKR_ATTRIBUTE_SENSITIVE,
// CKR_ATTRIBUTE_TYPE_INVALID or CKR_BUFFER_TOO_SMALL), or CKR_OK.
func (m *Module) GetAttributeValue(h, oh uint64, q []AttrQuery) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	o, err := m.visible(ss, oh)
	if err != nil {
		return err
	}
	var rv error
	for i := range q {
		a := &q[i]
		v, ok := o.attrs[a.Type]
		switch {
		case o.class == ckoPrivateKey && sensitive[a.Type]:
			a.Len, rv = Unavailable, ErrAttributeSensitive
		case !ok:
			a.Len, rv = Unavailable, ErrAttributeTypeInvalid
		case !a.HasBuf:
			a.Len = uint64(len(v))
		case len(a.Buf) < len(v):
			a.Len, rv = Unavailable, ErrBufferTooSmall
		default:
			copy(a.Buf, v)
			a.Len = uint64(len(v))
		}
	}
	return rv
}

// FindObjectsInit starts a search for the objects matching template.
func (m *Module) FindObjectsInit(h uint64, template []Attribute) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.finding {
		return ErrOperationActive
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ss.find = []uint64{}
	ss.finding = true
	for _, o := range ss.slot.objects {
		if o.private && !ss.slot.loggedIn {
			continue
		}
		if o.matches(template) {
			ss.find = append(ss.find, o.handle)
		}
	}
	return nil
}

// FindObjects returns up to max more handles of the search.
func (m *Module) FindObjects(h uint64, max int) ([]uint64, error) {
	ss, err := m.session(h)
	if err != nil {
		return nil, err
	}
	defer ss.mu.Unlock()
	if !ss.finding {
		return nil, ErrOperationNotInitialized
	}
	n := min(max, len(ss.find))
	out := ss.find[:n:n]
	ss.find = ss.find[n:]
	return out, nil
}

// FindObjectsFinal ends the search.
func (m *Module) FindObjectsFinal(h uint64) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if !ss.finding {
		return ErrOperationNotInitialized
	}
	ss.find, ss.finding = nil, false
	return nil
}
