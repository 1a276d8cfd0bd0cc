package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/loader"
)

func init() {
	commands = append(commands, allowCmd, portsCmd, modeCmd, fragmentsCmd)
}

var allowCmd = &command{
	name:    "allow",
	args:    "add|del CIDR... | list [--json] | load FILE | flush",
	summary: "trusted peers that may use protected ports",
	help: `Manages the allow list: peers whose UDP to or from a protected port passes
(ingress: by source address; egress: by destination address). IPv4 and IPv6
prefixes live in two LPM tries shared by every attached interface; changes
are live. A bare address means one host (/32 or /128).

  add CIDR...   add prefixes
  del CIDR...   remove prefixes (each must be on the list)
  list          print the list
  load FILE     add every prefix in FILE, one per line, '#' starts a comment
                ('-' reads standard input); the whole file is checked first
  flush         empty the list

Every prefix is checked before anything changes: one bad entry changes
nothing. A prefix with host bits set (10.1.2.3/8) is refused.`,
	example: `  sudo xdpguard allow add 192.0.2.0/24 2001:db8::/48
  sudo xdpguard allow load /etc/xdpguard/allow.txt
  sudo xdpguard allow list --json`,
	flags: func(fs *pflag.FlagSet) { fs.Bool("json", false, "list: print JSON") },
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) == 0 {
			return usagef("give an action: add, del, list, load or flush")
		}
		action, rest := args[0], args[1:]
		switch action {
		case "add", "del":
			if len(rest) == 0 {
				return usagef("allow %s needs at least one CIDR, e.g. 192.0.2.0/24", action)
			}
			ps, err := parsePrefixes(rest)
			if err != nil {
				return usageError{err.Error()}
			}
			want := loader.DesiredState{AllowAdd: ps}
			done := fmt.Sprintf("allowed %d prefix(es)", len(ps))
			if action == "del" {
				want = loader.DesiredState{AllowDel: ps}
				done = fmt.Sprintf("removed %d prefix(es)", len(ps))
			}
			return changeAllow(c, action == "add", want, loader.ApplyScope{AllowEdit: true}, done)
		case "load":
			if len(rest) != 1 {
				return usagef("allow load takes one FILE ('-' for standard input)")
			}
			ps, err := readPrefixFile(rest[0])
			if err != nil {
				return err
			}
			return changeAllow(c, true, loader.DesiredState{AllowAdd: ps}, loader.ApplyScope{AllowEdit: true},
				fmt.Sprintf("allowed %d prefix(es) from %s", len(ps), rest[0]))
		case "list":
			if len(rest) > 0 {
				return usagef("allow list takes no arguments")
			}
			asJSON, _ := fs.GetBool("json")
			var ps []netip.Prefix
			err := readConfig(c, func(g *loader.Guard) (err error) {
				ps, err = g.Maps.AllowList()
				return err
			})
			if err != nil && !errors.Is(err, loader.ErrNotSetUp) {
				return err
			}
			if asJSON {
				return writeJSON(c.stdout, allowReport(ps))
			}
			for _, p := range ps {
				fmt.Fprintln(c.stdout, p)
			}
			return nil
		case "flush":
			if len(rest) > 0 {
				return usagef("allow flush takes no arguments")
			}
			return changeAllow(c, false, loader.DesiredState{}, loader.ApplyScope{Allow: true}, "allow list flushed")
		}
		return usagef("unknown action %q: use add, del, list, load or flush", action)
	},
}

// changeAllow changes the allow list in one Apply: additions before
// deletions, and a failure changes nothing.
func changeAllow(c *cli, create bool, want loader.DesiredState, scope loader.ApplyScope, done string) error {
	return withConfig(c, create, func(g *loader.Guard) error {
		if _, err := g.Apply(want, loader.ApplyOptions{Scope: scope}); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, done)
		return nil
	})
}

// changeConfig applies edit to the live configuration in one Apply.
func changeConfig(g *loader.Guard, edit func(*loader.Config) error) error {
	cfg, err := g.Maps.ReadConfig()
	if err != nil {
		return err
	}
	if err := edit(&cfg); err != nil {
		return err
	}
	_, err = g.Apply(loader.DesiredState{Config: cfg}, loader.ApplyOptions{Scope: loader.ApplyScope{Config: true}})
	return err
}

// allowListJSON is `allow list --json`.
type allowListJSON struct {
	IPv4 []string `json:"ipv4"`
	IPv6 []string `json:"ipv6"`
}

func allowReport(ps []netip.Prefix) allowListJSON {
	out := allowListJSON{IPv4: []string{}, IPv6: []string{}}
	for _, p := range ps {
		if p.Addr().Is4() {
			out.IPv4 = append(out.IPv4, p.String())
		} else {
			out.IPv6 = append(out.IPv6, p.String())
		}
	}
	return out
}

func parsePrefixes(args []string) ([]netip.Prefix, error) {
	ps := make([]netip.Prefix, 0, len(args))
	for _, a := range args {
		p, err := loader.ParsePrefix(a)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func readPrefixFile(name string) ([]netip.Prefix, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("open allow file: %w", err)
		}
		defer f.Close()
		r = f
	}
	return loader.ParsePrefixes(r, name)
}

// withConfig opens the state and runs fn. Commands that change the
// configuration may run before any attach (create): the programs then start
// with it.
func withConfig(c *cli, create bool, fn func(*loader.Guard) error) error {
	return withGuard(c.open(create))(fn)
}

// readConfig is withConfig for commands that only read: no lock is taken.
func readConfig(c *cli, fn func(*loader.Guard) error) error {
	return withGuard(c.read())(fn)
}

func withGuard(g *loader.Guard, err error) func(func(*loader.Guard) error) error {
	return func(fn func(*loader.Guard) error) error {
		if err != nil {
			return err
		}
		defer g.Close()
		return fn(g)
	}
}

var portsCmd = &command{
	name:    "ports",
	args:    "add PORT... [--direction both|request|response] [--expiry DURATION] | del PORT... | list [--json]",
	summary: "the protected UDP ports (default 11211) and their directions",
	help: `Manages the protected UDP ports: datagrams to one are requests, from one are
responses. Each port has a direction:
  both      requests and responses are dropped, at both hooks, unless the
            peer is allowlisted (the default; memcached's protection)
  request   requests arriving and responses leaving are dropped: a service
            here must not reflect; this host may still be a client
  response  responses arriving are dropped unless they answer a request this
            host sent (solicited; drop_unsolicited otherwise): this host is
            not flooded with reflected answers and can still use the service.
            The requests are recorded by the egress program: attach with
            --egress, or every reply is dropped. --expiry (default 30s, 1s
            to 1h) is how long a request waits for its reply.
add sets the direction of ports already protected. The ports are two
65,536-bit bitmaps read by every attached program; changes are live, and
adding a port never unprotects another, even for an instant.`,
	example: `  sudo xdpguard ports add 11212
  sudo xdpguard ports add 53 123 --direction response
  sudo xdpguard ports add 53 --direction response --expiry 10s
  sudo xdpguard ports del 11212
  sudo xdpguard ports list --json`,
	flags: func(fs *pflag.FlagSet) {
		fs.Bool("json", false, "list: print JSON")
		fs.String("direction", string(loader.DirBoth), "add: both, request or response")
		fs.String("expiry", "", "add, response ports: how long a request awaits its reply (1s to 1h; default 30s)")
	},
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) == 0 {
			return usagef("give an action: add, del or list")
		}
		action, rest := args[0], args[1:]
		switch action {
		case "add", "del":
			if len(rest) == 0 {
				return usagef("ports %s needs at least one PORT, e.g. 11211", action)
			}
			var ports []uint16
			for _, a := range rest {
				p, err := loader.ParsePort(a)
				if err != nil {
					return usageError{err.Error()}
				}
				ports = append(ports, p)
			}
			add, err := portSettings(fs, action, ports)
			if err != nil {
				return err
			}
			return withConfig(c, true, func(g *loader.Guard) error {
				var left int
				err := changeConfig(g, func(cfg *loader.Config) error {
					if action == "add" {
						cfg.Ports = setPorts(cfg.Ports, add)
					} else {
						for _, p := range ports {
							if !slices.ContainsFunc(cfg.Ports, func(q loader.Port) bool { return q.Number == p }) {
								return fmt.Errorf("port %d is not protected: see xdpguard ports list", p)
							}
						}
						cfg.Ports = slices.DeleteFunc(cfg.Ports, func(q loader.Port) bool { return slices.Contains(ports, q.Number) })
					}
					left = len(cfg.Ports)
					return nil
				})
				if err != nil {
					return err
				}
				if left == 0 {
					c.warn("no port is protected now: xdpguard passes everything (xdpguard ports add 11211)")
				}
				fmt.Fprintf(c.stdout, "%d port(s) protected\n", left)
				return warnEgressGap(c, g)
			})
		case "list":
			if len(rest) > 0 {
				return usagef("ports list takes no arguments")
			}
			asJSON, _ := fs.GetBool("json")
			cfg, err := currentConfig(c)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.stdout, struct {
					Ports []loader.PortSpec `json:"ports"`
				}{portSpecs(cfg.Ports)})
			}
			tw := table(c.stdout)
			fmt.Fprintln(tw, "PORT\tDIRECTION\tEXPIRY")
			for _, p := range portSpecs(cfg.Ports) {
				expiry := "-"
				if p.Expiry != "" {
					expiry = p.Expiry
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Port, p.Direction, expiry)
			}
			return tw.Flush()
		}
		return usagef("unknown action %q: use add, del or list", action)
	},
}

// portSettings reads --direction and --expiry for ports: the ports add
// sets. Both are refused where they mean nothing (del, list) and an expiry
// for a direction other than response.
func portSettings(fs *pflag.FlagSet, action string, ports []uint16) ([]loader.Port, error) {
	dirArg, _ := fs.GetString("direction")
	expArg, _ := fs.GetString("expiry")
	if action != "add" {
		if fs.Changed("direction") || fs.Changed("expiry") {
			return nil, usagef("--direction and --expiry go with ports add")
		}
		return nil, nil
	}
	dir, err := loader.ParseDirection(dirArg)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	var expiry time.Duration
	if expArg != "" {
		if dir != loader.DirResponse {
			return nil, usagef("--expiry is for response ports only: add --direction response, or drop --expiry")
		}
		if expiry, err = loader.ParseExpiry(expArg); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	out := make([]loader.Port, len(ports))
	for i, n := range ports {
		out[i] = loader.Port{Number: n, Direction: dir, Expiry: expiry}
	}
	return out, nil
}

// setPorts returns ports with each of add added, or put in place of the
// port of the same number.
func setPorts(ports, add []loader.Port) []loader.Port {
	out := slices.DeleteFunc(slices.Clone(ports), func(p loader.Port) bool {
		return slices.ContainsFunc(add, func(a loader.Port) bool { return a.Number == p.Number })
	})
	return append(out, add...)
}

// portSpecs are ports as output shows them; never nil, so JSON has [].
func portSpecs(ports []loader.Port) []loader.PortSpec {
	out := make([]loader.PortSpec, len(ports))
	for i, p := range ports {
		out[i] = p.Spec()
	}
	return out
}

// warnEgressGap warns when response ports have interfaces whose requests
// are not recorded (loader.EgressGap).
func warnEgressGap(c *cli, g *loader.Guard) error {
	gap, err := egressGap(g)
	if err != nil {
		return err
	}
	if gap != nil {
		c.warn(gap.String())
	}
	return nil
}

// egressGap is the live config's loader.EgressGap over every attachment.
func egressGap(g *loader.Guard) (*loader.EgressGap, error) {
	cfg, err := g.Maps.ReadConfig()
	if err != nil {
		return nil, err
	}
	atts, err := g.Attachments()
	if err != nil {
		return nil, err
	}
	return loader.FindEgressGap(cfg, atts), nil
}

// currentConfig is the live config, or the defaults when nothing is set up.
func currentConfig(c *cli) (loader.Config, error) {
	var cfg loader.Config
	err := readConfig(c, func(g *loader.Guard) (err error) {
		cfg, err = g.Maps.ReadConfig()
		return err
	})
	if errors.Is(err, loader.ErrNotSetUp) {
		return loader.DefaultConfig(), nil
	}
	return cfg, err
}

// settingRun is the run of a command that prints one setting with no
// argument and sets it with one: parse checks the argument and returns a
// function applying it to the config; show reads it back.
func settingRun(name, choices string, parse func(string) (func(*loader.Config), fmt.Stringer, error), show func(loader.Config) fmt.Stringer) func(*cli, *pflag.FlagSet, []string) error {
	return func(c *cli, fs *pflag.FlagSet, args []string) error {
		switch len(args) {
		case 0:
			cfg, err := currentConfig(c)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, show(cfg))
			return nil
		case 1:
			apply, v, err := parse(args[0])
			if err != nil {
				return usageError{err.Error()}
			}
			return withConfig(c, true, func(g *loader.Guard) error {
				if err := changeConfig(g, func(cfg *loader.Config) error { apply(cfg); return nil }); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "%s %s\n", name, v)
				return nil
			})
		}
		return usagef("%s takes at most one argument: %s", name, choices)
	}
}

var modeCmd = &command{
	name:    "mode",
	args:    "[enforce|monitor]",
	summary: "print or set the mode: enforce drops, monitor only counts",
	help: `With no argument, prints the mode. enforce drops what the policy drops;
monitor passes it and counts it as would_drop. The mode is host-wide: it
applies to every attached interface at once.`,
	example: `  sudo xdpguard mode monitor
  sudo xdpguard mode`,
	run: settingRun("mode", "enforce or monitor",
		func(s string) (func(*loader.Config), fmt.Stringer, error) {
			m, err := loader.ParseMode(s)
			return func(cfg *loader.Config) { cfg.Mode = m }, m, err
		},
		func(cfg loader.Config) fmt.Stringer { return cfg.Mode }),
}

var fragmentsCmd = &command{
	name:    "fragments",
	args:    "[track|strict]",
	summary: "print or set what happens to fragments whose first was never seen",
	help: `A later IP fragment carries no UDP header. xdpguard remembers the verdict of
each UDP first fragment and applies it to the fragments that follow it
(drop_fragment). This sets what happens to a later UDP fragment whose first
fragment was never seen (it arrived out of order, was evicted, or the
fragment was crafted):
  track   pass it (pass_orphan_fragment): the default, because reordering
          on real paths would otherwise break legitimate fragmented UDP
  strict  drop it (drop_orphan_fragment): for hosts under a fragment flood
With no argument, prints the policy.`,
	example: `  sudo xdpguard fragments strict
  sudo xdpguard fragments`,
	run: settingRun("fragments", "track or strict",
		func(s string) (func(*loader.Config), fmt.Stringer, error) {
			p, err := loader.ParseFragPolicy(s)
			return func(cfg *loader.Config) { cfg.FragPolicy = p }, p, err
		},
		func(cfg loader.Config) fmt.Stringer { return cfg.FragPolicy }),
}
