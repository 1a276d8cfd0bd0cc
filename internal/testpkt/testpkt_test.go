package testpkt

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	v4a = netip.MustParseAddr("192.0.2.1")
	v4b = netip.MustParseAddr("198.51.100.2")
	v6a = netip.MustParseAddr("2001:db8::1")
	v6b = netip.MustParseAddr("2001:db8:1::2")
)

func decode(t *testing.T, frame []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("frame does not decode: %v", el.Error())
	}
	return p
}

func TestMemcachedRequestV4(t *testing.T) {
	fr := Must(MemcachedRequest(v4a, v4b, 40000, Stats).Frame())
	p := decode(t, fr)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip.SrcIP.String() != "192.0.2.1" || ip.DstIP.String() != "198.51.100.2" || ip.IHL != 5 {
		t.Fatalf("ip header %+v", ip)
	}
	u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if u.SrcPort != 40000 || u.DstPort != 11211 {
		t.Fatalf("ports %d -> %d", u.SrcPort, u.DstPort)
	}
	want := []byte{0, 1, 0, 0, 0, 1, 0, 0, 's', 't', 'a', 't', 's', '\r', '\n'}
	if !bytes.Equal(u.Payload, want) {
		t.Fatalf("payload %q, want %q", u.Payload, want)
	}
	if int(u.Length) != 8+len(want) {
		t.Fatalf("udp length %d", u.Length)
	}
	// The checksum must verify: the pseudo-header plus the datagram sums to 0xffff.
	if u.Checksum == 0 {
		t.Fatal("udp checksum not computed")
	}
}

func TestVLANStack(t *testing.T) {
	for _, tags := range [][]Tag{{VLAN(0)}, {SVLAN(100), VLAN(200)}, {SVLAN(1), VLAN(2), VLAN(3)}} {
		fr := Must(UDP(v4a, v4b, 1, 2, nil).With(tags...).Frame())
		if got := binary.BigEndian.Uint16(fr[12:14]); got != tags[0].TPID {
			t.Fatalf("outer TPID %#x, want %#x", got, tags[0].TPID)
		}
		for i, tag := range tags {
			off := 14 + 4*i
			if vid := binary.BigEndian.Uint16(fr[off:]) & 0x0fff; vid != tag.VID {
				t.Fatalf("tag %d VID %d, want %d", i, vid, tag.VID)
			}
			next := uint16(0x0800)
			if i+1 < len(tags) {
				next = tags[i+1].TPID
			}
			if got := binary.BigEndian.Uint16(fr[off+2:]); got != next {
				t.Fatalf("tag %d inner type %#x, want %#x", i, got, next)
			}
		}
		if fr[14+4*len(tags)] != 0x45 {
			t.Fatalf("IPv4 header not after %d tags", len(tags))
		}
	}
}

func TestIPv4Options(t *testing.T) {
	for _, n := range []int{0, 4, 20, 40} {
		p := UDP(v4a, v4b, 1, 11211, []byte("x"))
		p.IPv4Options = n
		fr := Must(p.Frame())
		ip := decode(t, fr).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if int(ip.IHL)*4 != 20+n {
			t.Fatalf("options %d: IHL %d", n, ip.IHL)
		}
		if binary.BigEndian.Uint16(fr[14+20+n+2:]) != 11211 {
			t.Fatalf("options %d: UDP not after the options", n)
		}
	}
	p := UDP(v4a, v4b, 1, 2, nil)
	p.IPv4Options = 6
	if _, err := p.Frame(); err == nil {
		t.Fatal("6 bytes of options accepted")
	}
}

// walk follows an IPv6 chain the way RFC 8200 and RFC 4302 define lengths,
// returning the header types met and the offset of what follows them.
func walk(t *testing.T, fr []byte) (types []uint8, off int, last uint8) {
	t.Helper()
	b := fr[14:]
	next, off := b[6], 40
	for next == 0 || next == 43 || next == 44 || next == 51 || next == 60 {
		types = append(types, next)
		switch next {
		case 44:
			next, off = b[off], off+8
		case 51:
			next, off = b[off], off+(int(b[off+1])+2)*4
		default:
			next, off = b[off], off+(int(b[off+1])+1)*8
		}
	}
	if plen := int(binary.BigEndian.Uint16(b[4:6])); plen != len(b)-40 {
		t.Fatalf("payload length %d, frame carries %d", plen, len(b)-40)
	}
	return types, off, next
}

func TestIPv6Chain(t *testing.T) {
	chain := []Ext{{Type: ProtoHopByHop, Len: 16}, {Type: ProtoRouting, Len: 24},
		{Type: ProtoAH, Len: 12}, {Type: ProtoDstOpts}, {Type: ProtoFragment}, {Type: ProtoDstOpts, Len: 272}}
	p := UDP(v6a, v6b, 11211, 5000, []byte("hello"))
	p.Ext = chain
	fr := Must(p.Frame())
	types, off, last := walk(t, fr)
	if len(types) != len(chain) || last != ProtoUDP {
		t.Fatalf("chain %v then %d", types, last)
	}
	for i, e := range chain {
		if types[i] != e.Type {
			t.Fatalf("header %d is %d, want %d", i, types[i], e.Type)
		}
	}
	want := 40 + 16 + 24 + 12 + 8 + 8 + 272
	if off != want {
		t.Fatalf("UDP at %d, want %d", off, want)
	}
	if sport := binary.BigEndian.Uint16(fr[14+off:]); sport != 11211 {
		t.Fatalf("sport %d", sport)
	}
	// gopacket's decoder must agree that the headers it knows (it stops
	// at AH and at fragment headers) lead to UDP.
	q := p
	q.Ext = []Ext{{Type: ProtoHopByHop, Len: 16}, {Type: ProtoRouting, Len: 24}, {Type: ProtoDstOpts, Len: 272}}
	if u, ok := decode(t, Must(q.Frame())).Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || string(u.Payload) != "hello" {
		t.Fatal("gopacket finds no UDP behind the chain")
	}
	for _, bad := range []Ext{{Type: ProtoAH, Len: 6}, {Type: ProtoRouting, Len: 12}, {Type: ProtoUDP}} {
		p.Ext = []Ext{bad}
		if _, err := p.Frame(); err == nil {
			t.Fatalf("extension %+v accepted", bad)
		}
	}
}

func TestChainLength(t *testing.T) {
	p := UDP(v6a, v6b, 1, 2, nil)
	p.Ext = Chain(ProtoDstOpts, 9)
	types, off, last := walk(t, Must(p.Frame()))
	if len(types) != 9 || off != 40+9*8 || last != ProtoUDP {
		t.Fatalf("chain %v, UDP at %d, last %d", types, off, last)
	}
}

func TestFragments4(t *testing.T) {
	p := UDP(v4a, v4b, 53, 4444, bytes.Repeat([]byte{0xab}, 100))
	p.ID = 0xbeef
	frs := MustAll(p.Fragments(48))
	dg := Must(p.Datagram())
	if len(frs) != 3 {
		t.Fatalf("%d fragments", len(frs))
	}
	var joined []byte
	for i, fr := range frs {
		ip := decode(t, fr).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip.Id != 0xbeef || int(ip.FragOffset)*8 != i*48 {
			t.Fatalf("fragment %d: id %#x offset %d", i, ip.Id, ip.FragOffset)
		}
		if more := ip.Flags&layers.IPv4MoreFragments != 0; more != (i < 2) {
			t.Fatalf("fragment %d: MF %t", i, more)
		}
		joined = append(joined, ip.Payload...)
	}
	if !bytes.Equal(joined, dg) {
		t.Fatal("fragments do not reassemble to the datagram")
	}
	if _, err := p.Fragment(Frag{Offset: 12}); err == nil {
		t.Fatal("offset 12 accepted")
	}
}

func TestFragments6(t *testing.T) {
	p := UDP(v6a, v6b, 53, 4444, bytes.Repeat([]byte{0xcd}, 40))
	p.ID = 0xdeadbeef
	p.Ext = []Ext{{Type: ProtoHopByHop}}
	frs := MustAll(p.Fragments(24))
	dg := Must(p.Datagram())
	var joined []byte
	for i, fr := range frs {
		types, off, last := walk(t, fr)
		if len(types) != 2 || types[0] != ProtoHopByHop || types[1] != ProtoFragment {
			t.Fatalf("fragment %d chain %v", i, types)
		}
		fh := fr[14+off-8:]
		if last != ProtoUDP || binary.BigEndian.Uint32(fh[4:]) != 0xdeadbeef {
			t.Fatalf("fragment %d: next %d id %#x", i, last, binary.BigEndian.Uint32(fh[4:]))
		}
		fo := binary.BigEndian.Uint16(fh[2:])
		if int(fo>>3)*8 != i*24 || (fo&1 != 0) != (i < len(frs)-1) {
			t.Fatalf("fragment %d: offset field %#x", i, fo)
		}
		joined = append(joined, fr[14+off:]...)
	}
	if !bytes.Equal(joined, dg) {
		t.Fatal("fragments do not reassemble to the datagram")
	}
}

func TestEthernetRaw(t *testing.T) {
	fr := Must(Ethernet([]Tag{VLAN(7)}, 0x0806, []byte{1, 2, 3}))
	if len(fr) != 60 {
		t.Fatalf("frame of %d bytes, want the 60-byte minimum", len(fr))
	}
	if binary.BigEndian.Uint16(fr[16:18]) != 0x0806 || fr[18] != 1 {
		t.Fatalf("frame % x", fr[:20])
	}
	if _, err := (Packet{Src: v4a, Dst: v6b, Proto: ProtoUDP}).Frame(); err == nil {
		t.Fatal("mixed families accepted")
	}
}

func TestL3AndIPLength(t *testing.T) {
	v4 := Must(MemcachedRequest(v4a, v4b, 1, Stats).With(VLAN(3)).Frame())
	l3, ok := L3(v4)
	if !ok || len(l3) != len(v4)-18 || l3[0]>>4 != 4 {
		t.Fatalf("L3 of a tagged IPv4 frame: ok=%t, %d bytes, first byte %#x", ok, len(l3), l3[0])
	}
	field, actual, err := IPLength(v4)
	if err != nil || field != actual || field != 20+8+15 {
		t.Fatalf("IPLength: %d, %d, %v; want 43 twice", field, actual, err)
	}
	short, err := SetIPLength(v4, 24)
	if err != nil {
		t.Fatal(err)
	}
	if f, _, _ := IPLength(short); f != 24 || bytes.Equal(short, v4) {
		t.Fatalf("SetIPLength(24) left the field at %d", f)
	}
	if f, _, _ := IPLength(v4); f != 43 {
		t.Fatal("SetIPLength changed its input")
	}
	v6 := Must(MemcachedRequest(v6a, v6b, 1, GetK).Frame())
	if field, actual, err := IPLength(v6); err != nil || field != actual || field != 8+15 {
		t.Fatalf("IPLength v6: %d, %d, %v; want 23 twice", field, actual, err)
	}
	zero, err := SetIPLength(v6, 0)
	if err != nil || binary.BigEndian.Uint16(zero[14+4:]) != 0 {
		t.Fatalf("SetIPLength v6 0: %v", err)
	}
	for _, bad := range [][]byte{make([]byte, 13), Must(Ethernet(nil, 0x0806, make([]byte, 28))), v4[:14+2]} {
		if _, err := SetIPLength(bad, 1); err == nil {
			t.Errorf("SetIPLength accepted a %d-byte frame without an IP length field", len(bad))
		}
	}
	if _, ok := L3(Must(Ethernet(nil, 0x0806, make([]byte, 28)))); ok {
		t.Error("L3 of ARP: ok")
	}
}
