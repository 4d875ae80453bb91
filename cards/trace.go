package cards

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Trace returns a Transmitter that logs every exchange with t to log at
// debug level: the command, the response and the time it took.
//
// Secrets never reach the log. The data of commands that carry PINs, PUKs
// or keys is replaced by its length:
//
//   - VERIFY (20), CHANGE REFERENCE DATA (24), RESET RETRY COUNTER (2C);
//   - GENERAL AUTHENTICATE (87) with the PIV card management key (P2 = 9B);
//   - YubiKey IMPORT KEY (FE) and SET MANAGEMENT KEY (FF);
//   - OpenPGP PUT DATA of a private key (DB 3F FF, extended header list 4D).
//
// The responses of decryption and key agreement (PSO:DECIPHER, 2A 80 86;
// GENERAL AUTHENTICATE ECDH, template tag 85) are redacted the same way.
func Trace(t Transmitter, log *slog.Logger) Transmitter {
	return &tracer{t: t, log: log}
}

type tracer struct {
	t   Transmitter
	log *slog.Logger
}

func (tr *tracer) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if !tr.log.Enabled(ctx, slog.LevelDebug) {
		return tr.t.Transmit(ctx, cmd)
	}
	start := time.Now()
	rsp, err := tr.t.Transmit(ctx, cmd)
	attrs := []slog.Attr{
		slog.String("cmd", FormatCommand(cmd)),
		slog.Duration("took", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	} else {
		attrs = append(attrs, slog.String("rsp", FormatResponse(cmd, rsp)))
	}
	tr.log.LogAttrs(ctx, slog.LevelDebug, "apdu", attrs...)
	return rsp, err
}

// secretCommand reports whether the data of cmd carries a secret.
func secretCommand(cmd []byte) bool {
	if len(cmd) < 4 {
		return false
	}
	ins, p1, p2 := cmd[1], cmd[2], cmd[3]
	switch ins {
	case 0x20, 0x24, 0x2C, 0xFE, 0xFF:
		return true
	case 0x87:
		return p2 == 0x9B
	case 0xDB:
		return p1 == 0x3F && p2 == 0xFF && bytesContain(cmd[4:], 0x4D)
	}
	return false
}

// secretResponse reports whether the response data to cmd is a secret.
func secretResponse(cmd []byte) bool {
	if len(cmd) < 4 {
		return false
	}
	ins, p1, p2 := cmd[1], cmd[2], cmd[3]
	switch {
	case ins == 0x2A && p1 == 0x80 && p2 == 0x86:
		return true
	case ins == 0x87:
		return bytesContain(cmd[4:], 0x85)
	case ins == 0xC0: // GET RESPONSE: cannot tell what it continues
		return false
	}
	return false
}

func bytesContain(b []byte, v byte) bool {
	for i := 0; i < len(b) && i < 12; i++ {
		if b[i] == v {
			return true
		}
	}
	return false
}

func spacedHex(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return sb.String()
}

// FormatCommand renders a command APDU for a trace, with secrets redacted
// (see [Trace]).
func FormatCommand(cmd []byte) string {
	if secretCommand(cmd) && len(cmd) > 4 {
		return fmt.Sprintf("%s [%d bytes redacted]", spacedHex(cmd[:4]), len(cmd)-4)
	}
	return spacedHex(cmd)
}

// FormatResponse renders the response to cmd for a trace, with secrets
// redacted (see [Trace]).
func FormatResponse(cmd, rsp []byte) string {
	if secretResponse(cmd) && len(rsp) > 2 {
		return fmt.Sprintf("[%d bytes redacted] %s", len(rsp)-2, spacedHex(rsp[len(rsp)-2:]))
	}
	return spacedHex(rsp)
}
