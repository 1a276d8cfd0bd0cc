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
 * Each protected port has a direction (config below): request (a service
 * here must not reflect), response (this host must not be flooded with
 * reflected answers: only replies to requests it sent pass), or both. The
 * policy, in order, for a UDP datagram (P is a protected port):
 *   ingress (XDP; the peer is the source):
 *     1. dport P, request or both: allowlisted or drop_request;
 *     2. sport P, both: allowlisted or drop_response;
 *        sport P, response: allowlisted, else solicited when the request
 *        table holds a live entry for the reply's addresses and ports,
 *        else drop_unsolicited;
 *     3. pass (dport P of a response port: a client here may ask; sport P
 *        of a request port: this host may be a client of P).
 *   egress (TC; the peer is the destination):
 *     1. dport P, both: allowlisted or drop_request;
 *     2. sport P, request or both: allowlisted or drop_response;
 *     3. pass; dport P of a response port: the request is recorded in the
 *        request table first, so its reply is solicited.
 *   Not UDP, or no protected port: pass. Monitor mode turns every drop
 *   into a pass counted as would_drop.
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
	/* Counted in xdpguard_stats2 (slot = hook * REASON_STATS2 + reason -
	 * REASON_STATS_MAX): xdpguard_stats keeps its size, so counters pinned
	 * by a release before directions carry on through an upgrade. */
	REASON_SOLICITED,        /* from a response port, answering a request sent here */
	REASON_DROP_UNSOLICITED, /* from a response port, answering no request sent here */
	REASON_MAX,
};

/* The reasons xdpguard_stats and xdpguard_sstats count, and those counted
 * in xdpguard_stats2 and xdpguard_sstat2. */
#define REASON_STATS_MAX REASON_SOLICITED
#define REASON_STATS2 (REASON_MAX - REASON_STATS_MAX)

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
 * never opens a window for traffic it does not concern.
 *
 * A port's direction is its two bits: request only, response only, or both
 * (today's memcached protection). The layout before directions had one
 * bitmap, ports, where request_ports is: the loader upgrades it in place
 * (loader/configmap.go). */
struct config {
	enum mode mode;
	enum frag_policy frag_policy;
	__u32 allow4_active; /* 0 when the IPv4 allow list is empty: skip it */
	__u32 allow6_active;
	__u64 request_ports[PORT_WORDS];  /* direction request or both */
	__u64 response_ports[PORT_WORDS]; /* direction response or both */
};

/* The request table's keys, one table per family: a datagram this host sent
 * to a response port, as its reply will come back (local = this host). Ports
 * in host order. */
struct req4_key {
	__u32 laddr;
	__u32 raddr;
	__u16 lport;
	__u16 rport;
};

struct req6_key {
	__u32 laddr[4];
	__u32 raddr[4];
	__u16 lport;
	__u16 rport;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The pinned fragment tables' layouts, one table per family so that each
 * key holds only what the kernel reassembles by: hashing and comparing 12
 * bytes for IPv4 instead of a 40-byte key sized for IPv6 (issue 14). Changing
 * a key or the value makes the loader replace an older table in place
 * (loader/fragsmap.go). */
struct frag4_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;   /* the 16-bit IP ID, host order */
	__u8 proto; /* part of the IPv4 reassembly key */
	__u8 hook;  /* enum hook: ingress and egress verdicts are separate */
};

struct frag6_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 id;  /* no protocol: the IPv6 reassembly key has none */
	__u8 hook; /* enum hook */
	__u8 pad[3];
};

struct frag_verdict {
	__u64 seen_ns;      /* bpf_ktime_get_ns() when the first fragment was seen */
	enum reason reason; /* the first fragment's, before monitor mode */
	__u32 pad;
};

/* The fragment caches' slots (see xdpguard_fc4): a key of the table, its
 * verdict, and a tag that says the slot was written whole (frag_tag). The
 * key sits 8-byte aligned, to be compared in 64-bit words. */
struct frag4_slot {
	__u64 tag;     /* frag_tag of the fields below, as they were written */
	__u64 seen_ns; /* the verdict's, as in struct frag_verdict */
	struct frag4_key key;
	__u32 reason;
};

struct frag6_slot {
	__u64 tag;
	__u64 seen_ns;
	struct frag6_key key;
	__u32 reason;
	__u32 pad;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Sizes the loader may override before load. */
#define ALLOW_MAX_ENTRIES (1 << 20)
#define FRAG_MAX_ENTRIES 65536
#define REQ_MAX_ENTRIES 65536 /* per family */

/* How long a request's reply is awaited when its port's slot in
 * xdpguard_expiry is 0 (the loader writes every response port's). */
#define DEFAULT_SOLICIT_EXPIRY_SEC 30

#define NSEC_PER_SEC 1000000000ULL

/* How long a first fragment's verdict lasts: the kernel's own reassembly
 * timeouts (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time; defaults 30 s and
 * 60 s), which the loader reads where it attaches and sets before load. Past
 * them the kernel has dropped the datagram's queue, so an older entry counts
 * as absent: a later fragment of a new datagram reusing the ID is an orphan,
 * not the heir of a stale verdict. */
volatile const __u64 ipfrag_time_ns = 30 * NSEC_PER_SEC;
volatile const __u64 ip6frag_time_ns = 60 * NSEC_PER_SEC;

/* Whether the kernel has bpf_ktime_get_coarse_ns (Linux 5.11); the loader
 * clears it where it has not, and the verifier never sees the branch not
 * taken. A later fragment reads the clock on every lookup, and the precise
 * clock is the dearer part of that path in a VM (kvm-clock: measured 20-30 ns
 * of a 52 ns fragment drop). */
volatile const __u8 coarse_clock = 1;

/* A CPU's reading of the clock, kept for the rest of the jiffy it was read
 * in: see now_ns. */
struct clock_cache {
	__u64 jiffy; /* bpf_jiffies64() when ns was read */
	__u64 ns;
};

/* Per load, not pinned: a fresh cache only costs one clock read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_cache);
} xdpguard_clock SEC(".maps");

/* now_ns is the clock of the fragment and request tables and the sampling
 * budget: the coarse clock (the precise one where there is none), read at
 * most once per jiffy per CPU. The jiffies counter is one load (the verifier
 * inlines bpf_jiffies64), the clock a helper call: 3 ns, most of what a
 * suppressed drop or a later fragment's age check cost (measured). The
 * coarse clock moves only on a tick, as the jiffies counter does, so the
 * value kept is the one a read would give, or, when a CPU sees a tick's
 * jiffy before its clock update, one tick older: now_ns lags real time by at
 * most two ticks, and never runs ahead of it. */
static __always_inline __u64 now_ns(void)
{
	__u32 zero = 0;
	struct clock_cache *c = bpf_map_lookup_elem(&xdpguard_clock, &zero);
	__u64 jiffy = bpf_jiffies64();

	if (!c)
		return coarse_clock ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();
	if (c->jiffy != jiffy) {
		c->ns = coarse_clock ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();
		c->jiffy = jiffy;
	}
	return c->ns;
}

/* frag_age is how long ago a verdict recorded at seen_ns (precise clock) was
 * recorded, read from now_ns: that lags the precise clock and never leads
 * it, so an age comes out at most two ticks short, never long; a verdict
 * lasts at least the kernel's timeout, as the kernel's own reassembly timer
 * does. Negative (recorded within the lag): 0. */
static __always_inline __u64 frag_age(__u64 seen_ns)
{
	__s64 age = now_ns() - seen_ns;

	return age < 0 ? 0 : age;
}

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

/* Which address blocks the allow lists touch: bit b of the bitmap is set when
 * some listed prefix covers, or lies inside, block b, the addresses sharing
 * their leading ALLOW4_BLOCK_BITS (IPv4) or ALLOW6_BLOCK_BITS (IPv6) bits. A
 * peer whose block's bit is clear is on no list, so the trie (a walk of up to
 * 32 or 128 dependent loads) is consulted only inside blocks that hold a
 * prefix: attack traffic from elsewhere costs one inlined array lookup. A
 * prefix shorter than the block width sets every block it covers. /24 blocks
 * for IPv4, not /16: a peer outside the list has its block's bit set only if
 * a longer prefix lies inside its /24, while 100,000 random prefixes of /16
 * to /32 already touch most /16s (measured by internal/bench). The loader
 * keeps the bitmaps in step with the tries (loader/allowblocks.go): bits are set
 * only after the prefixes are in the trie and cleared only after they are out
 * of it and no other prefix needs the block, so a reader between the two
 * writes sees the old list's answer or the new one's, never another. */
#define ALLOW4_BLOCK_BITS 24 /* 2^24 bits: 2 MiB */
#define ALLOW6_BLOCK_BITS 24 /* 2^24 bits: 2 MiB, sparse over 2000::/3 */
#define BLOCK_WORD_SHIFT 6   /* 64 bits per array slot */
#define BLOCK_WORD_MASK 63
_Static_assert(ALLOW4_BLOCK_BITS == 24 && ALLOW6_BLOCK_BITS == 24, "block_of reads three bytes");

/* xdpguard_blk4 and xdpguard_blk6 are the IPv4 and IPv6 allow lists' block
 * bitmaps (named short: the kernel keeps 15 characters of a map's name). */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* the loader reads and writes it in place */
	__uint(max_entries, (1 << ALLOW4_BLOCK_BITS) >> BLOCK_WORD_SHIFT);
	__type(key, __u32);
	__type(value, __u64);
} xdpguard_blk4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* the loader reads and writes it in place */
	__uint(max_entries, (1 << ALLOW6_BLOCK_BITS) >> BLOCK_WORD_SHIFT);
	__type(key, __u32);
	__type(value, __u64);
} xdpguard_blk6 SEC(".maps");

/* Verdicts of first fragments, so that later fragments, which carry no ports,
 * share them. Fragments of one datagram may land on different CPUs (RSS hashes
 * them on addresses only), so the tables are shared, not per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FRAG_MAX_ENTRIES);
	__type(key, struct frag4_key);
	__type(value, struct frag_verdict);
} xdpguard_frags4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FRAG_MAX_ENTRIES);
	__type(key, struct frag6_key);
	__type(value, struct frag_verdict);
} xdpguard_frags6 SEC(".maps");

/* Caches of the fragment tables, one per family, that a later fragment looks
 * in first: one slot per hash of the key, found by an inlined array lookup
 * and compared in a few words, where the table's lookup is a kernel call
 * that hashes the key (jhash), walks a bucket and compares the key byte by
 * byte (measured: 12 ns of a 30 ns IPv4 later fragment, 20 of 38 for IPv6).
 * frag_record writes the table, then the slot of the key's hash; a lookup
 * that finds another datagram in the slot (two in flight share it), or a
 * slot half written, asks the table, which stays the authority. The cache
 * only ever answers what the table was told last for that key, so it never
 * changes a verdict: it can only outlast the table's LRU eviction, for a
 * verdict no other datagram has taken the slot of. Not seeded: a sender that
 * aims datagrams at one slot only sends their fragments to the table, at
 * the table's cost. */
#define FRAG_CACHE_BITS 14 /* 16,384 slots: 512 KiB (IPv4), 1 MiB (IPv6) */
#define FRAG_CACHE_MASK ((1 << FRAG_CACHE_BITS) - 1)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* the loader empties it in place */
	__uint(max_entries, 1 << FRAG_CACHE_BITS);
	__type(key, __u32);
	__type(value, struct frag4_slot);
} xdpguard_fc4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* the loader empties it in place */
	__uint(max_entries, 1 << FRAG_CACHE_BITS);
	__type(key, __u32);
	__type(value, struct frag6_slot);
} xdpguard_fc6 SEC(".maps");

/* Requests sent to response ports: key as the reply will carry it, value
 * the time (now_ns) past which no reply is awaited. Written by the egress
 * program, read by the XDP one. An LRU: when full, the least recently used
 * request is forgotten, and a reply to it is dropped as unsolicited. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, REQ_MAX_ENTRIES);
	__type(key, struct req4_key);
	__type(value, __u64);
} xdpguard_req4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, REQ_MAX_ENTRIES);
	__type(key, struct req6_key);
	__type(value, __u64);
} xdpguard_req6 SEC(".maps");

/* Per port, seconds a request to it waits for its reply; read by the
 * egress program only, when it records a request. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORT_COUNT);
	__type(key, __u32);
	__type(value, __u32);
} xdpguard_expiry SEC(".maps");

/* One instance per attached interface: slot = hook * REASON_STATS_MAX +
 * reason, for the reasons before REASON_STATS_MAX ... */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX * REASON_STATS_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} xdpguard_stats SEC(".maps");

/* ... and slot = hook * REASON_STATS2 + reason - REASON_STATS_MAX for the
 * others. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX * REASON_STATS2);
	__type(key, __u32);
	__type(value, struct counter);
} xdpguard_stats2 SEC(".maps");

/* keep_apart ends a branch whose map lookup must stay its own call: clang
 * would otherwise merge two lookups of two maps that end alike into one call
 * whose map is one of two, which the verifier cannot inline (an array
 * lookup becomes a helper call, on every packet). Not a subprogram either:
 * ProgramSpec.Compatible, which tells the loader an attached program is
 * current, cannot match the tag of a program with BPF-to-BPF calls. */
#define keep_apart() asm volatile("" ::: "memory")

/* stats2_slot is the slot of a reason of the second maps (r >=
 * REASON_STATS_MAX); the first maps' slot is hook * REASON_STATS_MAX + r. */
static __always_inline __u32 stats2_slot(enum hook hook, enum reason r)
{
	return hook * REASON_STATS2 + (r - REASON_STATS_MAX);
}

static __always_inline int is_drop(enum reason r)
{
	return r == REASON_DROP_REQUEST || r == REASON_DROP_RESPONSE ||
	       r == REASON_DROP_FRAGMENT || r == REASON_DROP_ORPHAN_FRAGMENT ||
	       r == REASON_DROP_MALFORMED || r == REASON_DROP_UNSOLICITED;
}

static __always_inline int port_bit(const __u64 *bitmap, __u16 port)
{
	return (bitmap[port >> PORT_WORD_SHIFT] >> (port & (PORT_WORD_BITS - 1))) & 1;
}

/* block_of is the block of an address: its leading 24 bits. */
static __always_inline __u32 block_of(const __u8 *addr)
{
	return (__u32)addr[0] << 16 | (__u32)addr[1] << 8 | addr[2];
}

/* block_listed reports whether the bitmap has block's bit set. */
static __always_inline int block_listed(void *bitmap, __u32 block)
{
	__u32 word = block >> BLOCK_WORD_SHIFT;
	const __u64 *w = bpf_map_lookup_elem(bitmap, &word);

	return w && (*w >> (block & BLOCK_WORD_MASK)) & 1;
}

static __always_inline int allowlisted(const struct config *cfg, const struct packet *pkt,
				       enum hook hook)
{
	const __u8 *ip;
	const __u8 *addr;

	if (pkt->family == 4) {
		struct lpm_v4_key key = { .prefixlen = 32 };

		if (!cfg->allow4_active)
			return 0;
		ip = ip_header(pkt, IPV4_MIN_HLEN);
		if (!ip)
			return 0; /* unreachable; not allowed is the safe answer */
		addr = ip + (hook == HOOK_XDP_INGRESS ? IPV4_SADDR_OFF : IPV4_DADDR_OFF);
		if (!block_listed(&xdpguard_blk4, block_of(addr)))
			return 0;
		copy_addr(key.addr, addr, IPV4_ADDR_LEN);
		return bpf_map_lookup_elem(&xdpguard_allow4, &key) != NULL;
	}

	struct lpm_v6_key key = { .prefixlen = 128 };

	if (!cfg->allow6_active)
		return 0;
	ip = ip_header(pkt, IPV6_HLEN);
	if (!ip)
		return 0;
	addr = ip + (hook == HOOK_XDP_INGRESS ? IPV6_SADDR_OFF : IPV6_DADDR_OFF);
	if (!block_listed(&xdpguard_blk6, block_of(addr)))
		return 0;
	copy_addr(key.addr, addr, IPV6_ADDR_LEN);
	return bpf_map_lookup_elem(&xdpguard_allow6, &key) != NULL;
}

/* A fragment table's key as the 64-bit words it is hashed and compared in:
 * IPv4 uses w[0] and the low half of w[1] (the key is 12 bytes), IPv6 all
 * five. The words are built in registers from the packet and stored whole:
 * key fields stored one by one and read back as words would stall every
 * load on the stores it spans (no store forwarding on x86). */
union frag4_words {
	struct frag4_key key;
	__u64 w[2];
};

union frag6_words {
	struct frag6_key key;
	__u64 w[5];
};

_Static_assert(sizeof(struct frag4_key) == 12 && sizeof(struct frag6_key) == 40,
	       "frag4_words_of and frag6_words_of lay out the keys word by word");

/* frag4_words_of and frag6_words_of fill k with the datagram's identity as
 * seen at hook (struct frag4_key, struct frag6_key, little-endian); 0 when
 * the addresses cannot be read (unreachable after parsing, checked for the
 * verifier). A forwarded datagram meets both hooks; each keeps its own
 * verdict. */
static __always_inline int frag4_words_of(const struct packet *pkt, enum hook hook,
					  union frag4_words *k)
{
	const __u8 *ip = ip_header(pkt, IPV4_MIN_HLEN);

	if (!ip)
		return 0;
	/* saddr then daddr, as the key holds them */
	k->w[0] = *(const __u64 *)(ip + IPV4_SADDR_OFF);
	/* id (host order), proto, hook; the last 4 bytes are not the key's */
	k->w[1] = (__u64)pkt->frag_id | (__u64)pkt->frag_proto << 16 | (__u64)hook << 24;
	return 1;
}

static __always_inline int frag6_words_of(const struct packet *pkt, enum hook hook,
					  union frag6_words *k)
{
	const __u8 *ip = ip_header(pkt, IPV6_HLEN);

	if (!ip)
		return 0;
	k->w[0] = *(const __u64 *)(ip + IPV6_SADDR_OFF);
	k->w[1] = *(const __u64 *)(ip + IPV6_SADDR_OFF + 8);
	k->w[2] = *(const __u64 *)(ip + IPV6_DADDR_OFF);
	k->w[3] = *(const __u64 *)(ip + IPV6_DADDR_OFF + 8);
	k->w[4] = (__u64)pkt->frag_id | (__u64)hook << 32; /* id, hook, pad */
	return 1;
}

/* The caches' hash: each key word times its own odd constant, summed; the
 * slot is the sum's top bits, which every bit of the key reaches
 * (multiplicative hashing). A finaliser that mixed the low bits too cost
 * 3.5 ns of a 25 ns later fragment (measured), for no better spread of the
 * top bits. */
#define FRAG_HASH_M0 0x9e3779b97f4a7c15ULL
#define FRAG_HASH_M1 0xc2b2ae3d27d4eb4fULL
#define FRAG_HASH_M2 0x165667b19e3779f9ULL
#define FRAG_HASH_M3 0xd6e8feb86659fd93ULL
#define FRAG_HASH_M4 0xff51afd7ed558ccdULL
/* Set in every tag: a slot never written (all zero) matches no key. */
#define FRAG_TAG_LIVE 0x5bd1e9955bd1e995ULL

static __always_inline __u64 frag4_hash(const union frag4_words *k)
{
	return k->w[0] * FRAG_HASH_M0 + k->w[1] * FRAG_HASH_M1; /* w[1]'s top half is 0 */
}

static __always_inline __u64 frag6_hash(const union frag6_words *k)
{
	return k->w[0] * FRAG_HASH_M0 + k->w[1] * FRAG_HASH_M1 + k->w[2] * FRAG_HASH_M2 +
	       k->w[3] * FRAG_HASH_M3 + k->w[4] * FRAG_HASH_M4;
}

static __always_inline __u32 frag_slot(__u64 hash)
{
	return hash >> (64 - FRAG_CACHE_BITS);
}

/* frag_tag binds a slot's verdict to its key's hash: a slot read while
 * another CPU writes it may hold fields of two writes, and then its tag
 * matches neither (two keys in one slot have different hashes, and two
 * writes different times), so the lookup goes to the table. */
static __always_inline __u64 frag_tag(__u64 hash, __u64 seen_ns, __u32 reason)
{
	return hash ^ seen_ns ^ ((__u64)reason << 32) ^ FRAG_TAG_LIVE;
}

/* Each field of a slot is read once: the tag check and the verdict must see
 * the same values. */
#define READ_ONCE_U64(x) (*(const volatile __u64 *)&(x))
#define READ_ONCE_U32(x) (*(const volatile __u32 *)&(x))

/* frag_cache_hit reports whether a slot whose key words matched (same)
 * holds a whole verdict for the key of hash h, and copies it to out. */
static __always_inline int frag_cache_hit(__u64 tag, __u64 seen_ns, __u32 reason, __u64 h, int same,
					  struct frag_verdict *out)
{
	if (!same || tag != frag_tag(h, seen_ns, reason))
		return 0;
	out->seen_ns = seen_ns;
	out->reason = reason;
	return 1;
}

/* frag_lookup finds the verdict recorded for the datagram of a later
 * fragment, in the cache, else in the table, and copies it to out: 0 if there
 * is none or the addresses cannot be read. */
static __always_inline int frag_lookup(const struct packet *pkt, enum hook hook,
				       struct frag_verdict *out)
{
	const struct frag_verdict *v;
	__u32 slot;
	__u64 h;

	if (pkt->family == 4) {
		union frag4_words k;
		const struct frag4_slot *c;

		if (!frag4_words_of(pkt, hook, &k))
			return 0;
		h = frag4_hash(&k);
		slot = frag_slot(h);
		c = bpf_map_lookup_elem(&xdpguard_fc4, &slot);
		if (c) {
			const __u64 *cw = (const __u64 *)&c->key;
			int same = READ_ONCE_U64(cw[0]) == k.w[0] &&
				   READ_ONCE_U32(((const __u32 *)cw)[2]) == (__u32)k.w[1];

			if (frag_cache_hit(READ_ONCE_U64(c->tag), READ_ONCE_U64(c->seen_ns),
					   READ_ONCE_U32(c->reason), h, same, out))
				return 1;
		}
		keep_apart();
		v = bpf_map_lookup_elem(&xdpguard_frags4, &k.key);
	} else {
		union frag6_words k;
		const struct frag6_slot *c;

		if (!frag6_words_of(pkt, hook, &k))
			return 0;
		h = frag6_hash(&k);
		slot = frag_slot(h);
		c = bpf_map_lookup_elem(&xdpguard_fc6, &slot);
		if (c) {
			const __u64 *cw = (const __u64 *)&c->key;
			int same = ((READ_ONCE_U64(cw[0]) ^ k.w[0]) | (READ_ONCE_U64(cw[1]) ^ k.w[1]) |
				    (READ_ONCE_U64(cw[2]) ^ k.w[2]) | (READ_ONCE_U64(cw[3]) ^ k.w[3]) |
				    (READ_ONCE_U64(cw[4]) ^ k.w[4])) == 0;

			if (frag_cache_hit(READ_ONCE_U64(c->tag), READ_ONCE_U64(c->seen_ns),
					   READ_ONCE_U32(c->reason), h, same, out))
				return 1;
		}
		keep_apart();
		v = bpf_map_lookup_elem(&xdpguard_frags6, &k.key);
	}
	if (!v)
		return 0;
	out->seen_ns = v->seen_ns;
	out->reason = v->reason;
	return 1;
}

/* frag_record records a first fragment's verdict for the fragments that
 * follow, in the table, then in its cache slot (the slot's tag covers its
 * fields, in whatever order they are stored). BPF_ANY: a later
 * first fragment of the same datagram (a legitimate one after a spoofed one,
 * or a retransmission) overwrites the verdict, as it is what the kernel will
 * reassemble from. */
static __always_inline void frag_record(const struct packet *pkt, enum hook hook, enum reason r)
{
	struct frag_verdict verdict = { .seen_ns = bpf_ktime_get_ns(), .reason = r };
	__u32 slot;
	__u64 h;

	if (pkt->family == 4) {
		union frag4_words k;
		struct frag4_slot *c;

		if (!frag4_words_of(pkt, hook, &k))
			return;
		bpf_map_update_elem(&xdpguard_frags4, &k.key, &verdict, BPF_ANY);
		h = frag4_hash(&k);
		slot = frag_slot(h);
		c = bpf_map_lookup_elem(&xdpguard_fc4, &slot);
		if (!c)
			return;
		c->key = k.key;
		c->seen_ns = verdict.seen_ns;
		c->reason = r;
		c->tag = frag_tag(h, verdict.seen_ns, r);
		return;
	}
	union frag6_words k;
	struct frag6_slot *c;

	if (!frag6_words_of(pkt, hook, &k))
		return;
	bpf_map_update_elem(&xdpguard_frags6, &k.key, &verdict, BPF_ANY);
	h = frag6_hash(&k);
	slot = frag_slot(h);
	c = bpf_map_lookup_elem(&xdpguard_fc6, &slot);
	if (!c)
		return;
	c->key = k.key;
	c->seen_ns = verdict.seen_ns;
	c->reason = r;
	c->tag = frag_tag(h, verdict.seen_ns, r);
}

/* solicited reports whether a datagram arriving from a response port answers
 * a request this host sent that is still awaited: one hash lookup, keyed as
 * the egress program keyed the request (local = destination here). */
static __always_inline int solicited(const struct packet *pkt)
{
	const __u64 *expiry;

	if (pkt->family == 4) {
		const __u8 *ip = ip_header(pkt, IPV4_MIN_HLEN);
		struct req4_key key = { .lport = pkt->dport, .rport = pkt->sport };

		if (!ip)
			return 0;
		copy_addr(&key.laddr, ip + IPV4_DADDR_OFF, IPV4_ADDR_LEN);
		copy_addr(&key.raddr, ip + IPV4_SADDR_OFF, IPV4_ADDR_LEN);
		expiry = bpf_map_lookup_elem(&xdpguard_req4, &key);
	} else {
		const __u8 *ip = ip_header(pkt, IPV6_HLEN);
		struct req6_key key = { .lport = pkt->dport, .rport = pkt->sport };

		if (!ip)
			return 0;
		copy_addr(key.laddr, ip + IPV6_DADDR_OFF, IPV6_ADDR_LEN);
		copy_addr(key.raddr, ip + IPV6_SADDR_OFF, IPV6_ADDR_LEN);
		expiry = bpf_map_lookup_elem(&xdpguard_req6, &key);
	}
	return expiry && now_ns() < *expiry;
}

/* record_request remembers a datagram this host sends to a response port,
 * until its port's expiry, so that its reply passes as solicited. BPF_ANY:
 * a repeated request extends the wait. */
static __always_inline void record_request(const struct packet *pkt)
{
	__u32 port = pkt->dport;
	const __u32 *sec = bpf_map_lookup_elem(&xdpguard_expiry, &port);
	__u64 ttl = (sec && *sec) ? *sec : DEFAULT_SOLICIT_EXPIRY_SEC;
	__u64 expiry = now_ns() + ttl * NSEC_PER_SEC;

	if (pkt->family == 4) {
		const __u8 *ip = ip_header(pkt, IPV4_MIN_HLEN);
		struct req4_key key = { .lport = pkt->sport, .rport = pkt->dport };

		if (!ip)
			return;
		copy_addr(&key.laddr, ip + IPV4_SADDR_OFF, IPV4_ADDR_LEN);
		copy_addr(&key.raddr, ip + IPV4_DADDR_OFF, IPV4_ADDR_LEN);
		bpf_map_update_elem(&xdpguard_req4, &key, &expiry, BPF_ANY);
		return;
	}
	const __u8 *ip = ip_header(pkt, IPV6_HLEN);
	struct req6_key key = { .lport = pkt->sport, .rport = pkt->dport };

	if (!ip)
		return;
	copy_addr(key.laddr, ip + IPV6_SADDR_OFF, IPV6_ADDR_LEN);
	copy_addr(key.raddr, ip + IPV6_DADDR_OFF, IPV6_ADDR_LEN);
	bpf_map_update_elem(&xdpguard_req6, &key, &expiry, BPF_ANY);
}

/* decide_udp is the port policy for a UDP datagram with readable ports
 * (the order of checks in the header comment). */
static __always_inline enum reason decide_udp(const struct packet *pkt, const struct config *cfg,
					      enum hook hook)
{
	int dreq = port_bit(cfg->request_ports, pkt->dport);
	int dresp = port_bit(cfg->response_ports, pkt->dport);
	int sreq = port_bit(cfg->request_ports, pkt->sport);
	int sresp = port_bit(cfg->response_ports, pkt->sport);

	if (hook == HOOK_XDP_INGRESS) {
		if (dreq)
			return allowlisted(cfg, pkt, hook) ? REASON_ALLOWLISTED : REASON_DROP_REQUEST;
		if (sresp) {
			if (allowlisted(cfg, pkt, hook))
				return REASON_ALLOWLISTED;
			if (sreq)
				return REASON_DROP_RESPONSE;
			/* A reply no request of this host's asked for: a
			 * reflected flood, dropped before it costs an skb. */
			return solicited(pkt) ? REASON_SOLICITED : REASON_DROP_UNSOLICITED;
		}
		return REASON_PASS;
	}
	if (dreq && dresp)
		return allowlisted(cfg, pkt, hook) ? REASON_ALLOWLISTED : REASON_DROP_REQUEST;
	if (sreq)
		return allowlisted(cfg, pkt, hook) ? REASON_ALLOWLISTED : REASON_DROP_RESPONSE;
	if (dresp)
		record_request(pkt);
	return REASON_PASS;
}

/* decide returns the reason for a parsed packet, before monitor mode. */
static __always_inline enum reason decide(enum parse_result res, const struct packet *pkt,
					  const struct config *cfg, enum hook hook)
{
	if (res == PARSE_MALFORMED)
		return REASON_DROP_MALFORMED;

	if (res == PARSE_FRAGMENT) {
		struct frag_verdict first;
		__u64 max_age = pkt->family == 4 ? ipfrag_time_ns : ip6frag_time_ns;
		enum reason r;

		/* None, or older than the kernel's reassembly timeout: that
		 * datagram's queue is gone, and so is its verdict. */
		if (!frag_lookup(pkt, hook, &first) || frag_age(first.seen_ns) > max_age)
			return cfg->frag_policy == FRAG_STRICT ? REASON_DROP_ORPHAN_FRAGMENT
							       : REASON_PASS_ORPHAN_FRAGMENT;
		/* The first fragment was allowlisted or passed: so is this one. */
		r = first.reason;
		return is_drop(r) ? REASON_DROP_FRAGMENT : r;
	}

	if (res != PARSE_UDP)
		return REASON_PASS;

	return decide_udp(pkt, cfg, hook);
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

	if (pkt.first_fragment)
		frag_record(&pkt, hook, r);

	if (is_drop(r) && cfg->mode == MODE_MONITOR)
		return REASON_WOULD_DROP;
	return r;
}

static __always_inline void count(enum hook hook, enum reason r, __u64 bytes)
{
	__u32 slot = hook * REASON_STATS_MAX + r;
	struct counter *c;

	if (r >= REASON_STATS_MAX) {
		slot = stats2_slot(hook, r);
		c = bpf_map_lookup_elem(&xdpguard_stats2, &slot);
		if (c) {
			c->packets++;
			c->bytes += bytes;
		}
		keep_apart();
		return;
	}
	c = bpf_map_lookup_elem(&xdpguard_stats, &slot);
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
