package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/pscs/pscs/internal/cborpolicy"
	"github.com/pscs/pscs/server/audit"
)

// exportVerifier feeds an export, page by page, to audit.ExportVerifier:
// the digests of every record, and the shown records' bytes in between.
type exportVerifier struct {
	v       *audit.ExportVerifier
	h       *exportHeader
	pub     *ecdsa.PublicKey
	shown   []uint64
	cert    *x509.Certificate
	digests map[uint64][]byte
	next    uint64 // the next record to feed
	last    uint64 // the last record a digest was given for
}

// newExportVerifier checks the export's checkpoint certificate (against
// roots, when not nil) and returns a verifier with its key.
func newExportVerifier(h *exportHeader, roots *x509.CertPool) (*exportVerifier, error) {
	ev, err := checkpointVerifier(h.CheckpointCertificate, roots)
	if err != nil {
		return nil, err
	}
	if len(h.Manifest) == 0 {
		return nil, errors.New("the export carries no manifest of the records it shows")
	}
	ev.h = h
	return ev, nil
}

// checkpointVerifier checks a checkpoint certificate against roots
// (pscsd's CA) and returns a verifier with its key. Without roots the
// certificate is the export's own word: pscs admin export, which received
// it over the server's authenticated connection, passes nil.
func checkpointVerifier(certDER []byte, roots *x509.CertPool) (*exportVerifier, error) {
	if len(certDER) == 0 {
		return nil, errors.New("the export carries no checkpoint certificate: the server signs no checkpoints")
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("checkpoint certificate: %w", err)
	}
	var pub *ecdsa.PublicKey
	if roots != nil {
		if pub, err = audit.CheckpointCertificate(cert, roots); err != nil {
			return nil, err
		}
	} else if pub, _ = cert.PublicKey.(*ecdsa.PublicKey); pub == nil {
		return nil, fmt.Errorf("the checkpoint certificate holds a %T, want an ECDSA key", cert.PublicKey)
	}
	return &exportVerifier{v: audit.NewExportVerifier(pub), pub: pub, cert: cert, digests: map[uint64][]byte{}, next: 1}, nil
}

// chain takes a page's digests, from record from on.
func (e *exportVerifier) chain(from uint64, digests [][]byte) {
	for i, d := range digests {
		e.digests[from+uint64(i)] = d
		e.last = max(e.last, from+uint64(i))
	}
}

// upTo feeds the digests of the records before seq.
func (e *exportVerifier) upTo(seq uint64) error {
	for ; e.next < seq; e.next++ {
		d, ok := e.digests[e.next]
		if !ok {
			return fmt.Errorf("record %d: neither its digest nor the record is in the export", e.next)
		}
		if err := e.v.Digest(e.next, d); err != nil {
			return err
		}
		delete(e.digests, e.next)
	}
	return nil
}

// record takes a shown record.
func (e *exportVerifier) record(raw []byte) (*audit.Record, error) {
	seq, err := decodeSeq(raw)
	if err != nil {
		return nil, fmt.Errorf("the record after record %d: its bytes are damaged: %w", e.next-1, err)
	}
	if err := e.upTo(seq); err != nil {
		return nil, err
	}
	d := sha256.Sum256(raw)
	if want, ok := e.digests[seq]; !ok || !bytes.Equal(want, d[:]) {
		return nil, fmt.Errorf("record %d: its bytes do not match the export's digest of it", seq)
	}
	delete(e.digests, seq)
	r, err := e.v.Record(raw)
	if err != nil {
		return nil, err
	}
	e.next = seq + 1
	e.shown = append(e.shown, seq)
	return r, nil
}

// close feeds the remaining digests and reports on checkpoints.
func (e *exportVerifier) close() (audit.CheckpointStats, error) {
	if err := e.upTo(e.last + 1); err != nil {
		return audit.CheckpointStats{}, err
	}
	st, err := e.v.Close()
	if err != nil {
		return st, err
	}
	if st.Covered != e.h.Until {
		return st, fmt.Errorf("the export ends at checkpoint %d, its header says %d", st.Covered, e.h.Until)
	}
	if !ecdsa.VerifyASN1(e.pub, audit.ManifestDigest(e.h.Owner, e.h.Until, e.shown), e.h.Manifest) {
		return st, errors.New("the records shown are not those the server exported (a record was left out, or added): the manifest's signature does not verify")
	}
	return st, nil
}

// decodeSeq reads a record's sequence number.
func decodeSeq(raw []byte) (uint64, error) {
	var r struct {
		Seq uint64 `cbor:"1,keyasint"`
	}
	if err := cborpolicy.DecMode.Unmarshal(raw, &r); err != nil {
		return 0, fmt.Errorf("record: %w", err)
	}
	return r.Seq, nil
}

// verifyExportFile checks an export file written by pscs admin export.
// check, if not nil, is called with every shown record.
func verifyExportFile(r io.Reader, roots *x509.CertPool, check func(*audit.Record) error) (records int, st audit.CheckpointStats, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	if !sc.Scan() {
		return 0, st, errors.New("empty export")
	}
	var h exportHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != exportFormat {
		return 0, st, fmt.Errorf("not a pscs audit export (%v)", err)
	}
	ev, err := newExportVerifier(&h, roots)
	if err != nil {
		return 0, st, err
	}
	for line := 2; sc.Scan(); line++ {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &probe); err != nil {
			return records, st, fmt.Errorf("line %d: %w", line, err)
		}
		if _, ok := probe["digests_from"]; ok {
			var c exportChain
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				return records, st, fmt.Errorf("line %d: %w", line, err)
			}
			ev.chain(c.From, c.Digests)
			continue
		}
		var e exported
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return records, st, fmt.Errorf("line %d: %w", line, err)
		}
		rec, err := ev.record(e.Raw)
		if err != nil {
			return records, st, err
		}
		// What people read must be what the record says.
		want := exportedOf(rec, e.Raw, e.Verified)
		got, _ := json.Marshal(&e)
		if w, _ := json.Marshal(want); !bytes.Equal(got, w) {
			return records, st, fmt.Errorf("line %d: its fields differ from the record it carries (record %d)", line, rec.Seq)
		}
		if check != nil {
			if err := check(rec); err != nil {
				return records, st, fmt.Errorf("record %d: %w", rec.Seq, err)
			}
		}
		records++
	}
	if err := sc.Err(); err != nil {
		return records, st, err
	}
	st, err = ev.close()
	return records, st, err
}
