package main

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"

	"github.com/pscs/pscs/internal/cli"
)

// configHelp says what each field of the configuration file means, by its
// path in the JSON ("limits.request_rate"; a list's elements are "[]").
// The listing of pscsd config-help walks Config itself, so that it shows
// every field there is; TestConfigHelpComplete keeps this map in step
// with it.
var configHelp = map[string]string{
	"state":                             "required: the state directory (store, vault of sealed PINs, audit log, CA)",
	"listen":                            "UDP address of the protocol (QUIC); default 0.0.0.0:4433",
	"metrics":                           `HTTP address of /metrics and /healthz; default 127.0.0.1:9433; "off": none`,
	"tpm":                               `the TPM: a device (default /dev/tpmrm0), or "unix:PATH", a swtpm socket`,
	"server_names":                      "names and addresses in the server's certificate from its own CA; default localhost, 127.0.0.1, ::1",
	"certificate":                       "a server certificate (PEM) from your PKI instead of one from pscsd's CA; with key",
	"key":                               "the private key (PEM) of certificate",
	"tpm_da":                            "the TPM's dictionary-attack protection, which limits vPIN guesses (docs/security.md)",
	"tpm_da.max_tries":                  "failed vPIN tests before the TPM locks out; default 32",
	"tpm_da.recovery_seconds":           "the TPM forgets one failure per this many seconds; default 60",
	"tpm_da.lockout_recovery_seconds":   "how long the lockout hierarchy stays locked after a wrong lockout authorization; default 86400",
	"tpm_da.reserve":                    "failures pscsd never spends: vPINs are refused (code 116) when only these are left; default 4",
	"tpm_da.keep_lockout_auth":          "false (default): replace an empty lockout authorization by random bytes nobody keeps",
	"pin_tries":                         "a full card PIN retry counter: register-pin checks the PIN only while the card's is this; default 3",
	"require_proof":                     "refuse cards that cannot prove their keys without a PIN; default false",
	"log":                               "pscsd's log",
	"log.json":                          "log in JSON (as -json); default false",
	"log.level":                         "debug (APDU trace, secrets redacted, as -trace), info (default), warn or error",
	"limits":                            "what each identity, and all clients together, may hold (transport.Limits); 0 or absent: the default; negative: no limit",
	"limits.connections_per_identity":   "connections of one identity; default 16; more: closed with code 21",
	"limits.streams_per_identity":       "unfinished requests of one identity, all its connections; default 256; more: code 22",
	"limits.request_rate":               "requests per second of one identity; default 1000; more: code 23",
	"limits.request_burst":              "requests of one identity at once; default 2000; more: code 23",
	"limits.nonces_per_identity":        "one identity's replay memory; default 65536; full: code 24",
	"limits.request_bytes_per_identity": "buffers of one identity's unfinished requests; default 4194304; more: code 25",
	"limits.request_bytes":              "the same, all identities; default 67108864; more: code 26",
	"limits.retry_handshakes":           "unvalidated handshakes in progress before QUIC Retry; default 64; -1: never",
	"limits.handshakes":                 "all handshakes in progress; default 1024; more: QUIC CONNECTION_REFUSED",
	"cards":                             "required: the remote cards",
	"cards[].name":                      "required: the remote card's name, unique",
	"cards[].slot":                      "required: its slot number for delegates, 1 or more, unique",
	"cards[].owner":                     "required: the identity that owns it (pscsd init enrolls it)",
	"cards[].serials":                   "required: the serials of the cards that serve it: one card, or several with the same keys (parallel)",
	"cards[].queue":                     "requests waiting for a card, all delegates; default 256; more: code 18",
	"cards[].queue_per_delegate":        "requests waiting of one delegate; default queue/4; more: code 18",
	"cards[].same_keys":                 "members must hold the same keys; default true; false: each card shows its own keys, document signatures go to the cards in turn",
	"cards[].chain":                     "PEM files of CA certificates (intermediates) that document signatures carry up to the root; relative to this file",
	"console":                           "the owners' web console over HTTPS (server/console); absent: none",
	"console.listen":                    "its TCP address; default 127.0.0.1:9443 (loopback only)",
	"console.host":                      "the host name one-time links use (one the server certificate carries); default the listen host",
	"console.link_seconds":              "how long a one-time link (pscs admin console) works; default 120, at most 3600",
	"console.idle_minutes":              "a session ends after this many minutes without a request; default 15",
	"console.session_hours":             "a session ends this many hours after login; default 8",
	// Backups (docs/backup.md).
	"backup":               "signed and encrypted backups of the state, mailed to owners (docs/backup.md); absent: none",
	"backup.interval":      `periodic backups every this long (Go duration: "24h"); absent: only on demand (pscs admin backup)`,
	"backup.retry":         `the first wait after a failed backup, doubling up to interval (or 1h); default "1m"`,
	"backup.smtp":          "required: the mail server, host:port; it must offer STARTTLS (nothing is sent in clear)",
	"backup.smtp_name":     "the name the mail server's certificate must hold; default: smtp's host",
	"backup.ca":            "CA certificates (PEM) that verify the mail server's certificate; default: the system's",
	"backup.from":          "required: the sender's e-mail address (also in the backup signing certificate)",
	"backup.owners":        `required: who gets backups: {"identity": "address"}; "": the address in the owner's certificate`,
	"backup.key_transport": `how an RSA owner's certificate gets the key: "oaep" (RSAES-OAEP, SHA-256; openssl cms -decrypt) or "pkcs1v15" (openssl smime -decrypt and older S/MIME clients; docs/backup.md); default "oaep"`,
}

// configFields lists the JSON paths and types of the fields of t, a
// struct, in declaration order.
func configFields(prefix string, t reflect.Type, fn func(path, typ string)) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			fn(path, "object")
			configFields(path+".", ft, fn)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			fn(path, "list of objects")
			configFields(path+"[].", ft.Elem(), fn)
		default:
			fn(path, jsonType(ft))
		}
	}
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list of " + jsonType(t.Elem()) + "s"
	case reflect.Map:
		return "object of " + jsonType(t.Elem()) + "s"
	}
	return t.String()
}

// writeConfigHelp writes the listing of pscsd config-help.
func writeConfigHelp(w io.Writer) error {
	fmt.Fprint(w, `pscsd's configuration file is JSON; a field not listed here is refused. Relative paths are
relative to the file. A field left out or 0 takes its default.

`)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIELD\tTYPE\tMEANING")
	configFields("", reflect.TypeFor[Config](), func(path, typ string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", path, typ, configHelp[path])
	})
	return tw.Flush()
}

// configHelpCmd is pscsd config-help.
func configHelpCmd(ctx context.Context, fs *cli.Flags, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return writeConfigHelp(fs.Stdout)
}
