package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/cards/pcsc"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/profiles"
	"github.com/pscs/pscs/profiles/registry"
)

// knownProfiles are tried in order on every card.
var knownProfiles = registry.Profiles()

func (a *app) readers(ctx context.Context, fs *cli.Flags, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	pc, err := openPCSC()
	if err != nil {
		return err
	}
	defer pc.Close()
	rs, err := pc.Readers(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "READER\tCARD\tPROFILE\tSERIAL\tATR")
	for _, r := range rs {
		if !r.Present {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\n", r.Name)
			continue
		}
		profile, serial := "-", "-"
		err := a.withCard(ctx, pc, r.Name, false, func(ctx context.Context, p profiles.Profile, c profiles.Card) error {
			profile = p.Name()
			info, err := c.Info(ctx)
			if err == nil && info.Serial != "" {
				serial = info.Serial
			}
			return err
		})
		switch {
		case errors.Is(err, profiles.ErrNotPresent):
			profile = "unknown"
		case err != nil:
			profile = "error: " + err.Error()
		}
		fmt.Fprintf(tw, "%s\tpresent\t%s\t%s\t%s\n", r.Name, profile, serial, strings.ToUpper(hex.EncodeToString(r.ATR)))
	}
	return tw.Flush()
}

// openPCSC opens PC/SC; without pcscd, the error says how to start it.
func openPCSC() (*pcsc.Context, error) {
	pc, err := pcsc.Open()
	if errors.Is(err, cards.ErrServiceUnavailable) {
		return nil, cli.NoPCSC(err)
	}
	return pc, err
}

// withCard connects to reader (the first reader with a card if empty), opens
// a transaction, detects the profile and runs fn. With reset, the card is
// reset afterwards, so that a PIN fn verified does not stay verified for
// the next program that uses the card.
func (a *app) withCard(ctx context.Context, pc *pcsc.Context, reader string, reset bool, fn func(context.Context, profiles.Profile, profiles.Card) error) error {
	if reader == "" {
		rs, err := pc.Readers(ctx)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Present {
				reader = r.Name
				break
			}
		}
		if reader == "" {
			return cards.ErrNoCard
		}
	}
	card, err := pc.Connect(ctx, reader)
	if err != nil {
		return err
	}
	defer card.Close()
	if err := card.Begin(ctx); err != nil {
		return err
	}
	defer func() {
		card.End()
		if reset {
			if err := card.Reset(context.WithoutCancel(ctx)); err != nil {
				a.log.Warn("card not reset after use", "reader", reader, "err", err)
			}
		}
	}()
	a.atr = card.ATR()
	var t cards.Transmitter = card
	if a.wrap != nil {
		t = a.wrap(t)
	}
	t = cards.Trace(t, a.log.With("reader", reader), registry.Redactor())
	p, c, err := profiles.Detect(ctx, t, knownProfiles...)
	if err != nil {
		return err
	}
	return fn(ctx, p, c)
}

func (a *app) cardInfo(ctx context.Context, fs *cli.Flags, args []string) error {
	reader := fs.String("r", "", "reader name (default: the first reader with a card)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pc, err := openPCSC()
	if err != nil {
		return err
	}
	defer pc.Close()
	return a.withCard(ctx, pc, *reader, false, func(ctx context.Context, p profiles.Profile, c profiles.Card) error {
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "profile:  %s\nlabel:    %s\nserial:   %s\nversion:  %s\n", info.Profile, info.Label, info.Serial, info.Version)
		pins := c.PINs()
		for _, pin := range pins {
			st, err := c.PINStatus(ctx, pin.ID)
			if err != nil {
				return err
			}
			name := "PIN:      " // a card with one PIN, as before cards had several
			if len(pins) > 1 {
				name = fmt.Sprintf("PIN %s (%s): ", pin.ID, pin.Label)
			}
			switch {
			case st.Blocked:
				fmt.Fprintf(a.stdout, "%sblocked\n", name)
			case st.Retries >= 0:
				fmt.Fprintf(a.stdout, "%s%d tries left, verified: %v\n", name, st.Retries, st.Verified)
			default:
				fmt.Fprintf(a.stdout, "%sverified\n", name)
			}
		}
		keys, err := c.Keys(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nKEY\tLABEL\tALGORITHM\tPIN\tCERTIFICATE\tNOT AFTER\tSHA-256 (SPKI)")
		for _, k := range keys {
			subject, notAfter := "-", "-"
			if k.Certificate != nil {
				subject = k.Certificate.Subject.String()
				notAfter = k.Certificate.NotAfter.Format("2006-01-02")
			}
			der, _ := x509.MarshalPKIXPublicKey(k.Public)
			sum := sha256.Sum256(der)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%x\n", k.ID, k.Label, k.Algorithm, k.PINPolicy, subject, notAfter, sum[:8])
		}
		return tw.Flush()
	})
}

var hashByName = map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}

func (a *app) cardSign(ctx context.Context, fs *cli.Flags, args []string) error {
	reader := fs.String("r", "", "reader name (default: the first reader with a card)")
	keyID := fs.String("k", "", "key to sign with (PIV: 9a, 9c, 9d, 9e)")
	hashName := fs.String("hash", "sha256", "hash: sha256, sha384 or sha512")
	pss := fs.Bool("pss", false, "RSA-PSS instead of PKCS #1 v1.5 (RSA keys)")
	in := fs.String("in", "", "file to sign")
	out := fs.String("out", "", "file to write the signature to (ECDSA: ASN.1 DER)")
	certOut := fs.String("cert", "", "also write the key's certificate (PEM) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := fs.Require("k", "in", "out"); err != nil {
		return err
	}
	hash, ok := hashByName[*hashName]
	if !ok {
		return fs.Usagef("-hash: %q is not sha256, sha384 or sha512", *hashName)
	}
	data, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	h := hash.New()
	h.Write(data)
	digest := h.Sum(nil)
	var opts crypto.SignerOpts = hash
	if *pss {
		opts = &rsa.PSSOptions{Hash: hash, SaltLength: rsa.PSSSaltLengthEqualsHash}
	}

	pc, err := openPCSC()
	if err != nil {
		return err
	}
	defer pc.Close()
	return a.withCard(ctx, pc, *reader, true, func(ctx context.Context, p profiles.Profile, c profiles.Card) error {
		keys, err := c.Keys(ctx)
		if err != nil {
			return err
		}
		var key *profiles.Key
		for i := range keys {
			if strings.EqualFold(keys[i].ID, *keyID) {
				key = &keys[i]
			}
		}
		if key == nil {
			return fmt.Errorf("card sign: key %q: %w", *keyID, profiles.ErrNoKey)
		}
		if key.PINPolicy != profiles.PINNever {
			pin, err := readPIN(a)
			if err != nil {
				return err
			}
			err = c.VerifyPIN(ctx, key.PIN, pin)
			clear(pin)
			if err != nil {
				return err
			}
		}
		sig, err := c.Sign(ctx, key.ID, digest, opts)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, sig, 0o644); err != nil {
			return err
		}
		if *certOut != "" {
			if key.Certificate == nil {
				return fmt.Errorf("card sign: key %s has no certificate", key.ID)
			}
			b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: key.Certificate.Raw})
			if err := os.WriteFile(*certOut, b, 0o644); err != nil {
				return err
			}
		}
		fmt.Fprintf(a.stderr, "signed %s with key %s (%s, %s): %d bytes to %s\n", *in, key.ID, key.Algorithm, *hashName, len(sig), *out)
		return nil
	})
}

// readPIN takes the PIN from PSCS_PIN, or asks for it on the terminal
// without echo, or reads a line from standard input.
func readPIN(a *app) ([]byte, error) {
	if v, ok := os.LookupEnv("PSCS_PIN"); ok {
		return []byte(v), nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(a.stderr, "PIN: ")
		pin, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(a.stderr)
		return pin, err
	}
	line, err := bufio.NewReader(os.Stdin).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return nil, fmt.Errorf("reading the PIN from standard input: %w", err)
	}
	return bytes.TrimRight(line, "\r\n"), nil
}
