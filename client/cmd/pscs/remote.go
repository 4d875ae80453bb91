package main

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"text/tabwriter"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/transport"
)

// dialRemote connects with the configuration file named by -config, or
// PSCS_CONFIG, or ~/.config/pscs/client.conf.
func (a *app) dialRemote(ctx context.Context, path string) (*client.Client, error) {
	return a.dial(ctx, path, false)
}

// dial connects with the configuration at path (default: client.ConfigPath),
// with a session ticket cache in the user's cache directory if tickets.
func (a *app) dial(ctx context.Context, path string, tickets bool) (*client.Client, error) {
	if path == "" {
		p, err := client.ConfigPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	cfg, err := client.LoadConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no configuration file %s: give -config FILE or set %s (pscsd init and pscs admin issue write one) (%w)", path, client.ConfigEnv, err)
	}
	if err != nil {
		return nil, err
	}
	cfg.Name, cfg.Logger = "pscs", a.log
	if tickets {
		if cache, err := client.SessionCacheFor(cfg); err == nil {
			cfg.SessionCache = cache
		}
	}
	return client.Dial(ctx, cfg)
}

// slots lists the delegate's remote cards.
func (a *app) slots(ctx context.Context, fs *cli.Flags, args []string) error {
	conf := fs.String("config", "", "configuration file (default $"+client.ConfigEnv+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := a.dialRemote(ctx, *conf)
	if err != nil {
		return err
	}
	defer c.Close()
	hello, err := c.Hello(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "server %s, identity %s\n", hello.Server, hello.Identity)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tREMOTE CARD\tCARDS\tKEY\tLABEL\tCERTIFICATE")
	for _, s := range hello.Catalogue.Slots {
		keys := 0
		for _, o := range s.Objects {
			if o.Attributes[0x0000] != uint64(3) { // CKO_PRIVATE_KEY
				continue
			}
			keys++
			subject := "-"
			for _, cert := range s.Objects {
				if cert.Attributes[0x0000] == uint64(1) && string(asBytes(cert.Attributes[0x0102])) == string(asBytes(o.Attributes[0x0102])) {
					if c, err := x509.ParseCertificate(asBytes(cert.Attributes[0x0011])); err == nil {
						subject = c.Subject.CommonName
					}
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%v\t%s\n", s.ID, s.Token.Label, s.Cards, o.Handle, o.Attributes[0x0003], subject)
		}
		if keys == 0 {
			fmt.Fprintf(tw, "%d\t%s\t%d\t-\t-\t-\n", s.ID, s.Token.Label, s.Cards)
		}
	}
	return tw.Flush()
}

func asBytes(v any) []byte {
	b, _ := v.([]byte)
	return b
}

// signRemotely logs in to the request's remote card, has it sign (the
// vPIN also beside the request, for keys that want it with every
// signature), writes the signature (ECDSA as DER with der) and the signing
// card's certificate, and logs out.
func (a *app) signRemotely(ctx context.Context, c *client.Client, req *transport.SignRequest, vpin []byte, der bool, in, out, certOut string) error {
	if _, err := c.Login(ctx, req.Slot, vpin); err != nil {
		return err
	}
	resp, err := c.SignWithPIN(ctx, req, vpin)
	if err != nil {
		return err
	}
	sig := resp.Signature
	if der {
		n := len(sig) / 2
		sig, err = asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])})
		if err != nil {
			return err
		}
	}
	if err := os.WriteFile(out, sig, 0o644); err != nil {
		return err
	}
	if certOut != "" && resp.Certificate != nil {
		if err := os.WriteFile(certOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.Certificate}), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stderr, "signed %s on remote card %d: %d bytes to %s\n", in, req.Slot, len(sig), out)
	return c.Logout(ctx, req.Slot)
}

// readVPIN takes the virtual PIN from PSCS_VPIN or the terminal.
func readVPIN(a *app) ([]byte, error) { return readSecret(a, "PSCS_VPIN", "virtual PIN") }
