package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/veraison/go-cose"

	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// auditVerify checks an audit log: its hash chain, the structure of every
// record and, for every signed request it holds as evidence, the
// delegate's signature against the enrolled certificates in -certs. The
// records' MACs need pscsd's TPM and are checked by pscsd itself when it
// opens the log; this command works on a copy anywhere.
func (a *app) auditVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	certs := fs.String("certs", "", "directory of the enrolled identities' certificates (PEM); signed requests are checked against them")
	anchor := fs.String("anchor", "", "SEQ:HASH the log must reach (a head kept elsewhere), to detect a cut tail")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("audit verify: give the log file")
	}
	keys := map[string]*x509.Certificate{} // kid (hex) -> certificate
	if *certs != "" {
		files, err := filepath.Glob(filepath.Join(*certs, "*.pem"))
		if err != nil {
			return err
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
				if block.Type != "CERTIFICATE" {
					continue
				}
				c, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				kid, err := transport.KeyID(c.PublicKey)
				if err != nil {
					return err
				}
				keys[hex.EncodeToString(kid)] = c
			}
		}
	}
	var opts []audit.VerifyOption
	if *anchor != "" {
		seqText, hashText, ok := strings.Cut(*anchor, ":")
		seq, err1 := strconv.ParseUint(seqText, 10, 64)
		hash, err2 := hex.DecodeString(hashText)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("audit verify: -anchor is SEQ:HEX")
		}
		opts = append(opts, audit.ExpectHead(audit.Anchor{Seq: seq, Hash: hash}))
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	signed, unknown := 0, 0
	check := func(r *audit.Record) error {
		if r.Evidence == nil {
			return nil
		}
		var msg cose.Sign1Message
		if err := msg.UnmarshalCBOR(r.Evidence); err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
		kid, _ := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
		cert, ok := keys[hex.EncodeToString(kid)]
		if !ok {
			if *certs != "" {
				return fmt.Errorf("signed by a key of no enrolled certificate (kid %x)", kid)
			}
			unknown++
			return nil
		}
		if _, err := transport.VerifyPayload(r.Evidence, cert.PublicKey); err != nil {
			return fmt.Errorf("evidence of %s does not verify: %w", r.Identity, err)
		}
		signed++
		return nil
	}
	n, err := audit.Verify(f, nil, check, opts...)
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			fmt.Fprintf(a.stdout, "BAD: record %d (offset %d): %s\n", ve.Seq, ve.Offset, ve.Reason)
		}
		return fmt.Errorf("audit log %s: %d good records, then: %w", fs.Arg(0), n, err)
	}
	fmt.Fprintf(a.stdout, "OK: %d records, hash chain intact, %d signed requests verified", n, signed)
	if unknown > 0 {
		fmt.Fprintf(a.stdout, ", %d not checked (give -certs)", unknown)
	}
	fmt.Fprintln(a.stdout)
	return nil
}
