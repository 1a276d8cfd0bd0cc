package lab

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// VictimCounters is what reached the victim: its interface's counters and
// what its IP layer received (from /proc/net/snmp and snmp6 in its
// namespace).
type VictimCounters struct {
	LinkPackets, LinkBytes uint64 // received on vic0, any verdict
	IPIn                   uint64 // Ip InReceives + Ip6InReceives: every IP packet or fragment
	Fragments              uint64 // Ip ReasmReqds + Ip6ReasmReqds: fragments that reached the IP layer
	Reassembled            uint64 // Ip ReasmOKs + Ip6ReasmOKs
	UDP                    uint64 // UDP datagrams at the transport (InDatagrams+NoPorts+InErrors, both families)
}

// Sub returns c - o, field by field.
func (c VictimCounters) Sub(o VictimCounters) VictimCounters {
	return VictimCounters{
		LinkPackets: c.LinkPackets - o.LinkPackets, LinkBytes: c.LinkBytes - o.LinkBytes,
		IPIn: c.IPIn - o.IPIn, Fragments: c.Fragments - o.Fragments,
		Reassembled: c.Reassembled - o.Reassembled, UDP: c.UDP - o.UDP,
	}
}

// Reflected is what of the reflected traffic reached the victim's IP layer:
// fragments plus whole UDP datagrams. IPv6 neighbour discovery, which
// InReceives also counts, is left out, so zero means zero.
func (c VictimCounters) Reflected() uint64 { return c.Fragments + c.UDP - c.Reassembled }

// VictimCounters reads the victim's counters now.
func (l *Lab) VictimCounters() (VictimCounters, error) {
	var c VictimCounters
	st, err := l.Victim.LinkStats(VictimIf)
	if err != nil {
		return c, err
	}
	c.LinkPackets, c.LinkBytes = st.RxPackets, st.RxBytes
	snmp, err := ReadSNMP(l.Victim)
	if err != nil {
		return c, err
	}
	c.IPIn = snmp["Ip.InReceives"] + snmp["Ip6InReceives"]
	c.Fragments = snmp["Ip.ReasmReqds"] + snmp["Ip6ReasmReqds"]
	c.Reassembled = snmp["Ip.ReasmOKs"] + snmp["Ip6ReasmOKs"]
	c.UDP = snmp["Udp.InDatagrams"] + snmp["Udp.NoPorts"] + snmp["Udp.InErrors"] +
		snmp["Udp6InDatagrams"] + snmp["Udp6NoPorts"] + snmp["Udp6InErrors"]
	return c, nil
}

// ReadSNMP reads a namespace's /proc/net/snmp (keys "Ip.InReceives", ...)
// and /proc/net/snmp6 (keys as the file has them, "Ip6InReceives", ...).
// It reads them through /proc/thread-self: /proc/net is the main thread's
// namespace, not the one the reading thread is in.
func ReadSNMP(ns *nstest.NS) (map[string]uint64, error) {
	out := map[string]uint64{}
	b, err := ns.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(vals) || len(names) == 0 {
			return nil, fmt.Errorf("%s: /proc/net/snmp: malformed line pair %d", ns.Name(), i)
		}
		proto := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(vals[j], 10, 64) // a few Ip fields can be negative (-1)
			out[proto+"."+names[j]] = uint64(v)
		}
	}
	b, err = ns.ReadFile("/proc/thread-self/net/snmp6")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			out[f[0]] = v
		}
	}
	return out, nil
}

// Attack is a spoofed memcached reflection attack: the attacker sends UDP
// requests to the reflector with the victim's address as their source.
type Attack struct {
	Family int // 4 or 6
	// Via is the reflector interface the requests are addressed to and
	// arrive on: Refl0If (protected) or Refl1If (unfiltered path).
	Via string
	// Command is a memcached command with its "\r\n", e.g. "stats\r\n" or
	// "get big\r\n"; a get must name one key.
	Command string
	Count   int
	// Dealt, when set, is a second way to know the requests have been dealt
	// with, for when they never reach memcached: e.g. xdpguard counted them
	// all dropped. It gets the number of frames the attack sent (Count plus
	// the sentinel).
	Dealt   func(frames int) (bool, error)
	Timeout time.Duration // for each wait; 0 means 10s
}

// AttackResult is what an attack sent and what reached the victim.
type AttackResult struct {
	Requests     int
	RequestBytes uint64 // Ethernet bytes the attacker sent (the sentinel excluded)
	// Answered is true when memcached processed the requests (its cmd_get
	// counted the sentinel), false when Dealt reported them dealt with
	// before that.
	Answered bool
	Gets     uint64 // memcached cmd_get increase, the sentinel excluded
	// Victim is what reached the victim, the flush datagram excluded.
	Victim VictimCounters
}

// Amplification is bytes reaching the victim's link per byte the attacker
// sent, both as Ethernet frames.
func (r AttackResult) Amplification() float64 {
	if r.RequestBytes == 0 {
		return 0
	}
	return float64(r.Victim.LinkBytes) / float64(r.RequestBytes)
}

// SpoofedRequest returns one Ethernet frame as the attacker sends it: from
// the victim's address and VictimPort to memcached on the reflector's
// interface via, addressed to the router's MAC.
func (l *Lab) SpoofedRequest(fam Addrs, via string, reqID uint16, command string) ([]byte, error) {
	return l.request(fam, fam.Victim, via, reqID, command)
}

func (l *Lab) request(fam Addrs, src netip.Addr, via string, reqID uint16, command string) ([]byte, error) {
	dst := fam.Refl0
	if via == Refl1If {
		dst = fam.Refl1
	}
	frame, err := testpkt.UDP(src, dst, VictimPort, MemcachedPort, testpkt.MemcachedPayload(reqID, command)).Frame()
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if err := l.addressToRouter(frame); err != nil {
		return nil, err
	}
	return frame, nil
}

func (l *Lab) addressToRouter(frame []byte) error {
	rmac, err := l.Router.HardwareAddr(RouterAttIf)
	if err != nil {
		return err
	}
	amac, err := l.Attacker.HardwareAddr(AttackerIf)
	if err != nil {
		return err
	}
	copy(frame[0:6], rmac)
	copy(frame[6:12], amac)
	return nil
}

// sentinelKey is what the attack's closing request gets: a miss, so its
// answer is one small datagram.
const sentinelKey = "xdpguard-lab-sentinel"

// Attack runs a: it sends the requests and a closing sentinel `get`, waits
// until memcached has processed the sentinel (memcached answers in order
// with its one worker thread, so every request before it has been answered)
// or a.Dealt says they were dealt with, then flushes the path to the victim
// with a datagram from the reflector and waits for it (the links keep
// order), and reports what reached the victim in between.
func (l *Lab) Attack(a Attack) (AttackResult, error) {
	var res AttackResult
	fam := Family(a.Family)
	if a.Timeout == 0 {
		a.Timeout = 10 * time.Second
	}
	if a.Via == "" {
		a.Via = Refl0If
	}
	gets := uint64(0)
	if strings.HasPrefix(a.Command, "get ") || strings.HasPrefix(a.Command, "gets ") {
		gets = 1
	}
	inj, err := nstest.OpenInjector(l.Attacker, AttackerIf)
	if err != nil {
		return res, err
	}
	defer inj.Close()
	frames := make([][]byte, 0, a.Count+1)
	for i := range a.Count {
		f, err := l.SpoofedRequest(fam, a.Via, uint16(i+1), a.Command)
		if err != nil {
			return res, err
		}
		frames = append(frames, f)
		res.RequestBytes += uint64(len(f))
	}
	// The sentinel comes from the attacker's own address, so its answer
	// goes back there and never mixes with what reaches the victim.
	sentinel, err := l.request(fam, fam.Attacker, a.Via, 0xffff, "get "+sentinelKey+"\r\n")
	if err != nil {
		return res, err
	}
	frames = append(frames, sentinel)
	res.Requests = a.Count

	// The router must know the reflector before the flood, or it queues
	// only a few packets per unresolved neighbour and drops the rest.
	// Before the snapshots: resolving may send the victim a datagram.
	if err := l.ResolveNeighbours(); err != nil {
		return res, err
	}
	before, err := l.MemcachedStats()
	if err != nil {
		return res, err
	}
	vBefore, err := l.VictimCounters()
	if err != nil {
		return res, err
	}
	if err := inj.SendAll(frames...); err != nil {
		return res, err
	}
	var after map[string]uint64
	err = nstest.WaitFor(a.Timeout, "memcached to answer the sentinel, or the requests to be dealt with", func() (bool, error) {
		st, err := l.MemcachedStats()
		if err != nil {
			return false, err
		}
		after = st
		if st["cmd_get"] >= before["cmd_get"]+gets*uint64(a.Count)+1 {
			res.Answered = true
			return true, nil
		}
		if a.Dealt != nil {
			return a.Dealt(len(frames))
		}
		return false, nil
	})
	if err != nil {
		return res, err
	}
	res.Gets = after["cmd_get"] - before["cmd_get"]
	if res.Answered {
		res.Gets--
	}
	flushBytes, err := l.Flush(fam)
	if err != nil {
		return res, err
	}
	vAfter, err := l.VictimCounters()
	if err != nil {
		return res, err
	}
	res.Victim = vAfter.Sub(vBefore)
	// Take out the flush datagram.
	res.Victim.LinkPackets--
	res.Victim.LinkBytes -= uint64(flushBytes)
	res.Victim.UDP--
	res.Victim.IPIn--
	return res, nil
}

// ResolveNeighbours makes every namespace resolve its neighbours on every
// lab link, both families, by sending each a datagram to a port nothing
// listens on (the port-unreachable answers are harmless).
func (l *Lab) ResolveNeighbours() error {
	pairs := []struct {
		ns  *nstest.NS
		dst func(Addrs) netip.Addr
	}{
		{l.Attacker, func(a Addrs) netip.Addr { return a.RouterAtt }},
		{l.Router, func(a Addrs) netip.Addr { return a.Attacker }},
		{l.Router, func(a Addrs) netip.Addr { return a.Refl0 }},
		{l.Router, func(a Addrs) netip.Addr { return a.Refl1 }},
		{l.Router, func(a Addrs) netip.Addr { return a.Victim }},
		{l.Reflector, func(a Addrs) netip.Addr { return a.RouterRefl0 }},
		{l.Reflector, func(a Addrs) netip.Addr { return a.RouterRefl1 }},
		{l.Victim, func(a Addrs) netip.Addr { return a.RouterVic }},
	}
	for _, fam := range []Addrs{V4, V6} {
		for _, p := range pairs {
			dst := p.dst(fam)
			if err := WaitNeighbour(p.ns, dst); err != nil {
				return err
			}
		}
	}
	return nil
}

// WaitNeighbour makes ns resolve dst's link-layer address (ARP or ND) and
// waits until the neighbour entry is usable.
func WaitNeighbour(ns *nstest.NS, dst netip.Addr) error {
	return nstest.WaitFor(5*time.Second, fmt.Sprintf("%s to resolve %s", ns.Name(), dst), func() (bool, error) {
		neighs, err := ns.Handle().NeighList(0, 0)
		if err != nil {
			return false, err
		}
		for _, n := range neighs {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == dst && n.HardwareAddr != nil &&
				n.State&(0x02|0x04|0x08|0x10|0x80) != 0 { // REACHABLE|STALE|DELAY|PROBE|PERMANENT
				return true, nil
			}
		}
		// Any datagram makes the kernel resolve the next hop.
		return false, ns.Do(func() error {
			c, err := net.Dial("udp", netip.AddrPortFrom(dst, 9).String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte{0})
			return err
		})
	})
}

// Flush sends a datagram from the reflector to the victim's BarrierPort
// along the reflected traffic's path (out of refl0, through the router) and
// waits for the victim to receive it: whatever the reflector sent before
// has then arrived. It returns the datagram's size as an Ethernet frame.
func (l *Lab) Flush(fam Addrs) (int, error) {
	var conn *net.UDPConn
	err := l.Victim.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: fam.Victim.AsSlice(), Port: BarrierPort})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("flush listener: %w", err)
	}
	defer conn.Close()
	var token [8]byte
	binary.BigEndian.PutUint64(token[:], uint64(time.Now().UnixNano()))
	err = l.Reflector.Do(func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(fam.Victim, BarrierPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(token[:])
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("flush send: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return 0, fmt.Errorf("flush: victim did not receive the barrier datagram: %w", err)
		}
		if bytes.Equal(buf[:n], token[:]) {
			break
		}
	}
	size := 14 + 20 + 8 + len(token)
	if fam.family == 6 {
		size += 20
	}
	return size, nil
}
