// Package frames is the frame set every per-packet measurement runs on: the
// memcached attack shapes xdpguard must drop and the ordinary traffic it
// must pass, each with the verdict a correct filter returns. Frames come from
// internal/testpkt.
package frames

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// XDP verdicts as BPF_PROG_TEST_RUN returns them.
const (
	Aborted = 0
	Drop    = 1
	Pass    = 2
)

// VerdictName spells an XDP return code.
func VerdictName(v uint32) string {
	switch v {
	case Aborted:
		return "ABORTED"
	case Drop:
		return "DROP"
	case Pass:
		return "PASS"
	}
	return fmt.Sprintf("ret=%d", v)
}

// Addresses used by the frames. The attacker's IPv4 address is in
// TEST-NET-2 so the allow-list benchmark can keep it off every random prefix.
var (
	Attacker4 = netip.MustParseAddr("198.51.100.7")
	Server4   = netip.MustParseAddr("192.0.2.10")
	Attacker6 = netip.MustParseAddr("2001:db8:bad::7")
	Server6   = netip.MustParseAddr("2001:db8::10")
)

// Frame is one input to the programs under test.
type Frame struct {
	Name string // short key used in tables and benchmark names
	Desc string
	Data []byte
	Want uint32 // the verdict of a filter that stops memcached amplification
	// Prime frames run once through every program before measuring, so a
	// stateful program sees what precedes this frame on the wire: the first
	// fragment of a datagram before its later fragments.
	Prime [][]byte
}

// ResponseSize is the on-wire size (Ethernet header on, no FCS) of the
// reflected answer frame.
const ResponseSize = 1400

// Request is the memcached UDP get an attacker sends with the victim's
// address spoofed as source.
func Request() ([]byte, error) {
	return testpkt.MemcachedRequest(Attacker4, Server4, 40000, testpkt.GetK).Frame()
}

// All returns the frame set of the per-packet benchmark, in table order.
func All() ([]Frame, error) {
	req4, err := Request()
	if err != nil {
		return nil, fmt.Errorf("ipv4 request: %w", err)
	}
	req6, err := testpkt.MemcachedRequest(Attacker6, Server6, 40000, testpkt.GetK).Frame()
	if err != nil {
		return nil, fmt.Errorf("ipv6 request: %w", err)
	}
	const headers = 14 + 20 + 8
	answer := testpkt.UDP(Server4, Attacker4, testpkt.MemcachedPort, 40000, value(ResponseSize-headers))
	resp, err := answer.Frame()
	if err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	vlan, err := testpkt.MemcachedRequest(Attacker4, Server4, 40000, testpkt.GetK).With(testpkt.VLAN(100)).Frame()
	if err != nil {
		return nil, fmt.Errorf("vlan request: %w", err)
	}
	tcp, err := testpkt.TCP(Attacker4, Server4, 40000, 443, nil).Frame()
	if err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	dns, err := testpkt.UDP(Attacker4, Server4, 40000, 53, []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")).Frame()
	if err != nil {
		return nil, fmt.Errorf("udp 53: %w", err)
	}
	// A 3000-byte answer split at 1480 bytes, as a reflector's IP layer
	// does: the first fragment carries the UDP header, the second does not.
	big := testpkt.UDP(Server4, Attacker4, testpkt.MemcachedPort, 40000, value(3000))
	big.ID = 0x4242
	frags, err := big.Fragments(1480)
	if err != nil {
		return nil, fmt.Errorf("fragments: %w", err)
	}
	big6 := testpkt.UDP(Server6, Attacker6, testpkt.MemcachedPort, 40000, value(3000))
	big6.ID = 0x42424242
	frags6, err := big6.Fragments(1448)
	if err != nil {
		return nil, fmt.Errorf("IPv6 fragments: %w", err)
	}
	return []Frame{
		{Name: "ipv4_req", Desc: "IPv4 UDP get to :11211", Data: req4, Want: Drop},
		{Name: "ipv6_req", Desc: "IPv6 UDP get to :11211", Data: req6, Want: Drop},
		{Name: "resp_1400", Desc: "1400-byte IPv4 UDP answer from :11211", Data: resp, Want: Drop},
		{Name: "vlan_req", Desc: "802.1Q-tagged (VID 100) IPv4 UDP get to :11211", Data: vlan, Want: Drop},
		{Name: "tcp_443", Desc: "IPv4 TCP to :443", Data: tcp, Want: Pass},
		{Name: "udp_53", Desc: "IPv4 UDP to :53", Data: dns, Want: Pass},
		{Name: "frag", Desc: "second IPv4 fragment of an answer from :11211 (first fragment seen before)",
			Data: frags[1], Want: Drop, Prime: [][]byte{frags[0]}},
		{Name: "frag6", Desc: "second IPv6 fragment of an answer from :11211 (first fragment seen before)",
			Data: frags6[1], Want: Drop, Prime: [][]byte{frags6[0]}},
	}, nil
}

// value is a memcached VALUE answer of n bytes: the UDP frame header, the
// VALUE line, then data.
func value(n int) []byte {
	b := append(testpkt.MemcachedPayload(1, "VALUE k 0 0\r\n"), bytes.Repeat([]byte{'x'}, n)...)
	return b[:n]
}

// RequestTo is Request between the given IPv4 addresses.
func RequestTo(src, dst string) ([]byte, error) {
	s, err := netip.ParseAddr(src)
	if err != nil {
		return nil, fmt.Errorf("request source: %w", err)
	}
	d, err := netip.ParseAddr(dst)
	if err != nil {
		return nil, fmt.Errorf("request destination: %w", err)
	}
	return testpkt.MemcachedRequest(s, d, 40000, "get atk\r\n").Frame()
}

// RequestFrom is Request from src, of either family, to the server.
func RequestFrom(src netip.Addr) ([]byte, error) {
	dst := Server4
	if src.Is6() {
		dst = Server6
	}
	return testpkt.MemcachedRequest(src, dst, 40000, testpkt.GetK).Frame()
}
