// Command pscs is the command-line tool of the Proxy Smart Card System.
//
// Usage:
//
//	pscs [-trace] readers
//	pscs [-trace] card info [-r READER]
//	pscs [-trace] card sign [-r READER] -k KEY [-hash sha256|sha384|sha512] [-pss] [-cert FILE] -in FILE -out FILE
//	pscs [-trace] sim [-vpcd HOST:PORT[,HOST:PORT…]] [-profile piv] [-seed S] [-latency real|none] [-pin P] [-puk P]
//	pscs slots [-config FILE]
//	pscs sign [-config FILE] [-slot N] [-key H] [-m MECHANISM] [-raw] [-cert FILE] -in FILE -out FILE
//	pscs sign [-config FILE] [-slot N] [-key H] -cades [-detached] [-hash sha256|sha384|sha512] [-pss] [-progress MiB] -in FILE -out FILE
//	pscs sign [-config FILE] [-slot N] [-key H] -pades [-hash sha256|sha384|sha512] [-pss] [-progress MiB] -in FILE.pdf -out FILE.pdf
//	pscs verify [-CAfile FILE] -in FILE.p7m [-content FILE] [-out FILE]
//	pscs verify [-CAfile FILE] -in FILE.pdf
//	pscs whoami [-config FILE]
//	pscs audit verify [-certs DIR] [-anchor SEQ:HASH] [-checkpoint-cert PEM] [-ca PEM] LOG|EXPORT
//	pscs admin enroll|issue|register-pin|delegate|revoke|unlock|list|export|console [-config FILE] ...
//	pscs version (or pscs --version)
//
// Every command and subcommand prints its usage and flags with -h (to
// standard output, exit 0); an unknown command, a stray argument or a
// missing flag is refused with the usage (exit 2); see internal/cli.
//
// readers lists the PC/SC readers, their cards, and the profile that
// recognises each card. card info shows a card's keys, certificates and PIN
// tries. card sign signs a file with a key of a card in a local reader; the
// PIN is read from the PSCS_PIN environment variable, or asked for on the
// terminal. sim plugs simulated cards into a running pcscd through
// vsmartcard's vpcd driver (default PIN 123456, PUK 12345678) until it is
// interrupted.
//
// slots lists the remote cards a delegate may use on pscsd, and sign
// signs a file with one of them; they read the delegate's configuration
// from -config, PSCS_CONFIG or ~/.config/pscs/client.conf (see
// client.File), and sign the virtual PIN from PSCS_VPIN or the terminal.
// sign hashes the file here and only its digest travels; the slot may be
// left out when there is one; the session ticket is kept in the user's
// cache directory so that the next run logs in with 0-RTT. (pscs remote
// sign, which sent the whole file, is gone: sign does what it did.)
// With -cades, sign makes a CAdES-BES signature (.p7m, enveloping, or
// detached with -detached): the file is hashed here as a stream (progress
// on standard error every -progress MiB), pscsd builds the signed
// attributes on the signing card's certificate, adds the delegation
// notice on a delegation with warranty, and answers the SignedData. verify
// checks such a signature (or any DER CMS SignedData): the document's
// digest, the signature under the enclosed certificate, and with -CAfile
// (trust anchors, PEM) the signer certificate's chain to them, through
// the certificates the signature carries, at the signing time if there is
// one within the certificate's validity, else now (UNTRUSTED and exit 1
// when it does not verify); without -CAfile it says that the signer is
// NOT verified against a trust anchor. It shows the signer, the signing
// time and the delegation notice in words, the notice only when the
// signature (and, with -CAfile, the chain) verifies. With -pades,
// sign adds a PAdES-B-B signature to a PDF file as an incremental update
// (the signature dictionary and an invisible signature field; earlier
// signatures stay valid): the file's byte range is hashed here, pscsd
// answers the CMS (without signing-time: the time is the dictionary's /M),
// and -out is the signed PDF. verify -in FILE.pdf lists the PDF's
// signatures and checks each as it checks a .p7m, against the bytes its
// /ByteRange covers.
// whoami shows the identity the server sees and the delegate's remote
// cards.
//
// audit verify checks a copy of pscsd's audit log, or an owner's export
// (admin export): the hash chain, every record, the server's checkpoint
// signatures (a log's with -checkpoint-cert STATE/checkpoint.pem; an
// export carries its certificate, which -ca checks against pscsd's CA) and
// that the log or export ends with one, an export's signed manifest of the
// records it shows, and every signed request against the enrolled
// certificates in DIR; it names the first bad record.
//
// admin is for owners, with their own configuration file: enroll an
// identity by certificate, or have pscsd's CA issue one (issue writes a
// ready configuration directory to hand to a delegate); register a card's
// real PIN (checked on the card while its retry counter is full, then
// sealed under the owner's passphrase and the server's TPM); delegate a
// remote card (validity, weekly hours, limits, allowed documents, warranty),
// which prints the delegation's virtual PIN once; revoke and unlock
// delegations; list them; export the audit records of the owner's cards
// with every signed request checked. The card PIN comes from PSCS_PIN and
// the passphrase from PSCS_PASSPHRASE, or from the terminal.
//
// -trace writes every APDU to standard error, with PINs and keys redacted.
//
// pscs finds pcscd the way every PC/SC client does: at its default socket,
// or at PCSCLITE_CSOCK_NAME.
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/pscs/pscs/cards"
	"github.com/pscs/pscs/internal/cli"
)

func main() { cli.Main(program()) }

// app is one invocation's context: where output goes and how to log.
type app struct {
	stdout, stderr io.Writer
	trace          bool
	log            *slog.Logger // APDU trace at debug level when -trace
	// wrap, when set, wraps the card's Transmitter in withCard (pscs card
	// record's recorder); atr is the ATR of the card withCard connected to.
	wrap func(cards.Transmitter) cards.Transmitter
	atr  []byte
}

// runFunc is a command's function (cli.Command.Run).
type runFunc = func(context.Context, *cli.Flags, []string) error

// program is pscs's command line.
func program() *cli.Program {
	a := &app{}
	p := &cli.Program{Name: "pscs", Summary: "the command-line tool of the Proxy Smart Card System",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&a.trace, "trace", false, "write every APDU to standard error, secrets redacted")
		},
		Doc: `Local cards (readers, card, sim) are reached through pcscd, at its default socket or at
PCSCLITE_CSOCK_NAME. A delegate's commands (slots, sign, whoami) and an owner's (admin) read
the configuration file from -config, PSCS_CONFIG or ~/.config/pscs/client.conf.
`}
	// run wraps a command's function: the logger from -trace first.
	run := func(f runFunc) runFunc {
		return func(ctx context.Context, fs *cli.Flags, args []string) error {
			a.stdout, a.stderr = fs.Stdout, fs.Stderr
			level := slog.LevelInfo
			if a.trace {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
			return f(ctx, fs, args)
		}
	}
	p.Commands = []*cli.Command{
		{Name: "readers", Summary: "list the PC/SC readers, their cards, and the profile that recognises each card",
			Run: run(a.readers)},
		{Name: "card", Summary: "a card in a local reader", Commands: []*cli.Command{
			{Name: "info", Args: "[-r READER]", Summary: "show a card's keys, certificates and PIN tries",
				Run: run(a.cardInfo)},
			{Name: "sign", Args: "[-r READER] -k KEY [-hash sha256|sha384|sha512] [-pss] [-cert FILE] -in FILE -out FILE",
				Summary: "sign a file with a key of a card in a local reader (PIN from PSCS_PIN or the terminal)",
				Run:     run(a.cardSign)},
			{Name: "record", Args: "[-r READER] -out FILE [-k KEY -in FILE [-hash sha256|sha384|sha512] [-pss]]",
				Summary: "write a card session (inventory, and a signature with -k) to a transcript file, PINs, keys and decryptions scrubbed",
				Run:     run(a.cardRecord)},
		}},
		{Name: "sim", Args: "[-vpcd HOST:PORT[,HOST:PORT...]] [-profile piv] [-seed S] [-latency real|none] [-pin PIN] [-puk PUK]",
			Summary: "plug simulated cards into a running pcscd through vpcd until interrupted (PIN 123456, PUK 12345678)",
			Run:     run(a.sim)},
		{Name: "slots", Args: "[-config FILE]", Summary: "list the remote cards you may use (as a delegate)",
			Run: run(a.slots)},
		{Name: "sign", Args: "[-config FILE] [-slot N] [-key H] [-m MECHANISM [-raw] [-cert FILE] | -cades [-detached] | -pades] [-hash sha256|sha384|sha512] [-pss] [-progress MiB]] -in FILE -out FILE",
			Summary: "sign a file with a key of a remote card, bare, as CAdES-BES (.p7m) or as PAdES-B-B (in the PDF): hashed here, only the digest travels (vPIN from PSCS_VPIN or the terminal)",
			Run:     run(a.sign)},
		{Name: "verify", Args: "[-CAfile FILE] -in FILE.p7m|FILE.pdf [-content FILE] [-out FILE]",
			Summary: "check a CMS/CAdES signature, or the signatures in a PDF: the document's digest, the signature under the enclosed certificate, and with -CAfile the signer's chain to those anchors; shows signer, signing time and the delegation notice",
			Run:     run(a.verify)},
		{Name: "whoami", Args: "[-config FILE]", Summary: "show the identity the server sees and your remote cards",
			Run: run(a.whoami)},
		{Name: "audit", Summary: "pscsd's audit log", Commands: []*cli.Command{
			{Name: "verify", Args: "[-certs DIR] [-anchor SEQ:HASH] [-checkpoint-cert PEM] [-ca PEM] LOG|EXPORT",
				Summary: "check a copy of the audit log, or an owner's export: hash chain, records, checkpoints, signed requests",
				Run:     run(a.auditVerify)},
		}},
		a.adminCommand(run),
	}
	return p
}
