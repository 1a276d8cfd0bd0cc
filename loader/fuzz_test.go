package loader

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/model"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// The config byte of a fuzz input:
//
//	bit 0     monitor mode
//	bit 1     strict fragment policy
//	bits 2-3  protected ports: fuzzPorts
//	bits 4-5  allow list: none, IPv4, IPv6, both (fuzzAllow4, fuzzAllow6)
//	bit 6     frame A runs at TC (egress), else at XDP (ingress)
//	bit 7     frame B runs at the other hook: the fragment table is shared
var fuzzPorts = [4][]uint16{{DefaultPort}, {53}, {53, 123, DefaultPort}, {1, 65535}}

// The direction byte of a fuzz input gives the ports of the config byte's
// set their directions and fills the request table:
//
//	bits 0-1  the set's first port: fuzzDirs
//	bits 2-3  its second port (if any)
//	bits 4-5  its third port (if any)
//	bits 6-7  request table: empty; frame A's reply awaited (the entry
//	          that makes frame A, at ingress, a solicited reply); the same
//	          entry expired; frame B's reply awaited
var fuzzDirs = [4]Direction{DirBoth, DirRequest, DirResponse, DirResponse}

// fuzzDirections applies the direction byte d to pol, with frames a and b
// as the L3 or Ethernet frames the programs will see.
func fuzzDirections(pol policy, d byte, a, b []byte, l3 bool) policy {
	pol.dirs = map[uint16]Direction{}
	for i, p := range pol.ports {
		pol.dirs[p] = fuzzDirs[d>>(2*i)&3]
	}
	var from []byte
	ttl := time.Hour
	switch d >> 6 {
	case 1:
		from = a
	case 2:
		from, ttl = a, -time.Hour
	case 3:
		from = b
	}
	if from != nil {
		p := model.Parse(from)
		if l3 {
			p = model.ParseL3(from)
		}
		if p.Kind == model.UDP {
			pol.reqs = []reqEntry{{local: netip.AddrPortFrom(p.Dst, p.DstPort), remote: netip.AddrPortFrom(p.Src, p.SrcPort), ttl: ttl}}
		}
	}
	return pol
}

// The length byte of a fuzz input rewrites each frame's IP length field
// (IPv4 total length, IPv6 payload length) so that it disagrees with the
// frame, as a crafted packet's does, and picks the entry points:
//
//	bits 0-1  frame A's length field: as built, shorter, longer, zero
//	bits 2-3  frame B's: the same
//	bits 4-6  by how many bytes shorter or longer: fuzzLenDeltas
//	bit 7     run the programs for links without a link-layer header, on
//	          the frames with their Ethernet header and tags stripped
//	          (frames without an IP part go in whole, as raw IP)
var fuzzLenDeltas = [8]int{1, 2, 4, 7, 8, 16, 40, 300}

const (
	lenAsBuilt = iota
	lenShorter
	lenLonger
	lenZero
)

// fuzzFrame applies the length byte's rewrite (mode, delta) to frame, then
// strips the link-layer header when l3 is set.
func fuzzFrame(frame []byte, mode int, delta int, l3 bool) []byte {
	if _, actual, err := testpkt.IPLength(frame); err == nil && mode != lenAsBuilt {
		n := 0
		switch mode {
		case lenShorter:
			n = actual - delta
		case lenLonger:
			n = actual + delta
		}
		// A cut frame's actual length can be negative.
		frame = testpkt.Must(testpkt.SetIPLength(frame, min(max(n, 0), 0xffff)))
	}
	if !l3 {
		return frame
	}
	if ip, ok := testpkt.L3(frame); ok {
		return ip
	}
	return frame
}

// The allow lists nest prefixes of several lengths around the addresses the
// table uses, plus a short prefix so that random addresses hit them too.
var (
	fuzzAllow4 = prefixes("203.0.0.0/8", "203.0.113.0/24", "192.0.2.10/32", "64.0.0.0/2")
	fuzzAllow6 = prefixes("2001:db9::/32", "2001:db9:1:2::/64", "2001:db8::10/128", "4000::/2")
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func fuzzConfig(c byte) (pol policy, hookA, hookB Hook) {
	if c&1 != 0 {
		pol.mode = ModeMonitor
	}
	if c&2 != 0 {
		pol.frag = FragStrict
	}
	pol.ports = fuzzPorts[c>>2&3]
	switch c >> 4 & 3 {
	case 1:
		pol.allow = fuzzAllow4
	case 2:
		pol.allow = fuzzAllow6
	case 3:
		pol.allow = append(append([]netip.Prefix(nil), fuzzAllow4...), fuzzAllow6...)
	}
	hookA = HookXDP
	if c&0x40 != 0 {
		hookA = HookTC
	}
	hookB = hookA
	if c&0x80 != 0 {
		hookB = 1 - hookA
	}
	return pol, hookA, hookB
}

// seedDirections maps a table case's directions to the nearest direction
// byte.
func seedDirections(p policy) byte {
	var d byte
	for i, port := range p.portList() {
		switch p.dirs[port] {
		case DirRequest:
			d |= 1 << (2 * i)
		case DirResponse:
			d |= 2 << (2 * i)
		}
	}
	if len(p.reqs) > 0 {
		d |= 1 << 6
	}
	return d
}

// seedConfig maps a table case's policy to the nearest config byte.
func seedConfig(p policy, hook Hook) byte {
	var c byte
	if p.mode == ModeMonitor {
		c |= 1
	}
	if p.frag == FragStrict {
		c |= 2
	}
	switch {
	case len(p.ports) == 1 && p.ports[0] == 53:
		c |= 1 << 2
	case len(p.ports) >= 2 && p.ports[0] == 53:
		c |= 2 << 2
	case len(p.ports) == 2 && p.ports[0] == 1:
		c |= 3 << 2
	}
	for _, a := range p.allow {
		if a.Addr().Is4() {
			c |= 1 << 4
		} else {
			c |= 2 << 4
		}
	}
	if hook == HookTC {
		c |= 0x40
	}
	return c
}

// FuzzDifferential runs two frames through a kernel program and through the
// model, with a fresh fragment table and the request table the direction
// byte fills, and fails on any disagreement in verdict or reason, or in the
// request table's keys afterwards.
func FuzzDifferential(f *testing.F) {
	for n, c := range dataplaneCases() {
		for _, hook := range []Hook{HookXDP, HookTC} {
			cfg := seedConfig(c.pol, hook)
			// Each case once as built, once with its length fields
			// rewritten and the L3 entry points, in turn.
			lens := []byte{0, byte(n%3+1) | byte(n%3+1)<<2 | byte(n%8)<<4 | byte(n%2)<<7}
			for _, l := range lens {
				if len(c.steps) == 1 {
					f.Add(c.steps[0].frame, c.steps[0].frame, cfg, l, byte(0))
				}
				for i := 0; i+1 < len(c.steps); i++ {
					f.Add(c.steps[i].frame, c.steps[i+1].frame, cfg, l, byte(0))
				}
			}
		}
	}
	// The solicited-reply cases: a request out, then its reply in (the
	// config byte's bit 7 runs frame B at the other hook), and replies
	// with the table filled from them.
	for _, c := range solicitCases() {
		for i := 0; i+1 < len(c.steps); i++ {
			cfg := seedConfig(c.pol, c.steps[i].hook)
			if c.steps[i].hook != c.steps[i+1].hook {
				cfg |= 0x80
			}
			d := seedDirections(c.pol)
			f.Add(c.steps[i].frame, c.steps[i+1].frame, cfg, byte(0), d)
			f.Add(c.steps[i+1].frame, c.steps[i].frame, cfg&^0x40, byte(0), d|3<<6)
		}
	}
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, a, b []byte, c, l, d byte) {
		pol, hookA, hookB := fuzzConfig(c)
		h.l3 = l&0x80 != 0
		delta := fuzzLenDeltas[l>>4&7]
		a = fuzzFrame(a, int(l&3), delta, h.l3)
		b = fuzzFrame(b, int(l>>2&3), delta, h.l3)
		if !testRunTakes(hookA, a) || !testRunTakes(hookB, b) {
			// Not a verdict to compare: the kernel refuses to run the
			// program on it (TestDataplaneTable checks it refuses).
			return
		}
		pol = fuzzDirections(pol, d, a, b, h.l3)
		if err := h.configure(pol); err != nil {
			t.Fatal(err)
		}
		mod := pol.newModel()
		var log strings.Builder
		fmt.Fprintf(&log, "config byte %#02x: %s; length byte %#02x (L3 entry points: %t); direction byte %#02x\n", c, pol, l, h.l3, d)
		for i, in := range []struct {
			hook  Hook
			frame []byte
		}{{hookA, a}, {hookB, b}} {
			ret, got, err := h.run(in.hook, in.frame, true)
			mr := h.classify(mod, in.frame, in.hook)
			fmt.Fprintf(&log, "frame %c at %s: kernel %s (ret %#x), model %s\n  parsed: %s\n  bytes: %s\n",
				'A'+i, in.hook, got, ret, mr.Reason, mr.Parse, dump(in.frame))
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if got.String() != mr.Reason.String() || ret != wantRet(in.hook, got) ||
				got.Dropped() != (mr.Verdict == model.VerdictDrop) {
				t.Fatalf("kernel and model disagree on frame %c\n%s", 'A'+i, log.String())
			}
		}
		kernel, err := h.m.Requests()
		if err != nil {
			t.Fatal(err)
		}
		want := mod.Requests()
		if len(kernel) != len(want) {
			t.Fatalf("request table: kernel %v, model %v\n%s", kernel, want, log.String())
		}
		for _, r := range kernel {
			k := model.RequestKey{Local: r.Local.Addr(), Remote: r.Remote.Addr(), LocalPort: r.Local.Port(), RemotePort: r.Remote.Port()}
			if _, ok := want[k]; !ok {
				t.Fatalf("request table: kernel has %v, model %v\n%s", k, want, log.String())
			}
		}
	})
}

// fuzzBlocks are the leading bytes fuzzed allow-list prefixes and peers
// start with: few, so that prefixes nest, share blocks and end at each
// other's edges; 0x00 and 0xff for the ends of the address space.
var fuzzBlocks = [8][3]byte{{203, 0, 113}, {203, 0, 114}, {203, 1, 0}, {0, 0, 0}, {255, 255, 255}, {10, 255, 255}, {11, 0, 0}, {0x20, 0x01, 0x0d}}

// fuzzPrefix reads a prefix from 6 bytes: family and leading bytes, length,
// then the address's next three bytes (the rest zero or ones).
func fuzzPrefix(b []byte) netip.Prefix {
	lead := fuzzBlocks[b[0]&7]
	if b[0]&0x80 != 0 { // IPv6
		var a [16]byte
		copy(a[:], lead[:])
		copy(a[3:], b[2:5])
		if b[0]&0x40 != 0 {
			for i := 6; i < 16; i++ {
				a[i] = 0xff
			}
		}
		return netip.PrefixFrom(netip.AddrFrom16(a), int(b[1])%129).Masked()
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{lead[0], lead[1], lead[2] ^ b[2]&b[5], b[3]}), int(b[1])%33).Masked()
}

// edges returns the addresses on both sides of each edge of p and of the
// first and last block it touches.
func edges(p netip.Prefix) []netip.Addr {
	first := p.Masked().Addr()
	last := first
	for i := p.Bits(); i < first.BitLen(); i++ {
		b := last.AsSlice()
		b[i/8] |= 0x80 >> (i % 8)
		last, _ = netip.AddrFromSlice(b)
	}
	blockFirst, blockLast := first.AsSlice(), last.AsSlice()
	for i := 3; i < len(blockFirst); i++ {
		blockFirst[i], blockLast[i] = 0, 0xff
	}
	bf, _ := netip.AddrFromSlice(blockFirst)
	bl, _ := netip.AddrFromSlice(blockLast)
	out := []netip.Addr{first, last, bf, bl}
	for _, a := range []netip.Addr{first, bf} {
		if prev := a.Prev(); prev.IsValid() {
			out = append(out, prev)
		}
	}
	for _, a := range []netip.Addr{last, bl} {
		if next := a.Next(); next.IsValid() {
			out = append(out, next)
		}
	}
	return out
}

// FuzzAllowList checks the allow-list lookup (block bitmap, then trie)
// against the model's plain prefix list: a random list is loaded, changed
// into another (additions, then deletions, as Apply orders them), and after
// each step peers at the edges of every prefix and of every block it
// touches, at both hooks, get the model's verdict; and each bitmap holds
// exactly the blocks the list touches.
func FuzzAllowList(f *testing.F) {
	f.Add([]byte{0, 24, 0, 0, 0, 0, 0x80 | 7, 48, 0, 0, 0, 0}, byte(1))
	f.Add([]byte{0, 8, 0, 0, 0, 0, 1, 32, 0, 0, 9, 0, 2, 23, 1, 0, 0, 1, 3, 0, 0, 0, 0, 0}, byte(2))
	f.Add([]byte{4, 32, 0, 0, 255, 0, 5, 9, 0, 0, 0, 0, 0xc7, 128, 1, 2, 3, 0, 0x87, 20, 0, 0, 0, 0, 0x83, 0, 0, 0, 0, 0}, byte(3))
	f.Add([]byte{6, 16, 0, 0, 0, 0, 6, 25, 0, 0, 128, 0, 0x86, 24, 0, 0, 0, 0, 0x86, 23, 1, 0, 0, 0}, byte(4))
	h := newHarness(f)
	host4, host6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	f.Fuzz(func(t *testing.T, data []byte, split byte) {
		var ps []netip.Prefix
		for i := 0; i+6 <= len(data) && len(ps) < 24; i += 6 {
			ps = append(ps, fuzzPrefix(data[i:i+6]))
		}
		// The first list, then the second: what split says of each.
		var before, after []netip.Prefix
		for i, p := range ps {
			if i%3 != int(split)%3 {
				before = append(before, p)
			}
			if (i+int(split))%2 == 0 {
				after = append(after, p)
			}
		}
		if err := h.m.AllowFlush(); err != nil {
			t.Fatal(err)
		}
		h.allow = nil // configure must rewrite it for other users
		check := func(step string, list []netip.Prefix) {
			t.Helper()
			mod := model.New(policy{allow: list}.model())
			var peers []netip.Addr
			for _, p := range ps {
				peers = append(peers, edges(p)...)
			}
			slices.SortFunc(peers, netip.Addr.Compare)
			peers = slices.Compact(peers)
			for _, peer := range peers {
				for _, hook := range []Hook{HookXDP, HookTC} {
					src, dst := peer, host4
					if peer.Is6() {
						dst = host6
					}
					if hook == HookTC {
						src, dst = dst, src
					}
					frame := fr(req4(src, dst))
					if peer.Is6() {
						frame = fr(req6(src, dst))
					}
					_, got, err := h.run(hook, frame, true)
					if err != nil {
						t.Fatal(err)
					}
					if want := h.classify(mod, frame, hook).Reason; got.String() != want.String() {
						t.Fatalf("%s: peer %s at %s: kernel %s, model %s\nlist %v", step, peer, hook, got, want, list)
					}
				}
			}
			w4, w6 := blocksOf(list)
			for _, c := range []struct {
				m    *ebpf.Map
				want blockBitmap
			}{{h.m.Allow4Blocks, w4}, {h.m.Allow6Blocks, w6}} {
				got, err := readBlocks(c.m)
				if err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if c.want == nil && got[i] != 0 || c.want != nil && got[i] != c.want[i] {
						t.Fatalf("%s: bitmap word %#x is %#x; the list %v touches %#x", step, i, got[i], list, c.want[i])
					}
				}
			}
		}
		before = sortedSet(before)
		after = sortedSet(after)
		if err := h.m.AllowAdd(before); err != nil {
			t.Fatal(err)
		}
		check("first list", before)
		add, del := diffSorted(after, before)
		if err := h.m.AllowAdd(add); err != nil {
			t.Fatal(err)
		}
		if err := h.m.AllowDel(del); err != nil {
			t.Fatal(err)
		}
		check("second list", after)
	})
}
