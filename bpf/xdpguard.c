// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdpguard: stop a host from being used in, or flattened by, a memcached UDP
 * amplification attack.
 *
 * xdpguard_xdp runs at the driver on ingress and drops UDP to a protected port
 * (this host as a reflector) and from a protected port (a reflected flood aimed
 * at this host) before an skb exists. xdpguard_tc runs on egress (tcx or
 * cls_bpf) and stops amplified answers leaving the host. Both share the parser
 * in parse.h and the policy below; every packet is counted once, under one
 * reason, per CPU.
 *
 * The policy, in order:
 *   1. not UDP, or no protected port in the datagram: pass;
 *   2. the peer (ingress: source, egress: destination) is allowlisted: pass;
 *   3. destination port protected: drop_request; source port: drop_response;
 *   4. monitor mode turns every drop into a pass counted as would_drop.
 * Later fragments follow their first fragment's verdict (frag table); headers
 * that cannot be read where the packet could be UDP are dropped. */

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

struct frag_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 id;
	__u8 family;
	__u8 proto; /* IPv4 only: the IPv6 identification has no protocol */
	__u16 pad;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Sizes the loader may override before load. */
#define ALLOW_MAX_ENTRIES (1 << 20)
#define FRAG_MAX_ENTRIES 65536

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
	__type(value, enum reason); /* the first fragment's, before monitor mode */
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

/* frag_key_of fills key with the datagram's identity; 0 when the addresses
 * cannot be read (unreachable after parsing, checked for the verifier). */
static __always_inline int frag_key_of(const struct packet *pkt, struct frag_key *key)
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
		enum reason *first;

		first = frag_key_of(pkt, &key) ? bpf_map_lookup_elem(&xdpguard_frags, &key) : NULL;
		if (!first)
			return cfg->frag_policy == FRAG_STRICT ? REASON_DROP_ORPHAN_FRAGMENT
							       : REASON_PASS_ORPHAN_FRAGMENT;
		/* The first fragment was allowlisted or passed: so is this one. */
		return is_drop(*first) ? REASON_DROP_FRAGMENT : *first;
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

/* classify is the whole policy for one frame: parse, decide, remember a first
 * fragment's verdict for the fragments that follow, apply monitor mode. */
static __always_inline enum reason classify(void *data, void *data_end, enum hook hook)
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
	res = parse_packet(data, data_end, &pkt);
	/* The pass path: no map but the config array is touched. */
	if (res == PARSE_NOT_IP)
		return REASON_PASS;
	if (res == PARSE_NOT_UDP && !(pkt.first_fragment && could_lead_to_udp(pkt.frag_proto)))
		return REASON_PASS;

	cfg = bpf_map_lookup_elem(&xdpguard_config, &zero);
	if (!cfg)
		return REASON_PASS; /* unreachable: an array slot always exists */

	r = decide(res, &pkt, cfg, hook);

	if (pkt.first_fragment && could_lead_to_udp(pkt.frag_proto)) {
		struct frag_key key = {};
		enum reason verdict = r;

		if (frag_key_of(&pkt, &key))
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

SEC("xdp")
int xdpguard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	enum reason r = classify(data, data_end, HOOK_XDP_INGRESS);

	count(HOOK_XDP_INGRESS, r, data_end - data);
	/* Dropped here, the datagram never costs an skb, a socket lookup or a
	 * reassembly slot. */
	return is_drop(r) ? XDP_DROP : XDP_PASS;
}

/* Headers the egress program needs linear: Ethernet, two tags, IPv6 and a
 * generous extension chain, UDP. Beyond this the headers count as unreadable. */
#define TC_PULL_LEN 512
#define TC_ACT_UNSPEC (-1) /* = TCX_NEXT: let later programs run */
#define TC_ACT_SHOT 2      /* = TCX_DROP */

SEC("tc")
int xdpguard_tc(struct __sk_buff *skb)
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

	r = classify(data, data_end, HOOK_TC_EGRESS);
	count(HOOK_TC_EGRESS, r, skb->len);
	/* An amplified answer stopped here never reaches the wire. */
	return is_drop(r) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
