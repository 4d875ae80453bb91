// Package transcript reads and writes APDU transcripts in the "mockfile"
// format of cunicu/go-iso7816 (versions v1 and v3), the format of the real
// YubiKey recordings in ../shared/reference/transcripts:
//
//	mockfile
//
//	file version v3
//	meta status.atr 3bfd1300008131fe158073c021c057597562694b657940
//
//	#     start      end method
//	on    0.000    0.000 BeginTransaction
//	on    0.059    0.059 Transmit 00a4040006d2760001240100 9000
//
// Lines are: the magic "mockfile"; "file KEY VALUE" and "meta KEY VALUE"
// headers; "#" comments (v1 files carry their header in one:
// "# Mockfile/v1 created=…"); and calls, "on [START END] METHOD [ARGS]",
// with START and END in milliseconds (v1 has no times). A Transmit call's
// arguments are the command APDU and the response APDU (data, SW1 SW2) in
// hex; other methods have none.
//
// [Parse] checks what it reads: a Transmit has a command of at least 4
// bytes and a response of at least 2, hex is hex, times are non-negative
// numbers. [Transcript.Format] writes v3.
package transcript

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Transcript is a parsed transcript.
type Transcript struct {
	File  []Field // "file" headers, in order
	Meta  []Field // "meta" headers, in order
	Calls []Call
}

// Field is one header line.
type Field struct{ Key, Value string }

// Call is one recorded PC/SC call.
type Call struct {
	// Start and End are milliseconds since the first call; Timed is false
	// in files without times (v1).
	Start, End float64
	Timed      bool
	Method     string // Transmit, BeginTransaction, EndTransaction, …
	// Command and Response are the APDUs of a Transmit.
	Command, Response []byte
}

// Exchange is a Transmit: a command and the card's response.
type Exchange struct{ Command, Response []byte }

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("transcript: syntax error")

// maxLine bounds a line: the largest extended APDUs in hex, with room.
const maxLine = 1 << 20

// Parse reads a transcript.
func Parse(b []byte) (*Transcript, error) {
	t := &Transcript{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		bad := func(why string) error { return fmt.Errorf("%w: line %d: %s", ErrSyntax, n, why) }
		switch fields[0] {
		case "mockfile":
			if len(fields) != 1 {
				return nil, bad("text after mockfile")
			}
		case "file", "meta":
			if len(fields) < 2 {
				return nil, bad("header without a key")
			}
			f := Field{Key: fields[1], Value: strings.Join(fields[2:], " ")}
			if fields[0] == "file" {
				t.File = append(t.File, f)
			} else {
				t.Meta = append(t.Meta, f)
			}
		case "on":
			c, err := parseCall(fields[1:])
			if err != nil {
				return nil, bad(err.Error())
			}
			t.Calls = append(t.Calls, c)
		default:
			return nil, bad(fmt.Sprintf("unknown line kind %q", fields[0]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return t, nil
}

func parseCall(f []string) (Call, error) {
	var c Call
	if len(f) >= 3 {
		start, err1 := strconv.ParseFloat(f[0], 64)
		end, err2 := strconv.ParseFloat(f[1], 64)
		if err1 == nil && err2 == nil {
			if start < 0 || end < 0 || math.IsInf(start, 0) || math.IsInf(end, 0) || math.IsNaN(start) || math.IsNaN(end) {
				return c, errors.New("bad time")
			}
			c.Start, c.End, c.Timed = start, end, true
			f = f[2:]
		}
	}
	if len(f) == 0 {
		return c, errors.New("call without a method")
	}
	c.Method = f[0]
	if c.Method[0] < 'A' || c.Method[0] > 'Z' {
		return c, fmt.Errorf("bad method %q", c.Method)
	}
	args := f[1:]
	if c.Method != "Transmit" {
		if len(args) != 0 {
			return c, fmt.Errorf("%s with arguments", c.Method)
		}
		return c, nil
	}
	if len(args) != 2 {
		return c, errors.New("Transmit needs a command and a response")
	}
	var err error
	if c.Command, err = hex.DecodeString(args[0]); err != nil || len(c.Command) < 4 {
		return c, errors.New("bad command")
	}
	if c.Response, err = hex.DecodeString(args[1]); err != nil || len(c.Response) < 2 {
		return c, errors.New("bad response")
	}
	return c, nil
}

// Exchanges returns the Transmit calls in order.
func (t *Transcript) Exchanges() []Exchange {
	var out []Exchange
	for _, c := range t.Calls {
		if c.Method == "Transmit" {
			out = append(out, Exchange{c.Command, c.Response})
		}
	}
	return out
}

// MetaValue returns the value of meta header key, or "".
func (t *Transcript) MetaValue(key string) string {
	for _, f := range t.Meta {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// Format writes t in the v3 layout. Calls without times get 0.000 (v3
// has no untimed calls); header values are written as they are.
func (t *Transcript) Format() []byte {
	var b bytes.Buffer
	b.WriteString("mockfile\n\n")
	for _, f := range t.File {
		fmt.Fprintf(&b, "file %s %s\n", f.Key, f.Value)
	}
	b.WriteString("\n")
	for _, f := range t.Meta {
		fmt.Fprintf(&b, "meta %s %s\n", f.Key, f.Value)
	}
	b.WriteString("\n#     start      end method\n")
	for _, c := range t.Calls {
		fmt.Fprintf(&b, "on %8.3f %8.3f %s", c.Start, c.End, c.Method)
		if c.Method == "Transmit" {
			fmt.Fprintf(&b, " %x %x", c.Command, c.Response)
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}
