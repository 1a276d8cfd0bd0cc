package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// MemcachedPayload is a memcached UDP request: the 8-byte frame header
// (request ID, sequence 0, one datagram, reserved) and the command.
func MemcachedPayload(reqID uint16, command string) []byte {
	b := make([]byte, 8, 8+len(command))
	binary.BigEndian.PutUint16(b[0:2], reqID)
	binary.BigEndian.PutUint16(b[4:6], 1)
	return append(b, command...)
}

// UDPFrame serialises an untagged Ethernet frame carrying a UDP datagram
// from src:sport to dst:dport, lengths and checksums filled in. The MACs
// are left zero for the caller to address.
func UDPFrame(src, dst netip.Addr, sport, dport uint16, payload []byte) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: make(net.HardwareAddr, 6), DstMAC: make(net.HardwareAddr, 6)}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	var ip gopacket.NetworkLayer
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, fmt.Errorf("udp frame: %w", err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), udp, gopacket.Payload(payload))
	if err != nil {
		return nil, fmt.Errorf("udp frame: %w", err)
	}
	return buf.Bytes(), nil
}
