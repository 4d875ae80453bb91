package token

import (
	"io"
)

// DigestInit starts a digest, computed locally.
func (m *Module) DigestInit(h uint64, mech Mechanism) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.digest != nil {
		return ErrOperationActive
	}
	hf, ok := digestMechs[mech.Type]
	if !ok {
		return ErrMechanismInvalid
	}
	if len(mech.Param) != 0 {
		return ErrMechanismParamInvalid
	}
	ss.digest = newDigest(hf.New())
	return nil
}

// Digest digests data in one part into out (two-call convention).
func (m *Module) Digest(h uint64, data, out []byte, hasOut bool) (int, error) {
	return m.digestDone(h, data, true, out, hasOut)
}

// DigestUpdate feeds a part of the data.
func (m *Module) DigestUpdate(h uint64, data []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if ss.digest == nil {
		return ErrOperationNotInitialized
	}
	ss.digest.Write(data)
	return nil
}

// DigestFinal finishes a digest given in parts (two-call convention).
func (m *Module) DigestFinal(h uint64, out []byte, hasOut bool) (int, error) {
	return m.digestDone(h, nil, false, out, hasOut)
}

func (m *Module) digestDone(h uint64, data []byte, single bool, out []byte, hasOut bool) (int, error) {
	ss, err := m.session(h)
	if err != nil {
		return 0, err
	}
	defer ss.mu.Unlock()
	d := ss.digest
	if d == nil {
		return 0, ErrOperationNotInitialized
	}
	if single && multiPart(d) {
		ss.digest = nil // C_Digest always ends the operation (section 5.10.2)
		return 0, ErrOperationActive
	}
	n := d.Size()
	if !hasOut {
		return n, nil
	}
	if len(out) < n {
		return n, ErrBufferTooSmall
	}
	if single {
		d.Write(data)
	}
	ss.digest = nil
	return copy(out, d.Sum(nil)), nil
}

// GenerateRandom fills out with random bytes, made locally.
func (m *Module) GenerateRandom(h uint64, out []byte) error {
	ss, err := m.session(h)
	if err != nil {
		return err
	}
	defer ss.mu.Unlock()
	if _, err := io.ReadFull(m.opts.Rand, out); err != nil {
		return ErrFunctionFailed
	}
	return nil
}
