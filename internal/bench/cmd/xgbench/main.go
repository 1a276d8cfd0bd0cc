// Command xgbench runs xdpguard's benchmarks (per-packet cost against
// xdp-filter and the XDP_DROP floor, allow-list scaling, a trafgen flood of
// a real memcached against nftables, the drop path with sampling off and
// on, map memory, the agent's own RSS and CPU) in one process on this
// machine, and writes docs/benchmarks.md with a plot. `make bench` runs it
// as root; it attaches only to veths in namespaces it creates.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/xdpguard/xdpguard/internal/bench/allowlist"
	"github.com/xdpguard/xdpguard/internal/bench/flood"
	"github.com/xdpguard/xdpguard/internal/bench/footprint"
	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/bench/memory"
	"github.com/xdpguard/xdpguard/internal/bench/perpacket"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/bench/sampling"
	"github.com/xdpguard/xdpguard/internal/bench/solicit"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// options are the command line; the defaults are what `make bench` runs.
type options struct {
	out, plot      string
	xdpguard       string
	xdpFilter      string
	previous       string
	rounds, repeat int
	allowRounds    int
	allowRepeat    int
	loadSizes      []int
	window         time.Duration
	// The agent-footprint step's.
	agentIdle                               time.Duration
	agentPairs, agentMatchEvery, agentBatch int
	only                                    []string
}

// Names of the namespaces and the pin path the benchmark creates; a run
// killed before its clean-up leaves them, and the next run removes them.
const (
	floodPrefix = "xgbf"
	loadNS      = "xgbl"
	pinRoot     = "/sys/fs/bpf/xdpguard-bench"
)

func main() {
	var o options
	fs := pflag.NewFlagSet("xgbench", pflag.ContinueOnError)
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write")
	fs.StringVar(&o.plot, "plot", "docs/benchmarks.svg", "plot of per-packet costs to write (linked from the report by file name)")
	fs.StringVar(&o.xdpguard, "xdpguard", "bin/xdpguard", "xdpguard binary for the CLI load and flood runs")
	fs.StringVar(&o.xdpFilter, "xdp-filter-object", progs.XDPFilterObject, "xdp-filter's compiled BPF object")
	fs.StringVar(&o.previous, "previous-object", progs.PreviousObject, "the release before issue 14's BPF object, measured beside the current one")
	fs.IntVar(&o.rounds, "rounds", 31, "interleaved rounds per frame and program")
	fs.IntVar(&o.repeat, "repeat", 2_000_000, "BPF_PROG_TEST_RUN repeats per round")
	fs.IntVar(&o.allowRounds, "allow-rounds", 21, "interleaved rounds per allow-list size")
	fs.IntVar(&o.allowRepeat, "allow-repeat", 1_000_000, "repeats per allow-list round")
	fs.IntSliceVar(&o.loadSizes, "load-sizes", []int{100_000, 1_000_000}, "allow-list sizes loaded through the CLI")
	fs.DurationVar(&o.window, "window", 10*time.Second, "flood measuring time per setup (two windows of half, in A B C D D C B A order)")
	fs.DurationVar(&o.agentIdle, "agent-idle", 5*time.Second, "how long the agent is measured idle")
	fs.IntVar(&o.agentPairs, "agent-pairs", 1000, "veth pairs created and deleted while the agent runs")
	fs.IntVar(&o.agentMatchEvery, "agent-match-every", 10, "one pair in this many has an end the agent protects (each attach verifies programs)")
	fs.IntVar(&o.agentBatch, "agent-batch", 100, "veth pairs created, then deleted, at a time")
	fs.StringSliceVar(&o.only, "only", nil, "run only these steps (by name, e.g. \"drop sampling\"), print what they have of the report, write nothing")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "xgbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "xgbench:", err)
		os.Exit(1)
	}
}

// report is everything one run measured.
type report struct {
	machine   machine
	started   time.Time
	elapsed   time.Duration
	frames    []frames.Frame
	perPacket *perpacket.Result
	sampling  *sampling.Result
	solicit   *solicit.Result
	footprint *footprint.Result
	allow     []allowlist.SizeResult // IPv4
	allow6    []allowlist.SizeResult
	loads     []allowlist.LoadResult
	flood     []flood.Result
	// floodWalked is the share of the random flood's sources whose /24
	// block a prefix of its allow list touches: their requests walk the trie.
	floodWalked float64
	maps        []memory.Map
	o           options
}

// step is one measurement of the run.
type step struct {
	name string
	fn   func(context.Context, *report) error
	// section writes the step's part of the report on its own, for --only;
	// nil for the steps whose sections need others'.
	section func(*strings.Builder, *report)
}

func run(ctx context.Context, o options, log io.Writer) error {
	if err := preflight(o); err != nil {
		return err
	}
	r := &report{started: time.Now(), o: o}
	var err error
	if r.machine, err = describeMachine(); err != nil {
		return err
	}
	steps := []step{
		// The flood runs first: the allow-list step leaves the kernel
		// freeing millions of trie nodes for a while after it.
		{"flood", floodRun, floodSection},
		{"per-packet cost", perPacket, func(b *strings.Builder, r *report) {
			perPacketSection(b, r)
			previousCells(b, r)
		}},
		{"drop sampling", dropSampling, func(b *strings.Builder, r *report) {
			samplingTarget(b, r)
			b.WriteString("\n")
			samplingSection(b, r)
		}},
		{"solicited replies", solicitRun, solicitSection},
		{"allow-list scaling", allowList, nil},
		{"map memory", mapMemory, nil},
		{"agent footprint", agentFootprint, func(b *strings.Builder, r *report) {
			footprintTarget(b, r)
			b.WriteString("\n")
			footprintSection(b, r)
		}},
	}
	for _, name := range o.only {
		if !slices.ContainsFunc(steps, func(s step) bool { return s.name == name }) {
			return fmt.Errorf("--only %q: no such step", name)
		}
	}
	var partial strings.Builder
	for _, s := range steps {
		if len(o.only) > 0 && !slices.Contains(o.only, s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted before %s", s.name)
		}
		start := time.Now()
		fmt.Fprintf(log, "xgbench: %s ...\n", s.name)
		if err := s.fn(ctx, r); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted during %s; what it set up has been removed, no report written", s.name)
			}
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(log, "xgbench: %s done in %s\n", s.name, time.Since(start).Round(time.Second))
		if s.section != nil {
			s.section(&partial, r)
		}
	}
	if len(o.only) > 0 {
		fmt.Fprint(os.Stdout, partial.String())
		fmt.Fprintln(log, "xgbench: --only: no report written")
		return nil
	}
	r.elapsed = time.Since(r.started)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.plot, []byte(plotSVG(r)), 0o644); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	if err := os.WriteFile(o.out, []byte(markdown(r)), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(log, "xgbench: wrote %s and %s in %s\n", o.out, o.plot, r.elapsed.Round(time.Second))
	return nil
}

// preflight checks what the run needs and removes what a killed run left.
func preflight(o options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (BPF programs, namespaces, trafgen): run `sudo make bench`")
	}
	for _, tool := range []string{"trafgen", "nft", "memcached"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run `sudo make deps` (scripts/deps.sh installs it)", tool)
		}
	}
	if _, err := os.Stat(o.xdpFilter); err != nil {
		return fmt.Errorf("xdp-filter object %s: %w: install xdp-tools (`sudo make deps`) or pass --xdp-filter-object", o.xdpFilter, err)
	}
	if _, err := os.Stat(o.previous); err != nil {
		return fmt.Errorf("previous release's object %s: %w: run from the repository's root or pass --previous-object", o.previous, err)
	}
	if _, err := os.Stat(o.xdpguard); err != nil {
		return fmt.Errorf("xdpguard binary %s: %w: run `make build` first", o.xdpguard, err)
	}
	if err := loader.EnsureBPFFS(filepath.Dir(pinRoot)); err != nil {
		return err
	}
	for _, name := range []string{floodPrefix + "a", floodPrefix + "r", floodPrefix + "c", loadNS, loadNS + "p"} {
		if nstest.Exists(name) {
			if err := nstest.Remove(name); err != nil {
				return fmt.Errorf("remove namespace %s left by an earlier run: %w", name, err)
			}
		}
	}
	left, err := filepath.Glob(pinRoot + "-agent-*")
	if err != nil {
		return err
	}
	for _, dir := range append(left, pinRoot) {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove %s left by an earlier run: %w", dir, err)
		}
	}
	return nil
}

func perPacket(_ context.Context, r *report) error {
	fs, err := frames.All()
	if err != nil {
		return err
	}
	r.frames = fs
	floor, err := progs.LoadFloor()
	if err != nil {
		return err
	}
	defer floor.Close()
	guard, _, err := progs.LoadXdpguard(loader.MapSizes{})
	if err != nil {
		return err
	}
	defer guard.Close()
	filter, err := progs.LoadXDPFilter(r.o.xdpFilter, loader.DefaultPort)
	if err != nil {
		return err
	}
	defer filter.Close()
	prev, err := progs.LoadPrevious(r.o.previous)
	if err != nil {
		return err
	}
	defer prev.Close()
	subjects := []perpacket.Subject{
		{Name: progs.Floor, Prog: floor.Prog},
		{Name: progs.Xdpguard, Prog: guard.Prog},
		{Name: progs.XDPFilter, Prog: filter.Prog},
		{Name: progs.Previous, Prog: prev.Prog},
	}
	inputs := make([]perpacket.Input, len(fs))
	for i, f := range fs {
		inputs[i] = perpacket.Input{Name: f.Name, Data: f.Data, Prime: f.Prime}
	}
	r.perPacket, err = perpacket.Run(subjects, inputs, r.o.rounds, r.o.repeat)
	if err != nil {
		return err
	}
	// xdpguard must give every frame the verdict its policy says; a
	// benchmark of a wrong path would be meaningless.
	for _, f := range fs {
		for _, v := range []string{progs.Xdpguard, progs.Previous} {
			if got := r.perPacket.Cells[v][f.Name].Verdict; got != f.Want {
				return fmt.Errorf("%s returned %s on %s, want %s", v, frames.VerdictName(got), f.Name, frames.VerdictName(f.Want))
			}
		}
	}
	return nil
}

// allowSizes and allow6Sizes are the allow-list sizes of the per-packet
// tables, per family.
var (
	allowSizes  = []int{0, 1_000, 100_000, 1_000_000}
	allow6Sizes = []int{0, 1_000, 100_000}
)

func allowList(_ context.Context, r *report) error {
	largest := max(allowSizes[len(allowSizes)-1], r.o.loadSizes[len(r.o.loadSizes)-1])
	all := allowlist.RandomPrefixes(largest, 1, frames.Attacker4)
	all6 := allowlist.RandomPrefixes6(allow6Sizes[len(allow6Sizes)-1], 1, frames.Attacker6)
	var err error
	if r.allow, err = allowlist.PerPacket(4, allowSizes, all, frames.RequestFrom, frames.Attacker4, r.o.previous, r.o.allowRounds, r.o.allowRepeat); err != nil {
		return err
	}
	if r.allow6, err = allowlist.PerPacket(6, allow6Sizes, all6, frames.RequestFrom, frames.Attacker6, r.o.previous, r.o.allowRounds, r.o.allowRepeat); err != nil {
		return err
	}
	for _, a := range append(append([]allowlist.SizeResult(nil), r.allow...), r.allow6...) {
		for v, c := range a.Outside {
			if c.Verdict != frames.Drop {
				return fmt.Errorf("%s with %d IPv%d prefixes returned %s on a request from outside them", v, a.Size, a.Family, frames.VerdictName(c.Verdict))
			}
		}
		for v, c := range a.Inside {
			if c.Verdict != frames.Pass {
				return fmt.Errorf("%s with %d IPv%d prefixes returned %s on a request from inside them", v, a.Size, a.Family, frames.VerdictName(c.Verdict))
			}
		}
	}
	dir, err := os.MkdirTemp("", "xgbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, n := range r.o.loadSizes {
		file := filepath.Join(dir, fmt.Sprintf("allow-%d.txt", n))
		if err := allowlist.WriteFile(file, all[:n]); err != nil {
			return err
		}
		res, err := allowlist.CLILoad(r.o.xdpguard, pinRoot, loadNS, file, n)
		if err != nil {
			return fmt.Errorf("allow load of %d prefixes: %w", n, err)
		}
		r.loads = append(r.loads, res)
	}
	return nil
}

func floodRun(ctx context.Context, r *report) error {
	dir, err := os.MkdirTemp("", "xgbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := flood.NewLab(floodPrefix, r.o.xdpguard, pinRoot, dir)
	if err != nil {
		return err
	}
	defer l.Close()
	// The random-source flood's allow list: none of its prefixes covers a
	// source, so every frame is dropped after the allow-list lookup.
	l.AllowFile = filepath.Join(dir, "flood-allow.txt")
	list := allowlist.RandomPrefixesAvoiding(flood.AllowListSize, 3, coversAny(flood.RandomSources()))
	if err := allowlist.WriteFile(l.AllowFile, list); err != nil {
		return err
	}
	r.floodWalked = touchedShare(list, flood.RandomSources())
	// Two passes of half the window, the second in reverse order (A B C D
	// D C B A), merged: drift over the run lands on every setup alike.
	setups := flood.Setups()
	results := make([]flood.Result, len(setups))
	order := make([]int, 0, 2*len(setups))
	for i := range setups {
		order = append(order, i)
	}
	for i := range setups {
		order = append(order, len(setups)-1-i)
	}
	for pass, i := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := l.Run(ctx, setups[i], r.o.window/2)
		if err != nil {
			return err
		}
		if pass < len(setups) {
			results[i] = res
		} else {
			results[i].Merge(res)
		}
	}
	r.flood = results
	return nil
}

// touchedShare is the share of addrs whose /24 holds or lies inside a
// prefix of list (IPv4).
func touchedShare(list []netip.Prefix, addrs []netip.Addr) float64 {
	touched := map[uint32]bool{}
	for _, p := range list {
		first := binary.BigEndian.Uint32(p.Masked().Addr().AsSlice()) >> 8
		last := first
		if p.Bits() < 24 {
			last = first | uint32(1)<<(24-p.Bits()) - 1
		}
		for b := first; b <= last; b++ {
			touched[b] = true
		}
	}
	n := 0
	for _, a := range addrs {
		if touched[binary.BigEndian.Uint32(a.AsSlice())>>8] {
			n++
		}
	}
	return float64(n) / float64(len(addrs))
}

// coversAny returns a test of whether an IPv4 prefix covers any of addrs.
func coversAny(addrs []netip.Addr) func(netip.Prefix) bool {
	sorted := make([]uint32, len(addrs))
	for i, a := range addrs {
		sorted[i] = binary.BigEndian.Uint32(a.AsSlice())
	}
	slices.Sort(sorted)
	return func(p netip.Prefix) bool {
		first := binary.BigEndian.Uint32(p.Masked().Addr().AsSlice())
		last := first | uint32(uint64(1)<<(32-p.Bits())-1)
		i, _ := slices.BinarySearch(sorted, first)
		return i < len(sorted) && sorted[i] <= last
	}
}

func mapMemory(_ context.Context, r *report) error {
	var err error
	r.maps, err = memory.Defaults()
	return err
}
