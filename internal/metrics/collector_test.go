package metrics

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/xdpguard/xdpguard/loader"
)

// reasonNames are the reason labels, spelled out: they are a stable
// interface, and a rename must fail this test.
var reasonNames = []string{"pass", "allowlisted", "drop_request", "drop_response", "drop_fragment",
	"drop_orphan_fragment", "drop_malformed", "would_drop", "pass_orphan_fragment"}

// fakeSnapshot is a host with eth0 on both hooks and veth1 on XDP only.
func fakeSnapshot() *Snapshot {
	return &Snapshot{
		Stats: []loader.InterfaceStats{
			{Interface: "eth0", Ifindex: 2, Hook: "xdp", Counters: map[string]loader.Counter{
				"pass": {Packets: 10, Bytes: 1000}, "drop_request": {Packets: 7, Bytes: 700}, "drop_fragment": {Packets: 2, Bytes: 3000}}},
			{Interface: "eth0", Ifindex: 2, Hook: "tc", Counters: map[string]loader.Counter{
				"drop_response": {Packets: 1 << 40, Bytes: 1<<53 - 1}}},
			{Interface: "veth1", Ifindex: 9, Hook: "xdp", Counters: map[string]loader.Counter{"would_drop": {Packets: 5, Bytes: 500}}},
		},
		Attachments: []loader.Attachment{
			{Interface: "eth0", Ifindex: 2, Netns: 4026531840, Here: true, Hook: "xdp", Mode: "native", ProgramID: 40},
			{Interface: "eth0", Ifindex: 2, Netns: 4026531840, Here: true, Hook: "tc", Mode: "tcx", ProgramID: 41},
			{Interface: "veth1", Ifindex: 9, Netns: 4026531840, Here: true, Hook: "xdp", Mode: "generic", ProgramID: 42},
			// The same name in a container's namespace.
			{Interface: "eth0", Ifindex: 2, Netns: 4026532301, Hook: "xdp", Mode: "generic", ProgramID: 43},
		},
		Config: loader.Config{Mode: loader.ModeMonitor, FragPolicy: loader.FragStrict, Ports: loader.BothPorts(53, 11211)},
		Allow:  AllowCounts{IPv4: 3, IPv6: 1},
		Maps: []MapFill{
			{Name: "allow4", Entries: 3, MaxEntries: 1 << 20},
			{Name: "allow6", Entries: 1, MaxEntries: 1 << 20},
			{Name: "frags4", Entries: 17, MaxEntries: 65536},
			{Name: "frags6", Entries: 3, MaxEntries: 65536},
		},
	}
}

func staticSource(s *Snapshot) Source {
	return SourceFunc(func() (*Snapshot, error) { return s, nil })
}

// counterText is the exposition of one counter family over the fake's
// interfaces, every reason present, zeros included.
func counterText(name string, value func(loader.Counter) uint64, snap *Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE %s counter\n", name)
	for _, s := range snap.Stats {
		for _, r := range reasonNames {
			// The text format writes large values in exponent form;
			// 2^53-1 in the fake checks that it stays exact.
			v := strconv.FormatFloat(float64(value(s.Counters[r])), 'g', -1, 64)
			fmt.Fprintf(&b, "%s{hook=%q,interface=%q,reason=%q} %s\n", name, s.Hook, s.Interface, r, v)
		}
	}
	return b.String()
}

func TestCollectorSeries(t *testing.T) {
	snap := fakeSnapshot()
	c := NewCollector(staticSource(snap))
	want := counterText(PacketsTotal, func(c loader.Counter) uint64 { return c.Packets }, snap) +
		counterText(BytesTotal, func(c loader.Counter) uint64 { return c.Bytes }, snap) + `
# TYPE xdpguard_attached gauge
xdpguard_attached{hook="tc",interface="eth0",mode="tcx",netns="4026531840"} 1
xdpguard_attached{hook="xdp",interface="eth0",mode="native",netns="4026531840"} 1
xdpguard_attached{hook="xdp",interface="eth0",mode="generic",netns="4026532301"} 1
xdpguard_attached{hook="xdp",interface="veth1",mode="generic",netns="4026531840"} 1
# TYPE xdpguard_config_info gauge
xdpguard_config_info{fragments="strict",mode="monitor"} 1
# TYPE xdpguard_protected_port gauge
xdpguard_protected_port{port="53"} 1
xdpguard_protected_port{port="11211"} 1
# TYPE xdpguard_allow_prefixes gauge
xdpguard_allow_prefixes{family="ipv4"} 3
xdpguard_allow_prefixes{family="ipv6"} 1
# TYPE xdpguard_map_entries gauge
xdpguard_map_entries{map="allow4"} 3
xdpguard_map_entries{map="allow6"} 1
xdpguard_map_entries{map="frags4"} 17
xdpguard_map_entries{map="frags6"} 3
# TYPE xdpguard_map_max_entries gauge
xdpguard_map_max_entries{map="allow4"} 1.048576e+06
xdpguard_map_max_entries{map="allow6"} 1.048576e+06
xdpguard_map_max_entries{map="frags4"} 65536
xdpguard_map_max_entries{map="frags6"} 65536
`
	if len(reasonNames) != loader.ReasonCount {
		t.Fatalf("the loader has %d reasons, this test names %d: add the new one's label", loader.ReasonCount, len(reasonNames))
	}
	got := exposition(t, c)
	if err := compareSamples(got, want); err != nil {
		t.Error(err)
	}
	for name, words := range map[string][]string{
		PacketsTotal: {"frame", "XDP", "skb", "GSO skb counts once", "Summed over CPUs"},
		BytesTotal:   {"link-layer header", "skb's length"},
	} {
		help := helpOf(got, name)
		for _, w := range words {
			if !strings.Contains(help, w) {
				t.Errorf("%s HELP %q does not say %q", name, help, w)
			}
		}
	}
}

// compareSamples compares the sample lines (not HELP or TYPE) of two
// expositions as sets: the HELP texts are checked for what they say, not
// copied here, and the order is the registry's.
func compareSamples(got, want string) error {
	samples := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		slices.Sort(out)
		return out
	}
	g, w := samples(got), samples(want)
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		return fmt.Errorf("samples differ:\ngot:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
	return nil
}

func helpOf(exposition, name string) string {
	for _, l := range strings.Split(exposition, "\n") {
		if h, ok := strings.CutPrefix(l, "# HELP "+name+" "); ok {
			return h
		}
	}
	return ""
}

// TestCollectorReadsAtEveryScrape: a counter that moves in the kernel moves
// in the very next scrape; nothing is cached.
func TestCollectorReadsAtEveryScrape(t *testing.T) {
	var drops, reads atomic.Uint64
	src := SourceFunc(func() (*Snapshot, error) {
		reads.Add(1)
		return &Snapshot{Stats: []loader.InterfaceStats{{Interface: "eth0", Hook: "xdp",
			Counters: map[string]loader.Counter{"drop_request": {Packets: drops.Load()}}}}}, nil
	})
	c := NewCollector(src)
	for _, n := range []uint64{0, 1, 1000} {
		drops.Store(n)
		want := fmt.Sprintf("# TYPE %s counter\n%s{hook=\"xdp\",interface=\"eth0\",reason=\"drop_request\"} %d\n", PacketsTotal, PacketsTotal, n)
		got, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, PacketsTotal)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(got), strings.SplitN(want, "\n", 2)[1]) {
			t.Errorf("after %d drops the scrape says:\n%s", n, got)
		}
	}
	if reads.Load() != 3 {
		t.Errorf("%d reads for 3 scrapes: the collector must read the kernel once per scrape", reads.Load())
	}
}

// TestCollectorNothingPinned: before the first attach there is no kernel
// state, and the scrape succeeds without any of its series.
func TestCollectorNothingPinned(t *testing.T) {
	src := SourceFunc(func() (*Snapshot, error) {
		return nil, fmt.Errorf("/sys/fs/bpf/x: %w", loader.ErrNotSetUp)
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src))
	n, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatalf("scrape with nothing pinned: %v", err)
	}
	if n != 0 {
		t.Errorf("%d series with nothing pinned, want 0", n)
	}
}

// TestCollectorReadErrorFailsScrape: a read that keeps failing fails the
// scrape with its cause, rather than serve part of the state.
func TestCollectorReadErrorFailsScrape(t *testing.T) {
	src := SourceFunc(func() (*Snapshot, error) { return nil, errors.New("eth0: open counters: permission denied") })
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("gather: %v, want the read's error", err)
	}
}

// TestCollectorRetriesOnce: one failed read (an interface detached while
// it was read) is read again; the scrape succeeds with the second read.
func TestCollectorRetriesOnce(t *testing.T) {
	var reads atomic.Int32
	src := SourceFunc(func() (*Snapshot, error) {
		if reads.Add(1) == 1 {
			return nil, errors.New("xm1: open counters: no such file or directory")
		}
		return fakeSnapshot(), nil
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src))
	n, err := testutil.GatherAndCount(reg, Attached)
	if err != nil || n != 4 {
		t.Errorf("scrape after one failed read: %d attachments, %v; want 4, no error", n, err)
	}
	if reads.Load() != 2 {
		t.Errorf("%d reads, want 2", reads.Load())
	}
}

func TestAgentState(t *testing.T) {
	s := NewAgentState()
	at := time.Date(2026, 11, 28, 9, 0, 0, 500_000_000, time.UTC)
	s.now = func() time.Time { return at }
	want := func(what string) {
		t.Helper()
		if err := compareSamplesOf(t, s, what); err != nil {
			t.Error(err)
		}
	}
	want(`
xdpguard_config_last_reload_success_timestamp_seconds 0
xdpguard_config_valid 0
xdpguard_interfaces_protected 0
xdpguard_interfaces_wanted 0
xdpguard_reconcile_errors_total 0
xdpguard_reconcile_total 0
`)
	s.ConfigLoaded(nil)
	s.Reconciled("start", nil)
	s.SetInterfaces(3, 2)
	want(`
xdpguard_config_last_reload_success_timestamp_seconds 1.7958564005e+09
xdpguard_config_valid 1
xdpguard_interfaces_protected 2
xdpguard_interfaces_wanted 3
xdpguard_reconcile_errors_total 0
xdpguard_reconcile_total 1
`)
	// A rejected reload: invalid, the last success's time stays.
	s.now = func() time.Time { return at.Add(time.Hour) }
	s.ConfigLoaded(errors.New("xdpguard.yaml:3: ports: invalid port"))
	s.Reconciled("link eth1", errors.New("attach eth1: device busy"))
	s.SetInterfaces(3, 3)
	want(`
xdpguard_config_last_reload_success_timestamp_seconds 1.7958564005e+09
xdpguard_config_valid 0
xdpguard_interfaces_protected 3
xdpguard_interfaces_wanted 3
xdpguard_reconcile_errors_total 1
xdpguard_reconcile_total 2
`)
	// Attacks: one on eth0 that ended, one on eth1 still going, a second
	// on eth0 that ended too.
	s.AttackStarted("eth0")
	s.AttackStarted("eth1")
	s.AttackEnded("eth0")
	s.AttackStarted("eth0")
	s.AttackEnded("eth0")
	want(`
xdpguard_attack_active{interface="eth0"} 0
xdpguard_attack_active{interface="eth1"} 1
xdpguard_attacks_total{interface="eth0"} 2
xdpguard_attacks_total{interface="eth1"} 1
xdpguard_config_last_reload_success_timestamp_seconds 1.7958564005e+09
xdpguard_config_valid 0
xdpguard_interfaces_protected 3
xdpguard_interfaces_wanted 3
xdpguard_reconcile_errors_total 1
xdpguard_reconcile_total 2
`)
}

func compareSamplesOf(t *testing.T, c prometheus.Collector, want string) error {
	t.Helper()
	return compareSamples(exposition(t, c), want)
}

// exposition is what WriteText writes for c alone.
func exposition(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	var b strings.Builder
	if err := WriteText(&b, reg); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRegistries: the agent's registry passes Prometheus' linter and has the
// Go and process series; the textfile one has neither, nor the agent's.
func TestRegistries(t *testing.T) {
	agent := NewRegistry(staticSource(fakeSnapshot()), NewAgentState(), "v1.2.3")
	problems, err := testutil.GatherAndLint(agent)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	text := NewTextfileRegistry(staticSource(fakeSnapshot()), "v1.2.3")
	for _, tc := range []struct {
		reg     prometheus.Gatherer
		name    string
		present bool
	}{
		{agent, "go_goroutines", true},
		{agent, "process_cpu_seconds_total", true},
		{agent, ReconcileTotal, true},
		{agent, PacketsTotal, true},
		{agent, BuildInfo, true},
		{text, PacketsTotal, true},
		{text, MapEntries, true},
		{text, BuildInfo, true},
		{text, "go_goroutines", false},
		{text, "process_cpu_seconds_total", false},
		{text, ReconcileTotal, false},
	} {
		n, err := testutil.GatherAndCount(tc.reg, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != tc.present {
			t.Errorf("%s: %d series, want present=%v", tc.name, n, tc.present)
		}
	}
	got, err := testutil.GatherAndFormat(text, expfmt.TypeTextPlain, BuildInfo)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `xdpguard_build_info{goversion="go`) || !strings.Contains(string(got), `version="v1.2.3"} 1`) {
		t.Errorf("build info:\n%s", got)
	}
}
