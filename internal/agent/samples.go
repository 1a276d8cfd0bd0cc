package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/xdpguard/xdpguard/loader"
)

// RingSamples reads the kernel's drop samples (the ring buffer `xdpguard
// top` and `capture` read) for the attack events' top sources. A ring buffer
// has one reader, and those commands are how an operator looks at an
// attack: the agent therefore holds it only for the moment of an event
// (Window) and lets it go; while top or capture reads, the agent's events go
// without top sources (loader.ErrSamplesBusy), and one of them started in
// the very moment the agent reads fails with that error and can be run
// again.
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

// ReadSamples reads the samples in the ring and those that come within
// Window, and returns those of the agent's network namespace.
func (r *RingSamples) ReadSamples() ([]loader.Sample, error) {
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
	for read := 0; read < maxEventSamples && time.Now().Before(deadline); read++ {
		s, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read drop samples: %w", err)
		}
		if s.Netns == r.netns {
			got = append(got, s)
		}
	}
	return got, nil
}

// sourceTally counts the source addresses of one attack's drop samples.
type sourceTally struct {
	since time.Time // the attack's start: earlier samples are not its own
	total int       // samples counted, those without an IP source included
	by    map[netip.Addr]int
}

func newSourceTally(since time.Time) *sourceTally {
	return &sourceTally{since: since, by: map[netip.Addr]int{}}
}

// add counts a sample of the attack's interface taken at or after its
// start. Samples without an IP source (not IP, cut short) count in the
// total but name no source.
func (t *sourceTally) add(s loader.Sample) {
	if s.Time.Before(t.since) {
		return
	}
	t.total++
	if s.Src.IsValid() {
		t.by[s.Src]++
	}
}

// top returns the n commonest sources with their share of the samples
// counted, largest first (ties by address).
func (t *sourceTally) top(n int) []TopSource {
	out := make([]TopSource, 0, len(t.by))
	for a, c := range t.by {
		out = append(out, TopSource{Address: a.String(), Share: float64(c) / float64(t.total)})
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
