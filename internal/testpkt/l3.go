package testpkt

import (
	"encoding/binary"
	"fmt"
)

// L3 returns the part of an Ethernet frame after its Ethernet header and
// VLAN tags: the frame as a link without a link-layer header (tun, WireGuard)
// carries it. ok is false when there is no such part to speak of: a frame
// shorter than an Ethernet header, a cut tag, or an ethertype other than
// IPv4 or IPv6.
func L3(frame []byte) (l3 []byte, ok bool) {
	off, _, ok := l3Offset(frame)
	if !ok {
		return nil, false
	}
	return frame[off:], true
}

// l3Offset finds the IP header behind the Ethernet header and any VLAN tags.
func l3Offset(frame []byte) (off int, v6 bool, ok bool) {
	if len(frame) < 14 {
		return 0, false, false
	}
	et, off := binary.BigEndian.Uint16(frame[12:14]), 14
	for et == TPID8021Q || et == TPID8021AD {
		if off+4 > len(frame) {
			return 0, false, false
		}
		et = binary.BigEndian.Uint16(frame[off+2 : off+4])
		off += 4
	}
	switch et {
	case 0x0800:
		return off, false, true
	case 0x86dd:
		return off, true, true
	}
	return 0, false, false
}

// SetIPLength returns a copy of frame, an Ethernet frame, whose IP length
// field says n: the IPv4 total length (header included) or the IPv6 payload
// length (the 40-byte header excluded). The checksum is left as it was: the
// data plane does not read it. It fails when the frame has no IP header
// whole enough to hold the field.
func SetIPLength(frame []byte, n int) ([]byte, error) {
	off, v6, ok := l3Offset(frame)
	if !ok {
		return nil, fmt.Errorf("frame of %d bytes has no IP header", len(frame))
	}
	if n < 0 || n > 0xffff {
		return nil, fmt.Errorf("IP length %d: must fit in 16 bits", n)
	}
	field := off + 2 // IPv4 total length
	if v6 {
		field = off + 4 // IPv6 payload length
	}
	if field+2 > len(frame) {
		return nil, fmt.Errorf("frame of %d bytes ends before the IP length field at %d", len(frame), field)
	}
	c := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(c[field:], uint16(n))
	return c, nil
}

// IPLength returns the IP length field SetIPLength sets, and the length it
// would say for the frame as it is (everything after the link-layer header).
func IPLength(frame []byte) (field, actual int, err error) {
	off, v6, ok := l3Offset(frame)
	if !ok {
		return 0, 0, fmt.Errorf("frame of %d bytes has no IP header", len(frame))
	}
	at, actual := off+2, len(frame)-off
	if v6 {
		at, actual = off+4, len(frame)-off-40
	}
	if at+2 > len(frame) {
		return 0, 0, fmt.Errorf("frame of %d bytes ends before the IP length field at %d", len(frame), at)
	}
	return int(binary.BigEndian.Uint16(frame[at:])), actual, nil
}
