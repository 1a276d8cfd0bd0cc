// Package progs loads the three XDP programs the benchmarks compare:
// xdpguard's, xdp-filter's and a floor that only drops.
package progs

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/xdpguard/xdpguard/loader"
)

// Names used in every table.
const (
	Xdpguard  = "xdpguard"
	XDPFilter = "xdp-filter"
	Floor     = "floor"
	Previous  = "previous" // the release before issue 14 (PreviousObject)
)

// Program is a loaded XDP program and what must be closed with it.
type Program struct {
	Name  string
	Prog  *ebpf.Program
	close func() error
}

// Close releases the program and its maps.
func (p *Program) Close() error {
	if p == nil || p.close == nil {
		return nil
	}
	return p.close()
}

// LoadFloor builds the cheapest possible XDP program, return XDP_DROP, so
// its cost is what BPF_PROG_TEST_RUN itself adds per run.
func LoadFloor() (*Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "xgb_floor",
		Type:    ebpf.XDP,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 1), // XDP_DROP
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load floor program: %w", err)
	}
	return &Program{Name: Floor, Prog: prog, close: prog.Close}, nil
}

// LoadXdpguard loads xdpguard's XDP program on fresh maps of the given sizes
// (zero: the defaults) with the default configuration: port 11211, enforce,
// track fragments. The maps are returned for the caller to fill.
func LoadXdpguard(sizes loader.MapSizes) (*Program, *loader.Maps, error) {
	m, err := loader.NewMaps(sizes)
	if err != nil {
		return nil, nil, fmt.Errorf("create xdpguard maps: %w", err)
	}
	if err := m.WriteConfig(loader.DefaultConfig()); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("configure xdpguard: %w", err)
	}
	dp, err := loader.LoadDataplane(m, loader.Counters{})
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("load xdpguard: %w", err)
	}
	return &Program{Name: Xdpguard, Prog: dp.XDP, close: func() error {
		return errors.Join(dp.Close(), m.Close())
	}}, m, nil
}

// XDPFilterObject is Debian's build of the program `xdp-filter load -f udp`
// picks under the default allow policy: packets pass unless a rule matches,
// and only UDP port rules are compiled in. (The dny_* objects are the deny
// policy, where a match means pass.)
const XDPFilterObject = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_udp.o"

// xdp-filter's rule flags (xdp-filter/common_kern_user.h).
const (
	filterSrc = 1 << 0
	filterDst = 1 << 1
	filterTCP = 1 << 2
	filterUDP = 1 << 3
)

// LoadXDPFilter loads xdp-filter's program from obj and configures it as
// `xdp-filter port 11211 --mode src,dst` does: filter_ports is a per-CPU
// array indexed by the port in network byte order (the raw __be16 widened to
// a __u32 key), whose value holds the rule flags in its low bits and a hit
// counter above them. The CLI's default protocol set is tcp,udp, so it writes
// src|dst|tcp|udp = 15 on every CPU; checked against the real tool with
// bpftool map lookup.
func LoadXDPFilter(obj string, ports ...uint16) (*Program, error) {
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", obj, err)
	}
	// The tool pins its maps by name; a benchmark wants private ones.
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var progName string
	for name, p := range spec.Programs {
		if p.Type == ebpf.XDP {
			progName = name
		}
	}
	if progName == "" {
		return nil, fmt.Errorf("%s: no XDP program", obj)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", obj, err)
	}
	portMap := coll.Maps["filter_ports"]
	if portMap == nil {
		coll.Close()
		return nil, fmt.Errorf("%s: no filter_ports map", obj)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("count CPUs: %w", err)
	}
	for _, port := range ports {
		vals := make([]uint64, cpus)
		for i := range vals {
			vals[i] = filterSrc | filterDst | filterTCP | filterUDP
		}
		if err := portMap.Update(portKey(port), vals, ebpf.UpdateAny); err != nil {
			coll.Close()
			return nil, fmt.Errorf("xdp-filter port %d: %w", port, err)
		}
	}
	prog := coll.DetachProgram(progName)
	return &Program{Name: XDPFilter, Prog: prog, close: func() error {
		coll.Close()
		return prog.Close()
	}}, nil
}

// portKey is the __u32 the program builds from udphdr->dest: the port's two
// bytes in network order in the low-addressed half, zeros above.
func portKey(port uint16) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint16(b[:2], port)
	return binary.NativeEndian.Uint32(b[:])
}
