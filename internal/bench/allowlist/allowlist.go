// Package allowlist measures what xdpguard's allow list costs: per packet on
// the drop path as the list grows, and the time to bulk-load it through the
// command line tool.
package allowlist

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/bench/perpacket"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// RandomPrefixes returns n distinct random IPv4 prefixes of mixed lengths,
// /16 to /32 with /24 and /32 the most common as in real allow lists, none
// of them covering avoid (so a frame from avoid stays on the drop path and
// walks the trie to the end). The same seed gives the same list.
func RandomPrefixes(n int, seed uint64, avoid netip.Addr) []netip.Prefix {
	return RandomPrefixesAvoiding(n, seed, func(p netip.Prefix) bool { return p.Contains(avoid) })
}

// RandomPrefixesAvoiding is RandomPrefixes without the prefixes reject
// says yes to.
func RandomPrefixesAvoiding(n int, seed uint64, reject func(netip.Prefix) bool) []netip.Prefix {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	lengths := []int{16, 18, 20, 22, 23, 24, 24, 24, 24, 25, 26, 27, 28, 29, 30, 32, 32, 32}
	return distinct(n, reject, func() netip.Prefix {
		var b [4]byte
		v := r.Uint32()
		b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		return netip.PrefixFrom(netip.AddrFrom4(b), lengths[r.IntN(len(lengths))]).Masked()
	})
}

// RandomPrefixes6 returns n distinct random IPv6 prefixes in 2000::/3 (where
// global unicast addresses are), /32 to /128 with /48, /56, /64 and /128 the
// most common, none covering avoid. The same seed gives the same list.
func RandomPrefixes6(n int, seed uint64, avoid netip.Addr) []netip.Prefix {
	r := rand.New(rand.NewPCG(seed, seed^0x6a09e667f3bcc909))
	lengths := []int{32, 40, 44, 48, 48, 48, 52, 56, 56, 60, 64, 64, 64, 64, 96, 112, 128, 128, 128}
	return distinct(n, func(p netip.Prefix) bool { return p.Contains(avoid) }, func() netip.Prefix {
		var b [16]byte
		for i := 0; i < 16; i += 8 {
			v := r.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		b[0] = 0x20 | b[0]&0x1f
		return netip.PrefixFrom(netip.AddrFrom16(b), lengths[r.IntN(len(lengths))]).Masked()
	})
}

func distinct(n int, reject func(netip.Prefix) bool, next func() netip.Prefix) []netip.Prefix {
	seen := make(map[netip.Prefix]struct{}, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		p := next()
		if reject(p) {
			continue
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		out = append(out, p)
	}
	return out
}

// WriteFile writes ps one CIDR a line, the format `xdpguard allow load` reads.
func WriteFile(path string, ps []netip.Prefix) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, p := range ps {
		w.WriteString(p.String())
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SizeResult is the per-packet cost of the drop path with Size prefixes of
// one family loaded, for the current data plane and the previous release's.
type SizeResult struct {
	Family int // 4 or 6
	Size   int
	// By progs.Xdpguard and progs.Previous: a request from an address on no
	// list (dropped), and from an address inside the list's first prefix
	// (passed as allowlisted; nil for the empty list).
	Outside, Inside map[string]*perpacket.Cell
	AddTime         time.Duration // loader.Maps.AllowAdd of all Size prefixes
	PrevAddTime     time.Duration // the previous release's batch insert of the same
	TrieBytes       uint64        // the trie's memory as the kernel accounts it
	BlockBytes      uint64        // the block bitmap's
	// Rejected is the share of random addresses on no list (IPv4: anywhere;
	// IPv6: in 2000::/3) whose block's bit is clear, so that the data
	// plane drops them without walking the trie; Sampled is how many.
	Rejected float64
	Sampled  int
}

// PerPacket loads, for each size, the current xdpguard and the previous
// release's (prevObj) with allow lists of that many prefixes drawn from all
// (which must hold the largest size), and measures outside and a request
// from inside all[0] on all of them interleaved, as perpacket.Run does for
// different programs. outside must be on no list.
func PerPacket(family int, sizes []int, all []netip.Prefix, outside func(netip.Addr) ([]byte, error), avoid netip.Addr, prevObj string, rounds, repeat int) ([]SizeResult, error) {
	var subjects []perpacket.Subject
	out := make([]SizeResult, len(sizes))
	outFrame, err := outside(avoid)
	if err != nil {
		return nil, err
	}
	inFrame, err := outside(all[0].Addr())
	if err != nil {
		return nil, err
	}
	for i, n := range sizes {
		p, m, err := progs.LoadXdpguard(loader.MapSizes{})
		if err != nil {
			return nil, err
		}
		defer p.Close()
		prev, err := progs.LoadPrevious(prevObj)
		if err != nil {
			return nil, err
		}
		defer prev.Close()
		start := time.Now()
		if n > 0 {
			if err := m.AllowAdd(all[:n]); err != nil {
				return nil, fmt.Errorf("allow list of %d: %w", n, err)
			}
		}
		out[i] = SizeResult{Family: family, Size: n, AddTime: time.Since(start)}
		if n > 0 {
			start := time.Now()
			if err := prev.AllowAdd(all[:n]); err != nil {
				return nil, err
			}
			out[i].PrevAddTime = time.Since(start)
		}
		trie, blocks := m.Allow4, m.Allow4Blocks
		if family == 6 {
			trie, blocks = m.Allow6, m.Allow6Blocks
		}
		if info, err := trie.Info(); err == nil {
			out[i].TrieBytes, _ = info.Memlock()
		}
		if info, err := blocks.Info(); err == nil {
			out[i].BlockBytes, _ = info.Memlock()
		}
		if out[i].Rejected, out[i].Sampled, err = rejected(family, all[:n], blocks); err != nil {
			return nil, err
		}
		subjects = append(subjects,
			perpacket.Subject{Name: fmt.Sprintf("%s/%d", progs.Xdpguard, n), Prog: p.Prog},
			perpacket.Subject{Name: fmt.Sprintf("%s/%d", progs.Previous, n), Prog: prev.Prog})
	}
	res, err := perpacket.Run(subjects, []perpacket.Input{{Name: "outside", Data: outFrame}, {Name: "inside", Data: inFrame}}, rounds, repeat)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Outside, out[i].Inside = map[string]*perpacket.Cell{}, map[string]*perpacket.Cell{}
		for _, v := range []string{progs.Xdpguard, progs.Previous} {
			cells := res.Cells[fmt.Sprintf("%s/%d", v, out[i].Size)]
			out[i].Outside[v] = cells["outside"]
			if out[i].Size > 0 {
				out[i].Inside[v] = cells["inside"]
			}
		}
	}
	return out, nil
}

// rejectSamples is how many random addresses on no list rejected draws.
const rejectSamples = 20000

// rejected reads the kernel's bitmap for random addresses that no prefix of
// list covers, and returns the share whose block's bit is clear.
func rejected(family int, list []netip.Prefix, blocks *ebpf.Map) (float64, int, error) {
	set := make(map[netip.Prefix]struct{}, len(list))
	for _, p := range list {
		set[p] = struct{}{}
	}
	listed := func(a netip.Addr) bool {
		for bits := 0; bits <= a.BitLen(); bits++ {
			if _, ok := set[netip.PrefixFrom(a, bits).Masked()]; ok {
				return true
			}
		}
		return false
	}
	r := rand.New(rand.NewPCG(uint64(family), 99))
	clear, n := 0, 0
	for n < rejectSamples {
		var a netip.Addr
		if family == 4 {
			v := r.Uint32()
			a = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		} else {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			b[0] = 0x20 | b[0]&0x1f
			a = netip.AddrFrom16(b)
		}
		if listed(a) {
			continue
		}
		n++
		lead := a.AsSlice()
		block := uint32(lead[0])<<16 | uint32(lead[1])<<8 | uint32(lead[2])
		var word uint64
		if err := blocks.Lookup(block/64, &word); err != nil {
			return 0, 0, fmt.Errorf("read block bitmap: %w", err)
		}
		if word>>(block%64)&1 == 0 {
			clear++
		}
	}
	return float64(clear) / float64(n), n, nil
}

// LoadResult is one `xdpguard allow load` through the command line tool.
type LoadResult struct {
	Size    int
	Elapsed time.Duration // the whole command: start, parse, load, exit
	Count   int           // IPv4 entries in the pinned trie afterwards
	Memlock uint64        // the kernel's accounting of the pinned IPv4 trie
}

// CLILoad times `xdpguard allow load FILE`, FILE holding n prefixes, on an
// interface attached in a throwaway namespace pair with a throwaway pin
// path; all three are removed before it returns.
func CLILoad(bin, pinPath, nsName, file string, n int) (res LoadResult, err error) {
	res.Size = n
	ns, err := nstest.Create(nsName)
	if err != nil {
		return res, err
	}
	defer ns.Close()
	peer, err := nstest.Create(nsName + "p")
	if err != nil {
		return res, err
	}
	defer peer.Close()
	if err := nstest.VethPair(ns, "xgb0", peer, "xgb1", 0); err != nil {
		return res, err
	}
	defer os.RemoveAll(pinPath)
	if _, err := ns.Run(bin, "--pin-path", pinPath, "attach", "xgb0"); err != nil {
		return res, err
	}
	defer func() {
		if _, derr := ns.Run(bin, "--pin-path", pinPath, "detach", "--all"); derr != nil && err == nil {
			err = derr
		}
	}()
	start := time.Now()
	if _, err := ns.Run(bin, "--pin-path", pinPath, "allow", "load", file); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	// Read back through the loader, as `xdpguard status` does.
	g, err := loader.OpenReadOnly(pinPath)
	if err != nil {
		return res, err
	}
	defer g.Close()
	if res.Count, _, err = g.Maps.AllowCount(); err != nil {
		return res, err
	}
	if info, err := g.Maps.Allow4.Info(); err == nil {
		res.Memlock, _ = info.Memlock()
	}
	if res.Count != n {
		return res, fmt.Errorf("allow load of %d prefixes left %d entries", n, res.Count)
	}
	return res, nil
}
