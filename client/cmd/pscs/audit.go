package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/veraison/go-cose"

	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/server/audit"
	"github.com/pscs/pscs/transport"
)

// auditVerify checks an audit log, or an owner's export of one: its hash
// chain, the structure of every record, the server's checkpoint signatures
// (for a log with -checkpoint-cert; an export carries its certificate,
// checked against -ca when given) and that nothing follows the last
// checkpoint, and, for every signed request it holds as evidence, the
// delegate's signature against the enrolled certificates in -certs. The
// records' MACs need pscsd's TPM and are checked by pscsd itself when it
// opens the log; the checkpoints are what lets this command, on a copy
// anywhere, detect records edited, deleted or inserted with the hash chain
// recomputed, and a cut end.
func (a *app) auditVerify(ctx context.Context, fs *cli.Flags, args []string) error {
	certs := fs.String("certs", "", "directory of the enrolled identities' certificates (PEM); signed requests are checked against them")
	anchor := fs.String("anchor", "", "SEQ:HASH the log must reach (a head kept elsewhere), to detect a cut tail")
	cpCert := fs.String("checkpoint-cert", "", "the certificate of pscsd's checkpoint key (PEM, STATE/checkpoint.pem): check the log's checkpoints")
	caFile := fs.String("ca", "", "pscsd's CA certificate (PEM): the checkpoint certificate must be issued by it")
	files, err := fs.ParseArgs(args, "LOG|EXPORT")
	if err != nil {
		return err
	}
	file := files[0]
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
			return fs.Usagef("-anchor is SEQ:HEX, the sequence number and SHA-256 of a record")
		}
		opts = append(opts, audit.ExpectHead(audit.Anchor{Seq: seq, Hash: hash}))
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var roots *x509.CertPool
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("audit verify: no certificate in %s", *caFile)
		}
	}
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
	br := bufio.NewReader(f)
	if first, _ := br.Peek(1); len(first) == 1 && first[0] == '{' {
		if roots == nil {
			return fmt.Errorf("audit verify: an export is checked against pscsd's CA: give -ca (the ca.pem of your client configuration)")
		}
		n, st, err := verifyExportFile(br, roots, check)
		if err != nil {
			fmt.Fprintf(a.stdout, "BAD: %v\n", err)
			return fmt.Errorf("audit export %s: %d good records, then: %w", file, n, err)
		}
		fmt.Fprintf(a.stdout, "OK: export of %d records, hash chain intact, %d checkpoints verified up to record %d, %d signed requests verified",
			n, st.Checkpoints, st.Covered, signed)
		if unknown > 0 {
			fmt.Fprintf(a.stdout, ", %d not checked (give -certs)", unknown)
		}
		fmt.Fprintln(a.stdout)
		return nil
	}
	var st audit.CheckpointStats
	if *cpCert != "" {
		if roots == nil {
			return fmt.Errorf("audit verify: -checkpoint-cert needs -ca: a certificate beside the log proves nothing by itself")
		}
		b, err := os.ReadFile(*cpCert)
		if err != nil {
			return err
		}
		if block, _ := pem.Decode(b); block != nil {
			b = block.Bytes
		}
		ev, err := checkpointVerifier(b, roots)
		if err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		opts = append(opts, audit.VerifyCheckpoints(ev.cert.PublicKey.(*ecdsa.PublicKey)), audit.CountCheckpoints(&st))
	}
	n, err := audit.Verify(br, nil, check, opts...)
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			fmt.Fprintf(a.stdout, "BAD: record %d (offset %d): %s\n", ve.Seq, ve.Offset, ve.Reason)
		}
		return fmt.Errorf("audit log %s: %d good records, then: %w", file, n, err)
	}
	fmt.Fprintf(a.stdout, "OK: %d records, hash chain intact, %d signed requests verified", n, signed)
	if *cpCert != "" {
		fmt.Fprintf(a.stdout, ", %d checkpoints verified up to record %d", st.Checkpoints, st.Covered)
	} else {
		fmt.Fprintf(a.stdout, "; checkpoints not checked (give -checkpoint-cert): edits with the chain recomputed and a cut end go unseen")
	}
	if unknown > 0 {
		fmt.Fprintf(a.stdout, ", %d not checked (give -certs)", unknown)
	}
	fmt.Fprintln(a.stdout)
	return nil
}
