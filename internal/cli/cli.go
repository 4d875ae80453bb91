// Package cli is the command line that pscs and pscsd share: a program of
// commands and subcommands dispatched by name, each command with its own
// flag set, and one convention for help, refusals, exit codes and the
// version, so that both commands answer a person at a terminal the same
// way.
//
// # Conventions
//
//   - -h, -help or --help (and help where a command name is expected)
//     print the usage of what comes before it to standard output; help
//     COMMAND is COMMAND -h; the program exits 0.
//   - An unknown command, an undefined flag, an argument where none is
//     expected, a missing argument or a required flag left out is refused
//     with a [UsageError]: the refusal, then the usage of the command, on
//     standard error; the program exits 2.
//   - Any other failure prints one line, "PROG: error", on standard error;
//     the program exits 1.
//   - --version, and the command version, print the program's module
//     version, VCS revision and Go version from the build information
//     ([Version]); the program exits 0.
//
// Flags and arguments of a command may be given in any order
// ([Flags.ParseArgs]); after "--" everything is an argument.
//
// # Use
//
// A program declares its commands as a tree of [Command] values and calls
// [Main]:
//
//	cli.Main(&cli.Program{Name: "pscs", Commands: []*cli.Command{
//		{Name: "slots", Args: "[-config FILE]", Summary: "list the remote cards",
//			Run: func(ctx context.Context, fs *cli.Flags, args []string) error {
//				conf := fs.String("config", "", "configuration file")
//				if err := fs.Parse(args); err != nil {
//					return err
//				}
//				…
//			}},
//	}})
//
// A command's Run declares its flags on the [Flags] it is given, which is
// named after the command's path ("pscs admin enroll") and knows its
// usage, and parses them with [Flags.Parse] or [Flags.ParseArgs]; the
// errors those return are already what the convention needs.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// ErrHelp is returned when the command did what was asked of it instead
// of running (help, version): the program exits 0.
var ErrHelp = flag.ErrHelp

// ErrFailed is returned by a command that failed and said why already (in
// its log): the program exits 1 without another word.
var ErrFailed = errors.New("cli: failed")

// A UsageError refuses an invocation: an unknown command, a bad flag, a
// stray or missing argument. Its usage is printed after it.
type UsageError struct {
	Cmd   string // the command's path: "pscs admin enroll"
	Msg   string // what is wrong, and what to give instead
	Usage string // the command's usage
}

func (e *UsageError) Error() string { return e.Cmd + ": " + e.Msg }

// A Command is a command of a program: a leaf with Run, or a group of
// Commands (one of the two).
type Command struct {
	Name string
	// Args is the synopsis of its flags and arguments, as its usage
	// shows them after its path: "[-r READER] -k KEY -in FILE".
	Args string
	// Summary says in one line what it does.
	Summary string
	// Doc, if not empty, is printed after the usage line by -h.
	Doc string
	// Run runs a leaf with a flag set of its own and the arguments after
	// its name. It declares its flags and parses them before it does
	// anything else: for the program's usage, a Default's Run is called
	// to declare its flags, and their parsing then returns an error.
	Run func(ctx context.Context, fs *Flags, args []string) error
	// Commands are a group's subcommands.
	Commands []*Command
	// Deprecated, if not empty, says what replaces the command; it is
	// left out of its group's usage and warns when it runs.
	Deprecated string
}

// A Program is a command-line program.
type Program struct {
	Name string
	// Summary says in one line what the program is.
	Summary string
	// Doc, if not empty, is printed after the list of commands by -h.
	Doc string
	// Flags, if not nil, declares the flags that come before the command
	// name (pscs -trace card info). Default's flag set takes them instead
	// when Default runs.
	Flags func(fs *flag.FlagSet)
	// Default, if not nil, runs when the first argument is not a command
	// name but a flag, or there is none: pscsd -config FILE. Its Args
	// and Summary head the program's usage.
	Default *Command
	// Commands are the program's commands. A command named version is
	// added if there is none.
	Commands []*Command
	// Stdout and Stderr default to os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
}

// Main runs the program with the process's arguments, until SIGINT or
// SIGTERM cancels its context, and exits as the package documentation
// says.
func Main(p *Program) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := p.Exit(p.Run(ctx, os.Args[1:]))
	stop()
	os.Exit(code)
}

func (p *Program) stdout() io.Writer {
	if p.Stdout == nil {
		return os.Stdout
	}
	return p.Stdout
}

func (p *Program) stderr() io.Writer {
	if p.Stderr == nil {
		return os.Stderr
	}
	return p.Stderr
}

// Exit prints what err needs printed and returns the exit code for it:
// 0 for nil and ErrHelp, 2 for a UsageError, 1 for anything else.
func (p *Program) Exit(err error) int {
	var ue *UsageError
	switch {
	case err == nil || errors.Is(err, ErrHelp):
		return 0
	case errors.Is(err, ErrFailed):
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(p.stderr(), "%s\n\n%s", ue.Error(), ue.Usage)
		return 2
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, p.Name+": ") && !strings.HasPrefix(msg, p.Name+" ") {
		msg = p.Name + ": " + msg
	}
	fmt.Fprintln(p.stderr(), msg)
	return 1
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

func isVersion(arg string) bool { return arg == "-version" || arg == "--version" }

// Run runs the program with args (without the program's name) and
// returns what Exit turns into an exit code.
func (p *Program) Run(ctx context.Context, args []string) error {
	cmds := p.commands()
	// The usage declares p.Flags on a flag set of its own, which sets
	// their variables to their defaults: before parsing, not after.
	usage := p.usage()
	if p.Default != nil && (len(args) == 0 || strings.HasPrefix(args[0], "-") && !isHelp(args[0]) && !isVersion(args[0])) {
		fs := p.flags(p.Name, p.Default, usage)
		if p.Flags != nil {
			p.Flags(fs.FlagSet)
		}
		return p.Default.Run(ctx, fs, args)
	}
	root := flag.NewFlagSet(p.Name, flag.ContinueOnError)
	root.SetOutput(io.Discard)
	root.Usage = func() {}
	if p.Flags != nil {
		p.Flags(root)
	}
	version := root.Bool("version", false, "print the version and exit")
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(p.stdout(), usage)
			return ErrHelp
		}
		return &UsageError{Cmd: p.Name, Msg: err.Error(), Usage: usage}
	}
	if *version {
		fmt.Fprintln(p.stdout(), Version(p.Name))
		return ErrHelp
	}
	rest := root.Args()
	if len(rest) == 0 {
		return &UsageError{Cmd: p.Name, Msg: "which command?", Usage: usage}
	}
	if isHelp(rest[0]) {
		if rest[0] == "help" && len(rest) > 1 { // help COMMAND…: COMMAND… -h
			return p.dispatch(ctx, p.Name, cmds, append(rest[1:len(rest):len(rest)], "-h"), usage)
		}
		fmt.Fprint(p.stdout(), usage)
		return ErrHelp
	}
	return p.dispatch(ctx, p.Name, cmds, rest, usage)
}

// dispatch runs the command of cmds that args[0] names.
func (p *Program) dispatch(ctx context.Context, path string, cmds []*Command, args []string, usage string) error {
	var c *Command
	for _, x := range cmds {
		if x.Name == args[0] {
			c = x
		}
	}
	if c == nil {
		return &UsageError{Cmd: path, Msg: fmt.Sprintf("unknown command %q", args[0]), Usage: usage}
	}
	path += " " + c.Name
	if c.Deprecated != "" {
		fmt.Fprintf(p.stderr(), "%s: deprecated: use %s\n", path, c.Deprecated)
	}
	if c.Run != nil {
		return c.Run(ctx, p.flags(path, c, p.leafUsage(path, c)), args[1:])
	}
	gusage := p.groupUsage(path, c)
	switch {
	case len(args) == 1:
		return &UsageError{Cmd: path, Msg: "which command?", Usage: gusage}
	case args[1] == "help" && len(args) > 2: // help COMMAND…: COMMAND… -h
		return p.dispatch(ctx, path, c.Commands, append(args[2:len(args):len(args)], "-h"), gusage)
	case isHelp(args[1]):
		fmt.Fprint(p.stdout(), gusage)
		return ErrHelp
	}
	return p.dispatch(ctx, path, c.Commands, args[1:], gusage)
}

// commands are p's commands and version.
func (p *Program) commands() []*Command {
	for _, c := range p.Commands {
		if c.Name == "version" {
			return p.Commands
		}
	}
	return append(p.Commands[:len(p.Commands):len(p.Commands)], &Command{Name: "version",
		Summary: "print the module version, VCS revision and Go version",
		Run: func(ctx context.Context, fs *Flags, args []string) error {
			if err := fs.Parse(args); err != nil {
				return err
			}
			fmt.Fprintln(fs.Stdout, Version(p.Name))
			return nil
		}})
}

// synopses writes one line per leaf under c: its path and Args, and its
// summary.
func synopses(w io.Writer, path string, cmds []*Command) {
	for _, c := range cmds {
		if c.Deprecated != "" {
			continue
		}
		if c.Run == nil {
			synopses(w, path+" "+c.Name, c.Commands)
			continue
		}
		for _, args := range strings.Split(c.Args, "\n") {
			fmt.Fprintf(w, "  %s\n", strings.TrimSpace(path+" "+c.Name+" "+args))
		}
		fmt.Fprintf(w, "\t%s\n", c.Summary)
	}
}

// usage is the program's usage: its default mode, every command, and
// its Doc.
func (p *Program) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n\nusage:\n", p.Name, p.Summary)
	if p.Default != nil {
		for _, args := range strings.Split(p.Default.Args, "\n") {
			fmt.Fprintf(&b, "  %s %s\n", p.Name, args)
		}
		fmt.Fprintf(&b, "\t%s\n", p.Default.Summary)
	}
	synopses(&b, p.Name, p.commands())
	fs := flag.NewFlagSet(p.Name, flag.ContinueOnError)
	if p.Flags != nil {
		p.Flags(fs)
	}
	fs.Bool("version", false, "print the version and exit")
	if p.Default != nil {
		// The default mode's flags, as its Run declares them, with a
		// flag set that is never parsed.
		_ = p.Default.Run(context.Background(), &Flags{FlagSet: fs, declareOnly: true}, nil)
	}
	if hasFlags(fs) {
		fmt.Fprintf(&b, "\nflags%s:\n", map[bool]string{true: "", false: " before the command"}[p.Default != nil])
		fs.SetOutput(&b)
		fs.PrintDefaults()
	}
	fmt.Fprintf(&b, "\n%s COMMAND -h shows a command's flags; %s --version the version.\n", p.Name, p.Name)
	if p.Doc != "" {
		fmt.Fprintf(&b, "\n%s", p.Doc)
		if !strings.HasSuffix(p.Doc, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// groupUsage is the usage of a group: its subcommands.
func (p *Program) groupUsage(path string, c *Command) string {
	var b strings.Builder
	if c.Summary != "" {
		fmt.Fprintf(&b, "%s: %s\n\n", path, c.Summary)
	}
	b.WriteString("usage:\n")
	synopses(&b, path, c.Commands)
	fmt.Fprintf(&b, "\n%s COMMAND -h shows a command's flags.\n", path)
	if c.Doc != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimRight(c.Doc, "\n"))
	}
	return b.String()
}

// leafUsage is the usage of a leaf: its synopsis, summary and doc; the
// flags are added when it is printed.
func (p *Program) leafUsage(path string, c *Command) string {
	var b strings.Builder
	for i, args := range strings.Split(c.Args, "\n") {
		fmt.Fprintf(&b, "%s%s\n", map[bool]string{true: "usage: ", false: "       "}[i == 0], strings.TrimSpace(path+" "+args))
	}
	fmt.Fprintf(&b, "\n%s\n", c.Summary)
	if c.Doc != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimRight(c.Doc, "\n"))
	}
	return b.String()
}

func (p *Program) flags(path string, c *Command, usage string) *Flags {
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	f := &Flags{FlagSet: fs, Path: path, Stdout: p.stdout(), Stderr: p.stderr(), usage: usage, isProgram: c == p.Default}
	if f.isProgram {
		f.version = fs.Bool("version", false, "print the version and exit")
	}
	return f
}

// Flags is the flag set of one command, named after its path.
type Flags struct {
	*flag.FlagSet
	Path           string // "pscs admin enroll"
	Stdout, Stderr io.Writer
	usage          string
	isProgram      bool // the program's default mode: its usage has the flags already
	declareOnly    bool // the program's usage collects the flags: run nothing
	version        *bool
}

// Usage is the command's usage with its flags.
func (f *Flags) Usage() string {
	if f.isProgram || !hasFlags(f.FlagSet) {
		return f.usage
	}
	var b strings.Builder
	b.WriteString(f.usage)
	b.WriteString("\nflags:\n")
	f.SetOutput(&b)
	f.PrintDefaults()
	f.SetOutput(io.Discard)
	return b.String()
}

// Usagef is a UsageError of the command.
func (f *Flags) Usagef(format string, args ...any) error {
	return &UsageError{Cmd: f.Path, Msg: fmt.Sprintf(format, args...), Usage: f.Usage()}
}

// Parse parses the command's flags and refuses any argument that is not
// one.
func (f *Flags) Parse(args []string) error {
	_, err := f.ParseArgs(args)
	return err
}

// errDeclared stops a Run that only declares its flags (see
// Program.usage).
var errDeclared = errors.New("cli: flags declared")

// ParseArgs parses the command's flags, wherever they stand among its
// arguments, and returns its arguments, which must be as many as names
// (their names in the usage, for the refusal: "LOG", "ID"). -h prints the
// usage and returns ErrHelp; a bad flag, a missing or stray argument
// returns a UsageError.
func (f *Flags) ParseArgs(args []string, names ...string) ([]string, error) {
	if f.declareOnly {
		return nil, errDeclared
	}
	var pos []string
	for {
		err := f.FlagSet.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(f.Stdout, f.Usage())
			return nil, ErrHelp
		}
		if err != nil {
			return nil, f.Usagef("%v", err)
		}
		rest := f.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if f.version != nil && *f.version {
		fmt.Fprintln(f.Stdout, Version(strings.Fields(f.Path)[0]))
		return nil, ErrHelp
	}
	switch {
	case len(pos) > len(names):
		return nil, f.Usagef("unexpected argument %q", pos[len(names)])
	case len(pos) < len(names):
		return nil, f.Usagef("missing %s", strings.Join(names[len(pos):], " "))
	}
	return pos, nil
}

// Require refuses the invocation unless every flag named was given on
// the command line, naming those that were not with their usage.
func (f *Flags) Require(names ...string) error {
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var missing []string
	for _, n := range names {
		if !set[n] {
			fl := f.Lookup(n)
			if fl == nil {
				panic("cli: Require of an undeclared flag -" + n)
			}
			name, usage := flag.UnquoteUsage(fl)
			if strings.Contains(fl.Usage, "`") {
				n += " " + name
			}
			missing = append(missing, fmt.Sprintf("-%s: %s", n, usage))
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return f.Usagef("missing %s", missing[0])
	}
	return f.Usagef("missing %s", strings.Join(missing, "; "))
}

// Given reports whether the flag named was given on the command line.
func (f *Flags) Given(name string) bool {
	given := false
	f.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	return given
}

// NoPCSC explains err, an error of opening PC/SC that says the service is
// not there, with what fixes it.
func NoPCSC(err error) error {
	where := "its default socket"
	if s := os.Getenv("PCSCLITE_CSOCK_NAME"); s != "" {
		where = "PCSCLITE_CSOCK_NAME=" + s
	}
	return fmt.Errorf("no PC/SC service (pcscd) at %s: start pcscd (systemctl start pcscd.socket, or pcscd -f), "+
		"or set PCSCLITE_CSOCK_NAME to the socket of the pcscd to use (%w)", where, err)
}

// Version is the program's version from the build information: its
// module version, VCS revision and time (with "+dirty" if the tree was
// modified), and the Go version that built it.
func Version(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return prog + " (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, when, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", prog, v)
	if bi.Main.Path != "" {
		fmt.Fprintf(&b, " (%s)", bi.Main.Path)
	}
	if rev != "" {
		fmt.Fprintf(&b, " revision %s%s", rev, dirty)
		if when != "" {
			fmt.Fprintf(&b, " of %s", when)
		}
	} else {
		b.WriteString(" revision unknown (built without VCS information)")
	}
	fmt.Fprintf(&b, ", %s", bi.GoVersion)
	return b.String()
}
