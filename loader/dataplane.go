package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// Dataplane is one loaded instance of the programs with its own counters,
// sharing Maps with every other instance. One is loaded per attached
// interface, so counters are per interface by construction. XDP and TC parse
// Ethernet frames; XDPL3 and TCL3 are the same programs for links whose
// frames start at the IP header (Programs picks the pair for a link).
type Dataplane struct {
	XDP   *ebpf.Program
	TC    *ebpf.Program
	XDPL3 *ebpf.Program
	TCL3  *ebpf.Program
	Stats *ebpf.Map // per-CPU counters: slot = hook*ReasonCount + reason
	// SampleStats counts drops sampled and suppressed, per CPU, in the
	// slots of Stats.
	SampleStats *ebpf.Map
}

// FragTimeouts are how long a first fragment's verdict lasts, per family:
// the kernel's reassembly timeouts, net.ipv4.ipfrag_time and
// net.ipv6.ip6frag_time.
type FragTimeouts struct {
	IPv4, IPv6 time.Duration
}

// The kernel's defaults (include/net/ip.h IP_FRAG_TIME, include/net/ipv6.h
// IPV6_FRAG_TIMEOUT), used where a sysctl cannot be read (IPv6 disabled at
// boot leaves no net.ipv6 directory).
const (
	defaultIPFragTime  = 30 * time.Second
	defaultIP6FragTime = 60 * time.Second
)

// sysctlDir is where ReadFragTimeouts reads; tests point it elsewhere.
var sysctlDir = "/proc/sys/net"

// ReadFragTimeouts reads the reassembly timeouts of the calling thread's
// network namespace: /proc/sys/net answers for the namespace of whoever
// reads it, and xdpguard attaches in the namespace it runs in, so these are
// the attached interface's own.
func ReadFragTimeouts() (FragTimeouts, error) {
	read := func(rel string, def time.Duration) (time.Duration, error) {
		path := filepath.Join(sysctlDir, rel)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return def, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%s holds %q: want a number of seconds", path, strings.TrimSpace(string(b)))
		}
		return time.Duration(n) * time.Second, nil
	}
	var t FragTimeouts
	var err error
	if t.IPv4, err = read("ipv4/ipfrag_time", defaultIPFragTime); err != nil {
		return t, err
	}
	if t.IPv6, err = read("ipv6/ip6frag_time", defaultIP6FragTime); err != nil {
		return t, err
	}
	return t, nil
}

// LoadDataplane loads the programs against shared maps, with the fragment
// timeouts of the calling thread's network namespace. stats, when not nil,
// is reused (an upgrade keeps its counters); otherwise a new map is made.
func LoadDataplane(m *Maps, stats *ebpf.Map) (*Dataplane, error) {
	timeouts, err := ReadFragTimeouts()
	if err != nil {
		return nil, err
	}
	return LoadDataplaneWith(m, stats, timeouts)
}

// LoadDataplaneWith is LoadDataplane with the fragment timeouts given.
func LoadDataplaneWith(m *Maps, stats *ebpf.Map, timeouts FragTimeouts) (*Dataplane, error) {
	return loadDataplane(m, stats, nil, timeouts)
}

// loadDataplaneKeeping is LoadDataplane keeping an interface's sample
// counters too, when sampleStats is not nil.
func loadDataplaneKeeping(m *Maps, stats, sampleStats *ebpf.Map) (*Dataplane, error) {
	timeouts, err := ReadFragTimeouts()
	if err != nil {
		return nil, err
	}
	return loadDataplane(m, stats, sampleStats, timeouts)
}

func loadDataplane(m *Maps, stats, sampleStats *ebpf.Map, timeouts FragTimeouts) (*Dataplane, error) {
	spec, _, err := specs()
	if err != nil {
		return nil, err
	}
	netns, err := CurrentNetns()
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]uint64{
		xdpguardVarIpfragTimeNs:  uint64(timeouts.IPv4.Nanoseconds()),
		xdpguardVarIp6fragTimeNs: uint64(timeouts.IPv6.Nanoseconds()),
		xdpguardVarSampleNetns:   netns,
	} {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	repl := m.replacements()
	if stats != nil {
		repl[xdpguardMapXdpguardStats] = stats
	}
	if sampleStats != nil {
		repl[xdpguardMapXdpguardSstats] = sampleStats
	}
	var objs xdpguardObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return nil, verifierError(err)
	}
	return &Dataplane{
		XDP: objs.XdpguardXdp, TC: objs.XdpguardTc,
		XDPL3: objs.XdpguardXdpL3, TCL3: objs.XdpguardTcL3,
		Stats: objs.XdpguardStats, SampleStats: objs.XdpguardSstats,
	}, nil
}

// verifierError keeps the verifier's whole log in the error: a load that
// fails must show why.
func verifierError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("load BPF programs: %w\n%+v", err, ve)
	}
	return fmt.Errorf("load BPF programs: %w", err)
}

// Programs returns the XDP and TC programs for frames of kind k.
func (d *Dataplane) Programs(k linkKind) (xdp, tc *ebpf.Program) {
	if k == linkL3 {
		return d.XDPL3, d.TCL3
	}
	return d.XDP, d.TC
}

// Close releases the programs and the counters map's descriptor.
func (d *Dataplane) Close() error {
	return errors.Join(d.XDP.Close(), d.TC.Close(), d.XDPL3.Close(), d.TCL3.Close(), d.Stats.Close(), d.SampleStats.Close())
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// HookCounters are one hook's counters, indexed by Reason.
type HookCounters [xdpguardReasonREASON_MAX]Counter

// ReadStats sums a counters map over CPUs, per hook.
func ReadStats(stats *ebpf.Map) (map[Hook]HookCounters, error) {
	out := make(map[Hook]HookCounters, hookCount)
	for h := range hookCount {
		var hc HookCounters
		for r := range ReasonCount {
			var perCPU []xdpguardCounter
			slot := uint32(int(h)*ReasonCount + r)
			if err := stats.Lookup(slot, &perCPU); err != nil {
				return nil, fmt.Errorf("read counters %s/%s: %w", h, Reason(r), err)
			}
			for _, c := range perCPU {
				hc[r].Packets += c.Packets
				hc[r].Bytes += c.Bytes
			}
		}
		out[h] = hc
	}
	return out, nil
}
