package cards

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Trace returns a Transmitter that logs every exchange with t to log at
// debug level: the command, the response and the time it took.
//
// Secrets never reach the log. The rules go by ISO 7816-4 instruction
// bytes and the common extensions, and err on the side of hiding. The data
// of commands that carry PINs, PUKs or keys is replaced by its length:
//
//   - VERIFY (20), CHANGE REFERENCE DATA (24), RESET RETRY COUNTER (2C);
//   - GENERAL AUTHENTICATE (87) with the PIV card management key (P2 = 9B);
//   - YubiKey IMPORT KEY (FE) and SET MANAGEMENT KEY (FF);
//   - OpenPGP PUT DATA of a private key (DB 3F FF, extended header list 4D);
//   - every later block of a command chain (CLA bit 10) whose first block
//     was redacted.
//
// The response data of every GENERAL AUTHENTICATE (87: a PIV decryption or
// key agreement looks like a signature on the wire) and of PSO:DECIPHER
// (2A 80 86) is redacted the same way, and so is every GET RESPONSE that
// continues a redacted response.
//
// A tracer keeps that state between exchanges: like the Transmitter it
// wraps, it is not safe for concurrent use.
func Trace(t Transmitter, log *slog.Logger) Transmitter {
	return &tracer{t: t, log: log}
}

type tracer struct {
	t   Transmitter
	log *slog.Logger
	// secretChain: the previous command was a redacted block with more to
	// come (CLA bit 10); chainINS is its instruction.
	secretChain bool
	chainINS    byte
	// secretMore: the previous response was redacted and announced more
	// data (61 xx).
	secretMore bool
}

func (tr *tracer) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if !tr.log.Enabled(ctx, slog.LevelDebug) {
		return tr.t.Transmit(ctx, cmd)
	}
	hideCmd := secretCommand(cmd) ||
		(tr.secretChain && len(cmd) > 1 && cmd[1] == tr.chainINS)
	hideRsp := secretResponse(cmd) ||
		(tr.secretMore && len(cmd) > 1 && cmd[1] == 0xC0)
	tr.secretChain = hideCmd && len(cmd) > 0 && cmd[0]&0x10 != 0
	if tr.secretChain {
		tr.chainINS = cmd[1]
	}
	start := time.Now()
	rsp, err := tr.t.Transmit(ctx, cmd)
	tr.secretMore = hideRsp && err == nil && len(rsp) >= 2 && rsp[len(rsp)-2] == 0x61
	attrs := []slog.Attr{
		slog.String("cmd", formatCommand(cmd, hideCmd)),
		slog.Duration("took", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	} else {
		attrs = append(attrs, slog.String("rsp", formatResponse(rsp, hideRsp)))
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
	return ins == 0x87 || (ins == 0x2A && p1 == 0x80 && p2 == 0x86)
}

func bytesContain(b []byte, v byte) bool {
	for i := 0; i < len(b) && i < 12; i++ {
		if b[i] == v {
			return true
		}
	}
	return false
}

func spacedHex(b []byte) string { return fmt.Sprintf("% X", b) }

func formatCommand(cmd []byte, hide bool) string {
	if hide && len(cmd) > 4 {
		return fmt.Sprintf("%s [%d bytes redacted]", spacedHex(cmd[:4]), len(cmd)-4)
	}
	return spacedHex(cmd)
}

func formatResponse(rsp []byte, hide bool) string {
	if hide && len(rsp) > 2 {
		return fmt.Sprintf("[%d bytes redacted] %s", len(rsp)-2, spacedHex(rsp[len(rsp)-2:]))
	}
	return spacedHex(rsp)
}

// TraceConn returns c with its exchanges logged as [Trace] logs them, for
// a [Worker]'s [Opener]: every connection gets a tracer of its own. The
// tracer logs only when log is enabled at debug level.
func TraceConn(c Conn, log *slog.Logger) Conn {
	tc := &tracedConn{Conn: c, tr: tracer{t: c, log: log}}
	if ck, ok := c.(Checker); ok {
		return &tracedChecker{tracedConn: tc, ck: ck}
	}
	return tc
}

type tracedConn struct {
	Conn
	tr tracer
}

func (c *tracedConn) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	return c.tr.Transmit(ctx, cmd)
}

type tracedChecker struct {
	*tracedConn
	ck Checker
}

func (c *tracedChecker) Check(ctx context.Context) error { return c.ck.Check(ctx) }
