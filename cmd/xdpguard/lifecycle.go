package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/loader"
)

func init() {
	commands = append(commands, attachCmd, detachCmd, statusCmd, statsCmd)
}

var attachCmd = &command{
	name:    "attach",
	args:    "IFACE... [--mode auto|native|generic] [--egress] [--monitor] [--force]",
	summary: "protect interfaces (XDP ingress, optionally TC egress)",
	help: `Attaches xdpguard's XDP program to each interface through a pinned bpf_link,
so protection outlives this process. With --egress, also attaches the TC
egress program (tcx on Linux 6.6+, else a clsact qdisc and cls_bpf filter).

Attaching an attached interface again changes nothing; if this xdpguard
carries different programs (an upgrade), they replace the running ones
atomically, with no gap. The interfaces are those of the network namespace
xdpguard runs in; state is kept per namespace, so the same name in another
namespace is attached there separately. The whole command is one
transaction: if any interface fails, everything it changed is taken back
(interfaces it attached or upgraded, the mode, state it created) and the
host is left as it was.

--monitor sets the host-wide mode to monitor (count would_drop, drop nothing)
before the first interface is attached, so a new interface never drops;
without it the mode is left as it is (enforce on a first attach).`,
	example: `  sudo xdpguard attach eth0
  sudo xdpguard attach eth0 eth1 --egress
  sudo xdpguard attach eth0 --monitor        # observe first, enforce later
  sudo xdpguard attach eth0 --mode generic   # a driver without native XDP`,
	flags: func(fs *pflag.FlagSet) {
		fs.String("mode", "auto", "XDP mode: auto (native, else generic), native or generic")
		fs.Bool("egress", false, "also attach the TC egress program")
		fs.Bool("monitor", false, "set monitor mode: count what would be dropped, drop nothing")
		fs.Bool("force", false, "replace an XDP program that is not xdpguard's")
		fs.Bool("reload", false, "load the programs anew and swap them in even if unchanged")
		fs.String("tc-backend", "auto", "egress attachment: auto, tcx or legacy (cls_bpf)")
	},
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) == 0 {
			return usagef("name at least one interface, e.g. xdpguard attach eth0")
		}
		modeArg, _ := fs.GetString("mode")
		mode, err := loader.ParseXDPMode(modeArg)
		if err != nil {
			return usageError{err.Error()}
		}
		tcArg, _ := fs.GetString("tc-backend")
		backend, err := loader.ParseTCBackend(tcArg)
		if err != nil {
			return usageError{err.Error()}
		}
		egress, _ := fs.GetBool("egress")
		force, _ := fs.GetBool("force")
		reload, _ := fs.GetBool("reload")
		monitor, _ := fs.GetBool("monitor")
		want := loader.DesiredState{}
		for _, name := range args {
			want.Interfaces = append(want.Interfaces, loader.InterfaceSpec{Name: name, Mode: mode, Egress: egress, TCBackend: backend})
		}
		opts := loader.ApplyOptions{Scope: loader.ApplyScope{Interfaces: true}, Force: force, Reload: reload, Warn: c.warn}

		g, err := c.open(true)
		if err != nil {
			return err
		}
		defer g.Close()
		if monitor {
			if want.Config, err = g.Maps.ReadConfig(); err != nil {
				return err
			}
			want.Config.Mode = loader.ModeMonitor
			opts.Scope.Config = true
		}
		changes, err := g.Apply(want, opts)
		if err != nil {
			return err
		}
		printChanges(c, changes)
		changed := map[string]bool{}
		for _, ch := range changes {
			changed[ch.Interface] = true
		}
		have, err := g.AttachedHere()
		if err != nil {
			return err
		}
		for _, spec := range have {
			if slices.Contains(args, spec.Name) && !changed[spec.Name] {
				egress := "no egress"
				if spec.Egress {
					egress = "egress via " + string(spec.TCBackend)
				}
				fmt.Fprintf(c.stdout, "%s: unchanged (xdp %s, %s)\n", spec.Name, spec.Mode, egress)
			}
		}
		return warnEgressGap(c, g)
	},
}

// printChanges prints one line per change.
func printChanges(c *cli, changes []loader.Change) {
	for _, ch := range changes {
		fmt.Fprintln(c.stdout, ch)
	}
}

var detachCmd = &command{
	name:    "detach",
	args:    "IFACE... | --all | --all-namespaces",
	summary: "remove xdpguard from interfaces",
	help: `Removes everything attach made on each interface of this network namespace:
links, programs, counters, and a clsact qdisc it added. Only this namespace's
attachments are ever touched: the same interface name (and ifindex) in
another namespace is another interface, and keeps its protection. When no
namespace has an interface left, the shared maps (config, allow lists,
fragment table) and the pin directory go too.
--all detaches every interface of this namespace, and also cleans up after
interfaces that no longer exist. --all-namespaces detaches every interface
of every namespace and removes all state, to uninstall xdpguard; unlike the
others it cannot be rolled back if it fails half-way.`,
	example: `  sudo xdpguard detach eth0
  sudo xdpguard detach --all
  sudo xdpguard detach --all-namespaces     # uninstall: every namespace`,
	flags: func(fs *pflag.FlagSet) {
		fs.Bool("all", false, "detach every interface of this network namespace")
		fs.Bool("all-namespaces", false, "detach every interface of every network namespace and remove all state (uninstall)")
	},
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		all, _ := fs.GetBool("all")
		everywhere, _ := fs.GetBool("all-namespaces")
		if everywhere && (all || len(args) > 0) {
			return usagef("--all-namespaces takes no interfaces and no --all")
		}
		all = all || everywhere
		if all == (len(args) > 0) {
			return usagef("name interfaces or give --all, not both or neither")
		}
		g, err := c.open(false)
		if errors.Is(err, loader.ErrNotSetUp) {
			if all {
				fmt.Fprintln(c.stdout, "nothing attached")
				return nil
			}
			return fmt.Errorf("%s: %w", args[0], loader.ErrNotAttached)
		}
		if err != nil {
			return err
		}
		defer g.Close()
		if everywhere {
			changes, err := g.DetachEverywhere()
			printChanges(c, changes)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, "detached all in every network namespace; state removed")
			return nil
		}
		if all {
			changes, err := g.DetachAll()
			if err != nil {
				return err
			}
			printChanges(c, changes)
			if _, err := os.Stat(c.pinPath); err == nil {
				fmt.Fprintln(c.stdout, "detached all in this network namespace; other namespaces' attachments and the shared state stay")
				return nil
			}
			fmt.Fprintln(c.stdout, "detached all; state removed")
			return nil
		}
		changes, err := g.Detach(args...)
		if err != nil {
			return err
		}
		printChanges(c, changes)
		return nil
	},
}

// statusReport is `status --json`: a stable interface for scripts.
type statusReport struct {
	Attachments []loader.Attachment `json:"attachments"`
	Config      configReport        `json:"config"`
	// EgressGap: response ports whose requests leave by interfaces
	// without egress, so their replies are all dropped; absent when none.
	EgressGap *loader.EgressGap `json:"egress_gap,omitempty"`
}

type configReport struct {
	Mode      string            `json:"mode"`
	Ports     []loader.PortSpec `json:"ports"`
	Allow     allowCounts       `json:"allow"`
	Fragments string            `json:"fragments"`
}

type allowCounts struct {
	IPv4 int `json:"ipv4"`
	IPv6 int `json:"ipv6"`
}

var statusCmd = &command{
	name:    "status",
	args:    "[--json]",
	summary: "what is attached where, and the live configuration",
	help: `Shows each attached interface and hook with its mode and program id, in every
network namespace (NETNS is the namespace's inode, as lsns -t net shows it),
and the configuration every attached program reads: mode, protected ports,
allow list sizes, fragment policy.`,
	example: `  sudo xdpguard status
  sudo xdpguard status --json | jq '.attachments[].interface'`,
	flags: func(fs *pflag.FlagSet) { fs.Bool("json", false, "print JSON") },
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) > 0 {
			return usagef("status takes no arguments")
		}
		asJSON, _ := fs.GetBool("json")
		rep := statusReport{Attachments: []loader.Attachment{}}
		g, err := c.read()
		switch {
		case errors.Is(err, loader.ErrNotSetUp):
			def := loader.DefaultConfig()
			rep.Config = configReport{Mode: def.Mode.String(), Ports: portSpecs(def.Ports), Fragments: def.FragPolicy.String()}
		case err != nil:
			return err
		default:
			defer g.Close()
			if rep.Attachments, err = g.Attachments(); err != nil {
				return err
			}
			if rep.Attachments == nil {
				rep.Attachments = []loader.Attachment{}
			}
			if rep.Config, err = readConfigReport(g); err != nil {
				return err
			}
			if rep.EgressGap, err = egressGap(g); err != nil {
				return err
			}
		}
		if asJSON {
			return writeJSON(c.stdout, rep)
		}
		printStatus(c.stdout, c.pinPath, rep)
		return nil
	},
}

func readConfigReport(g *loader.Guard) (configReport, error) {
	cfg, err := g.Maps.ReadConfig()
	if err != nil {
		return configReport{}, err
	}
	v4, v6, err := g.AllowCounts()
	if err != nil {
		return configReport{}, err
	}
	return configReport{
		Mode:      cfg.Mode.String(),
		Ports:     portSpecs(cfg.Ports),
		Allow:     allowCounts{IPv4: v4, IPv6: v6},
		Fragments: cfg.FragPolicy.String(),
	}, nil
}

// statsReport is `stats --json`: a stable interface for scripts.
type statsReport struct {
	Interfaces []loader.InterfaceStats `json:"interfaces"`
}

var statsCmd = &command{
	name:    "stats",
	args:    "[IFACE...] [--json | --prometheus] [--watch INTERVAL]",
	summary: "packets and bytes per interface, hook and reason",
	help: `Prints exact counters, summed over CPUs: every packet a program saw is
counted once, under one reason:
  pass                  not UDP, or no protected port
  allowlisted           protected port, peer on the allow list
  drop_request          UDP to a protected port
  drop_response         UDP from a protected port
  drop_fragment         a later fragment of a dropped datagram
  drop_orphan_fragment  strict: a later UDP fragment whose first was never seen
  drop_malformed        could be UDP, headers unreadable
  would_drop            monitor mode: would have been dropped
  pass_orphan_fragment  track: a later UDP fragment whose first was never seen
With --watch, prints per-second rates every INTERVAL until interrupted.
With --prometheus, prints the counters, what is attached, the config and map
fill in Prometheus' text format, for node_exporter's textfile collector: the
series the agent serves at /metrics, without the agent's own.`,
	example: `  sudo xdpguard stats
  sudo xdpguard stats eth0 --json
  sudo xdpguard stats --watch 1s
  sudo xdpguard stats --prometheus > /var/lib/node_exporter/xdpguard.prom.$$ &&
    mv /var/lib/node_exporter/xdpguard.prom.$$ /var/lib/node_exporter/xdpguard.prom`,
	flags: func(fs *pflag.FlagSet) {
		fs.Bool("json", false, "print JSON")
		fs.Bool("prometheus", false, "print Prometheus text format (for node_exporter's textfile collector)")
		fs.Duration("watch", 0, "print per-second rates every INTERVAL (e.g. 1s)")
		fs.Int("count", 0, "with --watch: stop after this many samples (0: until interrupted)")
	},
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		asJSON, _ := fs.GetBool("json")
		prom, _ := fs.GetBool("prometheus")
		watch, _ := fs.GetDuration("watch")
		count, _ := fs.GetInt("count")
		if prom && (asJSON || watch > 0) {
			return usagef("--prometheus prints totals once: leave out --json and --watch")
		}
		if watch < 0 || (watch > 0 && watch < 10*time.Millisecond) {
			return usagef("invalid --watch %s: give an interval of 10ms or more, e.g. 1s", watch)
		}
		g, err := c.read()
		if err != nil {
			return err
		}
		defer g.Close()
		if watch == 0 {
			st, err := g.Stats(args...)
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return writeJSON(c.stdout, statsReport{Interfaces: nonNil(st)})
			case prom:
				return printPrometheus(c.stdout, guardSource(g, args))
			}
			printStats(c.stdout, st)
			return nil
		}
		return watchStats(c, g, args, watch, count, asJSON)
	},
}

func nonNil(st []loader.InterfaceStats) []loader.InterfaceStats {
	if st == nil {
		return []loader.InterfaceStats{}
	}
	return st
}

// watchStats prints per-second rates from deltas between samples.
func watchStats(c *cli, g *loader.Guard, names []string, every time.Duration, count int, asJSON bool) error {
	prev, err := g.Stats(names...)
	if err != nil {
		return err
	}
	last := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; count == 0 || n < count; n++ {
		select {
		case <-c.ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := g.Stats(names...)
		if err != nil {
			return err
		}
		now := time.Now()
		rates := statsRates(prev, cur, now.Sub(last))
		prev, last = cur, now
		if asJSON {
			if err := writeJSON(c.stdout, statsReport{Interfaces: nonNil(rates)}); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(c.stdout, "%s  (per second)\n", now.Format(time.TimeOnly))
		printStats(c.stdout, rates)
		fmt.Fprintln(c.stdout)
	}
	return nil
}

// statsRates turns two samples into per-second rates, matching rows by
// interface and hook.
func statsRates(prev, cur []loader.InterfaceStats, elapsed time.Duration) []loader.InterfaceStats {
	type key struct {
		ifindex int
		hook    string
	}
	old := map[key]loader.InterfaceStats{}
	for _, s := range prev {
		old[key{s.Ifindex, s.Hook}] = s
	}
	secs := elapsed.Seconds()
	var out []loader.InterfaceStats
	for _, s := range cur {
		r := loader.InterfaceStats{Interface: s.Interface, Ifindex: s.Ifindex, Hook: s.Hook, Counters: map[string]loader.Counter{}}
		o := old[key{s.Ifindex, s.Hook}]
		for reason, c := range s.Counters {
			p := o.Counters[reason]
			r.Counters[reason] = loader.Counter{
				Packets: uint64(float64(c.Packets-min(p.Packets, c.Packets))/secs + 0.5),
				Bytes:   uint64(float64(c.Bytes-min(p.Bytes, c.Bytes))/secs + 0.5),
			}
		}
		out = append(out, r)
	}
	return out
}
