// Package testpkt builds Ethernet frames for xdpguard's tests, fuzz seeds and
// benchmarks: IPv4 and IPv6 UDP or TCP, VLAN tags, IPv4 options, IPv6
// extension header chains, IP fragments and memcached requests.
//
// Frames are serialised with gopacket (lengths fixed, checksums computed), so
// every frame is one a real stack would accept unless a test breaks it on
// purpose, usually by slicing it: Ethernet frames are padded to 60 bytes, so
// cut a frame to make it short rather than expecting a small payload to do so.
//
// A Packet describes one frame; Frame serialises it, Fragment builds one IP
// fragment of it with explicit offset and flags, and Fragments splits its
// transport datagram into a first, middle and last fragment sequence.
package testpkt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// EtherTypes of the two VLAN tag kinds the data plane walks.
const (
	TPID8021Q  uint16 = 0x8100 // 802.1Q, a customer tag
	TPID8021AD uint16 = 0x88a8 // 802.1ad, a service tag (QinQ outer)
)

// IP protocol / IPv6 next header numbers the tests use.
const (
	ProtoHopByHop uint8 = 0
	ProtoICMP     uint8 = 1
	ProtoTCP      uint8 = 6
	ProtoUDP      uint8 = 17
	ProtoRouting  uint8 = 43
	ProtoFragment uint8 = 44
	ProtoESP      uint8 = 50
	ProtoAH       uint8 = 51
	ProtoICMPv6   uint8 = 58
	ProtoNone     uint8 = 59
	ProtoDstOpts  uint8 = 60
)

// MemcachedPort is memcached's UDP port.
const MemcachedPort uint16 = 11211

// Memcached commands a reflector answers with many times their size.
const (
	Stats = "stats\r\n"
	GetK  = "get k\r\n"
)

// MACs every frame carries; the data plane ignores them.
var (
	SrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	DstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

// Tag is one VLAN tag.
type Tag struct {
	TPID uint16 // TPID8021Q or TPID8021AD (or anything, to test the parser)
	VID  uint16 // 0 is a priority tag
}

// VLAN returns an 802.1Q tag.
func VLAN(vid uint16) Tag { return Tag{TPID: TPID8021Q, VID: vid} }

// SVLAN returns an 802.1ad service tag.
func SVLAN(vid uint16) Tag { return Tag{TPID: TPID8021AD, VID: vid} }

// Ext is one IPv6 extension header.
type Ext struct {
	Type uint8 // ProtoHopByHop, ProtoRouting, ProtoDstOpts, ProtoAH or ProtoFragment
	// Len is the header's size in bytes: a multiple of 8 from 8 to 2048, or
	// for AH a multiple of 4 from 8 to 1028. Zero means the smallest (8).
	// A fragment header is always 8 bytes; in a chain it is an atomic
	// fragment (offset 0, no more fragments) carrying the packet's ID.
	Len int
}

// Chain returns n extension headers of the given type, each of the smallest
// size: a convenient way to build chains at and past the parser's limit.
func Chain(typ uint8, n int) []Ext {
	out := make([]Ext, n)
	for i := range out {
		out[i] = Ext{Type: typ}
	}
	return out
}

// Packet describes one frame. The family of Src (which must match Dst) picks
// IPv4 or IPv6.
type Packet struct {
	Tags     []Tag // VLAN tags, outermost first
	Src, Dst netip.Addr
	// Proto is the transport: ProtoUDP and ProtoTCP get a real header with
	// SrcPort and DstPort; any other value carries Payload raw.
	Proto            uint8
	SrcPort, DstPort uint16
	Payload          []byte
	IPv4Options      int    // bytes of IPv4 options (NOPs), a multiple of 4 up to 40
	ID               uint32 // IPv4 identification (low 16 bits) or IPv6 fragment ID
	Ext              []Ext  // IPv6 extension headers before the transport
}

// UDP returns a UDP packet from src:sport to dst:dport.
func UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) Packet {
	return Packet{Src: src, Dst: dst, Proto: ProtoUDP, SrcPort: sport, DstPort: dport, Payload: payload}
}

// TCP returns a TCP SYN-ACK carrying payload from src:sport to dst:dport.
func TCP(src, dst netip.Addr, sport, dport uint16, payload []byte) Packet {
	return Packet{Src: src, Dst: dst, Proto: ProtoTCP, SrcPort: sport, DstPort: dport, Payload: payload}
}

// MemcachedPayload is a memcached UDP request: the 8-byte frame header
// (request ID, sequence 0, 1 datagram, reserved 0) and the command.
func MemcachedPayload(reqID uint16, cmd string) []byte {
	b := make([]byte, 8, 8+len(cmd))
	binary.BigEndian.PutUint16(b[0:2], reqID)
	binary.BigEndian.PutUint16(b[4:6], 1)
	return append(b, cmd...)
}

// MemcachedRequest returns a UDP memcached request such as an attacker sends
// to a reflector, spoofing the victim as src.
func MemcachedRequest(src, dst netip.Addr, sport uint16, cmd string) Packet {
	return UDP(src, dst, sport, MemcachedPort, MemcachedPayload(1, cmd))
}

// With returns a copy of p with tags added outermost-first.
func (p Packet) With(tags ...Tag) Packet {
	p.Tags = append(append([]Tag(nil), p.Tags...), tags...)
	return p
}

// Frame serialises p as one whole (unfragmented) frame.
func (p Packet) Frame() ([]byte, error) {
	transport, err := p.transport()
	if err != nil {
		return nil, err
	}
	return p.frame(nil, transport)
}

// Frag says which piece of a datagram a fragment carries.
type Frag struct {
	Offset int  // bytes into the datagram; a multiple of 8
	More   bool // more fragments follow
	// Proto is the IPv4 protocol or the fragment header's next header;
	// zero means p.Proto.
	Proto uint8
	// Data is the fragment's payload. For the first fragment it normally
	// starts with the transport header: see Datagram.
	Data []byte
}

// Fragment serialises one IP fragment of p with p.ID as identification. For
// IPv6, p.Ext precede the fragment header.
func (p Packet) Fragment(f Frag) ([]byte, error) {
	if f.Offset%8 != 0 || f.Offset < 0 || f.Offset>>3 > 0x1fff {
		return nil, fmt.Errorf("fragment offset %d: must be a multiple of 8 below 65536", f.Offset)
	}
	if f.Proto == 0 {
		f.Proto = p.Proto
	}
	return p.frame(&f, f.Data)
}

// Datagram returns p's transport datagram (header with checksum, and
// payload): the bytes an IP layer splits into fragments.
func (p Packet) Datagram() ([]byte, error) { return p.transport() }

// Fragments splits p's transport datagram into fragments of at most size
// payload bytes (a multiple of 8), in order: first (offset 0, more
// fragments), middle ones, last.
func (p Packet) Fragments(size int) ([][]byte, error) {
	if size <= 0 || size%8 != 0 {
		return nil, fmt.Errorf("fragment size %d: must be a positive multiple of 8", size)
	}
	dg, err := p.transport()
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for off := 0; off < len(dg); off += size {
		end := min(off+size, len(dg))
		fr, err := p.Fragment(Frag{Offset: off, More: end < len(dg), Data: dg[off:end]})
		if err != nil {
			return nil, err
		}
		out = append(out, fr)
	}
	return out, nil
}

// Ethernet serialises an Ethernet frame with tags around a raw L3 payload of
// any ethertype: for ARP-like traffic or deliberately broken IP headers.
func Ethernet(tags []Tag, etherType uint16, payload []byte) ([]byte, error) {
	ls := l2(tags, etherType)
	ls = append(ls, gopacket.Payload(payload))
	return serialize(ls...)
}

// Must returns b, panicking on err: for frames in test tables, whose
// descriptions are fixed by the programmer.
func Must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// MustAll is Must for Fragments.
func MustAll(bs [][]byte, err error) [][]byte {
	if err != nil {
		panic(err)
	}
	return bs
}

func l2(tags []Tag, etherType uint16) []gopacket.SerializableLayer {
	eth := &layers.Ethernet{SrcMAC: SrcMAC, DstMAC: DstMAC, EthernetType: layers.EthernetType(etherType)}
	ls := []gopacket.SerializableLayer{eth}
	if len(tags) > 0 {
		eth.EthernetType = layers.EthernetType(tags[0].TPID)
	}
	for i, t := range tags {
		next := etherType
		if i+1 < len(tags) {
			next = tags[i+1].TPID
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: t.VID, Type: layers.EthernetType(next)})
	}
	return ls
}

func serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, fmt.Errorf("serialize frame: %w", err)
	}
	return buf.Bytes(), nil
}

// network returns the IP layer for p, which the transport checksum needs.
func (p Packet) network(proto uint8) (gopacket.NetworkLayer, error) {
	if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
		return nil, fmt.Errorf("addresses %s and %s: need two of one family", p.Src, p.Dst)
	}
	if p.Src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocol(proto),
			SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice(), Id: uint16(p.ID)}
		if p.IPv4Options%4 != 0 || p.IPv4Options < 0 || p.IPv4Options > 40 {
			return nil, fmt.Errorf("IPv4 options of %d bytes: need a multiple of 4 up to 40", p.IPv4Options)
		}
		for range p.IPv4Options {
			ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1}) // NOP
		}
		return ip, nil
	}
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocol(proto),
		SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice()}, nil
}

// transport serialises the transport header and payload, checksummed
// against p's addresses.
func (p Packet) transport() ([]byte, error) {
	ip, err := p.network(p.Proto)
	if err != nil {
		return nil, err
	}
	var l4 gopacket.SerializableLayer
	switch p.Proto {
	case ProtoUDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(p.SrcPort), DstPort: layers.UDPPort(p.DstPort)}
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, fmt.Errorf("udp checksum: %w", err)
		}
		l4 = u
	case ProtoTCP:
		t := &layers.TCP{SrcPort: layers.TCPPort(p.SrcPort), DstPort: layers.TCPPort(p.DstPort),
			Seq: 1, Ack: 1, SYN: true, ACK: true, Window: 65535}
		if err := t.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, fmt.Errorf("tcp checksum: %w", err)
		}
		l4 = t
	default:
		return append([]byte(nil), p.Payload...), nil
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, l4, gopacket.Payload(p.Payload)); err != nil {
		return nil, fmt.Errorf("serialize transport: %w", err)
	}
	return buf.Bytes(), nil
}

// frame wraps an already serialised transport (or fragment data) in IP and
// Ethernet. f, when not nil, makes it a fragment.
func (p Packet) frame(f *Frag, body []byte) ([]byte, error) {
	proto := p.Proto
	if f != nil {
		proto = f.Proto
	}
	nl, err := p.network(proto)
	if err != nil {
		return nil, err
	}
	var ls []gopacket.SerializableLayer
	switch ip := nl.(type) {
	case *layers.IPv4:
		if len(p.Ext) > 0 {
			return nil, errors.New("IPv6 extension headers on an IPv4 packet")
		}
		if f != nil {
			ip.FragOffset = uint16(f.Offset >> 3)
			if f.More {
				ip.Flags = layers.IPv4MoreFragments
			}
		}
		ls = append(l2(p.Tags, uint16(layers.EthernetTypeIPv4)), ip)
	case *layers.IPv6:
		exts, err := p.extLayers(f, proto)
		if err != nil {
			return nil, err
		}
		switch {
		case len(p.Ext) > 0:
			ip.NextHeader = layers.IPProtocol(p.Ext[0].Type)
		case f != nil:
			ip.NextHeader = layers.IPProtocol(ProtoFragment)
		}
		ls = append(l2(p.Tags, uint16(layers.EthernetTypeIPv6)), ip)
		ls = append(ls, exts...)
	}
	ls = append(ls, gopacket.Payload(body))
	return serialize(ls...)
}

// extLayers builds p.Ext, then the fragment header when f is not nil; last
// is the protocol after the chain.
func (p Packet) extLayers(f *Frag, last uint8) ([]gopacket.SerializableLayer, error) {
	var ls []gopacket.SerializableLayer
	for i, e := range p.Ext {
		next := last
		if i+1 < len(p.Ext) {
			next = p.Ext[i+1].Type
		} else if f != nil {
			next = ProtoFragment
		}
		l, err := e.layer(next, p.ID)
		if err != nil {
			return nil, fmt.Errorf("extension header %d: %w", i, err)
		}
		ls = append(ls, l)
	}
	if f != nil {
		ls = append(ls, &layers.IPv6Fragment{NextHeader: layers.IPProtocol(last),
			FragmentOffset: uint16(f.Offset >> 3), MoreFragments: f.More, Identification: p.ID})
	}
	return ls, nil
}

func (e Ext) layer(next uint8, id uint32) (gopacket.SerializableLayer, error) {
	n := e.Len
	if n == 0 {
		n = 8
	}
	switch e.Type {
	case ProtoFragment:
		return &layers.IPv6Fragment{NextHeader: layers.IPProtocol(next), Identification: id}, nil
	case ProtoRouting:
		if n%8 != 0 || n > 2048 {
			return nil, fmt.Errorf("routing header of %d bytes: need a multiple of 8 up to 2048", n)
		}
		// Type 4 (segment routing) with no segments left: a receiver
		// skips it and carries on with the next header.
		r := &layers.IPv6Routing{RoutingType: 4, Reserved: make([]byte, 4), Data: make([]byte, n-8)}
		r.NextHeader = layers.IPProtocol(next)
		return r, nil
	case ProtoHopByHop, ProtoDstOpts:
		if n%8 != 0 || n > 2048 {
			return nil, fmt.Errorf("options header of %d bytes: need a multiple of 8 up to 2048", n)
		}
		b := make([]byte, n)
		b[0], b[1] = next, byte(n/8-1)
		// Pad options fill the header, as a sender pads it: PadN holds
		// at most 255 bytes, and a single byte left is a Pad1 (type 0,
		// which the zeroed buffer already holds).
		for off := 2; n-off >= 2; {
			l := min(n-off-2, 255)
			b[off], b[off+1] = 1, byte(l)
			off += 2 + l
		}
		return rawLayer(b), nil
	case ProtoAH:
		if n%4 != 0 || n < 8 || n > 1028 {
			return nil, fmt.Errorf("AH of %d bytes: need a multiple of 4 from 8 to 1028", n)
		}
		b := make([]byte, n)
		b[0], b[1] = next, byte(n/4-2) // RFC 4302: 4-octet units minus 2
		binary.BigEndian.PutUint32(b[4:8], 0x100)
		return rawLayer(b), nil
	}
	return nil, fmt.Errorf("type %d is not an extension header", e.Type)
}

// rawLayer is an extension header gopacket has no serialiser for (AH) or
// whose exact size a test needs to control (options headers).
type rawLayer []byte

func (r rawLayer) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

func (r rawLayer) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	dst, err := b.PrependBytes(len(r))
	if err != nil {
		return fmt.Errorf("prepend extension header: %w", err)
	}
	copy(dst, r)
	return nil
}
