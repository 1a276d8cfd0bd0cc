package flood

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// A /proc/net/udp as memcached -t 2 leaves it: two sockets on 11211, one
// with 0x300 bytes queued, and an unrelated socket with a queue of its own.
const procNetUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 00000000:2BCB 00000000:0000 07 00000000:00000300 00:00000000 00000000 65534        0 1001 2 0000000000000000 0
  102: 00000000:2BCB 00000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 1002 2 0000000000000000 0
  103: 0100007F:0035 00000000:0000 07 00000000:00000040 00:00000000 00000000     0        0 1003 2 0000000000000000 0
`

func TestParseUDPQueued(t *testing.T) {
	got, err := parseUDPQueued(procNetUDP, 11211)
	if err != nil || got != 0x300 {
		t.Fatalf("queued on 11211 = %d, %v; want %d", got, err, 0x300)
	}
	if got, err := parseUDPQueued(procNetUDP, 53); err != nil || got != 0x40 {
		t.Fatalf("queued on 53 = %d, %v; want %d", got, err, 0x40)
	}
	if _, err := parseUDPQueued("header\n  1: 00000000:2BCB 00000000:0000 07 zz\n", 11211); err == nil {
		t.Fatal("a malformed queue field gave no error")
	}
}

func TestMergeAndRates(t *testing.T) {
	a := Result{Elapsed: time.Second, Sent: 1000, Received: 900, SoftirqTicks: 9, MemcachedTicks: 0, AttackGets: 5,
		Latency: Latency{rtts: []time.Duration{3 * time.Microsecond, 1 * time.Microsecond}}}
	b := Result{Elapsed: time.Second, Sent: 3000, Received: 2700, SoftirqTicks: 27, MemcachedTicks: 36, AttackGets: 1,
		Latency: Latency{Timeouts: 2, rtts: []time.Duration{2 * time.Microsecond}}}
	a.Merge(b)
	if a.SentPPS() != 2000 || a.RxPPS() != 1800 || a.AttackGets != 6 {
		t.Fatalf("merged rates: sent %v rx %v attack %d; want 2000, 1800, 6", a.SentPPS(), a.RxPPS(), a.AttackGets)
	}
	// 36 ticks of 10 ms over 3600 frames: 100 µs each; 36 more for memcached.
	if a.SoftirqNs() != 100_000 || a.CPUNs() != 200_000 {
		t.Fatalf("per frame: softirq %v total %v; want 100000 and 200000", a.SoftirqNs(), a.CPUNs())
	}
	// Quantiles interpolate between the sorted 1, 2, 3 µs: p99 is 2.98 µs.
	if a.Latency.N() != 3 || a.Latency.Timeouts != 2 || a.Latency.P50() != 2*time.Microsecond || a.Latency.P99() != 2980*time.Nanosecond {
		t.Fatalf("latency: n %d timeouts %d p50 %v p99 %v", a.Latency.N(), a.Latency.Timeouts, a.Latency.P50(), a.Latency.P99())
	}
}

// The random sources are distinct, 100,350 of them, and the trafgen
// config steps exactly the octets RandomSources varies.
func TestRandomSources(t *testing.T) {
	srcs := RandomSources()
	seen := map[netip.Addr]bool{}
	for _, a := range srcs {
		if seen[a] || !a.Is4() {
			t.Fatalf("%s twice or not IPv4", a)
		}
		seen[a] = true
	}
	if len(srcs) != 100_350 {
		t.Fatalf("%d sources, want 100350", len(srcs))
	}
	l := &Lab{Dir: t.TempDir()}
	frame := make([]byte, 60)
	for i := range frame {
		frame[i] = 0xff
	}
	p, err := l.trafgenConfig(frame, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ff := func(n int) string { return strings.Repeat("0xff, ", n) }
	want := "{ " + ff(24) + "csumip(14, 33), dinc(1, 223, 1), dinc(0, 224, 1), dinc(0, 1, 1), 7, " + ff(10) +
		"0x00, 0x00, " + strings.TrimSuffix(ff(18), ", ") + " }\n"
	if string(b) != want {
		t.Fatalf("trafgen config\n%s\nwant\n%s", b, want)
	}
}
