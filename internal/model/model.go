// Package model is a pure-Go reference model of xdpguard's data-plane policy.
//
// It is written from the policy's description, not translated from the C, so
// that running both on the same frames (table tests, fuzzing, a replayed
// capture) checks one against the other. It deliberately does not import the
// loader package: a shared constant or helper would let one mistake hide in
// both implementations.
package model

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Reason is why a frame got its verdict. The names are the data plane's
// counter names; the numeric values are this package's own.
type Reason int

// The reasons, one per counter of the data plane.
const (
	Pass               Reason = iota // not UDP, or no protected port
	Allowlisted                      // protected port, peer allowed
	DropRequest                      // UDP to a protected port
	DropResponse                     // UDP from a protected port
	DropFragment                     // later fragment of a dropped datagram
	DropOrphanFragment               // strict: later fragment, first never seen
	DropMalformed                    // could be UDP, headers unreadable
	WouldDrop                        // monitor mode: one of the drops above
	PassOrphanFragment               // track: later fragment, first never seen
	Solicited                        // from a response port, answering a live request
	DropUnsolicited                  // from a response port, answering no live request
)

var reasonNames = [...]string{
	Pass:               "pass",
	Allowlisted:        "allowlisted",
	DropRequest:        "drop_request",
	DropResponse:       "drop_response",
	DropFragment:       "drop_fragment",
	DropOrphanFragment: "drop_orphan_fragment",
	DropMalformed:      "drop_malformed",
	WouldDrop:          "would_drop",
	PassOrphanFragment: "pass_orphan_fragment",
	Solicited:          "solicited",
	DropUnsolicited:    "drop_unsolicited",
}

func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Dropped reports whether a frame with this reason is dropped.
func (r Reason) Dropped() bool {
	switch r {
	case DropRequest, DropResponse, DropFragment, DropOrphanFragment, DropMalformed, DropUnsolicited:
		return true
	}
	return false
}

// Verdict is what happens to the frame.
type Verdict int

// The two verdicts.
const (
	VerdictPass Verdict = iota
	VerdictDrop
)

func (v Verdict) String() string {
	if v == VerdictDrop {
		return "drop"
	}
	return "pass"
}

// Hook is where the frame is seen; it picks the peer the allow list is
// asked about.
type Hook int

// The two hooks.
const (
	Ingress Hook = iota // XDP: the peer is the source address
	Egress              // TC: the peer is the destination address
)

func (h Hook) String() string {
	if h == Egress {
		return "egress"
	}
	return "ingress"
}

// Mode is enforce or monitor.
type Mode int

// The two modes.
const (
	Enforce Mode = iota
	Monitor      // drops become passes counted as WouldDrop
)

// FragPolicy decides later fragments whose first fragment was never seen.
type FragPolicy int

// The two fragment policies.
const (
	Track  FragPolicy = iota // pass them
	Strict                   // drop them
)

// Direction is what a protected port drops.
type Direction int

// The three directions.
const (
	// Both: UDP to the port (a request) and from it (a response), at both
	// hooks.
	Both Direction = iota
	// Request: requests arriving (ingress, to the port) and responses
	// leaving (egress, from the port).
	Request
	// Response: responses arriving (ingress, from the port) that answer
	// no live request in the request table; requests leaving (egress, to
	// the port) are recorded there.
	Response
)

// DefaultExpiry is how long a request awaits its reply when its port's
// Expiry gives none.
const DefaultExpiry = 30 * time.Second

// Config is the policy's configuration.
type Config struct {
	Mode       Mode
	FragPolicy FragPolicy
	Ports      []uint16 // protected UDP ports
	// Directions gives a port of Ports its direction; a port it does not
	// name is Both.
	Directions map[uint16]Direction
	// Expiry gives a response port's expiry; one it does not name (or
	// names with 0) waits DefaultExpiry.
	Expiry map[uint16]time.Duration
	Allow  []netip.Prefix // trusted peers, IPv4 and IPv6 mixed
	// How long a first fragment's verdict lasts, per family: the kernel's
	// reassembly timeouts. Zero means the kernel's defaults, 30 s for IPv4
	// (ipfrag_time) and 60 s for IPv6 (ip6frag_time).
	FragTimeout4, FragTimeout6 time.Duration
}

// The kernel's default reassembly timeouts.
const (
	defaultFragTimeout4 = 30 * time.Second
	defaultFragTimeout6 = 60 * time.Second
)

// Result is the model's answer for one frame.
type Result struct {
	Verdict Verdict
	Reason  Reason
	Parse   Parsed // what the parser saw, for failure dumps
}

// FragKey identifies the datagram a fragment belongs to, at one hook: both
// addresses (IPv4 in the first four bytes), the identification, the family
// and, for IPv4 only, the protocol. IPv6 has no protocol in the key: its
// identification is unique per address pair whatever the payload, and the
// kernel takes the protocol from the first fragment. Each hook keeps its own
// verdicts: a forwarded datagram meets both.
type FragKey struct {
	Src, Dst [16]byte
	ID       uint32
	Family   uint8
	Proto    uint8
	Hook     Hook
}

// RequestKey is a request this host sent to a response port, as its reply
// will match it: this host's address and port, the peer's address and
// port. Addresses of one family; IPv4 ones are plain 4-byte addresses.
type RequestKey struct {
	Local, Remote         netip.Addr
	LocalPort, RemotePort uint16
}

// fragEntry is a first fragment's verdict and when it was recorded.
type fragEntry struct {
	reason Reason
	at     time.Duration
}

// Model holds a configuration and the fragment table; it is not safe for
// concurrent use.
type Model struct {
	cfg    Config
	ports  map[uint16]bool
	allow4 []netip.Prefix
	allow6 []netip.Prefix
	frags  map[FragKey]fragEntry
	// The request table: a request's expiry on the model's clock. It
	// has no bound: the data plane's LRU forgets the least recently
	// used requests when full, which a test models by deleting them.
	requests map[RequestKey]time.Duration
	now      time.Duration // the model's clock: Advance moves it
}

// New returns a model with cfg and empty fragment and request tables.
func New(cfg Config) *Model {
	m := &Model{frags: make(map[FragKey]fragEntry), requests: make(map[RequestKey]time.Duration)}
	m.SetConfig(cfg)
	return m
}

// Now is the model's clock.
func (m *Model) Now() time.Duration { return m.now }

// SetRequest puts a request in the table, awaited until expires (on the
// model's clock: live while Now() < expires).
func (m *Model) SetRequest(k RequestKey, expires time.Duration) { m.requests[k] = expires }

// DeleteRequest forgets a request, as the data plane's LRU does when full.
func (m *Model) DeleteRequest(k RequestKey) { delete(m.requests, k) }

// Requests returns a copy of the request table, expired entries included.
func (m *Model) Requests() map[RequestKey]time.Duration {
	out := make(map[RequestKey]time.Duration, len(m.requests))
	for k, v := range m.requests {
		out[k] = v
	}
	return out
}

// ClearRequests empties the request table.
func (m *Model) ClearRequests() { clear(m.requests) }

func (m *Model) direction(port uint16) Direction {
	if d, ok := m.cfg.Directions[port]; ok {
		return d
	}
	return Both
}

func (m *Model) expiry(port uint16) time.Duration {
	if e := m.cfg.Expiry[port]; e > 0 {
		return e
	}
	return DefaultExpiry
}

// Advance moves the model's clock on by d: fragment verdicts older than the
// family's timeout count as absent.
func (m *Model) Advance(d time.Duration) { m.now += d }

// SetConfig replaces the configuration; the fragment table is kept, as the
// data plane keeps it across configuration changes.
func (m *Model) SetConfig(cfg Config) {
	if cfg.FragTimeout4 == 0 {
		cfg.FragTimeout4 = defaultFragTimeout4
	}
	if cfg.FragTimeout6 == 0 {
		cfg.FragTimeout6 = defaultFragTimeout6
	}
	m.cfg = cfg
	m.ports = make(map[uint16]bool, len(cfg.Ports))
	for _, p := range cfg.Ports {
		m.ports[p] = true
	}
	m.allow4, m.allow6 = nil, nil
	for _, p := range cfg.Allow {
		if p.Addr().Is4() {
			m.allow4 = append(m.allow4, p)
		} else {
			m.allow6 = append(m.allow6, p)
		}
	}
}

// Config returns the configuration in force.
func (m *Model) Config() Config { return m.cfg }

// ClearFrags empties the fragment table.
func (m *Model) ClearFrags() { clear(m.frags) }

// Frags returns a copy of the fragment table's verdicts, expired ones
// included.
func (m *Model) Frags() map[FragKey]Reason {
	out := make(map[FragKey]Reason, len(m.frags))
	for k, v := range m.frags {
		out[k] = v.reason
	}
	return out
}

// Classify runs the policy on one Ethernet frame seen at hook, updating the
// fragment table when the frame is a first fragment.
func (m *Model) Classify(frame []byte, hook Hook) Result {
	return m.classify(Parse(frame), hook)
}

// ClassifyL3 is Classify for a frame that starts at the IP header, as on a
// tun device.
func (m *Model) ClassifyL3(frame []byte, hook Hook) Result {
	return m.classify(ParseL3(frame), hook)
}

func (m *Model) classify(p Parsed, hook Hook) Result {
	r := m.decide(&p, hook)
	if p.FirstFragment {
		// A first fragment's verdict, before monitor mode, is what its
		// later fragments inherit; a newer first fragment replaces it.
		m.frags[p.fragKey(hook)] = fragEntry{reason: r, at: m.now}
	}
	if r.Dropped() && m.cfg.Mode == Monitor {
		r = WouldDrop
	}
	v := VerdictPass
	if r.Dropped() {
		v = VerdictDrop
	}
	return Result{Verdict: v, Reason: r, Parse: p}
}

func (m *Model) decide(p *Parsed, hook Hook) Reason {
	switch p.Kind {
	case Malformed:
		return DropMalformed
	case Fragment:
		first, ok := m.frags[p.fragKey(hook)]
		timeout := m.cfg.FragTimeout6
		if p.Family == 4 {
			timeout = m.cfg.FragTimeout4
		}
		if ok && m.now-first.at > timeout {
			ok = false // the kernel dropped that datagram's queue
		}
		if !ok {
			if m.cfg.FragPolicy == Strict {
				return DropOrphanFragment
			}
			return PassOrphanFragment
		}
		if first.reason.Dropped() {
			return DropFragment
		}
		return first.reason
	case UDP:
		if hook == Ingress {
			return m.ingress(p)
		}
		return m.egress(p)
	}
	return Pass
}

// ingress: a request (to the port) arriving is dropped for request and
// both ports; a response (from the port) arriving is dropped for both ports
// and, for response ports, unless it answers a live request. The
// destination port is looked at first.
func (m *Model) ingress(p *Parsed) Reason {
	if m.ports[p.DstPort] && m.direction(p.DstPort) != Response {
		return m.allowedOr(p, Ingress, DropRequest)
	}
	if m.ports[p.SrcPort] {
		switch m.direction(p.SrcPort) {
		case Both:
			return m.allowedOr(p, Ingress, DropResponse)
		case Response:
			if m.allowed(p, Ingress) {
				return Allowlisted
			}
			k := RequestKey{Local: p.Dst, Remote: p.Src, LocalPort: p.DstPort, RemotePort: p.SrcPort}
			if exp, ok := m.requests[k]; ok && m.now < exp {
				return Solicited
			}
			return DropUnsolicited
		}
	}
	return Pass
}

// egress: a request (to the port) leaving is dropped for both ports and
// recorded for response ports; a response (from the port) leaving is
// dropped for request and both ports. The destination port is looked at
// first, but a request to a response port is recorded only once nothing
// drops it.
func (m *Model) egress(p *Parsed) Reason {
	if m.ports[p.DstPort] && m.direction(p.DstPort) == Both {
		return m.allowedOr(p, Egress, DropRequest)
	}
	if m.ports[p.SrcPort] && m.direction(p.SrcPort) != Response {
		return m.allowedOr(p, Egress, DropResponse)
	}
	if m.ports[p.DstPort] && m.direction(p.DstPort) == Response {
		k := RequestKey{Local: p.Src, Remote: p.Dst, LocalPort: p.SrcPort, RemotePort: p.DstPort}
		m.requests[k] = m.now + m.expiry(p.DstPort)
	}
	return Pass
}

func (m *Model) allowedOr(p *Parsed, hook Hook, drop Reason) Reason {
	if m.allowed(p, hook) {
		return Allowlisted
	}
	return drop
}

func (m *Model) allowed(p *Parsed, hook Hook) bool {
	peer := p.Src
	if hook == Egress {
		peer = p.Dst
	}
	list := m.allow6
	if p.Family == 4 {
		list = m.allow4
	}
	for _, pr := range list {
		if pr.Contains(peer) {
			return true
		}
	}
	return false
}

// Kind is what the parser made of a frame.
type Kind int

// The parser's outcomes.
const (
	NotIP     Kind = iota // not IPv4/IPv6, or a runt
	NotUDP                // IP and certainly not UDP
	UDP                   // UDP with readable ports: whole or first fragment
	Fragment              // a later fragment that may belong to UDP
	Malformed             // could be UDP, headers unreadable
)

var kindNames = [...]string{"not_ip", "not_udp", "udp", "fragment", "malformed"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Parsed is what the parser read from a frame. Fields past the point where
// parsing stopped keep their zero value, exactly as far as the policy cares.
type Parsed struct {
	Kind      Kind
	Why       string // for a Malformed or NotIP result, what gave out
	Family    uint8  // 4 or 6 once an IP header was read
	Src, Dst  netip.Addr
	SrcPort   uint16
	DstPort   uint16
	FragID    uint32 // IPv4 ID or IPv6 identification
	FragProto uint8  // IPv4 protocol or the fragment header's next header
	// FirstFragment: offset 0 with more fragments to come, of a datagram
	// whose later fragments are tracked: IPv4 UDP, IPv6 of any protocol.
	FirstFragment bool
	VLANs         int
	ExtHeaders    int
}

func (p *Parsed) fragKey(hook Hook) FragKey {
	k := FragKey{ID: p.FragID, Family: p.Family, Hook: hook}
	if p.Family == 4 {
		s, d := p.Src.As4(), p.Dst.As4()
		copy(k.Src[:], s[:])
		copy(k.Dst[:], d[:])
		k.Proto = p.FragProto
	} else {
		k.Src, k.Dst = p.Src.As16(), p.Dst.As16()
	}
	return k
}

func (p Parsed) String() string {
	s := p.Kind.String()
	if p.Why != "" {
		s += " (" + p.Why + ")"
	}
	if p.Family != 0 {
		s += fmt.Sprintf(" v%d %s -> %s", p.Family, p.Src, p.Dst)
	}
	if p.Kind == UDP {
		s += fmt.Sprintf(" udp %d -> %d", p.SrcPort, p.DstPort)
	}
	s += fmt.Sprintf(" id=%#x fragproto=%d first=%t vlans=%d ext=%d",
		p.FragID, p.FragProto, p.FirstFragment, p.VLANs, p.ExtHeaders)
	return s
}

// Wire constants. They are spelled out here, not shared with the C, so that
// a wrong value on either side shows up as a disagreement.
const (
	ethHeaderLen   = 14
	vlanTagLen     = 4
	maxVLANs       = 2 // tags walked; one more is malformed
	ipv4MinLen     = 20
	ipv6HeaderLen  = 40
	udpHeaderLen   = 8
	ipv6FragLen    = 8
	maxIPv6Ext     = 8 // extension headers walked; one more is malformed
	etherIPv4      = 0x0800
	etherIPv6      = 0x86dd
	etherVLAN      = 0x8100
	etherQinQ      = 0x88a8
	protoHopByHop  = 0
	protoUDP       = 17
	protoRouting   = 43
	protoFragment  = 44
	protoAH        = 51
	protoDstOpts   = 60
	ipv4OffsetMask = 0x1fff
	ipv4MoreFrags  = 0x2000
	ipv6MaxPayload = 65535 // a jumbogram's length lies beyond it
)

func couldLeadToUDP(proto uint8) bool {
	switch proto {
	case protoUDP, protoHopByHop, protoRouting, protoFragment, protoAH, protoDstOpts:
		return true
	}
	return false
}

func isExt(proto uint8) bool { return proto != protoUDP && couldLeadToUDP(proto) }

// ParseL3 reads a frame that starts at the IP header: the version nibble
// says which. An empty frame or another version is not IP: the kernel checks
// the version and drops it.
func ParseL3(frame []byte) Parsed {
	var p Parsed
	if len(frame) == 0 {
		p.Kind, p.Why = NotIP, "empty"
		return p
	}
	switch frame[0] >> 4 {
	case 4:
		parseIPv4(frame, &p)
	case 6:
		parseIPv6(frame, &p)
	default:
		p.Kind, p.Why = NotIP, fmt.Sprintf("IP version %d", frame[0]>>4)
	}
	return p
}

// Parse reads an Ethernet frame the way the data plane does.
func Parse(frame []byte) Parsed {
	var p Parsed
	if len(frame) < ethHeaderLen {
		p.Kind, p.Why = NotIP, "runt"
		return p
	}
	etherType := binary.BigEndian.Uint16(frame[12:14])
	off := ethHeaderLen
	for etherType == etherVLAN || etherType == etherQinQ {
		if p.VLANs == maxVLANs {
			p.Kind, p.Why = Malformed, "too many VLAN tags"
			return p
		}
		if off+vlanTagLen > len(frame) {
			p.Kind, p.Why = Malformed, "truncated VLAN tag"
			return p
		}
		etherType = binary.BigEndian.Uint16(frame[off+2 : off+4])
		off += vlanTagLen
		p.VLANs++
	}
	switch etherType {
	case etherIPv4:
		parseIPv4(frame[off:], &p)
	case etherIPv6:
		parseIPv6(frame[off:], &p)
	default:
		p.Kind, p.Why = NotIP, fmt.Sprintf("ethertype %#04x", etherType)
	}
	return p
}

func parseIPv4(b []byte, p *Parsed) {
	if len(b) < ipv4MinLen {
		p.Kind, p.Why = Malformed, "truncated IPv4 header"
		return
	}
	if b[0]>>4 != 4 {
		p.Kind, p.Why = Malformed, "IPv4 version"
		return
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinLen {
		p.Kind, p.Why = Malformed, "IPv4 IHL < 5"
		return
	}
	if ihl > len(b) {
		p.Kind, p.Why = Malformed, "IPv4 options past the end"
		return
	}
	p.Family = 4
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
	p.FragProto = b[9]
	if b[9] != protoUDP {
		p.Kind = NotUDP
		return
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&ipv4OffsetMask != 0 {
		p.Kind = Fragment
		return
	}
	p.FirstFragment = frag&ipv4MoreFrags != 0
	// The kernel trims the packet to its total length (and drops it when
	// the total length is shorter than the header or longer than the
	// frame): bytes past it are not the packet's.
	if totLen := int(binary.BigEndian.Uint16(b[2:4])); totLen < len(b) {
		b = b[:totLen]
	}
	if ihl > len(b) {
		p.Kind, p.Why = Malformed, "IPv4 total length shorter than the header"
		return
	}
	parseUDP(b[ihl:], p)
}

func parseUDP(b []byte, p *Parsed) {
	if len(b) < udpHeaderLen {
		p.Kind, p.Why = Malformed, "truncated UDP header"
		return
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	p.Kind = UDP
}

func parseIPv6(b []byte, p *Parsed) {
	if len(b) < ipv6HeaderLen {
		p.Kind, p.Why = Malformed, "truncated IPv6 header"
		return
	}
	if b[0]>>4 != 6 {
		p.Kind, p.Why = Malformed, "IPv6 version"
		return
	}
	p.Family = 6
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	// The kernel trims the packet to 40 + payload length, except for a
	// payload length of 0 behind hop-by-hop: a jumbogram, whose real
	// length lies past anything read here.
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if plen == 0 && next == protoHopByHop {
		plen = ipv6MaxPayload
	}
	if ipv6HeaderLen+plen < len(b) {
		b = b[:ipv6HeaderLen+plen]
	}
	off := ipv6HeaderLen
	for isExt(next) {
		if p.ExtHeaders == maxIPv6Ext {
			p.Kind, p.Why = Malformed, "IPv6 extension chain too long"
			return
		}
		p.ExtHeaders++
		if next == protoFragment {
			if off+ipv6FragLen > len(b) {
				p.Kind, p.Why = Malformed, "truncated IPv6 fragment header"
				return
			}
			h := b[off:]
			fo := binary.BigEndian.Uint16(h[2:4])
			p.FragID = binary.BigEndian.Uint32(h[4:8])
			p.FragProto = h[0]
			if fo>>3 != 0 {
				// Past offset 0 there is no header to read, only
				// payload, of the protocol the first fragment named:
				// this header's next header does not count.
				p.Kind = Fragment
				return
			}
			p.FirstFragment = fo&1 != 0
			next = h[0]
			off += ipv6FragLen
			continue
		}
		if off+2 > len(b) {
			p.Kind, p.Why = Malformed, "truncated IPv6 extension header"
			return
		}
		// Only the next header and length bytes are read; the rest of the
		// header may run past the end, which the next read then catches.
		nh, hl := b[off], int(b[off+1])
		if next == protoAH {
			off += (hl + 2) * 4 // AH counts 4-octet units (RFC 4302)
		} else {
			off += (hl + 1) * 8
		}
		next = nh
	}
	if next != protoUDP {
		p.Kind = NotUDP
		return
	}
	if off > len(b) {
		p.Kind, p.Why = Malformed, "truncated UDP header"
		return
	}
	parseUDP(b[off:], p)
}
