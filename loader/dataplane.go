package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Dataplane is one loaded instance of the two programs with its own
// counters, sharing Maps with every other instance. One is loaded per
// attached interface, so counters are per interface by construction.
type Dataplane struct {
	XDP   *ebpf.Program
	TC    *ebpf.Program
	Stats *ebpf.Map // per-CPU counters: slot = hook*ReasonCount + reason
}

// LoadDataplane loads the programs against shared maps. stats, when not nil,
// is reused (an upgrade keeps its counters); otherwise a new map is made.
func LoadDataplane(m *Maps, stats *ebpf.Map) (*Dataplane, error) {
	spec, _, err := specs()
	if err != nil {
		return nil, err
	}
	repl := m.replacements()
	if stats != nil {
		repl[xdpguardMapXdpguardStats] = stats
	}
	var objs xdpguardObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return nil, verifierError(err)
	}
	return &Dataplane{XDP: objs.XdpguardXdp, TC: objs.XdpguardTc, Stats: objs.XdpguardStats}, nil
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

// Close releases the programs and the counters map's descriptor.
func (d *Dataplane) Close() error {
	return errors.Join(d.XDP.Close(), d.TC.Close(), d.Stats.Close())
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
