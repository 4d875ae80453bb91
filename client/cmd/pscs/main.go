// Command pscs is the command-line tool of the Proxy Smart Card System.
//
// Usage:
//
//	pscs [-trace] readers
//	pscs [-trace] card info [-r READER]
//	pscs [-trace] card sign [-r READER] -k KEY [-hash sha256|sha384|sha512] [-pss] [-cert FILE] -in FILE -out FILE
//	pscs [-trace] sim -vpcd HOST:PORT[,HOST:PORT…] [-profile piv] [-seed S] [-latency real|none] [-pin P] [-puk P]
//	pscs slots [-config FILE]
//	pscs remote sign [-config FILE] -slot N [-key H] [-m MECHANISM] [-cert FILE] -in FILE -out FILE
//	pscs sign [-config FILE] [-slot N] [-key H] [-m MECHANISM] [-cert FILE] -in FILE -out FILE
//	pscs whoami [-config FILE]
//	pscs audit verify [-certs DIR] [-anchor SEQ:HASH] [-checkpoint-cert PEM] [-ca PEM] LOG|EXPORT
//	pscs admin enroll|issue|register-pin|delegate|revoke|unlock|list|export ...
//
// readers lists the PC/SC readers, their cards, and the profile that
// recognises each card. card info shows a card's keys, certificates and PIN
// tries. card sign signs a file with a key of a card in a local reader; the
// PIN is read from the PSCS_PIN environment variable, or asked for on the
// terminal. sim plugs simulated cards into a running pcscd through
// vsmartcard's vpcd driver (default PIN 123456, PUK 12345678) until it is
// interrupted.
//
// slots lists the remote cards a delegate may use on pscsd, and remote sign
// signs a file with one of them; both read the delegate's configuration
// from -config, PSCS_CONFIG or ~/.config/pscs/client.conf (see client.File), and remote sign the
// virtual PIN from PSCS_VPIN or the terminal.
//
// sign is remote sign for delegates: the file is hashed here and only its
// digest travels, the slot may be left out when there is one, and the
// session ticket is kept in the user's cache directory so that the next
// run logs in with 0-RTT. whoami shows the identity the server sees and
// the delegate's remote cards.
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
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "pscs: ") { // the server's refusals name pscs already
			msg = "pscs: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

const usage = `usage:
  pscs [-trace] readers
  pscs [-trace] card info [-r READER]
  pscs [-trace] card sign [-r READER] -k KEY [-hash sha256|sha384|sha512] [-pss] [-cert FILE] -in FILE -out FILE
  pscs [-trace] sim -vpcd HOST:PORT[,HOST:PORT...] [-profile piv] [-seed S] [-latency real|none] [-pin PIN] [-puk PUK]
  pscs slots [-config FILE]
  pscs remote sign [-config FILE] -slot N [-key H] [-m MECHANISM] [-cert FILE] -in FILE -out FILE
  pscs sign [-config FILE] [-slot N] [-key H] [-m MECHANISM] [-cert FILE] -in FILE -out FILE
  pscs whoami [-config FILE]
  pscs audit verify [-certs DIR] [-anchor SEQ:HASH] [-checkpoint-cert PEM] [-ca PEM] LOG|EXPORT
  pscs admin enroll|issue|register-pin|delegate|revoke|unlock|list|export ...  (pscs admin: details)
`

// app is one invocation's context: where output goes and how to log.
type app struct {
	stdout, stderr io.Writer
	log            *slog.Logger // APDU trace at debug level when -trace
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pscs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	trace := fs.Bool("trace", false, "write every APDU to standard error, secrets redacted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *trace {
		level = slog.LevelDebug
	}
	a := &app{stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	switch rest[0] {
	case "readers":
		return a.readers(ctx, rest[1:])
	case "card":
		if len(rest) < 2 {
			fs.Usage()
			return flag.ErrHelp
		}
		switch rest[1] {
		case "info":
			return a.cardInfo(ctx, rest[2:])
		case "sign":
			return a.cardSign(ctx, rest[2:])
		}
	case "sim":
		return a.sim(ctx, rest[1:])
	case "slots":
		return a.slots(ctx, rest[1:])
	case "admin":
		return a.admin(ctx, rest[1:])
	case "sign":
		return a.sign(ctx, rest[1:])
	case "whoami":
		return a.whoami(ctx, rest[1:])
	case "audit":
		if len(rest) >= 2 && rest[1] == "verify" {
			return a.auditVerify(ctx, rest[2:])
		}
	case "remote":
		if len(rest) >= 2 && rest[1] == "sign" {
			return a.remoteSign(ctx, rest[2:])
		}
	}
	fs.Usage()
	return flag.ErrHelp
}
