/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The one parsing path of xdpguard, shared by the XDP ingress and the TC egress
 * programs: Ethernet and up to MAX_VLAN_DEPTH VLAN tags (parse_packet), or
 * nothing at all on links whose frames start at the IP header (parse_l3:
 * tun, WireGuard, IPIP, GRE, PPP), then one common IP parse: IPv4 with
 * options or IPv6 with its extension header chain, and UDP.
 *
 * Every read is preceded by a bounds check against data_end that the verifier
 * can see. The parser never reads a transport header out of a non-first
 * fragment: only offset 0 carries one.
 *
 * The kernel judges a packet on the bytes inside its IP length fields, not on
 * the frame, so every read is bounded by those fields as well (ip_end). A
 * packet the kernel drops may pass or drop here; a packet the kernel accepts
 * is never judged on bytes the kernel ignores. Rule by rule, the kernel check
 * each one mirrors (Linux 6.x):
 *
 *  IPv4 (net/ipv4/ip_input.c ip_rcv_core)
 *   - version != 4 or IHL < 5: the kernel drops (inhdr_error); here malformed.
 *   - tot_len > frame: dropped (PKT_TOO_SMALL); tot_len < IHL*4: dropped
 *     (inhdr_error); otherwise the skb is trimmed to tot_len (pskb_trim_rcsum)
 *     and trailing bytes (Ethernet padding, or a planted header) are ignored.
 *     Here ip_end = IP header + tot_len: the UDP header must lie before it.
 *     tot_len < IHL*4 or < IHL*4 + 8 leaves no UDP header: malformed, which
 *     the kernel drops anyway (udp_rcv's pskb_may_pull of the UDP header).
 *   - a first fragment (offset 0, MF) whose UDP header is not whole inside
 *     tot_len: net/ipv4/ip_fragment.c queues it without looking at the
 *     transport, and the ports would come from a later fragment: malformed
 *     (fail closed), and the verdict is recorded, so its fragments follow it.
 *   - later fragments (offset > 0): no transport header; the key (addresses,
 *     ID, protocol: ip4_frag key) lies in the fixed header.
 *   - protocol not UDP: passed whatever the lengths say; the protocol byte is
 *     in the fixed header, and the IPv4 reassembly key includes it, so no
 *     fragment of another protocol can complete a UDP datagram.
 *
 *  IPv6 (net/ipv6/ip6_input.c ip6_rcv_core)
 *   - version != 6: dropped; here malformed.
 *   - payload length + 40 > frame: dropped (PKT_TOO_SMALL); otherwise the skb
 *     is trimmed to 40 + payload length. Here ip_end = header + 40 + payload
 *     length, and every extension header, fragment header and the UDP header
 *     must lie before it.
 *   - payload length 0 with a hop-by-hop header: not trimmed there; a jumbo
 *     option (net/ipv6/exthdrs.c ipv6_hop_jumbo) then trims to its length,
 *     which is above 65535, beyond any header this walk reads (at most
 *     MAX_IPV6_EXT_HDRS * 2048 + 48 bytes), so the frame alone bounds it.
 *     Payload length 0 without hop-by-hop: trimmed to the bare header, so no
 *     extension or UDP header is readable; UDP is malformed, others pass.
 *   - the chain walked past ip_end: the kernel's first-fragment check
 *     (net/ipv6/reassembly.c ipv6_frag_rcv -> ipv6frag_thdr_truncated) gives
 *     up without dropping when it cannot walk the chain, queues the fragment,
 *     and the reassembled datagram continues the chain in the next fragment.
 *     Here a chain that leaves ip_end while it could still lead to UDP is
 *     malformed: fail closed.
 *   - a first fragment whose transport header is cut by ip_end is dropped by
 *     that same check (ICMPV6_HDR_INCOMP); here malformed.
 *   - every non-first fragment is PARSE_FRAGMENT whatever its fragment
 *     header's next header says: the reassembly key (ip6frag key) has no
 *     protocol, and net/ipv6/reassembly.c takes the datagram's protocol from
 *     the first fragment. First fragments of any protocol are marked
 *     first_fragment, so their verdict is recorded for the ones that follow.
 *   - atomic fragments (offset 0, no MF) are processed as whole packets by
 *     the kernel (ipv6_frag_rcv returns early): here too. */
#ifndef XDPGUARD_PARSE_H
#define XDPGUARD_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define IPV4_MIN_HLEN 20
#define IPV6_HLEN 40
#define UDP_HLEN 8
#define IPV6_FRAG_HLEN 8
#define IPV6_MAXPLEN 65535 /* payload length field's range; jumbograms exceed it */
#define IPV6_EXT_MIN_HLEN 2 /* next header and length: all the walk reads */

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_NONE 59
#define IPPROTO_DSTOPTS 60

#define IPV4_VERSION 4
#define IPV6_VERSION 6
#define IPV4_FRAG_OFFSET_MASK 0x1FFF
#define IPV4_FRAG_MORE 0x2000
#define IPV6_FRAG_OFFSET_SHIFT 3
#define IPV6_FRAG_MORE 0x0001

/* How many VLAN tags (802.1Q or 802.1ad, any VID, 0 included) the parser
 * walks. Linux strips nested priority tags and delivers what is inside, so a
 * frame with more tags than this is not passed blind: it is malformed. */
#define MAX_VLAN_DEPTH 2

/* How many IPv6 extension headers the parser walks before giving up. Real
 * traffic carries zero to three; a chain that is still going after this many
 * could hide UDP behind it, so it is dropped as malformed, never passed. */
#define MAX_IPV6_EXT_HDRS 8

/* Extension header lengths: the generic ones count 8-octet units beyond the
 * first 8 octets; AH counts 4-octet units beyond the first 8 (RFC 4302). */
#define IPV6_EXT_UNIT_SHIFT 3
#define IPV6_AH_UNIT_SHIFT 2
#define IPV6_AH_EXTRA_UNITS 2

enum parse_result {
	PARSE_NOT_IP,    /* not IPv4/IPv6 (ARP, LLDP, ...) or a runt: never UDP */
	PARSE_NOT_UDP,   /* IP, and certainly not UDP (TCP, ICMP, ESP, ...) */
	PARSE_UDP,       /* UDP with readable ports (whole or first fragment) */
	PARSE_FRAGMENT,  /* a non-first fragment that could belong to UDP */
	PARSE_MALFORMED, /* IP whose headers cannot be read far enough */
};

#define IPV4_SADDR_OFF 12
#define IPV4_DADDR_OFF 16
#define IPV4_ADDR_LEN 4
#define IPV6_SADDR_OFF 8
#define IPV6_DADDR_OFF 24
#define IPV6_ADDR_LEN 16

struct packet {
	/* The IP header, bounds-checked for its fixed part: addresses are read
	 * from it only when a decision needs them (allow list, fragment key),
	 * so the pass path copies nothing. */
	__u8 *l3;
	__u8 *end;       /* data_end, to re-check l3 where the family is not known to the verifier */
	__u32 frag_id;   /* IPv4: the 16-bit IP ID; IPv6: the 32-bit identification */
	__u16 sport;     /* host order; valid for PARSE_UDP */
	__u16 dport;
	__u8 family;     /* 4 or 6 once the IP header was read, else 0 */
	__u8 frag_proto; /* IPv4 protocol / IPv6 fragment header's next header */
	/* Offset 0 with more fragments to come, of a datagram whose later
	 * fragments go through the fragment table: IPv4 UDP, IPv6 anything. */
	__u8 first_fragment;
	__u8 pad;
};

/* ip_header returns the IP header when its fixed part, hlen bytes, is in the
 * packet, else NULL. Parsing checked it already; the check is repeated
 * because pkt lives in memory, where the verifier does not keep which family
 * (and so which header length) l3 was checked for. One check per use, on the
 * whole fixed header: the verifier cannot carry one bound over to another. */
static __always_inline const __u8 *ip_header(const struct packet *pkt, __u32 hlen)
{
	const __u8 *p = pkt->l3;

	if (!p || p + hlen > pkt->end)
		return 0;
	return p;
}

/* copy_addr copies an address of len bytes (IPV4_ADDR_LEN or IPV6_ADDR_LEN,
 * a constant once inlined) out of the packet in 32-bit words. Given a byte
 * pointer, __builtin_memcpy assumes no alignment and emits four loads and
 * three shifts per word. The IP header behind a 14-byte Ethernet header is
 * only 2-byte aligned; the verifier accepts such loads wherever the
 * architecture has efficient unaligned access, as the parser's read of the
 * IPv6 fragment identification already relies on. dst must be 4-byte
 * aligned. */
static __always_inline void copy_addr(void *dst, const __u8 *src, __u32 len)
{
	__u32 *d = dst;
	const __u32 *w = (const void *)src;
	int i;

#pragma unroll
	for (i = 0; i < IPV6_ADDR_LEN / 4; i++)
		if (i < len / 4)
			d[i] = w[i];
}

/* opaque hides v's value from clang, so that arithmetic written to stay
 * branch-free is not turned back into comparisons (branches, in BPF). */
static __always_inline __u64 opaque(__u64 v)
{
	asm volatile("" : "+r"(v));
	return v;
}

/* IPV6_EXT_MASK has bit n set for each extension header protocol n that may
 * come before a UDP header (all below 64). */
#define IPV6_EXT_MASK                                                                   \
	(1ULL << IPPROTO_HOPOPTS | 1ULL << IPPROTO_ROUTING | 1ULL << IPPROTO_FRAGMENT | \
	 1ULL << IPPROTO_AH | 1ULL << IPPROTO_DSTOPTS)

/* is_ipv6_ext tests one bit, not five values: a comparison per kind would
 * tell the verifier the kind of the header on each path, and it would walk
 * the rest of the chain once for each mix of kinds (see ext_hlen). */
static __always_inline int is_ipv6_ext(__u8 proto)
{
	return proto < 64 && (IPV6_EXT_MASK >> opaque(proto)) & 1;
}

/* in_packet reports whether n bytes at p lie inside the frame (the check the
 * verifier needs) and inside the IP packet's own length (the kernel's: see
 * the header comment). */
static __always_inline int in_packet(void *p, __u32 n, void *data_end, void *ip_end)
{
	return p + n <= data_end && p + n <= ip_end;
}

/* bounded16 returns v behind an AND the verifier sees. The verifiers of
 * Linux 5.10, 6.1 and 6.12 forget a value's bounds across a byte swap, so a
 * swapped length added to a packet pointer is "unbounded" to them; clang
 * drops a plain & 0xffff that it knows changes nothing. */
static __always_inline __u32 bounded16(__u32 v)
{
	asm volatile("%0 &= 0xffff" : "+r"(v));
	return v;
}

/* is_byte returns 1 if the byte b equals c, else 0, without a branch:
 * (b ^ c) - 1 wraps to 2^64 - 1 only when b ^ c is 0. */
static __always_inline __u64 is_byte(__u8 b, __u8 c)
{
	return (opaque((__u64)(b ^ c)) - 1) >> 63;
}

/* ext_hlen is the length of an extension header of kind nexthdr whose length
 * byte is len: 8 for a fragment header (that byte is reserved there),
 * (len + 2) * 4 for AH, (len + 1) * 8 for the others; in one branch-free
 * expression. Per-kind branches gave the cursor a different shape for each
 * mix of kinds met so far (a constant 8 for a fragment header, a different
 * range for AH), and the verifier walked the rest of the chain and of the
 * program once for each: 115,715 instructions for the XDP program, 23,205
 * with this (and is_ipv6_ext); attaching took that much longer.
 *
 * Only ADD, SUB and AND with a register operand: before Linux 6.x the
 * verifier knows nothing of the result of any other operation on two
 * registers (an OR here made the cursor unbounded to 5.10 and 6.1). At most
 * one of the three terms is non-zero, so their sum is the one that is. */
static __always_inline __u32 ext_hlen(__u8 nexthdr, __u8 len)
{
	__u64 frag = is_byte(nexthdr, IPPROTO_FRAGMENT);
	__u64 ah = is_byte(nexthdr, IPPROTO_AH);
	__u64 generic = ((__u64)len + 1) << IPV6_EXT_UNIT_SHIFT;
	__u64 auth = ((__u64)len + IPV6_AH_EXTRA_UNITS) << IPV6_AH_UNIT_SHIFT;

	return (generic & (frag + ah - 1)) + (auth & -ah) + (IPV6_FRAG_HLEN & -frag);
}

static __always_inline enum parse_result parse_udp(void *cursor, void *data_end, void *ip_end,
						   struct packet *pkt)
{
	__u16 *ports = cursor;

	/* A UDP datagram or first fragment too short for its ports, in the
	 * frame or in its IP length, is a tiny-fragment trick, a header
	 * planted past the IP length, or garbage: it must not pass
	 * unexamined. */
	if (!in_packet(cursor, UDP_HLEN, data_end, ip_end))
		return PARSE_MALFORMED;
	pkt->sport = bpf_ntohs(ports[0]);
	pkt->dport = bpf_ntohs(ports[1]);
	return PARSE_UDP;
}

static __always_inline enum parse_result parse_ipv4(void *cursor, void *data_end,
						    struct packet *pkt)
{
	__u8 *ip = cursor;
	__u32 hlen;
	__u16 frag, tot_len;

	if (cursor + IPV4_MIN_HLEN > data_end)
		return PARSE_MALFORMED;
	if ((ip[0] >> 4) != IPV4_VERSION)
		return PARSE_MALFORMED;
	hlen = (ip[0] & 0x0F) * 4;
	if (hlen < IPV4_MIN_HLEN)
		return PARSE_MALFORMED;
	if (cursor + hlen > data_end)
		return PARSE_MALFORMED;

	pkt->family = 4;
	pkt->l3 = ip;
	pkt->frag_id = bpf_ntohs(*(__u16 *)(ip + 4));
	pkt->frag_proto = ip[9];
	if (ip[9] != IPPROTO_UDP)
		return PARSE_NOT_UDP;

	frag = bpf_ntohs(*(__u16 *)(ip + 6));
	if (frag & IPV4_FRAG_OFFSET_MASK)
		return PARSE_FRAGMENT;
	pkt->first_fragment = (frag & IPV4_FRAG_MORE) != 0;
	/* ip_rcv_core trims the packet to tot_len (or drops it if tot_len is
	 * below IHL*4 or past the frame): the ports must lie inside it. */
	tot_len = bounded16(bpf_ntohs(*(__u16 *)(ip + 2)));
	return parse_udp(cursor + hlen, data_end, cursor + tot_len, pkt);
}

static __always_inline enum parse_result parse_ipv6(void *cursor, void *data_end,
						    struct packet *pkt)
{
	__u8 *ip = cursor;
	void *ip_end;
	__u32 plen;
	__u8 nexthdr;
	int i;

	if (cursor + IPV6_HLEN > data_end)
		return PARSE_MALFORMED;
	if ((ip[0] >> 4) != IPV6_VERSION)
		return PARSE_MALFORMED;

	pkt->family = 6;
	pkt->l3 = ip;
	nexthdr = ip[6];
	/* ip6_rcv_core trims to 40 + payload length, except a payload length
	 * of 0 behind hop-by-hop: a jumbogram, longer than any chain read
	 * here, so only the frame bounds it. */
	plen = bounded16(bpf_ntohs(*(__u16 *)(ip + 4)));
	if (plen == 0 && nexthdr == IPPROTO_HOPOPTS)
		plen = IPV6_MAXPLEN;
	ip_end = cursor + IPV6_HLEN + plen;
	cursor += IPV6_HLEN;

#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		__u8 *ext = cursor;
		__u32 hlen;

		if (!is_ipv6_ext(nexthdr))
			break;

		if (!in_packet(cursor, IPV6_EXT_MIN_HLEN, data_end, ip_end))
			return PARSE_MALFORMED;
		/* The length before the fragment header's own branch, on
		 * whose path the verifier knows the kind. */
		hlen = ext_hlen(nexthdr, ext[1]);
		if (nexthdr == IPPROTO_FRAGMENT) {
			__u16 frag;

			if (!in_packet(cursor, IPV6_FRAG_HLEN, data_end, ip_end))
				return PARSE_MALFORMED;
			frag = bpf_ntohs(*(__u16 *)(ext + 2));
			pkt->frag_id = bpf_ntohl(*(__u32 *)(ext + 4));
			pkt->frag_proto = ext[0];
			/* Past offset 0 the rest is payload, of whatever
			 * protocol the first fragment named: the next header
			 * here does not count (the kernel ignores it). */
			if (frag >> IPV6_FRAG_OFFSET_SHIFT)
				return PARSE_FRAGMENT;
			pkt->first_fragment = (frag & IPV6_FRAG_MORE) != 0;
		}
		cursor += hlen;
		nexthdr = ext[0];
	}

	if (is_ipv6_ext(nexthdr))
		return PARSE_MALFORMED; /* chain longer than MAX_IPV6_EXT_HDRS */
	if (nexthdr != IPPROTO_UDP)
		return PARSE_NOT_UDP;
	return parse_udp(cursor, data_end, ip_end, pkt);
}

/* parse_packet reads the Ethernet frame in [data, data_end) into pkt: the L2
 * prefix, then the common IP parse, the family named by the ethertype. */
static __always_inline enum parse_result parse_packet(void *data, void *data_end,
						      struct packet *pkt)
{
	void *cursor = data;
	__u16 proto;
	int i;

	pkt->end = data_end;
	if (cursor + ETH_HLEN > data_end)
		return PARSE_NOT_IP; /* a runt: the stack drops it */
	proto = bpf_ntohs(*(__u16 *)(cursor + 12));
	cursor += ETH_HLEN;

#pragma unroll
	for (i = 0; i < MAX_VLAN_DEPTH; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if (cursor + VLAN_HLEN > data_end)
			return PARSE_MALFORMED;
		proto = bpf_ntohs(*(__u16 *)(cursor + 2));
		cursor += VLAN_HLEN;
	}
	if (proto == ETH_P_8021Q || proto == ETH_P_8021AD)
		return PARSE_MALFORMED; /* deeper than MAX_VLAN_DEPTH */

	if (proto == ETH_P_IP)
		return parse_ipv4(cursor, data_end, pkt);
	if (proto == ETH_P_IPV6)
		return parse_ipv6(cursor, data_end, pkt);
	return PARSE_NOT_IP;
}

/* parse_l3 reads a frame that starts at the IP header (tun, WireGuard,
 * IPIP/GRE, PPP, raw IP links) into pkt; the version nibble picks the
 * family, as tun does for IFF_NO_PI frames (tun_get_user). Any other version,
 * or an empty frame, is no IP the kernel accepts (ip_rcv_core and
 * ip6_rcv_core check the version): passed as not IP. */
static __always_inline enum parse_result parse_l3(void *data, void *data_end,
						  struct packet *pkt)
{
	__u8 *ip = data;

	pkt->end = data_end;
	if (data + 1 > data_end)
		return PARSE_NOT_IP;
	if ((ip[0] >> 4) == IPV4_VERSION)
		return parse_ipv4(data, data_end, pkt);
	if ((ip[0] >> 4) == IPV6_VERSION)
		return parse_ipv6(data, data_end, pkt);
	return PARSE_NOT_IP;
}

#endif
