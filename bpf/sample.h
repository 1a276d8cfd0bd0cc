// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Drop samples: a bounded, counted view of what the programs drop.
 *
 * Every drop (and, in monitor mode, every would-drop) either becomes one
 * sample on the xdpguard_ring ring buffer or is counted as suppressed, per
 * interface, hook and reason: samples + suppressed == drops, exactly. A
 * per-CPU token bucket bounds the samples, and so the cost, under any flood:
 * xdpguard_srate[0] samples per second per CPU, a burst of one second's
 * worth; 0 turns sampling off (every drop is then suppressed). A full ring
 * buffer (no reader, or a slow one) counts as suppressed too.
 *
 * Included by xdpguard.c after count(); nothing here runs on the pass path. */
#ifndef XDPGUARD_SAMPLE_H
#define XDPGUARD_SAMPLE_H

#define SAMPLE_SNAP_LEN 128 /* bytes of the frame a sample carries */
/* 4 MiB holds about 25,000 samples (a record is 160 bytes plus an 8-byte
 * header): over a second of the default budget, 256 per CPU, on 64 CPUs
 * (16,384 a second), so a reader that stalls for a second loses nothing to a
 * full buffer; it costs 4 MiB of kernel memory once, for all interfaces. */
#define SAMPLE_RING_BYTES (4 << 20)
/* Caps the rate the kernel applies, so rate * NSEC_PER_SEC cannot overflow. */
#define SAMPLE_RATE_MAX 1000000

/* One sample, as the ring buffer carries it. Addresses, ports and fragment
 * fields are decoded from data by the loader: the same bytes a capture
 * writes, parsed once, off the packet path. */
struct sample {
	__u64 ktime_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 netns;     /* inode of the attached interface's network namespace */
	__u32 ifindex;   /* the interface the packet was dropped on */
	__u32 wire_len;  /* the packet's length, as counted */
	__u16 cap_len;   /* bytes of data filled: min(wire_len, SAMPLE_SNAP_LEN) */
	__u8 hook;       /* enum hook */
	__u8 reason;     /* enum reason, as counted (would_drop in monitor mode) */
	__u8 frame;      /* enum frame_start: Ethernet or IP first */
	__u8 pad[3];
	__u8 data[SAMPLE_SNAP_LEN];
};

/* Per interface (one instance per attach, pinned next to the counters):
 * the slots of xdpguard_stats in xdpguard_sstats, those of xdpguard_stats2
 * in xdpguard_sstat2. */
struct sample_count {
	__u64 sampled;    /* samples put on the ring buffer */
	__u64 suppressed; /* drops not sampled: budget spent, sampling off, ring full */
};

/* A CPU's token bucket: credit is in token-nanoseconds, a sample costs
 * NSEC_PER_SEC of it, and rate per second is earned per second elapsed
 * (now_ns). */
struct sample_budget {
	__u64 last_ns;
	__u64 credit;
};

/* Set by the loader at load: the namespace the instance is attached in, so a
 * sample names its interface unambiguously (ifindexes repeat across
 * namespaces). */
volatile const __u64 sample_netns = 0;

/* The kernel keeps 15 characters of a map's name (what bpftool shows):
 * these are short enough to stay apart. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SAMPLE_RING_BYTES);
} xdpguard_ring SEC(".maps");

/* Samples per second per CPU; shared by every interface. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xdpguard_srate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_budget);
} xdpguard_tokens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX * REASON_STATS_MAX);
	__type(key, __u32);
	__type(value, struct sample_count);
} xdpguard_sstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX * REASON_STATS2);
	__type(key, __u32);
	__type(value, struct sample_count);
} xdpguard_sstat2 SEC(".maps");

/* sample_take spends one token of this CPU's budget; 0 when there is none. */
static __always_inline int sample_take(void)
{
	__u32 zero = 0;
	__u32 *rate_p = bpf_map_lookup_elem(&xdpguard_srate, &zero);
	struct sample_budget *b;
	__u64 now, elapsed, rate, cap;

	if (!rate_p || *rate_p == 0)
		return 0;
	b = bpf_map_lookup_elem(&xdpguard_tokens, &zero);
	if (!b)
		return 0;
	rate = *rate_p;
	if (rate > SAMPLE_RATE_MAX)
		rate = SAMPLE_RATE_MAX;
	cap = rate * NSEC_PER_SEC;
	/* now_ns, a jiffy's resolution (1 to 10 ms), read from the clock once
	 * a jiffy: under a flood the bucket is empty and this runs on every
	 * drop. Refilling in jiffy steps keeps the rate over any second: what
	 * is earned is measured from last_ns. */
	now = now_ns();
	/* Within the jiffy of the last refill nothing is earned: the bucket
	 * is left unwritten. A bucket fills in a second: a longer gap earns
	 * no more. */
	if (now != b->last_ns) {
		elapsed = now - b->last_ns;
		if (elapsed > NSEC_PER_SEC)
			elapsed = NSEC_PER_SEC;
		b->last_ns = now;
		b->credit += elapsed * rate;
		if (b->credit > cap)
			b->credit = cap;
	}
	if (b->credit < NSEC_PER_SEC)
		return 0;
	b->credit -= NSEC_PER_SEC;
	return 1;
}

static __always_inline void sample_add(struct sample_count *c, int sampled)
{
	if (!c)
		return;
	if (sampled)
		c->sampled++;
	else
		c->suppressed++;
}

static __always_inline void sample_count(enum hook hook, enum reason r, int sampled)
{
	__u32 slot = hook * REASON_STATS_MAX + r;

	if (r >= REASON_STATS_MAX) {
		slot = stats2_slot(hook, r);
		sample_add(bpf_map_lookup_elem(&xdpguard_sstat2, &slot), sampled);
		keep_apart(); /* see count */
		return;
	}
	sample_add(bpf_map_lookup_elem(&xdpguard_sstats, &slot), sampled);
}

/* sample_reserve returns a ring buffer record with the header filled but
 * for ifindex, or NULL (counted as suppressed) when the budget or the ring
 * has no room. The caller reads the interface only once it has a record:
 * XDP's ingress_ifindex is dependent loads (the receive queue, its device,
 * the device's index) that a suppressed drop, every drop of a flood, need
 * not pay. */
static __always_inline struct sample *sample_reserve(enum hook hook, enum reason r,
						     enum frame_start start, __u32 wire_len)
{
	struct sample *s;

	if (!sample_take()) {
		sample_count(hook, r, 0);
		return NULL;
	}
	s = bpf_ringbuf_reserve(&xdpguard_ring, sizeof(*s), 0);
	if (!s) {
		sample_count(hook, r, 0);
		return NULL;
	}
	s->ktime_ns = bpf_ktime_get_ns();
	s->netns = sample_netns;
	s->wire_len = wire_len;
	s->cap_len = 0;
	s->hook = hook;
	s->reason = r;
	s->frame = start;
	s->pad[0] = s->pad[1] = s->pad[2] = 0;
	return s;
}

_Static_assert((SAMPLE_SNAP_LEN & (SAMPLE_SNAP_LEN - 1)) == 0, "SAMPLE_SNAP_LEN must be a power of two");

/* sample_snap_len is how many bytes of a wire_len packet a sample copies,
 * 1 to SAMPLE_SNAP_LEN, for a wire_len of at least 1. Written as a mask plus
 * one so that the verifier sees the range: clang folds "len > 0 && len <=
 * SAMPLE_SNAP_LEN" into one unsigned compare of len - 1, which leaves the
 * verifier a lower bound of 0, a zero-sized read. */
static __always_inline __u32 sample_snap_len(__u32 wire_len)
{
	__u32 len = wire_len < SAMPLE_SNAP_LEN ? wire_len : SAMPLE_SNAP_LEN;

	return ((len - 1) & (SAMPLE_SNAP_LEN - 1)) + 1;
}

/* sample_commit submits s with len bytes copied, or, when the copy failed
 * (err != 0), discards it and counts the drop as suppressed. */
static __always_inline void sample_commit(struct sample *s, enum hook hook, enum reason r,
					  __u32 len, long err)
{
	if (err) {
		bpf_ringbuf_discard(s, 0);
		sample_count(hook, r, 0);
		return;
	}
	s->cap_len = len;
	bpf_ringbuf_submit(s, 0);
	sample_count(hook, r, 1);
}

/* sample_copy_words copies n bytes (a multiple of 8, a constant once
 * inlined) from the packet to dst in 64-bit words: one load and one store
 * per word where a byte copy would take eight of each. The verifier accepts
 * unaligned packet loads wherever the architecture has efficient unaligned
 * access, as the parser's already rely on. */
static __always_inline void sample_copy_words(__u8 *dst, const void *src, __u32 n)
{
	int i;

#pragma unroll
	for (i = 0; i < SAMPLE_SNAP_LEN / 8; i++)
		if (i < n / 8)
			((__u64 *)dst)[i] = ((const __u64 *)src)[i];
}

/* sample_copy_xdp copies the head of the frame into dst, the longest
 * multiple of 8 bytes up to SAMPLE_SNAP_LEN that the frame holds (at least
 * 16), and returns its length, 0 for a shorter frame. Direct packet reads,
 * each under its own bound check, are what every supported kernel's
 * verifier accepts: bpf_xdp_load_bytes only came in Linux 5.18. A capture
 * then misses at most 7 bytes of a frame shorter than SAMPLE_SNAP_LEN. */
static __always_inline __u32 sample_copy_xdp(__u8 *dst, void *data, void *data_end)
{
#define SAMPLE_COPY_IF_FITS(n)                        \
	if (data + (n) <= data_end) {                 \
		sample_copy_words(dst, data, (n));    \
		return (n);                           \
	}
	SAMPLE_COPY_IF_FITS(128)
	SAMPLE_COPY_IF_FITS(120)
	SAMPLE_COPY_IF_FITS(112)
	SAMPLE_COPY_IF_FITS(104)
	SAMPLE_COPY_IF_FITS(96)
	SAMPLE_COPY_IF_FITS(88)
	SAMPLE_COPY_IF_FITS(80)
	SAMPLE_COPY_IF_FITS(72)
	SAMPLE_COPY_IF_FITS(64)
	SAMPLE_COPY_IF_FITS(56)
	SAMPLE_COPY_IF_FITS(48)
	SAMPLE_COPY_IF_FITS(40)
	SAMPLE_COPY_IF_FITS(32)
	SAMPLE_COPY_IF_FITS(24)
	SAMPLE_COPY_IF_FITS(16)
#undef SAMPLE_COPY_IF_FITS
	return 0;
}

_Static_assert(SAMPLE_SNAP_LEN == 128, "sample_copy_xdp's steps end at SAMPLE_SNAP_LEN");

static __always_inline void sample_xdp(struct xdp_md *ctx, enum reason r, enum frame_start start,
				       __u32 wire_len)
{
	struct sample *s = sample_reserve(HOOK_XDP_INGRESS, r, start, wire_len);
	void *data, *data_end;
	__u32 len;

	if (!s)
		return;
	s->ifindex = ctx->ingress_ifindex;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	len = sample_copy_xdp(s->data, data, data_end);
	sample_commit(s, HOOK_XDP_INGRESS, r, len, len ? 0 : -1);
}

static __always_inline void sample_tc(struct __sk_buff *skb, enum reason r, enum frame_start start)
{
	struct sample *s = sample_reserve(HOOK_TC_EGRESS, r, start, skb->len);
	__u32 len;
	long err = -1;

	if (!s)
		return;
	s->ifindex = skb->ifindex;
	len = sample_snap_len(skb->len);
	if (skb->len > 0)
		err = bpf_skb_load_bytes(skb, 0, s->data, len);
	sample_commit(s, HOOK_TC_EGRESS, r, len, err);
}

#endif /* XDPGUARD_SAMPLE_H */
