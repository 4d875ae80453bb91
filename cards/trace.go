package cards

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Redactor says which parts of an exchange carry secrets. cards knows no
// card application: the profiles declare their secret APDUs
// (profiles.Redactor) and profiles/registry hands pscs and pscsd the
// Redactor of every registered profile.
type Redactor interface {
	// Redact is given a command APDU as sent (the first or only block of a
	// chain) and says whether its data is secret (a PIN, a key) and
	// whether the response data is (a decryption, a shared secret).
	Redact(cmd []byte) (secretCommand, secretResponse bool)
}

// RedactAll is the Redactor of a tracer given none: every command's and
// every response's data is hidden.
type RedactAll struct{}

// Redact implements Redactor.
func (RedactAll) Redact([]byte) (bool, bool) { return true, true }

// Trace returns a Transmitter that logs every exchange with t to log at
// debug level: the command, the response and the time it took.
//
// Secrets never reach the log: r says which command and response data are
// secret (nil: all of them, [RedactAll]), and the data is replaced by its
// length. The tracer carries r's decision over the exchanges that continue
// it: every later block of a command chain (CLA bit 10) whose first block
// was redacted, and every GET RESPONSE (C0) that continues a redacted
// response.
//
// A tracer keeps that state between exchanges: like the Transmitter it
// wraps, it is not safe for concurrent use.
func Trace(t Transmitter, log *slog.Logger, r Redactor) Transmitter {
	if r == nil {
		r = RedactAll{}
	}
	return &tracer{t: t, log: log, r: r}
}

type tracer struct {
	t   Transmitter
	log *slog.Logger
	r   Redactor
	rs  RedactState
}

func (tr *tracer) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if !tr.log.Enabled(ctx, slog.LevelDebug) {
		return tr.t.Transmit(ctx, cmd)
	}
	hideCmd, hideRsp := tr.rs.Judge(tr.r, cmd)
	start := time.Now()
	rsp, err := tr.t.Transmit(ctx, cmd)
	if err != nil {
		rsp = nil
	}
	tr.rs.Answered(rsp, hideRsp)
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

// RedactState carries a [Redactor]'s decision over the exchanges that
// continue a command: r judges the first or only block of a chain; the
// later blocks (the previous command had CLA bit 10 and the same INS)
// follow its decision for command and response data, whatever their data
// looks like, and a GET RESPONSE (C0) continues the decision on the
// response before it when that announced more (61 xx). Anything that
// keeps or shows exchanges (a trace, a recorded transcript) judges them
// through one RedactState per card connection; it is not safe for
// concurrent use.
type RedactState struct {
	inChain          bool // the previous command was a block with more to come
	chainINS         byte
	chainCmd, chainR bool // the chain's decision
	secretMore       bool // the previous response was hidden and announced more
}

// Judge says whether cmd's data and its response's data are to be hidden.
// Call Answered with the response before the next Judge.
func (s *RedactState) Judge(r Redactor, cmd []byte) (hideCmd, hideRsp bool) {
	if r == nil {
		r = RedactAll{}
	}
	switch {
	case s.inChain && len(cmd) > 1 && cmd[1] == s.chainINS:
		hideCmd, hideRsp = s.chainCmd, s.chainR
	case len(cmd) >= 4:
		hideCmd, hideRsp = r.Redact(cmd)
	}
	if s.secretMore && len(cmd) > 1 && cmd[1] == 0xC0 {
		hideRsp = true
	}
	if !(s.inChain && len(cmd) > 1 && cmd[1] == s.chainINS) {
		s.chainCmd, s.chainR = hideCmd, hideRsp
	}
	s.inChain = len(cmd) > 1 && cmd[0]&0x10 != 0
	if s.inChain {
		s.chainINS = cmd[1]
	}
	return hideCmd, hideRsp
}

// Answered records the response to the command last judged (nil when the
// exchange failed), so that a GET RESPONSE continues its decision.
func (s *RedactState) Answered(rsp []byte, hidden bool) {
	s.secretMore = hidden && len(rsp) >= 2 && rsp[len(rsp)-2] == 0x61
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

// TraceConn returns c with its exchanges logged as [Trace] logs them
// (with r's redactions), for a [Worker]'s [Opener]: every connection gets
// a tracer of its own. The tracer logs only when log is enabled at debug
// level.
func TraceConn(c Conn, log *slog.Logger, r Redactor) Conn {
	if r == nil {
		r = RedactAll{}
	}
	tc := &tracedConn{Conn: c, tr: tracer{t: c, log: log, r: r}}
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
