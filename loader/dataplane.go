package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
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
	// Per-CPU counters: Stats for the reasons before ReasonSolicited
	// (the layout of releases before port directions, kept so that an
	// upgrade keeps them), Stats2 for the others; see statsSlot.
	Stats  *ebpf.Map
	Stats2 *ebpf.Map
	// SampleStats and SampleStats2 count drops sampled and suppressed,
	// per CPU, in the slots of Stats and Stats2.
	SampleStats  *ebpf.Map
	SampleStats2 *ebpf.Map
}

// Counters are one interface's counter maps (Dataplane's Stats, Stats2,
// SampleStats, SampleStats2): the ones to keep when its programs are
// swapped. A nil map is made anew (a release before it had none).
type Counters struct {
	Stats, Stats2, SampleStats, SampleStats2 *ebpf.Map
}

func (c Counters) replace(repl map[string]*ebpf.Map) {
	for name, mp := range map[string]*ebpf.Map{
		xdpguardMapXdpguardStats:  c.Stats,
		xdpguardMapXdpguardStats2: c.Stats2,
		xdpguardMapXdpguardSstats: c.SampleStats,
		xdpguardMapXdpguardSstat2: c.SampleStats2,
	} {
		if mp != nil {
			repl[name] = mp
		}
	}
}

// statsReasons is how many reasons Stats counts per hook; Stats2 counts
// the rest.
const statsReasons = int(xdpguardReasonREASON_SOLICITED)

// statsSlot is where reason r of hook h is counted: in the second map
// (Stats2, SampleStats2) or the first, at slot.
func statsSlot(h Hook, r int) (second bool, slot uint32) {
	if r >= statsReasons {
		return true, uint32(int(h)*(ReasonCount-statsReasons) + r - statsReasons)
	}
	return false, uint32(int(h)*statsReasons + r)
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
// timeouts of the calling thread's network namespace. The counters given
// are reused (an upgrade keeps them); the nil ones are made anew.
func LoadDataplane(m *Maps, keep Counters) (*Dataplane, error) {
	timeouts, err := ReadFragTimeouts()
	if err != nil {
		return nil, err
	}
	return LoadDataplaneWith(m, keep, timeouts)
}

// LoadDataplaneWith is LoadDataplane with the fragment timeouts given.
func LoadDataplaneWith(m *Maps, keep Counters, timeouts FragTimeouts) (*Dataplane, error) {
	return loadDataplaneOf(m, nil, keep, timeouts)
}

// loadForLink loads only the two programs that parse frames of kind k, for
// an attach or an upgrade: the verifier's time is most of what attaching an
// interface costs, and the other pair would be verified for nothing. The
// other pair's fields stay nil. keep's maps, when not nil, are an
// interface's counters to keep.
func loadForLink(m *Maps, k linkKind, keep Counters) (*Dataplane, error) {
	timeouts, err := ReadFragTimeouts()
	if err != nil {
		return nil, err
	}
	return loadDataplaneOf(m, &k, keep, timeouts)
}

// loadDataplaneOf loads the programs for frames of kind *only, or all four
// when only is nil.
func loadDataplaneOf(m *Maps, only *linkKind, keep Counters, timeouts FragTimeouts) (*Dataplane, error) {
	spec, opts, err := dataplaneSpec(m, keep, timeouts)
	if err != nil {
		return nil, err
	}
	if only != nil {
		// LoadAndAssign loads only what the struct names.
		var objs struct {
			XDP          *ebpf.Program `ebpf:"xdpguard_xdp"`
			TC           *ebpf.Program `ebpf:"xdpguard_tc"`
			Stats        *ebpf.Map     `ebpf:"xdpguard_stats"`
			Stats2       *ebpf.Map     `ebpf:"xdpguard_stats2"`
			SampleStats  *ebpf.Map     `ebpf:"xdpguard_sstats"`
			SampleStats2 *ebpf.Map     `ebpf:"xdpguard_sstat2"`
		}
		var objsL3 struct {
			XDP          *ebpf.Program `ebpf:"xdpguard_xdp_l3"`
			TC           *ebpf.Program `ebpf:"xdpguard_tc_l3"`
			Stats        *ebpf.Map     `ebpf:"xdpguard_stats"`
			Stats2       *ebpf.Map     `ebpf:"xdpguard_stats2"`
			SampleStats  *ebpf.Map     `ebpf:"xdpguard_sstats"`
			SampleStats2 *ebpf.Map     `ebpf:"xdpguard_sstat2"`
		}
		if *only == linkL3 {
			if err := spec.LoadAndAssign(&objsL3, opts); err != nil {
				return nil, verifierError(err)
			}
			return &Dataplane{XDPL3: objsL3.XDP, TCL3: objsL3.TC, Stats: objsL3.Stats, Stats2: objsL3.Stats2,
				SampleStats: objsL3.SampleStats, SampleStats2: objsL3.SampleStats2}, nil
		}
		if err := spec.LoadAndAssign(&objs, opts); err != nil {
			return nil, verifierError(err)
		}
		return &Dataplane{XDP: objs.XDP, TC: objs.TC, Stats: objs.Stats, Stats2: objs.Stats2,
			SampleStats: objs.SampleStats, SampleStats2: objs.SampleStats2}, nil
	}
	var objs xdpguardObjects
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return nil, verifierError(err)
	}
	return &Dataplane{
		XDP: objs.XdpguardXdp, TC: objs.XdpguardTc,
		XDPL3: objs.XdpguardXdpL3, TCL3: objs.XdpguardTcL3,
		Stats: objs.XdpguardStats, Stats2: objs.XdpguardStats2,
		SampleStats: objs.XdpguardSstats, SampleStats2: objs.XdpguardSstat2,
	}, nil
}

// dataplaneSpec is the programs' spec as loadDataplaneOf loads it: the
// load-time variables set for this host and namespace, the shared maps and
// the counters to keep (or fresh ones) in place of the object's.
func dataplaneSpec(m *Maps, keep Counters, timeouts FragTimeouts) (*ebpf.CollectionSpec, *ebpf.CollectionOptions, error) {
	spec, _, err := specs()
	if err != nil {
		return nil, nil, err
	}
	netns, err := CurrentNetns()
	if err != nil {
		return nil, nil, err
	}
	for name, v := range map[string]uint64{
		xdpguardVarIpfragTimeNs:  uint64(timeouts.IPv4.Nanoseconds()),
		xdpguardVarIp6fragTimeNs: uint64(timeouts.IPv6.Nanoseconds()),
		xdpguardVarSampleNetns:   netns,
	} {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, nil, fmt.Errorf("BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	if err := spec.Variables[xdpguardVarCoarseClock].Set(haveCoarseClock()); err != nil {
		return nil, nil, fmt.Errorf("set %s: %w", xdpguardVarCoarseClock, err)
	}
	repl := m.replacements()
	keep.replace(repl)
	// Sizes may have been overridden when the maps were made (MapSizes):
	// the specs follow the maps they are replaced by.
	for name, mp := range repl {
		if ms, ok := spec.Maps[name]; ok && mp != nil {
			ms.MaxEntries = mp.MaxEntries()
		}
	}
	return spec, &ebpf.CollectionOptions{MapReplacements: repl}, nil
}

// haveCoarseClock reports, as the data plane's coarse_clock wants it,
// whether XDP programs may call bpf_ktime_get_coarse_ns (Linux 5.11). A
// probe that fails otherwise than "not supported" counts as no: the precise
// clock works everywhere.
var haveCoarseClock = sync.OnceValue(func() uint8 {
	if features.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetCoarseNs) == nil {
		return 1
	}
	return 0
})

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
	return errors.Join(d.XDP.Close(), d.TC.Close(), d.XDPL3.Close(), d.TCL3.Close(),
		d.Stats.Close(), d.Stats2.Close(), d.SampleStats.Close(), d.SampleStats2.Close())
}

// Counters returns d's counter maps.
func (d *Dataplane) Counters() Counters {
	return Counters{Stats: d.Stats, Stats2: d.Stats2, SampleStats: d.SampleStats, SampleStats2: d.SampleStats2}
}

// ReadStats sums d's counters over CPUs, per hook.
func (d *Dataplane) ReadStats() (map[Hook]HookCounters, error) {
	return ReadStats(d.Stats, d.Stats2)
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// HookCounters are one hook's counters, indexed by Reason.
type HookCounters [xdpguardReasonREASON_MAX]Counter

// ReadStats sums an interface's counters over CPUs, per hook: stats for
// the reasons before ReasonSolicited, stats2 for the others (nil where an
// interface attached by a release before port directions has none yet:
// those count 0).
func ReadStats(stats, stats2 *ebpf.Map) (map[Hook]HookCounters, error) {
	out := make(map[Hook]HookCounters, hookCount)
	for h := range hookCount {
		var hc HookCounters
		for r := range ReasonCount {
			var perCPU []xdpguardCounter
			second, slot := statsSlot(h, r)
			mp := stats
			if second {
				mp = stats2
			}
			if mp == nil {
				continue
			}
			if err := mp.Lookup(slot, &perCPU); err != nil {
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
