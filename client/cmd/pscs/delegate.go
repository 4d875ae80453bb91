package main

import (
	"context"
	"crypto"
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pscs/pscs/client"
	"github.com/pscs/pscs/internal/cli"
	"github.com/pscs/pscs/internal/p11"
	"github.com/pscs/pscs/transport"
)

// dialCached connects like dialRemote, with the delegate's session tickets
// kept in the user's cache directory (client.SessionCacheFor), so that the
// next run resumes the session and sends its first request as 0-RTT data.
func (a *app) dialCached(ctx context.Context, path string) (*client.Client, error) {
	return a.dial(ctx, path, true)
}

// whoami shows who the server takes the delegate for, and its remote
// cards.
func (a *app) whoami(ctx context.Context, fs *cli.Flags, args []string) error {
	conf := fs.String("config", "", "configuration file (default $"+client.ConfigEnv+" or ~/.config/pscs/client.conf)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := a.dialCached(ctx, *conf)
	if err != nil {
		return err
	}
	defer c.Close()
	hello, err := c.Hello(ctx)
	if err != nil {
		return err
	}
	skew := time.Until(time.UnixMilli(hello.Time)).Round(time.Millisecond)
	fmt.Fprintf(a.stdout, "identity: %s\nserver:   %s (clock %+v from this one)\n", hello.Identity, hello.Server, skew)
	if hello.Catalogue == nil || len(hello.Catalogue.Slots) == 0 {
		fmt.Fprintln(a.stdout, "remote cards: none")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tREMOTE CARD\tCARDS\tSERVING")
	for _, s := range hello.Catalogue.Slots {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%v\n", s.ID, s.Token.Label, s.Cards, s.Present)
	}
	return tw.Flush()
}

// sign signs a file through the server with a key of a remote card: the
// data is hashed here and only its digest travels. The slot may be left
// out when the delegate has one remote card. With -cades the signature is
// a CAdES-BES .p7m, with -pades a PAdES-B-B signature added to a PDF
// (document.go).
func (a *app) sign(ctx context.Context, fs *cli.Flags, args []string) error {
	conf := fs.String("config", "", "configuration file (default $"+client.ConfigEnv+" or ~/.config/pscs/client.conf)")
	slot := fs.Uint64("slot", 0, "remote card (default: the only one)")
	key := fs.Uint64("key", 1, "key (handle from pscs slots)")
	mech := fs.String("m", "ecdsa-sha256", "mechanism: ecdsa-sha256|384|512, rsa-sha256|384|512, rsa-pss-sha256|384|512")
	in := fs.String("in", "", "file to sign")
	out := fs.String("out", "", "file to write the signature to (ECDSA: ASN.1 DER, as OpenSSL reads it)")
	raw := fs.Bool("raw", false, "write ECDSA signatures as PKCS #11 returns them (r||s)")
	certOut := fs.String("cert", "", "also write the signing card's certificate (PEM)")
	cades := fs.Bool("cades", false, "make a CAdES-BES signature (.p7m, enveloping unless -detached) instead of a bare one")
	pades := fs.Bool("pades", false, "sign a PDF file as PAdES-B-B: -out is the PDF with the signature added (an incremental update)")
	detached := fs.Bool("detached", false, "with -cades: leave the document out of the signature")
	hashName := fs.String("hash", "sha256", "with -cades or -pades: sha256, sha384 or sha512")
	pss := fs.Bool("pss", false, "with -cades or -pades and an RSA key: RSASSA-PSS instead of PKCS #1 v1.5")
	step := fs.Int64("progress", 64, "with -cades or -pades: report hashing progress every this many MiB (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	*mech = strings.ToLower(*mech)
	if err := fs.Require("in", "out"); err != nil {
		return err
	}
	if *cades && *pades {
		return fs.Usagef("-cades or -pades, not both")
	}
	if *pades && *detached {
		return fs.Usagef("-detached goes with -cades: a PAdES signature is in the PDF")
	}
	document := *cades || *pades
	if !document && (*detached || *pss || fs.Given("hash")) {
		return fs.Usagef("-detached, -hash and -pss go with -cades or -pades (a bare signature's -m names its hash)")
	}
	if document && (fs.Given("m") || *raw || *certOut != "") {
		return fs.Usagef("-m, -raw and -cert are for bare signatures: a CAdES or PAdES signature holds its certificate")
	}
	docHash, ok := documentHashes[strings.ToLower(*hashName)]
	if !ok {
		return fs.Usagef("-hash: unknown hash %q", *hashName)
	}
	var digest []byte
	hm, ok := hashedMechanisms[*mech]
	if !ok {
		return fs.Usagef("-m: unknown mechanism %q", *mech)
	}
	if !document {
		data, err := os.ReadFile(*in)
		if err != nil {
			return err
		}
		h := hm.hash.New()
		h.Write(data)
		digest = h.Sum(nil)
		if hm.digestInfo != nil {
			digest = append(append([]byte{}, hm.digestInfo...), digest...)
		}
	}
	vpin, err := readVPIN(a)
	if err != nil {
		return err
	}
	defer clear(vpin)
	c, err := a.dialCached(ctx, *conf)
	if err != nil {
		return err
	}
	defer c.Close()
	if *slot == 0 {
		hello, err := c.Hello(ctx)
		if err != nil {
			return err
		}
		n := 0
		if hello.Catalogue != nil {
			n = len(hello.Catalogue.Slots)
		}
		if n != 1 {
			return fmt.Errorf("sign: you have %d remote cards: choose one with -slot (pscs whoami lists them)", n)
		}
		*slot = hello.Catalogue.Slots[0].ID
	}
	if *pades {
		return a.signPAdES(ctx, c, *slot, *key, vpin, docHash, *pss, *step, *in, *out)
	}
	if *cades {
		return a.signCAdES(ctx, c, *slot, *key, vpin, docHash, *pss, *detached, *step, *in, *out)
	}
	return a.signRemotely(ctx, c, &transport.SignRequest{Slot: *slot, Key: *key, Mechanism: hm.remote, Data: digest}, vpin,
		!*raw && strings.HasPrefix(*mech, "ecdsa"), *in, *out, *certOut)
}

// hashedMechanism is how pscs sign hashes a file and what it asks the
// server to sign: the raw PKCS #11 mechanism with the digest (ECDSA, PSS)
// or the DigestInfo (RSA PKCS #1 v1.5).
type hashedMechanism struct {
	hash       crypto.Hash
	digestInfo []byte
	remote     uint64
}

const (
	ckmRSAPKCS    = p11.CKMRSAPKCS
	ckmRSAPKCSPSS = p11.CKMRSAPKCSPSS
	ckmECDSA      = p11.CKMECDSA
)

var hashedMechanisms = map[string]hashedMechanism{
	"ecdsa-sha256":   {crypto.SHA256, nil, ckmECDSA},
	"ecdsa-sha384":   {crypto.SHA384, nil, ckmECDSA},
	"ecdsa-sha512":   {crypto.SHA512, nil, ckmECDSA},
	"rsa-sha256":     {crypto.SHA256, []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, ckmRSAPKCS},
	"rsa-sha384":     {crypto.SHA384, []byte{0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30}, ckmRSAPKCS},
	"rsa-sha512":     {crypto.SHA512, []byte{0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40}, ckmRSAPKCS},
	"rsa-pss-sha256": {crypto.SHA256, nil, ckmRSAPKCSPSS},
	"rsa-pss-sha384": {crypto.SHA384, nil, ckmRSAPKCSPSS},
	"rsa-pss-sha512": {crypto.SHA512, nil, ckmRSAPKCSPSS},
}
