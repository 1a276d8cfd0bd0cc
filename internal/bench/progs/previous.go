package progs

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/loader"
)

// PreviousObject is the previous release's BPF object, kept for the
// loader's upgrade tests (loader/testdata/v0); the benchmarks run it beside
// the current one so that "no slower than before" is measured in the same
// run.
const PreviousObject = "loader/testdata/v0/xdpguard_bpfel.o"

// PreviousProgram is that release's XDP program on fresh maps of its own.
type PreviousProgram struct {
	*Program
	config, allow4, allow6 *ebpf.Map
}

// The previous release's config value: mode, fragment policy, the two
// allow-list switches, then the port bitmap.
const (
	prevAllow4Active = 8
	prevAllow6Active = 12
	prevPorts        = 16
)

// LoadPrevious loads obj's xdpguard_xdp with its default configuration
// (enforce, track, port 11211) on fresh maps.
func LoadPrevious(obj string) (*PreviousProgram, error) {
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		return nil, fmt.Errorf("previous release's object: %w", err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load previous release's object %s: %w", obj, err)
	}
	p := &PreviousProgram{
		Program: &Program{Name: Previous, Prog: coll.Programs["xdpguard_xdp"], close: func() error { coll.Close(); return nil }},
		config:  coll.Maps["xdpguard_config"], allow4: coll.Maps["xdpguard_allow4"], allow6: coll.Maps["xdpguard_allow6"],
	}
	if p.Prog == nil || p.config == nil || p.allow4 == nil || p.allow6 == nil {
		coll.Close()
		return nil, fmt.Errorf("%s: not an xdpguard object (missing program or maps)", obj)
	}
	if err := p.setConfig(func(raw []byte) {
		binary.NativeEndian.PutUint64(raw[prevPorts+8*(loader.DefaultPort/64):], 1<<(loader.DefaultPort%64))
	}); err != nil {
		coll.Close()
		return nil, err
	}
	return p, nil
}

func (p *PreviousProgram) setConfig(fn func([]byte)) error {
	raw := make([]byte, p.config.ValueSize())
	if err := p.config.Lookup(uint32(0), raw); err != nil {
		return fmt.Errorf("read previous release's config: %w", err)
	}
	fn(raw)
	if err := p.config.Update(uint32(0), raw, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("write previous release's config: %w", err)
	}
	return nil
}

type lpm4Key struct {
	Prefixlen uint32
	Addr      [4]byte
}

type lpm6Key struct {
	Prefixlen uint32
	Addr      [16]byte
}

// AllowAdd inserts ps into the previous release's tries, sorted, in batches,
// and turns on the lookup of each family, as that release's loader did.
func (p *PreviousProgram) AllowAdd(ps []netip.Prefix) error {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	var k4 []lpm4Key
	var k6 []lpm6Key
	for _, q := range ps {
		if q.Addr().Is4() {
			k4 = append(k4, lpm4Key{uint32(q.Bits()), q.Addr().As4()})
		} else {
			k6 = append(k6, lpm6Key{uint32(q.Bits()), q.Addr().As16()})
		}
	}
	if err := batchPut(p.allow4, k4); err != nil {
		return err
	}
	if err := batchPut(p.allow6, k6); err != nil {
		return err
	}
	return p.setConfig(func(raw []byte) {
		if len(k4) > 0 {
			binary.NativeEndian.PutUint32(raw[prevAllow4Active:], 1)
		}
		if len(k6) > 0 {
			binary.NativeEndian.PutUint32(raw[prevAllow6Active:], 1)
		}
	})
}

func batchPut[K any](m *ebpf.Map, keys []K) error {
	const chunk = 65536
	for len(keys) > 0 {
		n := min(len(keys), chunk)
		vals := slices.Repeat([]uint8{1}, n)
		if _, err := m.BatchUpdate(keys[:n], vals, nil); err != nil {
			return fmt.Errorf("fill previous release's allow list: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}
