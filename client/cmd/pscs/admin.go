package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/internal/docdigest"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// adminCommand is pscs admin: an owner's requests, each with its flags.
func (a *app) adminCommand(run func(runFunc) runFunc) *cli.Command {
	return &cli.Command{Name: "admin", Summary: "administer your remote cards (as their owner)",
		Doc: `Every action reads the owner's configuration from -config, PSCS_CONFIG or
~/.config/pscs/client.conf (pscsd init writes one).`,
		Commands: []*cli.Command{
			{Name: "enroll", Args: "[-config FILE] -name NAME -cert FILE",
				Summary: "enroll an identity by its certificate", Run: run(a.adminEnroll)},
			{Name: "issue", Args: "[-config FILE] -name NAME -out DIR [-pubkey FILE]",
				Summary: "have pscsd's CA certify a new identity; writes its key, certificate and client.conf to DIR",
				Run:     run(a.adminIssue)},
			{Name: "register-pin", Args: "[-config FILE] -card CARD [-pin-id ID]",
				Summary: "register a card's real PIN, sealed under your passphrase and the server's TPM (PSCS_PIN, PSCS_PASSPHRASE, or the terminal)",
				Run:     run(a.adminRegisterPIN)},
			{Name: "delegate", Args: "[-config FILE] -card CARD -to NAME [-for DURATION | -until TIME] [-from TIME] [-ops sign,decrypt] " +
				"[-per-hour N] [-total N] [-days mon,tue,...] [-hours HH:MM-HH:MM] [-document HEX]... [-documents FILE]... [-warranty]",
				Summary: "delegate a remote card; prints the delegation's virtual PIN once (PSCS_PASSPHRASE, or the terminal)",
				Run:     run(a.adminDelegate)},
			{Name: "revoke", Args: "[-config FILE] ID", Summary: "revoke a delegation", Run: run(a.adminByID(transport.AdminRevoke))},
			{Name: "unlock", Args: "[-config FILE] ID", Summary: "unlock a delegation locked by wrong virtual PINs",
				Run: run(a.adminByID(transport.AdminUnlock))},
			{Name: "list", Args: "[-config FILE]", Summary: "list your remote cards and their delegations", Run: run(a.adminList)},
			{Name: "export", Args: "[-config FILE] -out FILE",
				Summary: "export the audit records of your cards as JSON lines, every signed request and checkpoint checked",
				Run:     run(a.adminExport)},
			{Name: "console", Args: "[-config FILE]",
				Summary: "print a one-time link that opens your session of the owners' web console (it works once, for 2 minutes)",
				Run:     run(a.adminConsole)},
			{Name: "backup", Args: "[-config FILE]",
				Summary: "have pscsd make a backup now and mail it, signed and encrypted, to the owners its configuration names",
				Run:     run(a.adminBackup)},
		}}
}

// configFlag declares -config, the owner's configuration file.
func configFlag(fs *cli.Flags) *string {
	return fs.String("config", "", "the owner's configuration file (default: $"+client.ConfigEnv+" or ~/.config/pscs/client.conf)")
}

func (a *app) adminEnroll(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	name := fs.String("name", "", "the identity's name")
	certFile := fs.String("cert", "", "the identity's certificate (PEM `FILE`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("name", "cert"); err != nil {
		return err
	}
	b, err := os.ReadFile(*certFile)
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return fmt.Errorf("%s: no PEM certificate", *certFile)
	}
	return a.adminDo(ctx, *config, &transport.AdminRequest{Action: transport.AdminEnroll, Name: *name, Certificate: blk.Bytes}, nil)
}

func (a *app) adminIssue(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	name := fs.String("name", "", "the new identity's name")
	out := fs.String("out", "", "the directory `DIR` for the new identity's files")
	pubFile := fs.String("pubkey", "", "certify this public key (PEM `FILE`) instead of making a key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("name", "out"); err != nil {
		return err
	}
	return a.issue(ctx, *config, *name, *out, *pubFile)
}

func (a *app) adminRegisterPIN(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	card := fs.String("card", "", "the remote card")
	pinID := fs.String("pin-id", "", "the card's PIN to register (default: the card's only or first PIN; "+
		"piv-pin on PIV, pw1-sign, pw1, pw3 on OpenPGP, pin1, pin2 on EstEID; a card with several has each registered on its own, "+
		"and an unknown ID is refused with the card's PINs listed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("card"); err != nil {
		return err
	}
	pin, err := readPIN(a)
	if err != nil {
		return err
	}
	defer clear(pin)
	pass, err := readSecret(a, "PSCS_PASSPHRASE", "owner passphrase")
	if err != nil {
		return err
	}
	defer clear(pass)
	secret, err := transport.Marshal(&transport.AdminSecret{PIN: pin, Passphrase: pass})
	if err != nil {
		return err
	}
	defer clear(secret)
	return a.adminDo(ctx, *config, &transport.AdminRequest{Action: transport.AdminRegisterPIN, Card: *card, PIN: *pinID}, secret)
}

func (a *app) adminDelegate(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	card := fs.String("card", "", "the remote card")
	to := fs.String("to", "", "the delegate's identity")
	dur := fs.Duration("for", 0, "how long it lasts")
	until := fs.String("until", "", "when it ends (RFC 3339)")
	from := fs.String("from", "", "when it begins (RFC 3339; default now)")
	ops := fs.String("ops", "sign", "operations, comma-separated: sign, decrypt")
	perHour := fs.Uint("per-hour", 0, "signatures per hour (0: no limit)")
	total := fs.Uint("total", 0, "signatures in all (0: no limit)")
	days := fs.String("days", "", "week days, e.g. mon,tue,wed,thu,fri")
	hours := fs.String("hours", "", "daily hours, UTC, e.g. 08:00-18:00 (with -days)")
	warranty := fs.Bool("warranty", false, "signatures carry a visible delegation notice")
	keys := fs.String("keys", "", "the only keys of the card the delegate may use, comma-separated key IDs (9c; EstEID 81,9f); default: every key")
	var docs multiFlag
	fs.Var(&docs, "document", "an allowed document digest (hex); repeatable")
	var docFiles multiFlag
	fs.Var(&docFiles, "documents", "an allowed document: its SHA-256, SHA-384 and SHA-512 are computed here, so it may be signed with any; repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("card", "to"); err != nil {
		return err
	}
	if *until != "" && *dur != 0 {
		return fs.Usagef("-for and -until: give one")
	}
	if *hours != "" && *days == "" {
		return fs.Usagef("-hours needs -days")
	}
	d := &transport.AdminDelegation{Delegate: *to, Card: *card, Ops: strings.Split(*ops, ","),
		PerHour: uint32(*perHour), Total: uint32(*total), Warranty: *warranty}
	begin := time.Now()
	if *from != "" {
		t, err := time.Parse(time.RFC3339, *from)
		if err != nil {
			return fs.Usagef("-from: %v", err)
		}
		begin, d.NotBefore = t, t.UnixMilli()
	}
	switch {
	case *until != "":
		t, err := time.Parse(time.RFC3339, *until)
		if err != nil {
			return fs.Usagef("-until: %v", err)
		}
		d.NotAfter = t.UnixMilli()
	case *dur > 0:
		d.NotAfter = begin.Add(*dur).UnixMilli()
	}
	if *days != "" {
		var err error
		if d.Days, err = parseDays(*days); err != nil {
			return fs.Usagef("%v", err)
		}
		if d.From, d.To, err = parseHours(*hours); err != nil {
			return fs.Usagef("%v", err)
		}
	}
	if *keys != "" {
		for k := range strings.SplitSeq(*keys, ",") {
			if k = strings.TrimSpace(k); k == "" {
				return fs.Usagef("-keys: an empty key ID in %q", *keys)
			}
			d.Keys = append(d.Keys, k)
		}
	}
	for _, h := range docs {
		b, err := hex.DecodeString(h)
		if err != nil {
			return fs.Usagef("-document: %v", err)
		}
		d.Documents = append(d.Documents, b)
	}
	for _, f := range docFiles {
		sums, err := documentDigests(f)
		if err != nil {
			return fs.Usagef("-documents: %v", err)
		}
		fmt.Fprintf(a.stderr, "allowed document %s: SHA-256 %x (and its SHA-384 and SHA-512)\n", f, sums[0])
		d.Documents = append(d.Documents, sums...)
	}
	pass, err := readSecret(a, "PSCS_PASSPHRASE", "owner passphrase")
	if err != nil {
		return err
	}
	defer clear(pass)
	secret, err := transport.Marshal(&transport.AdminSecret{Passphrase: pass})
	if err != nil {
		return err
	}
	defer clear(secret)
	return a.adminDo(ctx, *config, &transport.AdminRequest{Action: transport.AdminDelegate, Card: *card, Delegation: d}, secret)
}

// adminByID is an action on one delegation, named by its ID.
func (a *app) adminByID(action string) runFunc {
	return func(ctx context.Context, fs *cli.Flags, args []string) error {
		config := configFlag(fs)
		ids, err := fs.ParseArgs(args, "ID")
		if err != nil {
			return err
		}
		return a.adminDo(ctx, *config, &transport.AdminRequest{Action: action, ID: ids[0]}, nil)
	}
}

func (a *app) adminList(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return a.adminDo(ctx, *config, &transport.AdminRequest{Action: transport.AdminList}, nil)
}

func (a *app) adminBackup(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return a.adminDo(ctx, *config, &transport.AdminRequest{Action: transport.AdminBackup}, nil)
}

func (a *app) adminExport(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	out := fs.String("out", "", "the `FILE` to write the records to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("out"); err != nil {
		return err
	}
	return a.export(ctx, *config, *out)
}

// adminDo sends an owner's request, with its secret, and prints the
// answer.
func (a *app) adminDo(ctx context.Context, config string, req *transport.AdminRequest, secret []byte) error {
	c, err := a.dialRemote(ctx, config)
	if err != nil {
		return err
	}
	defer c.Close()
	var resp transport.AdminResponse
	if err := c.Do(ctx, transport.OpAdmin, req, secret, &resp); err != nil {
		return err
	}
	switch req.Action {
	case transport.AdminDelegate:
		fmt.Fprintf(a.stdout, "delegation %s\nvirtual PIN %s\n", resp.ID, resp.VPIN)
		fmt.Fprintln(a.stderr, "give the virtual PIN to the delegate: it is shown only this once")
	case transport.AdminList:
		fmt.Fprintf(a.stdout, "cards: %s\n", strings.Join(resp.Cards, ", "))
		for _, d := range resp.Delegations {
			state := "active"
			switch {
			case d.Revoked:
				state = "revoked"
			case d.Locked:
				state = "locked"
			}
			until := "-"
			if d.NotAfter != 0 {
				until = time.UnixMilli(d.NotAfter).UTC().Format(time.RFC3339)
			}
			keys := "all keys"
			if len(d.Keys) > 0 {
				keys = "keys " + strings.Join(d.Keys, ",")
			}
			fmt.Fprintf(a.stdout, "%s\t%s\tto %s\tuntil %s\t%s\tused %d\t%s\n", d.ID, d.Card, d.Delegate, until, state, d.Used, keys)
		}
	case transport.AdminConsole:
		fmt.Fprintln(a.stdout, resp.ConsoleURL)
		fmt.Fprintf(a.stderr, "open it in your browser before %s; it works once\n",
			time.UnixMilli(resp.ConsoleExpires).UTC().Format("15:04:05 UTC"))
	case transport.AdminBackup:
		fmt.Fprintf(a.stdout, "backup sha256 %x\nsent to %s\n", resp.BackupDigest, strings.Join(resp.BackupSentTo, ", "))
	default:
		fmt.Fprintf(a.stdout, "%s: done\n", req.Action)
	}
	return nil
}

func (a *app) adminConsole(ctx context.Context, fs *cli.Flags, args []string) error {
	config := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return a.adminDo(ctx, *config, &transport.AdminRequest{Action: transport.AdminConsole}, nil)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func parseDays(s string) (uint8, error) {
	names := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	var days uint8
	for _, d := range strings.Split(strings.ToLower(s), ",") {
		i := -1
		for j, n := range names {
			if strings.HasPrefix(d, n) {
				i = j
			}
		}
		if i < 0 {
			return 0, fmt.Errorf("-days: %q is no week day", d)
		}
		days |= 1 << i
	}
	return days, nil
}

func parseHours(s string) (uint16, uint16, error) {
	if s == "" {
		return 0, 24 * 60, nil
	}
	a, b, ok := strings.Cut(s, "-")
	parse := func(x string) (uint16, error) {
		t, err := time.Parse("15:04", x)
		if err != nil {
			return 0, fmt.Errorf("-hours: %w", err)
		}
		return uint16(t.Hour()*60 + t.Minute()), nil
	}
	if !ok {
		return 0, 0, fmt.Errorf("-hours: HH:MM-HH:MM")
	}
	f, err := parse(a)
	if err != nil {
		return 0, 0, err
	}
	t, err := parse(b)
	return f, t, err
}

// readSecret takes a secret from the environment variable env or the
// terminal, without echo.
func readSecret(a *app, env, what string) ([]byte, error) {
	if v, ok := os.LookupEnv(env); ok {
		return []byte(v), nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprintf(a.stderr, "%s: ", what)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(a.stderr)
		return b, err
	}
	return nil, fmt.Errorf("no %s: set %s or run on a terminal", what, env)
}

// issue has the server's CA certify a key for name and writes a ready
// identity directory: the key (unless -pubkey), the certificate, the CA
// certificate and a client.conf for the same server.
func (a *app) issue(ctx context.Context, config, name, out, pubFile string) error {
	if config == "" {
		config = os.Getenv(client.ConfigEnv)
	}
	var pubDER, keyPEM []byte
	if pubFile != "" {
		b, err := os.ReadFile(pubFile)
		if err != nil {
			return err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return fmt.Errorf("%s: no PEM public key", pubFile)
		}
		pubDER = blk.Bytes
	} else {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		clear(der)
		if pubDER, err = x509.MarshalPKIXPublicKey(key.Public()); err != nil {
			return err
		}
	}
	c, err := a.dialRemote(ctx, config)
	if err != nil {
		return err
	}
	defer c.Close()
	var resp transport.AdminResponse
	if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminIssue, Name: name, PublicKey: pubDER}, nil, &resp); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	b, err := os.ReadFile(config)
	if err != nil {
		return err
	}
	var f client.File
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	f.CA, f.Certificate, f.Key = "ca.pem", "identity.pem", "identity.key"
	conf, _ := json.MarshalIndent(f, "", "  ")
	files := map[string][]byte{
		"ca.pem":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.CA}),
		"identity.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.Certificate}),
		"client.conf":  append(conf, '\n'),
	}
	if keyPEM != nil {
		files["identity.key"] = keyPEM
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(out, n), b, 0o600); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "%s enrolled; its configuration is %s\n", name, filepath.Join(out, "client.conf"))
	return nil
}

// An export file is JSON lines: first an exportHeader, then for each page
// an exportChain line (the digests of every record of the page) followed
// by the page's shown records, one exported line each, in order. pscs
// audit verify checks such a file offline.
type exportHeader struct {
	Format string `json:"format"` // exportFormat
	// CheckpointCertificate (DER) certifies the key that signed the
	// checkpoints; the owner checks it against pscsd's CA.
	CheckpointCertificate []byte `json:"checkpoint_certificate"`
	Until                 uint64 `json:"until"` // the checkpoint the export ends with
	// Owner and Manifest: the server's signature, with the checkpoint key,
	// over the owner, Until and which records the export shows.
	Owner    string `json:"owner"`
	Manifest []byte `json:"manifest"`
}

const exportFormat = "pscs audit export v1"

type exportChain struct {
	From    uint64   `json:"digests_from"`
	Digests [][]byte `json:"digests"` // SHA-256 of every record from From on
}

// exported is one audit record of an export, as a JSON line.
type exported struct {
	Seq        uint64 `json:"seq"`
	Time       string `json:"time"`
	Identity   string `json:"identity"`
	Op         string `json:"op"`
	Delegation string `json:"delegation,omitempty"`
	Decision   uint32 `json:"decision"`
	Card       string `json:"card,omitempty"`
	Result     []byte `json:"result,omitempty"`
	Evidence   []byte `json:"evidence,omitempty"` // the signed request (COSE_Sign1)
	Verified   bool   `json:"signature_verified"`
	Raw        []byte `json:"raw"` // the record byte for byte as in the log (what the chain covers)
	// Policy is the state of refusals the request left, and what it
	// changed (server/audit's key 13).
	Policy *audit.Policy `json:"policy,omitempty"`
}

// exportedOf is the export line of record r, whose bytes are raw.
func exportedOf(r *audit.Record, raw []byte, verified bool) *exported {
	return &exported{Seq: r.Seq, Time: time.UnixMilli(r.Time).UTC().Format(time.RFC3339Nano), Identity: r.Identity,
		Op: r.Op, Delegation: r.Delegation, Decision: r.Decision, Card: r.Card, Result: r.Result, Evidence: r.Evidence,
		Raw: raw, Policy: r.Policy, Verified: verified}
}

// export fetches the records of the owner's cards, checks every signed
// request against its signer's certificate and the whole export against
// the server's checkpoints (its hash chain through the records it shows and
// the digests of those it does not, and the checkpoint it ends with, made
// for it), and writes it as JSON lines (see exportHeader).
func (a *app) export(ctx context.Context, config, out string) error {
	c, err := a.dialRemote(ctx, config)
	if err != nil {
		return err
	}
	defer c.Close()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	hello, err := c.Hello(ctx)
	if err != nil {
		return err
	}
	n, bad := 0, 0
	var ev *exportVerifier
	var until uint64
	for from := uint64(0); ; {
		var resp transport.AdminResponse
		if err := c.Do(ctx, transport.OpAdmin, &transport.AdminRequest{Action: transport.AdminExport, From: from, Until: until}, nil, &resp); err != nil {
			return err
		}
		if ev == nil {
			h := &exportHeader{Format: exportFormat, CheckpointCertificate: resp.CheckpointCertificate, Until: resp.Until,
				Owner: hello.Identity, Manifest: resp.Manifest}
			if ev, err = newExportVerifier(h, nil); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			until = resp.Until
			if err := enc.Encode(h); err != nil {
				return err
			}
		}
		if err := enc.Encode(&exportChain{From: resp.First, Digests: resp.Digests}); err != nil {
			return err
		}
		ev.chain(resp.First, resp.Digests)
		for _, raw := range resp.Records {
			var r audit.Record
			if err := transport.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("export: record: %w", err)
			}
			e := exportedOf(&r, raw, false)
			if r.Evidence != nil {
				if der, ok := resp.Certificates[r.Identity]; ok {
					if cert, err := x509.ParseCertificate(der); err == nil {
						_, err := transport.VerifyPayload(r.Evidence, cert.PublicKey)
						e.Verified = err == nil
					}
				}
				if !e.Verified {
					bad++
				}
			}
			if _, err := ev.record(raw); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if err := enc.Encode(e); err != nil {
				return err
			}
			n++
		}
		if resp.Next == 0 {
			break
		}
		from = resp.Next
	}
	st, err := ev.close()
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%d records to %s; %d signed requests that do not verify; hash chain and %d checkpoints verified up to record %d\n",
		n, out, bad, st.Checkpoints, st.Covered)
	if bad > 0 {
		return fmt.Errorf("export: %d signed requests do not verify", bad)
	}
	return nil
}

// documentDigests is the file's SHA-256, SHA-384 and SHA-512
// (docdigest.Of).
func documentDigests(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return docdigest.Of(f)
}
