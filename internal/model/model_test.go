package model

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
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

// pkt concatenates an Ethernet frame's parts and sets its IP length field
// (IPv4 total length, IPv6 payload length) to what follows the link-layer
// header, as a sender does; cutting the result afterwards makes the frame
// shorter than its length field says.
func pkt(bs ...[]byte) []byte {
	b := cat(bs...)
	off, et := 14, binary.BigEndian.Uint16(b[12:14])
	for (et == 0x8100 || et == 0x88a8) && off+4 <= len(b) {
		et = binary.BigEndian.Uint16(b[off+2 : off+4])
		off += 4
	}
	return setLen(b, off, et == 0x86dd)
}

// setLen sets the length field of the IP header at off to the rest of b.
func setLen(b []byte, off int, v6 bool) []byte {
	switch {
	case v6 && off+40 <= len(b):
		binary.BigEndian.PutUint16(b[off+4:], uint16(len(b)-off-40))
	case !v6 && off+20 <= len(b):
		binary.BigEndian.PutUint16(b[off+2:], uint16(len(b)-off))
	}
	return b
}

func def() Config { return Config{Ports: []uint16{11211}} }

func TestParseAndDecide(t *testing.T) {
	v4udp := func(sport, dport uint16) []byte {
		return pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(sport, dport))
	}
	v6udp := func(sport, dport uint16, exts ...[]byte) []byte {
		first := uint8(17)
		if len(exts) > 0 {
			first = exts[0][len(exts[0])-1]
			exts[0] = exts[0][:len(exts[0])-1]
		}
		return pkt(eth(0x86dd), ipv6(a6, b6, first), cat(exts...), udp(sport, dport))
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
		{"ARP", pkt(eth(0x0806), make([]byte, 28)), NotIP, Pass},
		{"v4 request", v4udp(40000, 11211), UDP, DropRequest},
		{"v4 response", v4udp(11211, 40000), UDP, DropResponse},
		{"v4 both ports", v4udp(11211, 11211), UDP, DropRequest},
		{"v4 other UDP", v4udp(53, 5353), UDP, Pass},
		{"v4 TCP", pkt(eth(0x0800), ipv4(a4, b4, 6, 1, 0, 0), udp(1, 11211)), NotUDP, Pass},
		{"v4 options", pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 40), udp(1, 11211)), UDP, DropRequest},
		{"v4 options past end", pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 40))[:14+40], Malformed, DropMalformed},
		{"v4 19 bytes", v4udp(1, 11211)[:14+19], Malformed, DropMalformed},
		{"v4 version 5", pkt(eth(0x0800), []byte{0x55}, v4udp(1, 11211)[15:]), Malformed, DropMalformed},
		{"v4 IHL 4", pkt(eth(0x0800), []byte{0x44}, v4udp(1, 11211)[15:]), Malformed, DropMalformed},
		{"v4 UDP cut", v4udp(1, 11211)[:14+20+7], Malformed, DropMalformed},
		{"v4 UDP cut, TCP", pkt(eth(0x0800), ipv4(a4, b4, 6, 1, 0, 0)), NotUDP, Pass},
		{"one tag", pkt(eth(0x0800, 0x8100), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211)), UDP, DropRequest},
		{"two tags", pkt(eth(0x0800, 0x88a8, 0x8100), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211)), UDP, DropRequest},
		{"three tags", pkt(eth(0x0806, 0x88a8, 0x8100, 0x8100), make([]byte, 28)), Malformed, DropMalformed},
		{"tag cut", pkt(eth(0x0800, 0x8100))[:17], Malformed, DropMalformed},
		{"v6 request", v6udp(40000, 11211), UDP, DropRequest},
		{"v6 response", v6udp(11211, 1), UDP, DropResponse},
		{"v6 39 bytes", v6udp(1, 11211)[:14+39], Malformed, DropMalformed},
		{"v6 version 4", pkt(eth(0x86dd), []byte{0x40}, v6udp(1, 11211)[15:]), Malformed, DropMalformed},
		{"v6 hop-by-hop", v6udp(1, 11211, typed(0, ext(17, 16))), UDP, DropRequest},
		{"v6 AH 12 bytes", v6udp(1, 11211, typed(51, ah(17, 12))), UDP, DropRequest},
		{"v6 AH read as 8-octet units would miss", v6udp(1, 11211, typed(51, ah(60, 16), ext(17, 8))), UDP, DropRequest},
		{"v6 8 headers", v6udp(1, 11211, typed(60, eight...)), UDP, DropRequest},
		{"v6 9 headers", v6udp(1, 2, typed(60, nine...)), Malformed, DropMalformed},
		{"v6 ext cut", pkt(eth(0x86dd), ipv6(a6, b6, 43), []byte{17}), Malformed, DropMalformed},
		{"v6 ext past the end, TCP", pkt(eth(0x86dd), ipv6(a6, b6, 43), []byte{6, 200}), NotUDP, Pass},
		{"v6 ext past the end, UDP", pkt(eth(0x86dd), ipv6(a6, b6, 43), []byte{17, 200}), Malformed, DropMalformed},
		{"v6 no next header", pkt(eth(0x86dd), ipv6(a6, b6, 59)), NotUDP, Pass},
		// The kernel takes the protocol from the first fragment: a later
		// fragment naming TCP may belong to a UDP datagram.
		{"v6 later fragment naming TCP", pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(6, 8, false, 1)), Fragment, PassOrphanFragment},
		{"v6 frag header cut", pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(17, 0, true, 1)[:7]), Malformed, DropMalformed},
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
	p := Parse(pkt(eth(0x86dd, 0x8100), ipv6(a6, b6, 0), ext(44, 8), frag6(17, 0, true, 0xabcdef01), udp(5, 6)))
	if p.Kind != UDP || p.Family != 6 || p.Src != a6 || p.Dst != b6 || p.SrcPort != 5 || p.DstPort != 6 ||
		p.FragID != 0xabcdef01 || p.FragProto != 17 || !p.FirstFragment || p.VLANs != 1 || p.ExtHeaders != 2 {
		t.Fatalf("parsed %+v", p)
	}
	p = Parse(pkt(eth(0x0800), ipv4(a4, b4, 17, 0x4242, 0x2000, 0), udp(1, 2)))
	if !p.FirstFragment || p.FragID != 0x4242 || p.Src != a4 || p.Dst != b4 {
		t.Fatalf("parsed %+v", p)
	}
}

func TestFragments(t *testing.T) {
	first := pkt(eth(0x0800), ipv4(a4, b4, 17, 7, 0x2000, 0), udp(11211, 1))
	later := pkt(eth(0x0800), ipv4(a4, b4, 17, 7, 0x2000|3, 0), make([]byte, 24))
	last := pkt(eth(0x0800), ipv4(a4, b4, 17, 7, 6, 0), make([]byte, 24))
	otherID := pkt(eth(0x0800), ipv4(a4, b4, 17, 8, 3, 0), make([]byte, 24))
	otherProto := pkt(eth(0x0800), ipv4(a4, b4, 6, 7, 3, 0), make([]byte, 24))

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

	// IPv6: the key has no protocol; a later fragment is looked up whatever
	// its fragment header names, an extension header or TCP.
	m = New(Config{Ports: []uint16{11211}, FragPolicy: Strict})
	f1 := pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(17, 0, true, 9), udp(1, 11211))
	f2 := pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(60, 8, true, 9), make([]byte, 8))
	f3 := pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(6, 16, false, 9), make([]byte, 8))
	for i, s := range []struct {
		frame []byte
		want  Reason
	}{{f2, DropOrphanFragment}, {f1, DropRequest}, {f2, DropFragment}, {f3, DropFragment}} {
		if r := m.Classify(s.frame, Ingress); r.Reason != s.want {
			t.Fatalf("v6 step %d: %s, want %s (%s)", i, r.Reason, s.want, r.Parse)
		}
	}
}

func TestAllowList(t *testing.T) {
	m := New(Config{Ports: []uint16{11211}, Allow: []netip.Prefix{
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db9::/32")}})
	req4 := pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211)) // a4 -> b4
	req6 := pkt(eth(0x86dd), ipv6(a6, b6, 17), udp(1, 11211))
	resp6 := pkt(eth(0x86dd), ipv6(b6, a6, 17), udp(11211, 1)) // b6 -> a6
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
	if r := m.Classify(pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 2)), Ingress); r.Reason != Pass {
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

// The IP length fields bound every read: bytes past them are not the
// packet's, whatever the frame holds.
func TestLengthFields(t *testing.T) {
	withLen := func(b []byte, off int, n uint16) []byte {
		c := append([]byte(nil), b...)
		binary.BigEndian.PutUint16(c[off:], n)
		return c
	}
	v4 := pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211))
	v4first := pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0x2000, 0), udp(1, 11211))
	v4tcp := pkt(eth(0x0800), ipv4(a4, b4, 6, 1, 0, 0), udp(1, 11211))
	v6 := pkt(eth(0x86dd), ipv6(a6, b6, 17), udp(1, 11211))
	// The evasion: a first fragment whose chain (fragment header, then
	// destination options naming a routing header) ends at the payload
	// length, with a routing header and a harmless UDP header planted
	// past it.
	evasion := cat(pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(60, 0, true, 5), ext(43, 8)), ext(17, 8), udp(53, 5353))
	hbhJumbo := withLen(pkt(eth(0x86dd), ipv6(a6, b6, 0), ext(17, 8), udp(1, 11211)), 14+4, 0)
	dstZero := withLen(pkt(eth(0x86dd), ipv6(a6, b6, 60), ext(17, 8), udp(1, 11211)), 14+4, 0)
	for _, c := range []struct {
		name  string
		frame []byte
		kind  Kind
		want  Reason
	}{
		{"v4 total length exact", v4, UDP, DropRequest},
		{"v4 total length longer than the frame", withLen(v4, 14+2, 200), UDP, DropRequest},
		{"v4 padded frame", append(append([]byte(nil), v4...), make([]byte, 30)...), UDP, DropRequest},
		{"v4 total length cuts the UDP header", withLen(v4, 14+2, 27), Malformed, DropMalformed},
		{"v4 total length = header", withLen(v4, 14+2, 20), Malformed, DropMalformed},
		{"v4 total length 0", withLen(v4, 14+2, 0), Malformed, DropMalformed},
		{"v4 first fragment, UDP header past the total length", withLen(v4first, 14+2, 24), Malformed, DropMalformed},
		{"v4 TCP, total length 0", withLen(v4tcp, 14+2, 0), NotUDP, Pass},
		{"v6 payload length exact", v6, UDP, DropRequest},
		{"v6 payload length cuts the UDP header", withLen(v6, 14+4, 7), Malformed, DropMalformed},
		{"v6 payload length 0", withLen(v6, 14+4, 0), Malformed, DropMalformed},
		{"v6 payload length longer than the frame", withLen(v6, 14+4, 999), UDP, DropRequest},
		{"v6 chain ends at the payload length, UDP planted past it", evasion, Malformed, DropMalformed},
		{"v6 jumbogram: payload length 0 behind hop-by-hop", hbhJumbo, UDP, DropRequest},
		{"v6 payload length 0 behind destination options", dstZero, Malformed, DropMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := New(def()).Classify(c.frame, Ingress)
			if r.Parse.Kind != c.kind || r.Reason != c.want {
				t.Fatalf("got %s/%s, want %s/%s\n  parsed %s", r.Parse.Kind, r.Reason, c.kind, c.want, r.Parse)
			}
		})
	}
}

// ParseL3 reads frames that start at the IP header, the version nibble
// naming the family.
func TestParseL3(t *testing.T) {
	v4 := pkt(eth(0x0800), ipv4(a4, b4, 17, 1, 0, 0), udp(1, 11211))[14:]
	v6 := pkt(eth(0x86dd), ipv6(a6, b6, 17), udp(11211, 1))[14:]
	for _, c := range []struct {
		name  string
		frame []byte
		kind  Kind
		want  Reason
	}{
		{"v4 request", v4, UDP, DropRequest},
		{"v6 response", v6, UDP, DropResponse},
		{"empty", nil, NotIP, Pass},
		{"version 5", append([]byte{0x55}, v4[1:]...), NotIP, Pass},
		{"v4 cut at 19 bytes", v4[:19], Malformed, DropMalformed},
		{"v4 TCP SYN from 8.0.1.1", pkt(eth(0x0800), ipv4(netip.MustParseAddr("8.0.1.1"), b4, 6, 1, 0, 0), make([]byte, 20))[14:], NotUDP, Pass},
	} {
		r := New(def()).ClassifyL3(c.frame, Ingress)
		if r.Parse.Kind != c.kind || r.Reason != c.want {
			t.Errorf("%s: got %s/%s, want %s/%s (%s)", c.name, r.Parse.Kind, r.Reason, c.kind, c.want, r.Parse)
		}
	}
}

// Verdicts are kept per hook and last as long as the family's reassembly
// timeout.
func TestFragmentHooksAndExpiry(t *testing.T) {
	first4 := pkt(eth(0x0800), ipv4(a4, b4, 17, 7, 0x2000, 0), udp(1, 11211))
	later4 := pkt(eth(0x0800), ipv4(a4, b4, 17, 7, 3, 0), make([]byte, 24))
	first6 := pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(17, 0, true, 9), udp(1, 11211))
	later6 := pkt(eth(0x86dd), ipv6(a6, b6, 44), frag6(17, 8, false, 9), make([]byte, 8))
	m := New(Config{Ports: []uint16{11211}, FragTimeout4: 2 * time.Second, FragTimeout6: 5 * time.Second})
	step := func(frame []byte, hook Hook, want Reason) {
		t.Helper()
		if r := m.Classify(frame, hook); r.Reason != want {
			t.Fatalf("at %v, %s: %s, want %s (%s)", m.now, hook, r.Reason, want, r.Parse)
		}
	}
	step(first4, Ingress, DropRequest)
	step(first6, Ingress, DropRequest)
	step(later4, Egress, PassOrphanFragment) // the other hook saw no first fragment
	step(later4, Ingress, DropFragment)
	m.Advance(2 * time.Second) // at the limit: still there
	step(later4, Ingress, DropFragment)
	m.Advance(time.Nanosecond) // past it: gone
	step(later4, Ingress, PassOrphanFragment)
	step(later6, Ingress, DropFragment) // IPv6 lasts longer
	m.Advance(3 * time.Second)
	step(later6, Ingress, PassOrphanFragment)
	// A first fragment seen again renews the verdict.
	step(first4, Ingress, DropRequest)
	step(later4, Ingress, DropFragment)
}

// TestDirections: a request port drops requests in and answers out, a
// response port records requests out and passes only the answers that
// match a live one, expiry on the model's clock; both is unchanged.
func TestDirections(t *testing.T) {
	udp4 := func(src, dst netip.Addr, sport, dport uint16) []byte {
		return pkt(eth(0x0800), ipv4(src, dst, 17, 1, 0, 0), udp(sport, dport))
	}
	m := New(Config{
		Ports:      []uint16{53, 123, 11211},
		Directions: map[uint16]Direction{53: Response, 123: Request},
		Expiry:     map[uint16]time.Duration{53: 5 * time.Second},
	})
	host, server := b4, a4
	for _, c := range []struct {
		name  string
		frame []byte
		hook  Hook
		want  Reason
	}{
		{"unsolicited answer", udp4(server, host, 53, 40000), Ingress, DropUnsolicited},
		{"request out, recorded", udp4(host, server, 40000, 53), Egress, Pass},
		{"its answer", udp4(server, host, 53, 40000), Ingress, Solicited},
		{"answer to another port", udp4(server, host, 53, 40001), Ingress, DropUnsolicited},
		{"request to a response port here", udp4(server, host, 40000, 53), Ingress, Pass},
		{"request port: request in", udp4(server, host, 40000, 123), Ingress, DropRequest},
		{"request port: answer out", udp4(host, server, 123, 40000), Egress, DropResponse},
		{"request port: request out", udp4(host, server, 40000, 123), Egress, Pass},
		{"request port: answer in", udp4(server, host, 123, 40000), Ingress, Pass},
		{"both: request out", udp4(host, server, 40000, 11211), Egress, DropRequest},
		{"both: answer in", udp4(server, host, 11211, 40000), Ingress, DropResponse},
	} {
		if got := m.Classify(c.frame, c.hook).Reason; got != c.want {
			t.Errorf("%s at %s: %s, want %s", c.name, c.hook, got, c.want)
		}
	}
	k := RequestKey{Local: host, Remote: server, LocalPort: 40000, RemotePort: 53}
	if exp, ok := m.Requests()[k]; !ok || exp != 5*time.Second {
		t.Fatalf("request table: %v, want %v expiring at 5s", m.Requests(), k)
	}
	m.Advance(5 * time.Second)
	if got := m.Classify(udp4(server, host, 53, 40000), Ingress).Reason; got != DropUnsolicited {
		t.Errorf("answer at the expiry: %s, want drop_unsolicited", got)
	}
	m.SetConfig(Config{Ports: []uint16{53}, Directions: map[uint16]Direction{53: Response}, Mode: Monitor})
	if r := m.Classify(udp4(server, host, 53, 40001), Ingress); r.Reason != WouldDrop || r.Verdict != VerdictPass {
		t.Errorf("monitor: %+v, want would_drop, passed", r)
	}
}
