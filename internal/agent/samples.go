package agent

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/xdpguard/xdpguard/loader"
)

// RingSamples names an attack's top sources from the kernel's drop samples
// (the ring buffer `xdpguard top` and `capture` read). A ring buffer has one
// reader, and those commands are how an operator looks at an attack: the
// agent therefore holds it only for the moment of an event (Window) and
// lets it go; while top or capture reads, the agent's events go without
// top sources (loader.ErrSamplesBusy), and one of them started in the very
// moment the agent reads fails with that error and can be run again.
type RingSamples struct {
	pinPath string
	// Window is how long one event waits for fresh samples once those
	// already in the ring are read.
	Window time.Duration
	// netns is the agent's network namespace (its inode): samples of
	// other namespaces' interfaces with the same ifindex are not ours.
	netns uint64
}

// maxEventSamples bounds the samples one event reads: the ring holds about
// 26,000, and a flood refills it while it is read.
const maxEventSamples = 50000

// NewRingSamples reads the samples of the state under pinPath, for the
// agent's own network namespace.
func NewRingSamples(pinPath string) (*RingSamples, error) {
	fi, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("network namespace of the agent: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("network namespace of the agent: no inode in %T", fi.Sys())
	}
	return &RingSamples{pinPath: pinPath, Window: 500 * time.Millisecond, netns: st.Ino}, nil
}

// TopSources reads the samples in the ring and those that come within
// Window, and returns the n commonest sources of those taken on ifindex
// since since.
func (r *RingSamples) TopSources(ifindex int, since time.Time, n int) ([]TopSource, error) {
	g, err := loader.OpenReadOnly(r.pinPath)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	rd, err := g.OpenSamples()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	deadline := time.Now().Add(r.Window)
	rd.SetDeadline(deadline)
	var got []loader.Sample
	for len(got) < maxEventSamples && time.Now().Before(deadline) {
		s, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read drop samples: %w", err)
		}
		got = append(got, s)
	}
	return topSources(got, r.netns, ifindex, since, n), nil
}

// topSources counts the source addresses of the samples taken on ifindex
// of netns at or after since, and returns the n commonest with their share
// of those samples, largest first (ties by address). Samples without an IP
// source (not IP, cut short) count in the total but name no source.
func topSources(samples []loader.Sample, netns uint64, ifindex int, since time.Time, n int) []TopSource {
	counts := map[string]int{}
	total := 0
	for _, s := range samples {
		if s.Ifindex != ifindex || s.Netns != netns || s.Time.Before(since) {
			continue
		}
		total++
		if s.Src.IsValid() {
			counts[s.Src.String()]++
		}
	}
	out := make([]TopSource, 0, len(counts))
	for a, c := range counts {
		out = append(out, TopSource{Address: a, Share: float64(c) / float64(total)})
	}
	slices.SortFunc(out, func(a, b TopSource) int {
		switch {
		case a.Share > b.Share:
			return -1
		case a.Share < b.Share:
			return 1
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	for i := range out {
		out[i].Share = round(out[i].Share, 3)
	}
	if len(out) > n {
		out = out[:n]
	}
	return out
}
