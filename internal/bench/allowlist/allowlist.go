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
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	lengths := []int{16, 18, 20, 22, 23, 24, 24, 24, 24, 25, 26, 27, 28, 29, 30, 32, 32, 32}
	seen := make(map[netip.Prefix]struct{}, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		var b [4]byte
		v := r.Uint32()
		b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		p := netip.PrefixFrom(netip.AddrFrom4(b), lengths[r.IntN(len(lengths))]).Masked()
		if p.Contains(avoid) {
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

// SizeResult is xdpguard's per-packet cost on the drop path with Size
// prefixes loaded.
type SizeResult struct {
	Size     int
	Cell     *perpacket.Cell
	AddTime  time.Duration // loader.Maps.AllowAdd of all Size prefixes
	Verdict  uint32
	MapBytes uint64 // the IPv4 trie's memory as the kernel accounts it
}

// PerPacket loads one xdpguard instance per size, each with its own allow
// list of that many prefixes drawn from all (which must hold the largest
// size), and measures frame on all of them interleaved, as perpacket.Run does
// for different programs.
func PerPacket(sizes []int, all []netip.Prefix, frame []byte, rounds, repeat int) ([]SizeResult, error) {
	var subjects []perpacket.Subject
	out := make([]SizeResult, len(sizes))
	for i, n := range sizes {
		p, m, err := progs.LoadXdpguard(loader.MapSizes{})
		if err != nil {
			return nil, err
		}
		defer p.Close()
		start := time.Now()
		if n > 0 {
			if err := m.AllowAdd(all[:n]); err != nil {
				return nil, fmt.Errorf("allow list of %d: %w", n, err)
			}
		}
		out[i] = SizeResult{Size: n, AddTime: time.Since(start)}
		if info, err := m.Allow4.Info(); err == nil {
			out[i].MapBytes, _ = info.Memlock()
		}
		subjects = append(subjects, perpacket.Subject{Name: fmt.Sprint(n), Prog: p.Prog})
	}
	res, err := perpacket.Run(subjects, []perpacket.Input{{Name: "drop", Data: frame}}, rounds, repeat)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Cell = res.Cells[subjects[i].Name]["drop"]
		out[i].Verdict = out[i].Cell.Verdict
	}
	return out, nil
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
