package main

import (
	"bytes"
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/loader"
)

func TestSamplingUsageErrors(t *testing.T) {
	pin := "--pin-path=" + filepath.Join(t.TempDir(), "never-created")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{pin, "sampling", "lots"}, `invalid rate "lots"`},
		{[]string{pin, "sampling", "-1"}, "unknown shorthand flag"},
		{[]string{pin, "sampling", "1000001"}, `invalid rate "1000001": give 0 (off) to 1000000`},
		{[]string{pin, "sampling", "1", "2"}, "at most one rate"},
		{[]string{pin, "capture"}, "-w FILE"},
		{[]string{pin, "capture", "-w", "x.pcap", "--reason", "pass"}, `invalid reason "pass"`},
		{[]string{pin, "capture", "-w", "x.pcap", "--count", "-1"}, "must not be negative"},
		{[]string{pin, "top", "--interval", "0s"}, "--interval and --top must be positive"},
		{[]string{pin, "top", "extra"}, `unexpected argument "extra"`},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("xdpguard %v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// Each sample stands for its group's drops (interface, hook, reason): a
// group with few samples and many drops weighs more.
func TestTopReportScalesSamplesToDrops(t *testing.T) {
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	dst := netip.MustParseAddr("192.0.2.1")
	stats := func(req, resp, sampledReq uint64) []loader.InterfaceStats {
		return []loader.InterfaceStats{{Interface: "eth0", Ifindex: 2, Hook: "xdp",
			Counters: map[string]loader.Counter{"drop_request": {Packets: req}, "drop_response": {Packets: resp}, "pass": {Packets: 999}},
			Samples:  map[string]loader.SampleCounter{"drop_request": {Sampled: sampledReq, Suppressed: req - sampledReq}},
		}}
	}
	mk := func(src netip.Addr, r loader.Reason, port uint16) loader.Sample {
		return loader.Sample{Ifindex: 2, Hook: loader.HookXDP, Reason: r, Src: src, Dst: dst, HasPorts: true, DstPort: port}
	}
	// 900 requests (3 samples: 2 from a, 1 from b), 100 responses (1 sample, from b).
	samples := []loader.Sample{
		mk(a, loader.ReasonDropRequest, 11211), mk(a, loader.ReasonDropRequest, 11211),
		mk(b, loader.ReasonDropRequest, 11211), mk(b, loader.ReasonDropResponse, 40000),
	}
	rep := buildTopReport(samples, stats(100, 0, 0), stats(1000, 100, 3), 2*time.Second, 10)
	if rep.Drops != 1000 || rep.DropRate != 500 || rep.Reasons["drop_request"] != 450 || rep.Reasons["drop_response"] != 50 {
		t.Fatalf("rates: %+v", rep)
	}
	want := map[string]float64{a.String(): 0.6, b.String(): 0.4}
	if len(rep.Sources) != 2 || rep.Sources[0].Key != a.String() {
		t.Fatalf("sources: %+v", rep.Sources)
	}
	for _, e := range rep.Sources {
		if math.Abs(e.Share-want[e.Key]) > 1e-9 || math.Abs(e.Rate-want[e.Key]*500) > 1e-6 {
			t.Errorf("source %s: share %v rate %v, want %v", e.Key, e.Share, e.Rate, want[e.Key])
		}
	}
	if rep.Ports[0].Key != "11211" || math.Abs(rep.Ports[0].Share-0.9) > 1e-9 {
		t.Errorf("ports: %+v", rep.Ports)
	}
	var out bytes.Buffer
	printTop(&out, rep)
	if strings.Contains(out.String(), "\x1b") || !strings.Contains(out.String(), "198.51.100.1") || !strings.Contains(out.String(), "60.0%") {
		t.Errorf("plain output:\n%s", out.String())
	}
	if isTerminal(&out) {
		t.Errorf("a buffer is not a terminal")
	}
}
