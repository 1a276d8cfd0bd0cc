// Package memory reports what each of xdpguard's maps costs in kernel
// memory at its default size, as the kernel itself accounts it.
package memory

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/loader"
)

// Map is one map's shape and memory.
type Map struct {
	Name       string
	Type       ebpf.MapType
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	// Memlock is the kernel's figure from the map's fdinfo: for
	// preallocated maps (arrays, the LRU) the whole map, for the
	// non-preallocated LPM tries only the entries present.
	Memlock uint64
	PerCPU  bool
	Scope   string // "host" (shared by every interface) or "interface"
}

// Defaults creates xdpguard's maps and one interface's data plane with
// their default sizes, reads their sizes, and releases them.
func Defaults() ([]Map, error) {
	m, err := loader.NewMaps(loader.MapSizes{})
	if err != nil {
		return nil, fmt.Errorf("create maps: %w", err)
	}
	defer m.Close()
	dp, err := loader.LoadDataplane(m, loader.Counters{})
	if err != nil {
		return nil, fmt.Errorf("load data plane: %w", err)
	}
	defer dp.Close()
	var out []Map
	var errs []error
	for _, x := range []struct {
		m     *ebpf.Map
		scope string
	}{{m.Config, "host"}, {m.Allow4, "host"}, {m.Allow6, "host"}, {m.Allow4Blocks, "host"}, {m.Allow6Blocks, "host"},
		{m.Frags4, "host"}, {m.Frags6, "host"}, {m.FragCache4, "host"}, {m.FragCache6, "host"}, {m.Req4, "host"}, {m.Req6, "host"}, {m.Expiry, "host"},
		{m.Samples, "host"}, {m.SampleRateMap, "host"}, {m.SampleBudget, "host"},
		{dp.Stats, "interface"}, {dp.Stats2, "interface"}, {dp.SampleStats, "interface"}, {dp.SampleStats2, "interface"}} {
		info, err := x.m.Info()
		if err != nil {
			errs = append(errs, fmt.Errorf("map info: %w", err))
			continue
		}
		// Zero (reported as unavailable) is what an empty LPM trie uses;
		// a preallocated map with no figure is an error.
		mem, ok := info.Memlock()
		if !ok && info.Type != ebpf.LPMTrie {
			errs = append(errs, fmt.Errorf("map %s: the kernel reports no memlock", info.Name))
		}
		out = append(out, Map{
			Name: info.Name, Type: info.Type, KeySize: info.KeySize, ValueSize: info.ValueSize,
			MaxEntries: info.MaxEntries, Memlock: mem, PerCPU: info.Type == ebpf.PerCPUArray,
			Scope: x.scope,
		})
	}
	return out, errors.Join(errs...)
}
