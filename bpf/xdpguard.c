// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdpguard: stop a host from being used in, or flattened by, a memcached UDP
 * amplification attack.
 *
 * xdpguard_xdp runs at the driver on ingress and drops UDP to a protected port
 * (this host as a reflector) and from a protected port (a reflected flood aimed
 * at this host) before an skb exists. xdpguard_tc runs on egress (tcx or
 * cls_bpf) and stops amplified answers leaving the host. xdpguard_xdp_l3 and
 * xdpguard_tc_l3 are the same two for links whose frames start at the IP
 * header (tun, WireGuard, IPIP/GRE, PPP); the loader picks the pair from the
 * link's type. All four share the parser in parse.h and the policy below;
 * every packet is counted once, under one reason, per CPU.
 *
 * The policy, in order:
 *   1. not UDP, or no protected port in the datagram: pass;
 *   2. the peer (ingress: source, egress: destination) is allowlisted: pass;
 *   3. destination port protected: drop_request; source port: drop_response;
 *   4. monitor mode turns every drop into a pass counted as would_drop.
 * Later fragments follow their first fragment's verdict (frag table), per
 * hook, for as long as the kernel would keep the datagram's fragments queued;
 * headers that cannot be read where the packet could be UDP are dropped. */

#include "parse.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Counter slots. The order is part of the pinned counters map's layout: add at
 * the end, never reorder. */
enum reason {
	REASON_PASS,                 /* not UDP, or no protected port */
	REASON_ALLOWLISTED,          /* protected port, peer on the allow list */
	REASON_DROP_REQUEST,         /* UDP to a protected port */
	REASON_DROP_RESPONSE,        /* UDP from a protected port */
	REASON_DROP_FRAGMENT,        /* later fragment of a dropped datagram */
	REASON_DROP_ORPHAN_FRAGMENT, /* strict: later fragment, first never seen */
	REASON_DROP_MALFORMED,       /* could be UDP, headers unreadable */
	REASON_WOULD_DROP,           /* monitor mode: any of the drops above */
	REASON_PASS_ORPHAN_FRAGMENT, /* track: later fragment, first never seen */
	REASON_MAX,
};

/* Mirrored by loader.Hook: BTF does not carry an enum no variable has. */
enum hook {
	HOOK_XDP_INGRESS,
	HOOK_TC_EGRESS,
	HOOK_MAX,
};

enum mode {
	MODE_ENFORCE,
	MODE_MONITOR,
};

enum frag_policy {
	FRAG_TRACK,  /* pass later fragments whose first fragment was never seen */
	FRAG_STRICT, /* drop them */
};

#define PORT_COUNT 65536
#define PORT_WORD_BITS 64
#define PORT_WORD_SHIFT 6
#define PORT_WORDS (PORT_COUNT / PORT_WORD_BITS)

/* Everything an attached program reads per packet, in one array slot, so one
 * (inlined) array lookup serves the whole policy. The loader writes it whole;
 * a word it does not change is rewritten with its own value, so a change
 * never opens a window for traffic it does not concern. */
struct config {
	enum mode mode;
	enum frag_policy frag_policy;
	__u32 allow4_active; /* 0 when the IPv4 allow list is empty: skip it */
	__u32 allow6_active;
	__u64 ports[PORT_WORDS]; /* bitmap of protected ports */
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The pinned fragment table's layout: changing key or value makes the loader
 * replace an older table in place (loader/fragsmap.go). */
struct frag_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 id;
	__u8 family;
	__u8 proto; /* IPv4 only: the IPv6 identification has no protocol */
	__u8 hook;  /* enum hook: ingress and egress verdicts are separate */
	__u8 pad;
};

struct frag_verdict {
	__u64 seen_ns;      /* bpf_ktime_get_ns() when the first fragment was seen */
	enum reason reason; /* the first fragment's, before monitor mode */
	__u32 pad;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Sizes the loader may override before load. */
#define ALLOW_MAX_ENTRIES (1 << 20)
#define FRAG_MAX_ENTRIES 65536

#define NSEC_PER_SEC 1000000000ULL

/* How long a first fragment's verdict lasts: the kernel's own reassembly
 * timeouts (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time; defaults 30 s and
 * 60 s), which the loader reads where it attaches and sets before load. Past
 * them the kernel has dropped the datagram's queue, so an older entry counts
 * as absent: a later fragment of a new datagram reusing the ID is an orphan,
 * not the heir of a stale verdict. */
volatile const __u64 ipfrag_time_ns = 30 * NSEC_PER_SEC;
volatile const __u64 ip6frag_time_ns = 60 * NSEC_PER_SEC;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} xdpguard_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ALLOW_MAX_ENTRIES);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} xdpguard_allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ALLOW_MAX_ENTRIES);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} xdpguard_allow6 SEC(".maps");

/* Verdicts of first fragments, so that later fragments, which carry no ports,
 * share them. Fragments of one datagram may land on different CPUs (RSS hashes
 * them on addresses only), so the table is shared, not per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FRAG_MAX_ENTRIES);
	__type(key, struct frag_key);
	__type(value, struct frag_verdict);
} xdpguard_frags SEC(".maps");

/* One instance per attached interface: slot = hook * REASON_MAX + reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX * REASON_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} xdpguard_stats SEC(".maps");

static __always_inline int is_drop(enum reason r)
{
	return r == REASON_DROP_REQUEST || r == REASON_DROP_RESPONSE ||
	       r == REASON_DROP_FRAGMENT || r == REASON_DROP_ORPHAN_FRAGMENT ||
	       r == REASON_DROP_MALFORMED;
}

static __always_inline int port_protected(const struct config *cfg, __u16 port)
{
	return (cfg->ports[port >> PORT_WORD_SHIFT] >> (port & (PORT_WORD_BITS - 1))) & 1;
}

static __always_inline int allowlisted(const struct config *cfg, const struct packet *pkt,
				       enum hook hook)
{
	const __u8 *ip;

	if (pkt->family == 4) {
		struct lpm_v4_key key = { .prefixlen = 32 };

		if (!cfg->allow4_active)
			return 0;
		ip = ip_header(pkt, IPV4_MIN_HLEN);
		if (!ip)
			return 0; /* unreachable; not allowed is the safe answer */
		copy_addr(key.addr, ip + (hook == HOOK_XDP_INGRESS ? IPV4_SADDR_OFF : IPV4_DADDR_OFF),
			  IPV4_ADDR_LEN);
		return bpf_map_lookup_elem(&xdpguard_allow4, &key) != NULL;
	}

	struct lpm_v6_key key = { .prefixlen = 128 };

	if (!cfg->allow6_active)
		return 0;
	ip = ip_header(pkt, IPV6_HLEN);
	if (!ip)
		return 0;
	copy_addr(key.addr, ip + (hook == HOOK_XDP_INGRESS ? IPV6_SADDR_OFF : IPV6_DADDR_OFF),
		  IPV6_ADDR_LEN);
	return bpf_map_lookup_elem(&xdpguard_allow6, &key) != NULL;
}

/* frag_key_of fills key with the datagram's identity as seen at hook; 0 when
 * the addresses cannot be read (unreachable after parsing, checked for the
 * verifier). */
static __always_inline int frag_key_of(const struct packet *pkt, enum hook hook,
				       struct frag_key *key)
{
	const __u8 *ip;

	/* IPv4 addresses fill the first 4 bytes, the rest stays zero. */
	if (pkt->family == 4) {
		ip = ip_header(pkt, IPV4_MIN_HLEN);
		if (!ip)
			return 0;
		copy_addr(key->saddr, ip + IPV4_SADDR_OFF, IPV4_ADDR_LEN);
		copy_addr(key->daddr, ip + IPV4_DADDR_OFF, IPV4_ADDR_LEN);
		key->proto = pkt->frag_proto;
	} else {
		ip = ip_header(pkt, IPV6_HLEN);
		if (!ip)
			return 0;
		copy_addr(key->saddr, ip + IPV6_SADDR_OFF, IPV6_ADDR_LEN);
		copy_addr(key->daddr, ip + IPV6_DADDR_OFF, IPV6_ADDR_LEN);
		key->proto = 0; /* the IPv6 identification has no protocol */
	}
	key->id = pkt->frag_id;
	key->family = pkt->family;
	/* A forwarded datagram meets both hooks; each keeps its own verdict. */
	key->hook = hook;
	return 1;
}

/* decide returns the reason for a parsed packet, before monitor mode. */
static __always_inline enum reason decide(enum parse_result res, const struct packet *pkt,
					  const struct config *cfg, enum hook hook)
{
	if (res == PARSE_MALFORMED)
		return REASON_DROP_MALFORMED;

	if (res == PARSE_FRAGMENT) {
		struct frag_key key = {};
		struct frag_verdict *first;
		__u64 max_age = pkt->family == 4 ? ipfrag_time_ns : ip6frag_time_ns;
		enum reason r;

		first = frag_key_of(pkt, hook, &key) ? bpf_map_lookup_elem(&xdpguard_frags, &key) : NULL;
		/* Older than the kernel's reassembly timeout: that datagram's
		 * queue is gone, and so is its verdict. */
		if (first && bpf_ktime_get_ns() - first->seen_ns > max_age)
			first = NULL;
		if (!first)
			return cfg->frag_policy == FRAG_STRICT ? REASON_DROP_ORPHAN_FRAGMENT
							       : REASON_PASS_ORPHAN_FRAGMENT;
		/* The first fragment was allowlisted or passed: so is this one. */
		r = first->reason;
		return is_drop(r) ? REASON_DROP_FRAGMENT : r;
	}

	if (res != PARSE_UDP)
		return REASON_PASS;

	if (port_protected(cfg, pkt->dport)) {
		if (allowlisted(cfg, pkt, hook))
			return REASON_ALLOWLISTED;
		return REASON_DROP_REQUEST;
	}
	if (port_protected(cfg, pkt->sport)) {
		if (allowlisted(cfg, pkt, hook))
			return REASON_ALLOWLISTED;
		return REASON_DROP_RESPONSE;
	}
	return REASON_PASS;
}

/* Where a program's frames start: the link type the loader attaches it to. */
enum frame_start {
	FRAME_ETHERNET, /* Ethernet header, maybe VLAN tags */
	FRAME_L3,       /* the IP header */
};

/* classify is the whole policy for one frame: parse, decide, remember a first
 * fragment's verdict for the fragments that follow, apply monitor mode. */
static __always_inline enum reason classify(void *data, void *data_end, enum hook hook,
					    enum frame_start start)
{
	struct packet pkt = {};
	enum parse_result res;
	const struct config *cfg;
	enum reason r;
	__u32 zero = 0;

	/* Keep pkt in memory: split into registers, it becomes a value per
	 * field merged at every early return of the parser, which clang
	 * materialises as a dozen spills on each of them (measured: the
	 * IPv4 drop path was twice as long). */
	asm volatile("" : : "r"(&pkt) : "memory");
	if (start == FRAME_L3)
		res = parse_l3(data, data_end, &pkt);
	else
		res = parse_packet(data, data_end, &pkt);
	/* The pass path: no map but the config array is touched. */
	if (res == PARSE_NOT_IP)
		return REASON_PASS;
	if (res == PARSE_NOT_UDP && !pkt.first_fragment)
		return REASON_PASS;

	cfg = bpf_map_lookup_elem(&xdpguard_config, &zero);
	if (!cfg)
		return REASON_PASS; /* unreachable: an array slot always exists */

	r = decide(res, &pkt, cfg, hook);

	/* BPF_ANY: a later first fragment of the same datagram (a legitimate
	 * one after a spoofed one, or a retransmission) overwrites the
	 * verdict, as it is what the kernel will reassemble from. */
	if (pkt.first_fragment) {
		struct frag_key key = {};
		struct frag_verdict verdict = { .seen_ns = bpf_ktime_get_ns(), .reason = r };

		if (frag_key_of(&pkt, hook, &key))
			bpf_map_update_elem(&xdpguard_frags, &key, &verdict, BPF_ANY);
	}

	if (is_drop(r) && cfg->mode == MODE_MONITOR)
		return REASON_WOULD_DROP;
	return r;
}

static __always_inline void count(enum hook hook, enum reason r, __u64 bytes)
{
	__u32 slot = hook * REASON_MAX + r;
	struct counter *c = bpf_map_lookup_elem(&xdpguard_stats, &slot);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

#include "sample.h"

static __always_inline int run_xdp(struct xdp_md *ctx, enum frame_start start)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	enum reason r = classify(data, data_end, HOOK_XDP_INGRESS, start);

	count(HOOK_XDP_INGRESS, r, data_end - data);
	if (is_drop(r) || r == REASON_WOULD_DROP)
		sample_xdp(ctx, r, start, data_end - data);
	/* Dropped here, the datagram never costs an skb, a socket lookup or a
	 * reassembly slot. */
	return is_drop(r) ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int xdpguard_xdp(struct xdp_md *ctx)
{
	return run_xdp(ctx, FRAME_ETHERNET);
}

/* For links without an Ethernet header: generic and native XDP both hand
 * over the frame from the IP header on. */
SEC("xdp")
int xdpguard_xdp_l3(struct xdp_md *ctx)
{
	return run_xdp(ctx, FRAME_L3);
}

/* Headers the egress program needs linear: Ethernet, two tags, IPv6 and a
 * generous extension chain, UDP. Beyond this the headers count as unreadable. */
#define TC_PULL_LEN 512
#define TC_ACT_UNSPEC (-1) /* = TCX_NEXT: let later programs run */
#define TC_ACT_SHOT 2      /* = TCX_DROP */

static __always_inline int run_tc(struct __sk_buff *skb, enum frame_start start)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	enum reason r;

	/* Locally built packets may keep headers in paged data; pull only when
	 * the linear part is shorter than both the packet and what we read. */
	if (data_end - data < TC_PULL_LEN && data_end - data < skb->len) {
		bpf_skb_pull_data(skb, skb->len < TC_PULL_LEN ? skb->len : TC_PULL_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	r = classify(data, data_end, HOOK_TC_EGRESS, start);
	count(HOOK_TC_EGRESS, r, skb->len);
	if (is_drop(r) || r == REASON_WOULD_DROP)
		sample_tc(skb, r, start);
	/* An amplified answer stopped here never reaches the wire. */
	return is_drop(r) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int xdpguard_tc(struct __sk_buff *skb)
{
	return run_tc(skb, FRAME_ETHERNET);
}

/* For links without an Ethernet header: on egress skb->data is the IP header
 * there. The version nibble, not skb->protocol, picks the family, as at XDP:
 * one parse for both hooks, and the receiver checks the version too. */
SEC("tc")
int xdpguard_tc_l3(struct __sk_buff *skb)
{
	return run_tc(skb, FRAME_L3);
}
