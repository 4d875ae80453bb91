package cli

import (
	"context"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
)

// program is a small program for the tests: a group with two leaves, a
// leaf with arguments, a deprecated alias and a default mode; ran records
// what ran with what.
func program(ran *[]string) (*Program, *strings.Builder, *strings.Builder) {
	var stdout, stderr strings.Builder
	var verbose bool
	leaf := func(name string, names ...string) func(context.Context, *Flags, []string) error {
		return func(ctx context.Context, fs *Flags, args []string) error {
			out := fs.String("out", "", "the `FILE` to write")
			n := fs.Int("n", 0, "how many")
			pos, err := fs.ParseArgs(args, names...)
			if err != nil {
				return err
			}
			if name == "need" {
				if err := fs.Require("out", "n"); err != nil {
					return err
				}
			}
			*ran = append(*ran, strings.Join(append([]string{name, *out, strings.Repeat("+", *n), map[bool]string{true: "v"}[verbose]}, pos...), " "))
			return nil
		}
	}
	p := &Program{Name: "prog", Summary: "a program", Stdout: &stdout, Stderr: &stderr,
		Flags: func(fs *flag.FlagSet) { fs.BoolVar(&verbose, "v", false, "verbose") },
		Commands: []*Command{
			{Name: "group", Summary: "a group", Commands: []*Command{
				{Name: "one", Args: "[-out FILE]", Summary: "the first", Run: leaf("one")},
				{Name: "two", Args: "[-out FILE] A B", Summary: "the second", Run: leaf("two", "A", "B")},
			}},
			{Name: "need", Args: "-out FILE -n N", Summary: "needs flags", Run: leaf("need")},
			{Name: "old", Summary: "the old name", Deprecated: "prog group one", Run: leaf("old")},
		}}
	return p, &stdout, &stderr
}

func TestDispatch(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		ran    string // what ran, or ""
		stdout string // in standard output
		stderr string // in standard error
	}{
		{args: []string{"group", "one"}, ran: "one   "},
		{args: []string{"-v", "group", "one", "-out", "f"}, ran: "one f  v"},
		// Flags and arguments in any order; after -- everything is an argument.
		{args: []string{"group", "two", "a", "-out", "f", "b", "-n", "2"}, ran: "two f ++  a b"},
		{args: []string{"group", "two", "-n", "1", "--", "-a", "b"}, ran: "two  +  -a b"},
		{args: []string{"group", "two", "a"}, code: 2, stderr: "prog group two: missing B\n\nusage: prog group two [-out FILE] A B\n"},
		{args: []string{"group", "two", "a", "b", "c"}, code: 2, stderr: `prog group two: unexpected argument "c"`},
		{args: []string{"group", "one", "x"}, code: 2, stderr: `prog group one: unexpected argument "x"`},
		{args: []string{"group", "one", "-x"}, code: 2, stderr: "prog group one: flag provided but not defined: -x"},
		{args: []string{"group", "one", "-n", "many"}, code: 2, stderr: `invalid value "many" for flag -n`},
		{args: []string{"need", "-n", "1"}, code: 2, stderr: "prog need: missing -out FILE: the FILE to write\n"},
		{args: []string{"need"}, code: 2, stderr: "prog need: missing -out FILE: the FILE to write; -n: how many\n"},
		{args: []string{"need", "-out", "f", "-n", "0"}, ran: "need f  "}, // given, even if zero
		{args: nil, code: 2, stderr: "prog: which command?"},
		{args: []string{"nope"}, code: 2, stderr: `prog: unknown command "nope"`},
		{args: []string{"group"}, code: 2, stderr: "prog group: which command?"},
		{args: []string{"group", "nope"}, code: 2, stderr: `prog group: unknown command "nope"`},
		{args: []string{"-x", "group"}, code: 2, stderr: "prog: flag provided but not defined: -x"},
		// Help: standard output, exit 0, at every level.
		{args: []string{"-h"}, stdout: "  prog group one [-out FILE]\n\tthe first\n  prog group two [-out FILE] A B\n"},
		{args: []string{"--help"}, stdout: "  prog need -out FILE -n N\n"},
		{args: []string{"help"}, stdout: "  prog version\n"},
		{args: []string{"group", "-h"}, stdout: "usage:\n  prog group one"},
		{args: []string{"group", "help"}, stdout: "prog group: a group\n"},
		{args: []string{"group", "two", "-h"}, stdout: "usage: prog group two [-out FILE] A B\n\nthe second\n\nflags:\n  -n int\n"},
		{args: []string{"group", "two", "a", "--help"}, stdout: "usage: prog group two"},
		{args: []string{"help", "group", "two"}, stdout: "usage: prog group two"},
		{args: []string{"help", "group"}, stdout: "prog group: a group\n"},
		{args: []string{"group", "help", "one"}, stdout: "usage: prog group one"},
		{args: []string{"help", "nope"}, code: 2, stderr: `prog: unknown command "nope"`},
		// The deprecated name runs, warns, and is not in the usage.
		{args: []string{"old"}, ran: "old   ", stderr: "prog old: deprecated: use prog group one\n"},
		// Version.
		{args: []string{"--version"}, stdout: "prog "},
		{args: []string{"version"}, stdout: "prog "},
		{args: []string{"version", "x"}, code: 2, stderr: `prog version: unexpected argument "x"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var ran []string
			p, stdout, stderr := program(&ran)
			code := p.Exit(p.Run(context.Background(), tc.args))
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			var want []string
			if tc.ran != "" {
				want = []string{tc.ran}
			}
			if !reflect.DeepEqual(ran, want) {
				t.Errorf("ran %q, want %q", ran, want)
			}
			if !strings.Contains(stdout.String(), tc.stdout) || tc.stdout == "" && stdout.Len() > 0 {
				t.Errorf("stdout %q, want %q in it", stdout, tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) || tc.stderr == "" && stderr.Len() > 0 {
				t.Errorf("stderr %q, want %q in it", stderr, tc.stderr)
			}
			if tc.code == 2 && !strings.Contains(stderr.String(), "usage") {
				t.Errorf("a refusal without the usage: %q", stderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), "prog old") && tc.ran != "old   " {
				t.Errorf("the deprecated command is in the usage")
			}
		})
	}
}

// TestDefault: a program with a default mode runs it when the first
// argument is a flag or there is none, and lists its flags in its usage.
func TestDefault(t *testing.T) {
	var got []string
	var stdout, stderr strings.Builder
	p := &Program{Name: "d", Summary: "a daemon", Stdout: &stdout, Stderr: &stderr,
		Default: &Command{Args: "-config FILE\n--demo", Summary: "serve",
			Run: func(ctx context.Context, fs *Flags, args []string) error {
				config := fs.String("config", "", "the configuration `FILE`")
				if err := fs.Parse(args); err != nil {
					return err
				}
				if *config == "" {
					return fs.Usagef("give -config")
				}
				got = append(got, *config)
				return nil
			}},
		Commands: []*Command{{Name: "init", Summary: "init", Run: func(ctx context.Context, fs *Flags, args []string) error {
			got = append(got, "init")
			return fs.Parse(args)
		}}},
	}
	run := func(args ...string) int {
		stdout.Reset()
		stderr.Reset()
		return p.Exit(p.Run(context.Background(), args))
	}
	if code := run("-config", "x"); code != 0 || !reflect.DeepEqual(got, []string{"x"}) {
		t.Errorf("-config x: %d %q", code, got)
	}
	if code := run(); code != 2 || !strings.Contains(stderr.String(), "d: give -config\n") {
		t.Errorf("no arguments: %d %q", code, stderr.String())
	}
	if code := run("inti", "-config", "x"); code != 2 || !strings.Contains(stderr.String(), `d: unknown command "inti"`) || len(got) != 1 {
		t.Errorf("a misspelt command: %d %q %q", code, stderr.String(), got)
	}
	if code := run("-h"); code != 0 || !strings.Contains(stdout.String(), "  d -config FILE\n  d --demo\n\tserve\n") ||
		!strings.Contains(stdout.String(), "  -config FILE\n") || !strings.Contains(stdout.String(), "  d init\n") {
		t.Errorf("-h: %d %q", code, stdout.String())
	}
	if code := run("-config", "x", "--version"); code != 0 || !strings.HasPrefix(stdout.String(), "d ") || len(got) != 1 {
		t.Errorf("--version: %d %q", code, stdout.String())
	}
}

func TestExit(t *testing.T) {
	var stderr strings.Builder
	p := &Program{Name: "prog", Stderr: &stderr}
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{ErrHelp, 0, ""},
		{ErrFailed, 1, ""},
		{errors.New("boom"), 1, "prog: boom\n"},
		{errors.New("prog: said already"), 1, "prog: said already\n"},
		{&UsageError{Cmd: "prog x", Msg: "bad", Usage: "usage: prog x\n"}, 2, "prog x: bad\n\nusage: prog x\n"},
	} {
		stderr.Reset()
		if code := p.Exit(tc.err); code != tc.code || stderr.String() != tc.out {
			t.Errorf("Exit(%v) = %d, %q; want %d, %q", tc.err, code, stderr.String(), tc.code, tc.out)
		}
	}
}

func TestVersion(t *testing.T) {
	v := Version("prog")
	if !strings.HasPrefix(v, "prog ") || !strings.Contains(v, ", go1.") || !strings.Contains(v, "revision ") {
		t.Errorf("Version = %q", v)
	}
}
