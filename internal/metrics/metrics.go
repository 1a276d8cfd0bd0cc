// Package metrics exports xdpguard to Prometheus: the kernel's counters,
// what is attached, the live configuration and how full the bounded maps
// are, all read from the kernel at every scrape; the agent's own state; and
// an HTTP server for /metrics, /healthz and /readyz.
//
// The agent and `xdpguard stats --prometheus` use this one collector, so a
// series has one name and one meaning wherever it comes from. Labels are
// bounded: interfaces, hooks, reasons, ports from the config, map names;
// never an address.
package metrics

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpguard/xdpguard/loader"
)

// Series names: the stable interface dashboards and alerts are built on.
const (
	PacketsTotal    = "xdpguard_packets_total"
	BytesTotal      = "xdpguard_bytes_total"
	Attached        = "xdpguard_attached"
	ConfigInfo      = "xdpguard_config_info"
	ProtectedPort   = "xdpguard_protected_port"
	AllowPrefixes   = "xdpguard_allow_prefixes"
	MapEntries      = "xdpguard_map_entries"
	MapMaxEntries   = "xdpguard_map_max_entries"
	BuildInfo       = "xdpguard_build_info"
	ReconcileTotal  = "xdpguard_reconcile_total"
	ReconcileErrors = "xdpguard_reconcile_errors_total"
	ConfigValid     = "xdpguard_config_valid"
	ConfigReloadOK  = "xdpguard_config_last_reload_success_timestamp_seconds"
	IfacesWanted    = "xdpguard_interfaces_wanted"
	IfacesProtected = "xdpguard_interfaces_protected"
	AttackActive    = "xdpguard_attack_active"
	AttacksTotal    = "xdpguard_attacks_total"
	SamplesTotal    = "xdpguard_samples_total"
	SamplesSuppr    = "xdpguard_samples_suppressed_total"
)

// Collector reads xdpguard's kernel state from a Source at every scrape and
// keeps none of it: two scrapes never see a stale counter.
type Collector struct {
	src Source

	packets, bytes  *prometheus.Desc
	attached        *prometheus.Desc
	configInfo      *prometheus.Desc
	port            *prometheus.Desc
	allow           *prometheus.Desc
	entries, maxEnt *prometheus.Desc
	sampled, suppr  *prometheus.Desc
}

// NewCollector returns a collector reading src.
func NewCollector(src Source) *Collector {
	counted := []string{"interface", "hook", "reason"}
	return &Collector{
		src: src,
		packets: prometheus.NewDesc(PacketsTotal,
			"Packets xdpguard's programs saw, each counted once under the one reason it got: "+
				`at hook="xdp" one per frame the XDP program saw arriving on the interface; `+
				`at hook="tc" one per skb the TC egress program saw leaving it (a GSO skb counts once, `+
				"however many packets it becomes on the wire). Summed over CPUs; starts at 0 when the interface is attached.",
			counted, nil),
		bytes: prometheus.NewDesc(BytesTotal,
			"Bytes of the packets in xdpguard_packets_total, link-layer header included: "+
				`at hook="xdp" the frame's length as the XDP program sees it (no FCS); `+
				`at hook="tc" the skb's length (all of a GSO skb's payload).`,
			counted, nil),
		attached: prometheus.NewDesc(Attached,
			`1 for each program xdpguard has attached, in every network namespace: hook="xdp" (mode native or generic) `+
				`or hook="tc" (mode tcx or legacy cls_bpf); mode is empty when the interface is gone. `+
				`netns is the namespace's inode (as lsns -t net shows it; 0: pinned by an older release, not yet upgraded).`,
			[]string{"interface", "hook", "mode", "netns"}, nil),
		configInfo: prometheus.NewDesc(ConfigInfo,
			"1, labelled with the live config every attached program reads: mode (enforce drops; monitor counts would_drop and passes) "+
				"and fragments (track passes a later fragment whose first was never seen; strict drops it).",
			[]string{"mode", "fragments"}, nil),
		port: prometheus.NewDesc(ProtectedPort,
			"1 for each protected UDP port: UDP to or from it is dropped unless the peer is on the allow list.",
			[]string{"port"}, nil),
		allow: prometheus.NewDesc(AllowPrefixes,
			"Prefixes on the allow list, by family (ipv4, ipv6).",
			[]string{"family"}, nil),
		entries: prometheus.NewDesc(MapEntries,
			"Entries in a bounded shared map: allow4 and allow6 (allow-list prefixes), frags4 and frags6 "+
				"(IPv4 and IPv6 first-fragment verdicts awaiting their later fragments; an LRU, so when full the oldest is replaced).",
			[]string{"map"}, nil),
		maxEnt: prometheus.NewDesc(MapMaxEntries,
			"Capacity of a bounded shared map (see xdpguard_map_entries).",
			[]string{"map"}, nil),
		sampled: prometheus.NewDesc(SamplesTotal,
			"Dropped packets (in monitor mode, would_drop ones) put on the drop-sample ring buffer that `xdpguard top` and "+
				"`xdpguard capture` read, under a per-CPU budget (`xdpguard sampling`). "+
				"For each interface, hook and dropping reason, xdpguard_samples_total + xdpguard_samples_suppressed_total "+
				"equals xdpguard_packets_total. Absent for an interface attached by a release before sampling, until upgraded.",
			counted, nil),
		suppr: prometheus.NewDesc(SamplesSuppr,
			"Dropped packets (in monitor mode, would_drop ones) not sampled: the sampling budget was spent or is 0, "+
				"or the ring buffer was full (no reader, or a slow one). See xdpguard_samples_total.",
			counted, nil),
	}
}

// Describe sends every series' description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.attached, c.configInfo, c.port, c.allow, c.entries, c.maxEnt, c.sampled, c.suppr} {
		ch <- d
	}
}

// Collect reads the kernel now. Before anything is attached (nothing
// pinned) it sends nothing; a read that fails twice in a row fails the
// scrape rather than show part of the state as if it were all of it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	snap, err := c.src.Read()
	if err != nil && !errors.Is(err, loader.ErrNotSetUp) {
		// An interface detached between the listing of the pinned
		// state and the reading of its counters fails one read (its
		// pins are gone); the next read sees the state after it.
		snap, err = c.src.Read()
	}
	if errors.Is(err, loader.ErrNotSetUp) {
		return
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range snap.Stats {
		// Every reason, zeros included: a rate over a series that
		// appears only at the first drop misses that drop.
		for _, r := range loader.Reasons() {
			v := s.Counters[r.String()]
			// float64 is exact up to 2^53 packets: 104 days at
			// 1 Gpps, or 285 years at 1 Mpps.
			ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.Packets), s.Interface, s.Hook, r.String())
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v.Bytes), s.Interface, s.Hook, r.String())
		}
		if s.Samples == nil {
			continue
		}
		for _, r := range loader.Reasons() {
			v, ok := s.Samples[r.String()]
			if !ok {
				continue // a reason that passes: never sampled
			}
			ch <- prometheus.MustNewConstMetric(c.sampled, prometheus.CounterValue, float64(v.Sampled), s.Interface, s.Hook, r.String())
			ch <- prometheus.MustNewConstMetric(c.suppr, prometheus.CounterValue, float64(v.Suppressed), s.Interface, s.Hook, r.String())
		}
	}
	for _, a := range snap.Attachments {
		// The same name can be attached in two namespaces: netns keeps
		// their series apart.
		gauge(c.attached, 1, a.Interface, a.Hook, a.Mode, strconv.FormatUint(a.Netns, 10))
	}
	gauge(c.configInfo, 1, snap.Config.Mode.String(), snap.Config.FragPolicy.String())
	for _, p := range snap.Config.Ports {
		gauge(c.port, 1, strconv.Itoa(int(p.Number)))
	}
	gauge(c.allow, float64(snap.Allow.IPv4), "ipv4")
	gauge(c.allow, float64(snap.Allow.IPv6), "ipv6")
	for _, m := range snap.Maps {
		gauge(c.entries, float64(m.Entries), m.Name)
		gauge(c.maxEnt, float64(m.MaxEntries), m.Name)
	}
}
