// Package sampling measures what drop sampling (bpf/sample.h) adds to the
// drop path: the IPv4 request drop with sampling off, beside the same drop
// with the default budget spent, which is what every drop of a flood pays
// once the per-CPU token bucket is empty (almost all are suppressed).
package sampling

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/bench/perpacket"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/loader"
)

// Names of the subjects, in the tables.
const (
	Off   = "sampling off"
	Spent = "default budget, spent"
)

// Frame is the frame measured: the IPv4 memcached request, dropped.
const Frame = "ipv4_req"

// spendRepeats drops, before measuring, empty the bucket of the CPU the
// test run lands on: far more than its one-second burst at any rate up to
// loader.MaxSampleRate.
const spendRepeats = 2 * loader.MaxSampleRate

// Result is one run: the floor and both setups on Frame, interleaved.
type Result struct {
	PerPacket *perpacket.Result
	Rate      uint32 // the spent setup's budget, samples per second per CPU
	// Counts are each setup's sample counters over the whole run (the
	// spending runs included), every hook and reason summed: they show
	// which path was measured.
	Counts map[string]loader.SampleCounter
}

// Cost is a setup's median per-frame time.
func (r *Result) Cost(name string) float64 { return r.PerPacket.Cells[name][Frame].MedianNs }

// Extra is what the spent budget adds to the drop over sampling off, in ns.
func (r *Result) Extra() float64 { return r.Cost(Spent) - r.Cost(Off) }

// Run measures, in rounds interleaved as perpacket.Run does, the floor and
// two instances of xdpguard on maps of their own: one with sampling off
// (rate 0), one at loader.DefaultSampleRate with its budget spent first.
func Run(rounds, repeat int) (res *Result, err error) {
	fs, err := frames.All()
	if err != nil {
		return nil, err
	}
	var frame *frames.Frame
	for i := range fs {
		if fs[i].Name == Frame {
			frame = &fs[i]
		}
	}
	if frame == nil {
		return nil, fmt.Errorf("no frame %s", Frame)
	}
	floor, err := progs.LoadFloor()
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, floor.Close()) }()
	setups := []struct {
		name string
		rate uint32
	}{{Off, 0}, {Spent, loader.DefaultSampleRate}}
	subjects := []perpacket.Subject{{Name: progs.Floor, Prog: floor.Prog}}
	stats := map[string]*ebpf.Map{}
	for _, s := range setups {
		m, err := loader.NewMaps(loader.MapSizes{})
		if err != nil {
			return nil, fmt.Errorf("%s: create maps: %w", s.name, err)
		}
		defer func() { err = errors.Join(err, m.Close()) }()
		if err := m.WriteConfig(loader.DefaultConfig()); err != nil {
			return nil, fmt.Errorf("%s: configure: %w", s.name, err)
		}
		if err := m.SetSampleRate(s.rate); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		dp, err := loader.LoadDataplane(m, loader.Counters{})
		if err != nil {
			return nil, fmt.Errorf("%s: load: %w", s.name, err)
		}
		defer func() { err = errors.Join(err, dp.Close()) }()
		if _, err := dp.XDP.Run(&ebpf.RunOptions{Data: frame.Data, Repeat: spendRepeats}); err != nil {
			return nil, fmt.Errorf("%s: spend the budget: %w", s.name, err)
		}
		subjects = append(subjects, perpacket.Subject{Name: s.name, Prog: dp.XDP})
		stats[s.name] = dp.SampleStats
	}
	pp, err := perpacket.Run(subjects, []perpacket.Input{{Name: frame.Name, Data: frame.Data}}, rounds, repeat)
	if err != nil {
		return nil, err
	}
	res = &Result{PerPacket: pp, Rate: loader.DefaultSampleRate, Counts: map[string]loader.SampleCounter{}}
	for _, s := range setups {
		if v := pp.Cells[s.name][Frame].Verdict; v != frame.Want {
			return nil, fmt.Errorf("%s returned %s on %s, want %s", s.name, frames.VerdictName(v), Frame, frames.VerdictName(frame.Want))
		}
		byHook, err := loader.ReadSampleStats(stats[s.name], nil) // this bench samples drop_request only
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		var sum loader.SampleCounter
		for _, hc := range byHook {
			for _, c := range hc {
				sum.Sampled += c.Sampled
				sum.Suppressed += c.Suppressed
			}
		}
		res.Counts[s.name] = sum
	}
	// A benchmark of another path than the one named would be meaningless.
	if off := res.Counts[Off]; off.Sampled != 0 {
		return nil, fmt.Errorf("%s took %d samples: the rate did not reach the program", Off, off.Sampled)
	}
	if spent := res.Counts[Spent]; spent.Sampled == 0 || spent.Sampled*100 > spent.Suppressed {
		return nil, fmt.Errorf("%s: %d sampled, %d suppressed: want some sampled, under 1%%", Spent, spent.Sampled, spent.Suppressed)
	}
	return res, nil
}
