package model

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// The model's tests build frames by hand, byte by byte, rather than with
// testpkt: the model is the reference other tests trust, so its own tests
// should depend on as little as possible.

var (
	a4 = netip.MustParseAddr("203.0.113.7")
	b4 = netip.MustParseAddr("192.0.2.10")
	a6 = netip.MustParseAddr("2001:db9::7")
	b6 = netip.MustParseAddr("2001:db8::10")
)

func eth(etherType uint16, tags ...uint16) []byte {
	b := make([]byte, 12, 64)
	types := append(tags, etherType)
	b = binary.BigEndian.AppendUint16(b, types[0])
	for _, t := range types[1:] {
		b = append(b, 0, 7) // TCI: VID 7
		b = binary.BigEndian.AppendUint16(b, t)
	}
	return b
}

func ipv4(src, dst netip.Addr, proto uint8, id, frag uint16, opts int) []byte {
	h := make([]byte, 20+opts)
	h[0] = 0x40 | byte((20+opts)/4)
	binary.BigEndian.PutUint16(h[4:], id)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8], h[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	for i := 20; i < len(h); i++ {
		h[i] = 1 // NOP
	}
	return h
}

func ipv6(src, dst netip.Addr, next uint8) []byte {
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, next, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return h
}

func udp(sport, dport uint16) []byte {
	u := make([]byte, 8)
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], 8)
	return u
}

func ext(next uint8, length int) []byte {
	e := make([]byte, length)
	e[0], e[1] = next, byte(length/8-1)
	return e
}

func ah(next uint8, length int) []byte {
	e := make([]byte, length)
	e[0], e[1] = next, byte(length/4-2)
	return e
}

func frag6(next uint8, offset int, more bool, id uint32) []byte {
	e := make([]byte, 8)
	e[0] = next
	fo := uint16(offset/8) << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(e[2:], fo)
	binary.BigEndian.PutUint32(e[4:], id)
	return e
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func def() Config { return Config{Ports: []uint16{11211}} }

func TestParseAndDecide(t *testing.T) {
	v4udp := func(sport, dport uint16) []byte {
		return cat(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(sport, dport))
	}
	v6udp := func(sport, dport uint16, exts ...[]byte) []byte {
		first := uint8(17)
		if len(exts) > 0 {
			first = exts[0][len(exts[0])-1]
			exts[0] = exts[0][:len(exts[0])-1]
		}
		return cat(eth(0x86dd), ipv6(a6, b6, first), cat(exts...), udp(sport, dport))
	}
	// typed prefixes an extension chain with the type of its first header
	// (v6udp strips it again): a small trick to keep the table short.
	typed := func(first uint8, exts ...[]byte) []byte { return append(cat(exts...), first) }

	var nine [][]byte
	for range 9 {
		nine = append(nine, ext(60, 8))
	}
	nine[8][0] = 17
	eight := nine[1:]

	for _, c := range []struct {
		name  string
		frame []byte
		kind  Kind
		want  Reason
	}{
		{"runt", make([]byte, 13), NotIP, Pass},
		{"ARP", cat(eth(0x0806), make([]byte, 28)), NotIP, Pass},
		{"v4 request", v4udp(40000, 11211), UDP, DropRequest},
		{"v4 response", v4udp(11211, 40000), UDP, DropResponse},
		{"v4 both ports", v4udp(11211, 11211), UDP, DropRequest},
		{"v4 other UDP", v4udp(53, 5353), UDP, Pass},
		{"v4 TCP", cat(eth(0x0800), ipv4(a4, b4, 6, 1, 0, 0), udp(1, 11211)), NotUDP, Pass},
		{"v4 options", cat(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 40), udp(1, 11211)), UDP, DropRequest},
		{"v4 options past end", cat(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 40))[:14+40], Malformed, DropMalformed},
		{"v4 19 bytes", v4udp(1, 11211)[:14+19], Malformed, DropMalformed},
		{"v4 version 5", cat(eth(0x0800), []byte{0x55}, v4udp(1, 11211)[15:]), Malformed, DropMalformed},
		{"v4 IHL 4", cat(eth(0x0800), []byte{0x44}, v4udp(1, 11211)[15:]), Malformed, DropMalformed},
		{"v4 UDP cut", v4udp(1, 11211)[:14+20+7], Malformed, DropMalformed},
		{"v4 UDP cut, TCP", cat(eth(0x0800), ipv4(a4, b4, 6, 1, 0, 0)), NotUDP, Pass},
		{"one tag", cat(eth(0x0800, 0x8100), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211)), UDP, DropRequest},
		{"two tags", cat(eth(0x0800, 0x88a8, 0x8100), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211)), UDP, DropRequest},
		{"three tags", cat(eth(0x0806, 0x88a8, 0x8100, 0x8100), make([]byte, 28)), Malformed, DropMalformed},
		{"tag cut", cat(eth(0x0800, 0x8100))[:17], Malformed, DropMalformed},
		{"v6 request", v6udp(40000, 11211), UDP, DropRequest},
		{"v6 response", v6udp(11211, 1), UDP, DropResponse},
		{"v6 39 bytes", v6udp(1, 11211)[:14+39], Malformed, DropMalformed},
		{"v6 version 4", cat(eth(0x86dd), []byte{0x40}, v6udp(1, 11211)[15:]), Malformed, DropMalformed},
		{"v6 hop-by-hop", v6udp(1, 11211, typed(0, ext(17, 16))), UDP, DropRequest},
		{"v6 AH 12 bytes", v6udp(1, 11211, typed(51, ah(17, 12))), UDP, DropRequest},
		{"v6 AH read as 8-octet units would miss", v6udp(1, 11211, typed(51, ah(60, 16), ext(17, 8))), UDP, DropRequest},
		{"v6 8 headers", v6udp(1, 11211, typed(60, eight...)), UDP, DropRequest},
		{"v6 9 headers", v6udp(1, 2, typed(60, nine...)), Malformed, DropMalformed},
		{"v6 ext cut", cat(eth(0x86dd), ipv6(a6, b6, 43), []byte{17}), Malformed, DropMalformed},
		{"v6 ext past the end, TCP", cat(eth(0x86dd), ipv6(a6, b6, 43), []byte{6, 200}), NotUDP, Pass},
		{"v6 ext past the end, UDP", cat(eth(0x86dd), ipv6(a6, b6, 43), []byte{17, 200}), Malformed, DropMalformed},
		{"v6 no next header", cat(eth(0x86dd), ipv6(a6, b6, 59)), NotUDP, Pass},
		{"v6 later fragment of TCP", cat(eth(0x86dd), ipv6(a6, b6, 44), frag6(6, 8, false, 1)), NotUDP, Pass},
		{"v6 frag header cut", cat(eth(0x86dd), ipv6(a6, b6, 44), frag6(17, 0, true, 1)[:7]), Malformed, DropMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := New(def())
			r := m.Classify(c.frame, Ingress)
			if r.Parse.Kind != c.kind || r.Reason != c.want || r.Verdict == VerdictDrop != c.want.Dropped() {
				t.Fatalf("got %s/%s/%s, want %s/%s\n  parsed %s", r.Parse.Kind, r.Reason, r.Verdict, c.kind, c.want, r.Parse)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	p := Parse(cat(eth(0x86dd, 0x8100), ipv6(a6, b6, 0), ext(44, 8), frag6(17, 0, true, 0xabcdef01), udp(5, 6)))
	if p.Kind != UDP || p.Family != 6 || p.Src != a6 || p.Dst != b6 || p.SrcPort != 5 || p.DstPort != 6 ||
		p.FragID != 0xabcdef01 || p.FragProto != 17 || !p.FirstFragment || p.VLANs != 1 || p.ExtHeaders != 2 {
		t.Fatalf("parsed %+v", p)
	}
	p = Parse(cat(eth(0x0800), ipv4(a4, b4, 17, 0x4242, 0x2000, 0), udp(1, 2)))
	if !p.FirstFragment || p.FragID != 0x4242 || p.Src != a4 || p.Dst != b4 {
		t.Fatalf("parsed %+v", p)
	}
}

func TestFragments(t *testing.T) {
	first := cat(eth(0x0800), ipv4(a4, b4, 17, 7, 0x2000, 0), udp(11211, 1))
	later := cat(eth(0x0800), ipv4(a4, b4, 17, 7, 0x2000|3, 0), make([]byte, 24))
	last := cat(eth(0x0800), ipv4(a4, b4, 17, 7, 6, 0), make([]byte, 24))
	otherID := cat(eth(0x0800), ipv4(a4, b4, 17, 8, 3, 0), make([]byte, 24))
	otherProto := cat(eth(0x0800), ipv4(a4, b4, 6, 7, 3, 0), make([]byte, 24))

	m := New(def())
	steps := []struct {
		frame []byte
		want  Reason
	}{
		{later, PassOrphanFragment},
		{first, DropResponse},
		{later, DropFragment},
		{last, DropFragment},
		{otherID, PassOrphanFragment},
		{otherProto, Pass}, // a TCP fragment: not UDP, never looked up
	}
	for i, s := range steps {
		if r := m.Classify(s.frame, Ingress); r.Reason != s.want {
			t.Fatalf("step %d: %s, want %s (%s)", i, r.Reason, s.want, r.Parse)
		}
	}
	key := FragKey{ID: 7, Family: 4, Proto: 17}
	s, d := a4.As4(), b4.As4()
	copy(key.Src[:], s[:])
	copy(key.Dst[:], d[:])
	if fr := m.Frags(); len(fr) != 1 || fr[key] != DropResponse {
		t.Fatalf("fragment table %v, want only %v -> drop_response", fr, key)
	}

	m.ClearFrags()
	m.SetConfig(Config{Ports: []uint16{11211}, FragPolicy: Strict, Mode: Monitor})
	if r := m.Classify(later, Ingress); r.Reason != WouldDrop || r.Verdict != VerdictPass {
		t.Fatalf("strict monitor orphan: %s/%s", r.Reason, r.Verdict)
	}
	// Monitor mode remembers the verdict before it rewrites it.
	m.Classify(first, Ingress)
	if fr := m.Frags(); fr[key] != DropResponse {
		t.Fatalf("remembered %s, want drop_response", fr[key])
	}

	// IPv6: the key has no protocol; a later fragment naming an extension
	// header as next header is looked up, one naming TCP is not.
	m = New(Config{Ports: []uint16{11211}, FragPolicy: Strict})
	f1 := cat(eth(0x86dd), ipv6(a6, b6, 44), frag6(17, 0, true, 9), udp(1, 11211))
	f2 := cat(eth(0x86dd), ipv6(a6, b6, 44), frag6(60, 8, true, 9), make([]byte, 8))
	f3 := cat(eth(0x86dd), ipv6(a6, b6, 44), frag6(6, 16, false, 9), make([]byte, 8))
	for i, s := range []struct {
		frame []byte
		want  Reason
	}{{f2, DropOrphanFragment}, {f1, DropRequest}, {f2, DropFragment}, {f3, Pass}} {
		if r := m.Classify(s.frame, Ingress); r.Reason != s.want {
			t.Fatalf("v6 step %d: %s, want %s (%s)", i, r.Reason, s.want, r.Parse)
		}
	}
}

func TestAllowList(t *testing.T) {
	m := New(Config{Ports: []uint16{11211}, Allow: []netip.Prefix{
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db9::/32")}})
	req4 := cat(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211)) // a4 -> b4
	req6 := cat(eth(0x86dd), ipv6(a6, b6, 17), udp(1, 11211))
	resp6 := cat(eth(0x86dd), ipv6(b6, a6, 17), udp(11211, 1)) // b6 -> a6
	for _, c := range []struct {
		frame []byte
		hook  Hook
		want  Reason
	}{
		{req4, Ingress, Allowlisted}, // source a4 is allowed
		{req4, Egress, DropRequest},  // destination b4 is not
		{req6, Ingress, Allowlisted},
		{resp6, Ingress, DropResponse},
		{resp6, Egress, Allowlisted},
	} {
		if r := m.Classify(c.frame, c.hook); r.Reason != c.want {
			t.Errorf("%s: %s, want %s (%s)", c.hook, r.Reason, c.want, r.Parse)
		}
	}
	// An allowed peer on an unprotected port is just a pass.
	if r := m.Classify(cat(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 2)), Ingress); r.Reason != Pass {
		t.Errorf("unprotected: %s", r.Reason)
	}
}

func TestReasonNames(t *testing.T) {
	want := []string{"pass", "allowlisted", "drop_request", "drop_response", "drop_fragment",
		"drop_orphan_fragment", "drop_malformed", "would_drop", "pass_orphan_fragment"}
	for i, w := range want {
		if got := Reason(i).String(); got != w {
			t.Errorf("reason %d: %q, want %q", i, got, w)
		}
	}
	if Reason(99).String() != "reason(99)" {
		t.Error("unknown reason not marked")
	}
}
