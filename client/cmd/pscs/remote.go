package main

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/pscs/pscs/client"
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
	if err != nil {
		return nil, fmt.Errorf("%w (set %s or -config)", err, client.ConfigEnv)
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
func (a *app) slots(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("slots", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
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

var mechanismByName = map[string]uint64{
	"ecdsa-sha256": 0x1044, "ecdsa-sha384": 0x1045, "ecdsa-sha512": 0x1046,
	"rsa-sha256": 0x40, "rsa-sha384": 0x41, "rsa-sha512": 0x42,
	"rsa-pss-sha256": 0x43, "rsa-pss-sha384": 0x44, "rsa-pss-sha512": 0x45,
}

// remoteSign signs a file with a key of a remote card.
func (a *app) remoteSign(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("remote sign", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	conf := fs.String("config", "", "configuration file (default $"+client.ConfigEnv+")")
	slot := fs.Uint64("slot", 0, "remote card (slot number from pscs slots)")
	key := fs.Uint64("key", 1, "key (handle from pscs slots)")
	mech := fs.String("m", "ecdsa-sha256", "mechanism: ecdsa-sha256|384|512, rsa-sha256|384|512, rsa-pss-sha256|384|512")
	in := fs.String("in", "", "file to sign")
	out := fs.String("out", "", "file to write the signature to (ECDSA: ASN.1 DER, as OpenSSL reads it)")
	raw := fs.Bool("raw", false, "write ECDSA signatures as PKCS #11 returns them (r||s)")
	certOut := fs.String("cert", "", "also write the signing card's certificate (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	*mech = strings.ToLower(*mech)
	m, ok := mechanismByName[*mech]
	if !ok || *slot == 0 || *in == "" || *out == "" {
		return fmt.Errorf("remote sign: -slot, -in, -out and a known -m are required")
	}
	data, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	vpin, err := readVPIN(a)
	if err != nil {
		return err
	}
	defer clear(vpin)
	c, err := a.dialRemote(ctx, *conf)
	if err != nil {
		return err
	}
	defer c.Close()
	return a.signRemotely(ctx, c, &transport.SignRequest{Slot: *slot, Key: *key, Mechanism: m, Data: data}, vpin,
		!*raw && strings.HasPrefix(*mech, "ecdsa"), *in, *out, *certOut)
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
