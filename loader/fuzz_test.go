package loader

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

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
	case len(p.ports) == 2 && p.ports[0] == 53:
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
// model, with a fresh fragment table, and fails on any disagreement in
// verdict or reason.
func FuzzDifferential(f *testing.F) {
	for n, c := range dataplaneCases() {
		for _, hook := range []Hook{HookXDP, HookTC} {
			cfg := seedConfig(c.pol, hook)
			// Each case once as built, once with its length fields
			// rewritten and the L3 entry points, in turn.
			lens := []byte{0, byte(n%3+1) | byte(n%3+1)<<2 | byte(n%8)<<4 | byte(n%2)<<7}
			for _, l := range lens {
				if len(c.steps) == 1 {
					f.Add(c.steps[0].frame, c.steps[0].frame, cfg, l)
				}
				for i := 0; i+1 < len(c.steps); i++ {
					f.Add(c.steps[i].frame, c.steps[i+1].frame, cfg, l)
				}
			}
		}
	}
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, a, b []byte, c, l byte) {
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
		if err := h.configure(pol); err != nil {
			t.Fatal(err)
		}
		mod := model.New(pol.model())
		var log strings.Builder
		fmt.Fprintf(&log, "config byte %#02x: %s; length byte %#02x (L3 entry points: %t)\n", c, pol, l, h.l3)
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
	})
}
