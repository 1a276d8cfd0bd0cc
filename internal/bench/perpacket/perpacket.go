// Package perpacket measures what one XDP program costs per frame with
// BPF_PROG_TEST_RUN: many repeats of the same frame per run, several runs
// interleaved across programs, the median kept.
package perpacket

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/bench/quantile"
)

// Subject is one program under test.
type Subject struct {
	Name string
	Prog *ebpf.Program
}

// Input is one frame and the frames that must precede it (see frames.Frame).
type Input struct {
	Name  string
	Data  []byte
	Prime [][]byte
}

// Sample is one BPF_PROG_TEST_RUN with many repeats.
type Sample struct {
	// WallNs is the syscall's wall-clock time, less the fixed cost of one
	// test-run syscall (see Overhead), divided by the repeats. The kernel's
	// own figure is truncated to whole nanoseconds, too coarse for programs
	// that cost 5 to 40 ns.
	WallNs float64
	// KernelNs is the kernel's per-run figure, kept to cross-check.
	KernelNs float64
}

// Cell is the result for one program on one frame.
type Cell struct {
	Verdict    uint32
	OverheadNs float64 // per syscall, see Overhead
	Samples    []Sample
	MedianNs   float64 // median of WallNs over the rounds
	P25, P75   float64
	KernelNs   float64 // median of KernelNs
}

// Result holds every cell, keyed by program then frame.
type Result struct {
	Repeat int
	Rounds int
	Cells  map[string]map[string]*Cell
}

// Verdict runs data once through prog and returns its XDP action.
func Verdict(prog *ebpf.Program, data []byte) (uint32, error) {
	ret, err := prog.Run(&ebpf.RunOptions{Data: data, Repeat: 1})
	if err != nil {
		return 0, fmt.Errorf("test run: %w", err)
	}
	return ret, nil
}

// Overhead returns the median wall-clock time, in ns, of n test-run
// syscalls with two repeats: what a syscall costs besides the runs
// themselves. It is large and varies (0.3 to 1 ms here: with more than one
// repeat the kernel swaps the program into the XDP dispatcher and back, each
// time waiting for RCU), so it is measured, subtracted, and drowned in
// millions of repeats. Two repeats, not one: a single run skips the swap.
func Overhead(prog *ebpf.Program, data []byte, n int) (float64, error) {
	walls := make([]float64, 0, n)
	for range n {
		_, s, err := Measure(prog, data, 2, 0)
		if err != nil {
			return 0, err
		}
		walls = append(walls, 2*s.WallNs)
	}
	return quantile.Of(walls, 0.5), nil
}

// Measure runs one BPF_PROG_TEST_RUN of data with repeat repetitions; the
// sample's wall-clock time excludes overheadNs once.
func Measure(prog *ebpf.Program, data []byte, repeat int, overheadNs float64) (uint32, Sample, error) {
	start := time.Now()
	// Benchmark restarts the whole run when a signal interrupts it; the
	// timer restarts with it.
	ret, perRun, err := prog.Benchmark(data, repeat, func() { start = time.Now() })
	wall := time.Since(start)
	if err != nil {
		return 0, Sample{}, err
	}
	return ret, Sample{
		WallNs:   (float64(wall.Nanoseconds()) - overheadNs) / float64(repeat),
		KernelNs: float64(perRun.Nanoseconds()),
	}, nil
}

// overheadRuns is how many two-repeat syscalls estimate the overhead.
const overheadRuns = 9

// Run measures every subject on every input: in each round each input is
// run through the subjects in turn (A B C A B C ...), so slow drift of a
// shared, noisy machine lands on all of them alike. A program whose verdict
// changes between runs is an error: the numbers would not be about one path.
func Run(subjects []Subject, inputs []Input, rounds, repeat int) (*Result, error) {
	res := &Result{Repeat: repeat, Rounds: rounds, Cells: map[string]map[string]*Cell{}}
	for _, s := range subjects {
		res.Cells[s.Name] = map[string]*Cell{}
		for _, in := range inputs {
			for _, p := range in.Prime {
				if _, err := Verdict(s.Prog, p); err != nil {
					return nil, fmt.Errorf("%s: prime %s: %w", s.Name, in.Name, err)
				}
			}
			v, err := Verdict(s.Prog, in.Data)
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", s.Name, in.Name, err)
			}
			oh, err := Overhead(s.Prog, in.Data, overheadRuns)
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", s.Name, in.Name, err)
			}
			res.Cells[s.Name][in.Name] = &Cell{Verdict: v, OverheadNs: oh}
		}
	}
	for range rounds {
		for _, in := range inputs {
			for _, s := range subjects {
				c := res.Cells[s.Name][in.Name]
				ret, smp, err := Measure(s.Prog, in.Data, repeat, c.OverheadNs)
				if err != nil {
					return nil, fmt.Errorf("%s on %s: %w", s.Name, in.Name, err)
				}
				if ret != c.Verdict {
					return nil, fmt.Errorf("%s on %s: verdict changed from %d to %d", s.Name, in.Name, c.Verdict, ret)
				}
				c.Samples = append(c.Samples, smp)
			}
		}
	}
	for _, byFrame := range res.Cells {
		for _, c := range byFrame {
			c.summarize()
		}
	}
	return res, nil
}

func (c *Cell) summarize() {
	wall := make([]float64, len(c.Samples))
	kern := make([]float64, len(c.Samples))
	for i, s := range c.Samples {
		wall[i], kern[i] = s.WallNs, s.KernelNs
	}
	c.MedianNs = quantile.Of(wall, 0.5)
	c.P25 = quantile.Of(wall, 0.25)
	c.P75 = quantile.Of(wall, 0.75)
	c.KernelNs = quantile.Of(kern, 0.5)
}
