package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// ExportVerifier checks an export of a log (format version 2): every
// record from the first, in order, each given either by its bytes (a
// record the export shows) or by its SHA-256 alone (a record of someone
// else's, which the export leaves out). It recomputes the hash chain
// through both, checks every shown record's place in it, and every
// checkpoint's signature with the checkpoint key; [ExportVerifier.Close]
// then requires that the export end with a checkpoint. So a shown record
// that was edited, deleted or inserted, with the chain recomputed or not,
// a digest that was changed, and a cut end are all detected by anyone with
// the export and the checkpoint key's certificate.
//
// An ExportVerifier is not safe for concurrent use.
type ExportVerifier struct {
	pub     *ecdsa.PublicKey
	seq     uint64
	hash    [HashSize]byte
	covered uint64
	stats   CheckpointStats
	err     error
}

// NewExportVerifier returns a verifier for an export whose checkpoints are
// signed by pub.
func NewExportVerifier(pub *ecdsa.PublicKey) *ExportVerifier {
	return &ExportVerifier{pub: pub}
}

func (v *ExportVerifier) fail(seq uint64, kind error, format string, args ...any) error {
	v.err = &VerifyError{Seq: seq, Reason: fmt.Sprintf(format, args...), Err: kind}
	return v.err
}

// Digest takes the next record of the export as its SHA-256 only.
func (v *ExportVerifier) Digest(seq uint64, digest []byte) error {
	if v.err != nil {
		return v.err
	}
	if seq != v.seq+1 {
		return v.fail(v.seq+1, ErrTampered, "the export gives record %d where record %d belongs: records missing or out of order", seq, v.seq+1)
	}
	if len(digest) != HashSize {
		return v.fail(seq, ErrCorrupt, "a digest of %d bytes", len(digest))
	}
	v.seq, v.hash = seq, linkDigest(v.hash, digest)
	return nil
}

// Record takes the next record of the export by its bytes and returns it.
func (v *ExportVerifier) Record(data []byte) (*Record, error) {
	if v.err != nil {
		return nil, v.err
	}
	r, err := open(data, nil)
	if err != nil {
		return nil, v.fail(v.seq+1, ErrTampered, "%v", err)
	}
	switch {
	case r.Seq != v.seq+1:
		return nil, v.fail(v.seq+1, ErrTampered, "found record %d where record %d belongs: records missing or out of order", r.Seq, v.seq+1)
	case !bytes.Equal(r.Prev, v.hash[:]):
		return nil, v.fail(r.Seq, ErrTampered, "hash chain broken: the record does not follow record %d", v.seq)
	}
	if r.Op == OpCheckpoint && r.Identity == Identity {
		if !verifyCheckpoint(v.pub, r) {
			return nil, v.fail(r.Seq, ErrTampered, "checkpoint signature does not verify: a record before it was edited, deleted or inserted (hash chain recomputed), or the checkpoint is not this server's")
		}
		v.covered = r.Seq
		v.stats.Checkpoints++
		v.stats.Covered = r.Seq
	}
	v.seq, v.hash = r.Seq, link(formatVersion, v.hash, data)
	return r, nil
}

// Close reports whether the export ended with a verified checkpoint, and
// what was seen of checkpoints.
func (v *ExportVerifier) Close() (CheckpointStats, error) {
	if v.err != nil {
		return v.stats, v.err
	}
	switch {
	case v.covered == 0:
		return v.stats, v.fail(v.seq+1, ErrMissingTail, "no checkpoint in %d records: nothing is covered by the server's signature", v.seq)
	case v.covered != v.seq:
		return v.stats, v.fail(v.covered+1, ErrMissingTail, "%d records after the last checkpoint (record %d) are covered by no signature: the export's end was cut", v.seq-v.covered, v.covered)
	}
	return v.stats, nil
}

// manifestLabel starts what an export manifest's signature covers.
const manifestLabel = "pscs audit export manifest v1\x00"

// ManifestDigest is what the server signs, with the checkpoint key, for an
// export to owner that ends with checkpoint until and shows the records
// shown (in increasing order): SHA-256 of "pscs audit export manifest
// v1\0" || len(owner) (2 bytes) || owner || until (8 bytes) || each shown
// Seq (8 bytes). With it, an export's holder cannot pass a shown record off
// as someone else's by leaving it out.
func ManifestDigest(owner string, until uint64, shown []uint64) []byte {
	h := sha256.New()
	h.Write([]byte(manifestLabel))
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(owner))))
	h.Write([]byte(owner))
	h.Write(binary.BigEndian.AppendUint64(nil, until))
	var b [8]byte
	for _, s := range shown {
		binary.BigEndian.PutUint64(b[:], s)
		h.Write(b[:])
	}
	return h.Sum(nil)
}
