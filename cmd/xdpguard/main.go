// Command xdpguard stops a Linux host from being used in, or flattened by, a
// memcached UDP amplification attack: it attaches an XDP program that drops
// UDP to and from protected ports at the driver, and optionally a TC egress
// program that stops amplified answers from leaving.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/loader"
)

// version is set at build time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	pinPathEnv  = "XDPGUARD_PIN_PATH"
	programName = "xdpguard"
)

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// cli is what every command gets: where to write and which state to use.
type cli struct {
	ctx     context.Context
	stdout  io.Writer
	stderr  io.Writer
	pinPath string
}

func (c *cli) warn(msg string) { fmt.Fprintf(c.stderr, "%s: warning: %s\n", programName, msg) }

// open opens the pinned state to change it; create makes it when missing.
func (c *cli) open(create bool) (*loader.Guard, error) {
	return loader.Open(c.pinPath, create)
}

// read opens the pinned state to read it, taking no lock.
func (c *cli) read() (*loader.Guard, error) {
	return loader.OpenReadOnly(c.pinPath)
}

// command is one subcommand: its flags, its help and what it does.
type command struct {
	name    string
	args    string // the synopsis after the name
	summary string
	help    string // what it does, at length
	example string
	flags   func(fs *pflag.FlagSet)
	run     func(c *cli, fs *pflag.FlagSet, args []string) error
}

var commands []*command // filled by init in each command's file

func lookup(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

const overview = `xdpguard drops memcached UDP amplification traffic in the kernel, at the driver.

It attaches an XDP program that drops UDP to a protected port (this host used
as a reflector) and from a protected port (a reflected flood aimed at this
host), later IP fragments included; with --egress, a TC program also stops
amplified answers from leaving. Protection lives on in the kernel after
xdpguard exits; allow lists, ports and mode change live.
`

func globalFlags(pinPath *string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(programName, pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.StringVar(pinPath, "pin-path", "", "where xdpguard pins its state (default $"+pinPathEnv+", else "+loader.DefaultPinPath+")")
	fs.BoolP("help", "h", false, "show this help")
	return fs
}

func printOverview(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\nUsage: %s [--pin-path DIR] COMMAND [ARGS]\n\nCommands:\n", overview, programName)
	sorted := append([]*command(nil), commands...)
	sort.SliceStable(sorted, func(i, j int) bool { return order(sorted[i].name) < order(sorted[j].name) })
	for _, cmd := range sorted {
		fmt.Fprintf(w, "  %-10s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags:\n%s", fs.FlagUsages())
	fmt.Fprintf(w, `
Examples:
  sudo xdpguard attach eth0 --egress      protect eth0, both directions
  sudo xdpguard allow add 192.0.2.0/24    trust a peer that uses memcached UDP
  sudo xdpguard stats --watch 1s          per-second rates per reason

Run '%s COMMAND --help' for a command's flags and examples.
`, programName)
}

var commandOrder = []string{"attach", "detach", "status", "stats", "allow", "ports", "mode", "fragments", "agent", "check", "version"}

func order(name string) int {
	for i, n := range commandOrder {
		if n == name {
			return i
		}
	}
	return len(commandOrder)
}

// run is the whole CLI with its effects on the given writers; it returns the
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var pinPath string
	gfs := globalFlags(&pinPath)
	gfs.SetOutput(io.Discard)
	if err := gfs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", programName, err, programName)
		return exitUsage
	}
	if help, _ := gfs.GetBool("help"); help {
		printOverview(stdout, gfs)
		return exitOK
	}
	rest := gfs.Args()
	if len(rest) == 0 {
		printOverview(stderr, gfs)
		return exitUsage
	}
	if pinPath == "" {
		pinPath = os.Getenv(pinPathEnv)
	}
	if pinPath == "" {
		pinPath = loader.DefaultPinPath
	}

	name := rest[0]
	if name == "help" {
		if len(rest) > 1 && lookup(rest[1]) != nil {
			printCommandHelp(stdout, lookup(rest[1]), newFlagSet(lookup(rest[1])))
		} else {
			printOverview(stdout, gfs)
		}
		return exitOK
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "%s: unknown command %q: one of %s\n", programName, name, strings.Join(commandOrder, ", "))
		return exitUsage
	}
	fs := newFlagSet(cmd)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(rest[1:]); err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\nRun '%s %s --help' for usage.\n", programName, name, err, programName, name)
		return exitUsage
	}
	if help, _ := fs.GetBool("help"); help {
		printCommandHelp(stdout, cmd, fs)
		return exitOK
	}

	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, pinPath: pinPath}
	err := cmd.run(c, fs, fs.Args())
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s %s: %v\nRun '%s %s --help' for usage.\n", programName, name, err, programName, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "%s %s: %v\n", programName, name, err)
	return exitFailed
}

func newFlagSet(cmd *command) *pflag.FlagSet {
	fs := pflag.NewFlagSet(cmd.name, pflag.ContinueOnError)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.BoolP("help", "h", false, "show this help")
	return fs
}

func printCommandHelp(w io.Writer, cmd *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s [--pin-path DIR] %s %s\n\n%s\n", programName, cmd.name, cmd.args, strings.TrimSpace(cmd.help))
	if u := fs.FlagUsages(); u != "" {
		fmt.Fprintf(w, "\nFlags:\n%s", u)
	}
	if cmd.example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(cmd.example, "\n"))
	}
}
