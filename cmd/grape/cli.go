package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// command is one `grape` subcommand. Flags are registered in setup and can
// also come from GRAPE_<FLAG_NAME> environment variables (or the config file),
// so an agent can be configured the way systemd units and containers are.
type command struct {
	name    string // "config apply"
	args    string // positional arguments, for usage
	summary string
	long    string
	// flags registers the command's flags on fs, bound to variables of this
	// invocation, and returns the function that runs it. nil: a group such as
	// "config" that only lists its subcommands.
	flags func(fs *flag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, cio *cmdIO, args []string) error

// cmdIO is what a command may touch besides the network.
type cmdIO struct {
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader
	getenv func(string) string
}

// usageError is a mistake in how a command was called (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries an exit code a command chose (e.g. `grape logs --follow`
// exits non-zero when the deployment failed) without a message of its own.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// envName is the environment variable that sets a flag.
func envName(flagName string) string {
	return "GRAPE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envFallbacks are other variables people already set for the same thing.
var envFallbacks = map[string][]string{
	"database-url": {"DATABASE_URL"},
}

// newFlagSet builds the command's flag set and its run function.
func (c *command) newFlagSet() (*flag.FlagSet, runFunc) {
	fs := flag.NewFlagSet("grape "+c.name, flag.ContinueOnError)
	// Parse errors are reported in one line by run, not with the whole usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs, c.flags(fs)
}

// printUsage writes the command's help text.
func (c *command) printUsage(out io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(out, "Usage: grape %s [flags] %s\n\n%s\n", c.name, c.args, c.summary)
	if c.long != "" {
		fmt.Fprintf(out, "\n%s\n", strings.TrimSpace(c.long))
	}
	if !hasFlags(fs) {
		return
	}
	fmt.Fprintf(out, "\nFlags (each also settable as the environment variable shown):\n")
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(out, "  --%s%s  [%s]\n      %s%s\n", f.Name, valueHint(f), envName(f.Name), f.Usage, def)
	})
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func valueHint(f *flag.Flag) string {
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return ""
	}
	if _, ok := f.Value.(interface{ Get() any }); ok {
		switch f.Value.(flag.Getter).Get().(type) {
		case int, int64, uint, uint64:
			return " N"
		case time.Duration:
			return " DURATION"
		}
	}
	return " VALUE"
}

// parse parses args, then fills every flag not given on the command line
// from its environment variable or the config file. It also allows flags after
// positional arguments (`grape logs ID --follow`), as people type them.
func (c *command) parse(fs *flag.FlagSet, args []string, getenv func(string) string, file map[string]string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			positional = append(positional, rest[1:]...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		source, v := envName(f.Name), getenv(envName(f.Name))
		for _, alt := range envFallbacks[f.Name] {
			if v == "" {
				source, v = alt, getenv(alt)
			}
		}
		if v == "" {
			if fv, ok := file[f.Name]; ok {
				source, v = "config file key "+f.Name, fv
			}
		}
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = usagef("%s: invalid value for --%s: %v", source, f.Name, serr)
		}
	})
	return positional, err
}

// commands is the registry, filled by init functions in cmd_*.go.
var commands []*command

func register(c *command) { commands = append(commands, c) }

// find resolves the longest command name that prefixes args.
func find(args []string) (*command, []string) {
	var best *command
	bestLen := 0
	for _, c := range commands {
		parts := strings.Fields(c.name)
		if len(parts) <= len(args) && len(parts) > bestLen && equalPrefix(parts, args) {
			best, bestLen = c, len(parts)
		}
	}
	if best == nil {
		return nil, args
	}
	return best, args[bestLen:]
}

func equalPrefix(parts, args []string) bool {
	for i, p := range parts {
		if args[i] != p {
			return false
		}
	}
	return true
}

func sortedCommands() []*command {
	out := append([]*command(nil), commands...)
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "grape — a pull-based GitOps agent for Terraform\n\nUsage: grape <command> [flags] [args]\n\nCommands:\n")
	for _, c := range sortedCommands() {
		fmt.Fprintf(w, "  %-18s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `grape <command> --help` for a command's flags. Every flag can also be set as GRAPE_<FLAG_NAME>.\n")
}

// run executes one invocation and returns the process exit code.
func run(ctx context.Context, args []string, cio *cmdIO) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
		printHelp(cio.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, rest := find(args)
	if c == nil {
		fmt.Fprintf(cio.stderr, "grape: unknown command %q (run `grape help`)\n", strings.Join(args, " "))
		return 2
	}
	if c.flags == nil { // a group such as "config": list its subcommands
		fmt.Fprintf(cio.stdout, "Usage: grape %s <subcommand>\n\n", c.name)
		for _, sub := range sortedCommands() {
			if strings.HasPrefix(sub.name, c.name+" ") {
				fmt.Fprintf(cio.stdout, "  %-18s %s\n", sub.name, sub.summary)
			}
		}
		return 2
	}
	fs, runCmd := c.newFlagSet()
	file, err := loadConfigFile(cio.getenv)
	if err == nil {
		err = checkFileKeys(file)
	}
	if err != nil {
		fmt.Fprintf(cio.stderr, "grape %s: %v\n", c.name, err)
		return 2
	}
	positional, err := c.parse(fs, rest, cio.getenv, file)
	if errors.Is(err, flag.ErrHelp) {
		c.printUsage(cio.stderr, fs)
		return 0
	}
	if err != nil {
		fmt.Fprintf(cio.stderr, "grape %s: %v (see grape %s --help)\n", c.name, err, c.name)
		return 2
	}
	err = runCmd(ctx, cio, positional)
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(cio.stderr, "grape %s: %v\n", c.name, err)
		return 2
	default:
		fmt.Fprintf(cio.stderr, "grape %s: %v\n", c.name, oneLine(err))
		return 1
	}
}

// oneLine keeps error output to one line: a person reads the first; the
// logs hold the rest.
func oneLine(err error) string {
	s := strings.TrimSpace(err.Error())
	s = strings.ReplaceAll(s, "\r", "")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// checkFileKeys refuses config file keys that are no flag of any command: a
// typo there would otherwise be ignored silently. (One file serves every
// command, so a key only needs to be some command's flag.)
func checkFileKeys(file map[string]string) error {
	if len(file) == 0 {
		return nil
	}
	known := map[string]bool{}
	for _, c := range commands {
		if c.flags == nil {
			continue
		}
		fs, _ := c.newFlagSet()
		fs.VisitAll(func(f *flag.Flag) { known[f.Name] = true })
	}
	for k := range file {
		if !known[k] {
			return usagef("config file (GRAPE_CONFIG_FILE): %q is not a grape flag (see docs/cli.md)", k)
		}
	}
	return nil
}

// loadConfigFile reads GRAPE_CONFIG_FILE when set: lines of `flag-name = value`
// (or `GRAPE_FLAG_NAME=value`, so the systemd env file works too).
func loadConfigFile(getenv func(string) string) (map[string]string, error) {
	path := getenv("GRAPE_CONFIG_FILE")
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file (GRAPE_CONFIG_FILE): %w", err)
	}
	out := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("config file %s line %d: want `name = value`, got %q", path, i+1, line)
		}
		k = strings.TrimSpace(k)
		if strings.HasPrefix(k, "GRAPE_") {
			k = strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "GRAPE_")), "_", "-")
		}
		v = strings.Trim(strings.TrimSpace(v), `"`)
		out[k] = v
	}
	return out, nil
}
