package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/xdpguard/xdpguard/internal/bench/footprint"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/bench/sampling"
)

// The drop-sampling step (issue 11) and the agent-footprint step (issue 10),
// and their parts of the report.

func dropSampling(_ context.Context, r *report) error {
	var err error
	r.sampling, err = sampling.Run(r.o.rounds, r.o.repeat)
	return err
}

func agentFootprint(_ context.Context, r *report) error {
	res, err := footprint.Run(footprint.Options{
		Binary: r.o.xdpguard, PinRoot: pinRoot, Idle: r.o.agentIdle,
		Pairs: r.o.agentPairs, MatchEvery: r.o.agentMatchEvery, Batch: r.o.agentBatch,
	})
	if err != nil {
		return err
	}
	r.footprint = &res
	return nil
}

// samplingTarget is the summary's line for drop sampling.
func samplingTarget(b *strings.Builder, r *report) {
	s := r.sampling
	if s == nil {
		return
	}
	fmt.Fprintf(b, "| drop path with sampling on at the default budget, spent (what a flood pays), beside sampling off (reported, no threshold) | %.1f vs %.1f ns (%+.1f ns) | reported |\n",
		s.Cost(sampling.Spent), s.Cost(sampling.Off), s.Extra())
}

func samplingSection(b *strings.Builder, r *report) {
	s := r.sampling
	if s == nil {
		return
	}
	fmt.Fprintf(b, "### Drop sampling\n\n")
	fmt.Fprintf(b, "The request drop `%s` through two more instances of xdpguard, each on maps of its own, in the same\n", sampling.Frame)
	fmt.Fprintf(b, "interleaved rounds as above (%d of %s) beside the floor: one with sampling off (rate 0: every drop\n", s.PerPacket.Rounds, count(s.PerPacket.Repeat))
	fmt.Fprintf(b, "is counted as suppressed), one at the default budget of %d samples per second per CPU with that\n", s.Rate)
	b.WriteString("budget spent before measuring, as a flood spends it in its first second: each drop then finds the\n")
	b.WriteString("token bucket empty and is suppressed, bar the few samples its refill allows. The counters are the\n")
	b.WriteString("instances' own over the whole run: they show which path was measured.\n\n")
	b.WriteString("| setup | ns per frame | above floor | sampled | suppressed |\n|---|---:|---:|---:|---:|\n")
	floor := s.Cost(progs.Floor)
	fc := s.PerPacket.Cells[progs.Floor][sampling.Frame]
	fmt.Fprintf(b, "| %s | %.1f [%.1f–%.1f] | | | |\n", progs.Floor, fc.MedianNs, fc.P25, fc.P75)
	for _, name := range []string{sampling.Off, sampling.Spent} {
		c, n := s.PerPacket.Cells[name][sampling.Frame], s.Counts[name]
		fmt.Fprintf(b, "| %s | %.1f [%.1f–%.1f] | %.1f | %s | %s |\n", name, c.MedianNs, c.P25, c.P75, c.MedianNs-floor,
			count(int(n.Sampled)), count(int(n.Suppressed)))
	}
	fmt.Fprintf(b, "| difference (spent − off) | %+.1f | | | |\n\n", s.Extra())
}

// footprintTarget is the summary's line for the agent's footprint.
func footprintTarget(b *strings.Builder, r *report) {
	f := r.footprint
	if f == nil {
		return
	}
	fmt.Fprintf(b, "| the agent's own footprint, idle and while %s links come and go (reported, no threshold) | RSS %s idle, %s peak; CPU %s over %s idle, %s over the %s churn | reported |\n",
		count(f.Pairs), bytesize(f.Idle.RSS), bytesize(f.Churn.HWM), f.IdleCPU(), f.IdleFor.Round(100*time.Millisecond),
		f.ChurnCPU(), f.ChurnFor.Round(100*time.Millisecond))
}

func footprintSection(b *strings.Builder, r *report) {
	f := r.footprint
	if f == nil {
		return
	}
	fmt.Fprintf(b, "## 5. Agent footprint\n\n")
	b.WriteString("`xdpguard agent` (the binary above) runs in a namespace of its own with a pin path of its own, its\n")
	b.WriteString("metrics server off and `on_stop: detach`, protecting the interfaces its include glob matches. RSS is\n")
	b.WriteString("`VmRSS` and the peak `VmHWM` of /proc/PID/status; CPU is utime + stime of /proc/PID/stat, every thread.\n")
	fmt.Fprintf(b, "It is idle for %s after it says `READY=1`; then %s veth pairs are created and deleted through netlink\n", f.IdleFor.Round(100*time.Millisecond), count(f.Pairs))
	fmt.Fprintf(b, "in its namespace, %s at a time: after each batch is created the run waits for the agent to attach to its\n", count(r.o.agentBatch))
	b.WriteString("matching ends, after it is deleted for their pins to be gone.\n\n")
	b.WriteString("| phase | RSS | peak RSS | CPU time | wall time |\n|---|---:|---:|---:|---:|\n")
	fmt.Fprintf(b, "| start, until `READY=1` | %s | %s | %s | |\n", bytesize(f.Ready.RSS), bytesize(f.Ready.HWM), f.Ready.CPU)
	fmt.Fprintf(b, "| idle | %s | %s | %s | %s |\n", bytesize(f.Idle.RSS), bytesize(f.Idle.HWM), f.IdleCPU(), f.IdleFor.Round(100*time.Millisecond))
	fmt.Fprintf(b, "| %s pairs come and go, %s attached | %s | %s | %s | %s |\n\n", count(f.Pairs), count(f.Matched),
		bytesize(f.Churn.RSS), bytesize(f.Churn.HWM), f.ChurnCPU(), f.ChurnFor.Round(100*time.Millisecond))
	fmt.Fprintf(b, "Of the %s pairs, one in %d has an end the include glob matches: %s attaches. Each attach loads\n", count(f.Pairs), r.o.agentMatchEvery, count(f.Matched))
	perAttach, allMatch := "–", "–"
	if f.Matched > 0 {
		perAttach = (f.ChurnCPU() / time.Duration(f.Matched)).Round(time.Millisecond).String()
		allMatch = (f.ChurnFor * time.Duration(f.Pairs) / time.Duration(f.Matched)).Round(time.Second).String()
	}
	fmt.Fprintf(b, "and verifies the programs its link needs, so %s matching links would take about %s; the other links\n", count(f.Pairs), allMatch)
	b.WriteString("are netlink events the agent reads and leaves alone.\n")
	fmt.Fprintf(b, "The churn's CPU per attached link, events of the others included: %s. Afterwards %d interface\n", perAttach, f.LeftPins)
	b.WriteString("pin directories were left for the deleted links, and after SIGTERM the pin path held none (the run\n")
	b.WriteString("fails otherwise).\n\n")
}
