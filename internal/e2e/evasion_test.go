package e2e

import (
	"encoding/binary"
	"testing"

	"github.com/xdpguard/xdpguard/internal/lab"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// evasionFrames is the IPv6 evasion of issue 9, item 1, as a spoofed get
// from the victim to refl0. The first fragment's chain (fragment header,
// destination options naming a routing header) ends exactly at its payload
// length; past it, where the kernel does not look, sit a routing header and
// a harmless UDP header (53 -> 5353). The kernel cannot walk the chain inside
// the payload length, so its truncated-header check gives up and queues the
// fragment; the second fragment carries the real routing header and the UDP
// header to memcached, and the reassembled datagram is a get.
func evasionFrames(t *testing.T) [][]byte {
	t.Helper()
	// An 8-byte options header holding one PadN: what a sender pads with.
	dstopts := func(next uint8) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} }
	// A routing header of type 0 with no segments left: a receiver skips
	// it and carries on with the next header.
	routing := func(next uint8) []byte { return []byte{next, 0, 0, 0, 0, 0, 0, 0} }
	udp := func(sport, dport uint16) []byte {
		u := make([]byte, 8)
		binary.BigEndian.PutUint16(u[0:], sport)
		binary.BigEndian.PutUint16(u[2:], dport)
		binary.BigEndian.PutUint16(u[4:], 8)
		return u
	}
	get := request(6)
	dg := must(get.Datagram()) // UDP to memcached, checksummed for victim -> refl0
	p := testpkt.Packet{Src: v6victim, Dst: v6refl, Proto: testpkt.ProtoUDP, ID: 0x0e7a5107}
	first := must(p.Fragment(testpkt.Frag{More: true, Proto: testpkt.ProtoDstOpts, Data: dstopts(testpkt.ProtoRouting)}))
	first = append(append(first, routing(testpkt.ProtoUDP)...), udp(53, 5353)...)
	rest := must(p.Fragment(testpkt.Frag{Offset: 8, Proto: testpkt.ProtoDstOpts, Data: append(routing(testpkt.ProtoUDP), dg...)}))
	return [][]byte{first, rest}
}

// TestIPv6LengthEvasionBlocked: the evasion gets a request to a real
// memcached without xdpguard (the kernel accepts it: the test proves its
// premise), and none with xdpguard attached. Today's main passed both
// fragments (the planted UDP header read as harmless).
func TestIPv6LengthEvasionBlocked(t *testing.T) {
	e := newEnv(t)
	frames := evasionFrames(t)

	base := mcStats(t, e.Lab)["cmd_get"]
	e.send(t, evasionFrames(t))
	waitGets(t, e.Lab, base+1, "the unprotected evasion to reach memcached")

	run(t, e.guard, "attach", lab.Refl0If, "--egress")
	before := mcStats(t, e.Lab)["cmd_get"]
	e.send(t, frames)
	waitCounter(t, e.guard, "xdp", "drop_malformed", 1)
	st := waitCounter(t, e.guard, "xdp", "drop_fragment", 1)
	if got := mcStats(t, e.Lab)["cmd_get"]; got != before {
		t.Fatalf("memcached cmd_get went from %d to %d: the evasion got through xdpguard", before, got)
	}
	t.Logf("evasion: first fragment drop_malformed, rest drop_fragment (%d, %d); memcached saw none",
		st.Packets("", "xdp", "drop_malformed"), st.Packets("", "xdp", "drop_fragment"))
}
