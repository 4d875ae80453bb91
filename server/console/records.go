package console

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// filter selects audit records on the audit page (its query parameters).
type filter struct {
	Card     string // remote card
	Delegate string // the identity that asked
	From, To string // datetime-local, UTC
	Outcome  string // "", "allowed", "refused"

	from, to time.Time
}

const timeInput = "2006-01-02T15:04"

func parseFilter(q map[string][]string) (filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := filter{Card: get("card"), Delegate: get("delegate"), From: get("from"), To: get("to"), Outcome: get("outcome")}
	var err error
	if f.From != "" {
		if f.from, err = time.Parse(timeInput, f.From); err != nil {
			return f, fmt.Errorf("from: give a date and time (YYYY-MM-DDTHH:MM, UTC)")
		}
	}
	if f.To != "" {
		if f.to, err = time.Parse(timeInput, f.To); err != nil {
			return f, fmt.Errorf("to: give a date and time (YYYY-MM-DDTHH:MM, UTC)")
		}
		f.to = f.to.Add(time.Minute) // the whole minute
	}
	switch f.Outcome {
	case "", "allowed", "refused":
	default:
		return f, fmt.Errorf("outcome: allowed, refused or empty")
	}
	return f, nil
}

// query is the filter as a URL query.
func (f filter) query() string {
	v := make([]string, 0, 10)
	add := func(k, s string) {
		if s != "" {
			v = append(v, k+"="+urlEscape(s))
		}
	}
	add("card", f.Card)
	add("delegate", f.Delegate)
	add("from", f.From)
	add("to", f.To)
	add("outcome", f.Outcome)
	out := ""
	for i, s := range v {
		if i > 0 {
			out += "&"
		}
		out += s
	}
	return out
}

// row is an audit record as the console shows it.
type row struct {
	Seq        uint64 `json:"seq"`
	Time       string `json:"time"`
	Identity   string `json:"identity,omitempty"`
	Op         string `json:"op,omitempty"`
	Delegation string `json:"delegation,omitempty"`
	Card       string `json:"card,omitempty"`   // the remote card
	Member     string `json:"member,omitempty"` // the card that served
	Decision   uint32 `json:"decision"`
	Outcome    string `json:"outcome"`
	TookUS     int64  `json:"took_us,omitempty"`
	Via        string `json:"via,omitempty"`
	Signed     bool   `json:"signed"`
	Evidence   string `json:"evidence,omitempty"` // base64 COSE_Sign1
	Result     string `json:"result,omitempty"`   // base64

	t time.Time
}

// rowOf makes the row of r; cardOf names a delegation's remote card.
func rowOf(r *audit.Record, cardOf func(string) string) row {
	t := time.UnixMilli(r.Time).UTC()
	w := row{Seq: r.Seq, Time: t.Format("2006-01-02 15:04:05.000"), Identity: r.Identity, Op: r.Op, Delegation: r.Delegation,
		Member: r.Card, Decision: r.Decision, TookUS: r.Timings["total_us"], Via: r.Via, Signed: r.Evidence != nil, t: t}
	if r.Delegation != "" {
		w.Card = cardOf(r.Delegation)
	}
	if w.Card == "" && r.Policy != nil {
		w.Card = r.Policy.Card
	}
	if r.Decision == 0 {
		w.Outcome = "allowed"
	} else {
		w.Outcome = fmt.Sprintf("refused: %d %s", r.Decision, transport.Code(r.Decision))
	}
	if r.Evidence != nil {
		w.Evidence = base64.StdEncoding.EncodeToString(r.Evidence)
	}
	if r.Result != nil {
		w.Result = base64.StdEncoding.EncodeToString(r.Result)
	}
	return w
}

func (f filter) match(w *row) bool {
	switch {
	case f.Card != "" && w.Card != f.Card:
		return false
	case f.Delegate != "" && w.Identity != f.Delegate:
		return false
	case !f.from.IsZero() && w.t.Before(f.from):
		return false
	case !f.to.IsZero() && !w.t.Before(f.to):
		return false
	case f.Outcome == "allowed" && w.Decision != 0:
		return false
	case f.Outcome == "refused" && w.Decision == 0:
		return false
	}
	return true
}

// errStop ends a reading early.
var errStop = errors.New("stop")

// records reads owner's records after sequence number after, in order,
// and passes those f matches to fn.
func (c *Console) records(owner string, after uint64, f filter, fn func(row) error) error {
	shown := c.cfg.Server.ShownTo(owner)
	cards := map[string]string{}
	cardOf := func(id string) string {
		if n, ok := cards[id]; ok {
			return n
		}
		n, _ := c.cfg.Server.CardOfDelegation(id)
		cards[id] = n
		return n
	}
	file, err := os.Open(c.cfg.AuditFile)
	if err != nil {
		return err
	}
	defer file.Close()
	err = audit.ReadRaw(file, func(r *audit.Record, _ []byte) error {
		if r.Seq <= after || !shown(r) {
			return nil
		}
		w := rowOf(r, cardOf)
		if !f.match(&w) {
			return nil
		}
		return fn(w)
	})
	if err == nil || errors.Is(err, audit.ErrTorn) || errors.Is(err, errStop) {
		return nil
	}
	return err
}

// export is owner's export by the server's own administration path (an
// audited "admin:export", as `pscs admin export`), every page of it.
type export struct {
	Until    uint64
	Digests  map[uint64][]byte
	Last     uint64
	Records  map[uint64][]byte // shown records by sequence number
	Cert     []byte
	Manifest []byte
}

func (c *Console) export(ctx context.Context, owner string) (*export, error) {
	e := &export{Digests: map[uint64][]byte{}, Records: map[uint64][]byte{}}
	var from uint64
	for {
		resp, err := c.cfg.Server.AdminAs(ctx, owner, &transport.AdminRequest{Action: transport.AdminExport, From: from, Until: e.Until}, nil)
		if err != nil {
			return nil, err
		}
		if e.Until == 0 {
			e.Until, e.Cert, e.Manifest = resp.Until, resp.CheckpointCertificate, resp.Manifest
		}
		for i, d := range resp.Digests {
			s := resp.First + uint64(i)
			e.Digests[s] = d
			e.Last = max(e.Last, s)
		}
		for _, raw := range resp.Records {
			var r struct {
				Seq uint64 `cbor:"1,keyasint"`
			}
			if err := transport.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("export: a record: %w", err)
			}
			e.Records[r.Seq] = raw
		}
		if resp.Next == 0 {
			return e, nil
		}
		from = resp.Next
	}
}

// verification is what the audit page reports of a verification.
type verification struct {
	OK          bool
	Records     uint64
	Shown       int
	Checkpoints int
	Covered     uint64
	Problem     string
}

// verify checks an export: the hash chain through every record (shown or
// by digest), every checkpoint's signature with the checkpoint key, whose
// certificate must chain to pscsd's CA, the end at the export's
// checkpoint, and the manifest of the records shown.
func (c *Console) verify(owner string, e *export) verification {
	v := verification{Records: e.Last, Shown: len(e.Records)}
	fail := func(err error) verification { v.Problem = err.Error(); return v }
	cert, err := x509.ParseCertificate(e.Cert)
	if err != nil {
		return fail(fmt.Errorf("checkpoint certificate: %w", err))
	}
	var pub *ecdsa.PublicKey
	if c.cfg.CA != nil {
		roots := x509.NewCertPool()
		roots.AddCert(c.cfg.CA)
		if pub, err = audit.CheckpointCertificate(cert, roots); err != nil {
			return fail(err)
		}
	} else if pub, _ = cert.PublicKey.(*ecdsa.PublicKey); pub == nil {
		return fail(errors.New("the checkpoint certificate holds no ECDSA key"))
	}
	ev := audit.NewExportVerifier(pub)
	var shown []uint64
	for s := uint64(1); s <= e.Last; s++ {
		d, ok := e.Digests[s]
		if !ok {
			return fail(fmt.Errorf("record %d: missing from the export", s))
		}
		raw, isShown := e.Records[s]
		if !isShown {
			if err := ev.Digest(s, d); err != nil {
				return fail(err)
			}
			continue
		}
		if sum := sha256.Sum256(raw); !bytes.Equal(sum[:], d) {
			return fail(fmt.Errorf("record %d: its bytes do not match its digest", s))
		}
		if _, err := ev.Record(raw); err != nil {
			return fail(err)
		}
		shown = append(shown, s)
	}
	st, err := ev.Close()
	v.Checkpoints, v.Covered = st.Checkpoints, st.Covered
	if err != nil {
		return fail(err)
	}
	if st.Covered != e.Until {
		return fail(fmt.Errorf("the export ends at checkpoint %d, not at %d", st.Covered, e.Until))
	}
	if !ecdsa.VerifyASN1(pub, audit.ManifestDigest(owner, e.Until, shown), e.Manifest) {
		return fail(errors.New("the manifest of the records shown does not verify"))
	}
	v.OK = true
	return v
}

// writeExport writes the export's shown records that f matches, as JSON
// lines or CSV.
func (c *Console) writeExport(w io.Writer, e *export, f filter, format string) error {
	cards := map[string]string{}
	cardOf := func(id string) string {
		if n, ok := cards[id]; ok {
			return n
		}
		n, _ := c.cfg.Server.CardOfDelegation(id)
		cards[id] = n
		return n
	}
	var cw *csv.Writer
	enc := json.NewEncoder(w)
	if format == "csv" {
		cw = csv.NewWriter(w)
		cw.Write([]string{"seq", "time", "identity", "op", "delegation", "card", "member", "decision", "outcome", "took_us", "via", "signed"})
	}
	for s := uint64(1); s <= e.Last; s++ {
		raw, ok := e.Records[s]
		if !ok {
			continue
		}
		var r audit.Record
		if err := transport.Unmarshal(raw, &r); err != nil {
			return err
		}
		row := rowOf(&r, cardOf)
		if !f.match(&row) {
			continue
		}
		if cw == nil {
			if err := enc.Encode(row); err != nil {
				return err
			}
			continue
		}
		cw.Write([]string{strconv.FormatUint(row.Seq, 10), row.Time, cell(row.Identity), cell(row.Op), cell(row.Delegation), cell(row.Card), cell(row.Member),
			strconv.FormatUint(uint64(row.Decision), 10), row.Outcome, strconv.FormatInt(row.TookUS, 10), cell(row.Via), strconv.FormatBool(row.Signed)})
	}
	if cw != nil {
		cw.Flush()
		return cw.Error()
	}
	return nil
}

// cell keeps a text cell from reading as a formula in a spreadsheet: one
// that starts with = + - @ gets a leading apostrophe.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
