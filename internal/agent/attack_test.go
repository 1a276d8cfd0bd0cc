package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/agent/config"
	"github.com/xdpguard/xdpguard/loader"
)

var testAttackCfg = config.Attacks{ThresholdPPS: 1000, MinDuration: 2 * time.Second, QuietPeriod: 5 * time.Second, UpdateEvery: 3 * time.Second}

// feed drives a detector with a fake clock: one observation a second, the
// drop_request counter growing by rates[i] packets (100 bytes each) in
// second i. It returns the events and the second each came at.
type fed struct {
	ev  *AttackEvent
	sec int
}

func feed(t *testing.T, d *attackDetector, t0 time.Time, rates []uint64) []fed {
	t.Helper()
	var out []fed
	var total uint64
	counters := func() map[string]loader.Counter {
		return map[string]loader.Counter{
			"drop_request": {Packets: total, Bytes: total * 100},
			"pass":         {Packets: 1e9, Bytes: 1e11}, // not a drop: never counts
		}
	}
	if ev := d.observe(t0, counters()); ev != nil {
		t.Fatalf("the first observation made an event: %+v", ev)
	}
	for i, r := range rates {
		total += r
		if ev := d.observe(t0.Add(time.Duration(i+1)*time.Second), counters()); ev != nil {
			out = append(out, fed{ev, i + 1})
		}
	}
	return out
}

func kinds(evs []fed) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ev.Kind.String()+"@"+itoa(e.sec))
	}
	return out
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestAttackDetectorOneFlood: a flood of 8 s at 5000 pps, with a 2 s dip
// below the threshold in the middle (shorter than the quiet period), makes
// exactly one start (after min_duration), ongoing lines no closer than
// update_every, and one end once the rate has been below the threshold for
// the quiet period; the end counts every dropped packet from the flood's
// first second to the last quiet second, and the peak.
func TestAttackDetectorOneFlood(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	d := newAttackDetector("eth0", 2, testAttackCfg)
	rates := []uint64{10, 20, 5000, 5000, 6000, 5000, 200, 300, 5000, 7000, 5000, 10, 0, 0, 0, 50, 0, 0, 0}
	evs := feed(t, d, t0, rates)
	got := strings.Join(kinds(evs), " ")
	// Above from the interval 2..3; min_duration 2 s: started at 4. Below
	// in 6..8 (2 s, shorter than the quiet period): no end, no update.
	// Above again at 9, 5 s after the start: ongoing; not again at 10 or
	// 11 (update_every 3 s). Below from 11; quiet 5 s: ended at 16.
	want := "attack started@4 attack ongoing@9 attack ended@16"
	if got != want {
		t.Fatalf("events %s\nwant   %s", got, want)
	}
	start, end := evs[0].ev, evs[len(evs)-1].ev
	// The attack starts with the interval before its first one above the
	// threshold (1..2, 20 drops: the flood's first partial second).
	if !start.Start.Equal(t0.Add(1*time.Second)) || start.Packets != 10020 || start.Bytes != 1_002_000 || start.RatePPS != 5000 ||
		start.Reasons["drop_request"] != 5000 || len(start.Reasons) != 1 {
		t.Errorf("started: %+v", start)
	}
	// Packets from second 1 (the lead-in interval) through second 16.
	var wantPkts uint64
	for _, r := range rates[1:16] {
		wantPkts += r
	}
	if end.Packets != wantPkts || end.Bytes != wantPkts*100 || end.PeakPPS != 7000 {
		t.Errorf("ended: packets %d bytes %d peak %v, want %d, %d, 7000", end.Packets, end.Bytes, end.PeakPPS, wantPkts, wantPkts*100)
	}
	// Lasting from 1 to 11, the start of the quiet interval.
	if !end.Start.Equal(t0.Add(1*time.Second)) || end.Duration != 10*time.Second {
		t.Errorf("ended: start %v duration %v, want %v and 10s", end.Start, end.Duration, t0.Add(1*time.Second))
	}
	// A second flood after the end is a second attack, counted afresh.
	more := feed(t, d, t0.Add(100*time.Second), []uint64{3000, 3000, 3000, 0, 0, 0, 0, 0, 0})
	if got := strings.Join(kinds(more), " "); got != "attack started@2 attack ended@8" {
		t.Fatalf("second flood: %s", got)
	}
	if p := more[1].ev.Packets; p != 9000 {
		t.Errorf("second flood: %d packets, want 9000", p)
	}
}

// TestAttackDetectorBelowAndShort: rates below the threshold, or above it
// for less than min_duration, make no event.
func TestAttackDetectorBelowAndShort(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	d := newAttackDetector("eth0", 2, testAttackCfg)
	if evs := feed(t, d, t0, []uint64{999, 999, 999, 5000, 0, 5000, 0, 999, 0, 0}); len(evs) != 0 {
		t.Fatalf("events from blips: %v", kinds(evs))
	}
	// Exactly the threshold is an attack; min_duration 0 starts it in the
	// first second.
	cfg := testAttackCfg
	cfg.MinDuration = 0
	d = newAttackDetector("eth0", 2, cfg)
	if got := strings.Join(kinds(feed(t, d, t0, []uint64{1000, 0, 0, 0, 0, 0})), " "); got != "attack started@1 attack ended@6" {
		t.Fatalf("min_duration 0: %s", got)
	}
	// threshold 0 turns attacks off whatever the rate.
	cfg.ThresholdPPS = 0
	d = newAttackDetector("eth0", 2, cfg)
	if evs := feed(t, d, t0, []uint64{1e6, 1e6, 1e6}); len(evs) != 0 {
		t.Fatalf("threshold 0: %v", kinds(evs))
	}
}

// TestAttackDetectorIrregularClock: rates are per second of real elapsed
// time, however far apart the reads are.
func TestAttackDetectorIrregularClock(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	cfg := testAttackCfg
	cfg.MinDuration = 0
	d := newAttackDetector("eth0", 2, cfg)
	c := func(n uint64) map[string]loader.Counter {
		return map[string]loader.Counter{"would_drop": {Packets: n, Bytes: n * 60}}
	}
	d.observe(t0, c(0))
	// 1500 packets in 2 s: 750 pps, below.
	if ev := d.observe(t0.Add(2*time.Second), c(1500)); ev != nil {
		t.Fatalf("750 pps made %v", ev.Kind)
	}
	// 600 packets in 0.5 s: 1200 pps, would_drop counts; the 2 s before
	// had drops and lead the attack in.
	ev := d.observe(t0.Add(2500*time.Millisecond), c(2100))
	if ev == nil || ev.Kind != AttackStarted || ev.RatePPS != 1200 || ev.Packets != 2100 || !ev.Start.Equal(t0) {
		t.Fatalf("1200 pps of would_drop: %+v", ev)
	}
	// The same time twice: no interval, no event, no division by zero.
	if ev := d.observe(t0.Add(2500*time.Millisecond), c(2100)); ev != nil {
		t.Fatalf("zero interval made %v", ev.Kind)
	}
}

// TestAttackDetectorCounterReset: counters that go back (the interface was
// attached again) skip one interval and keep the attack's totals.
func TestAttackDetectorCounterReset(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	cfg := testAttackCfg
	cfg.MinDuration, cfg.QuietPeriod = 0, 2*time.Second
	d := newAttackDetector("eth0", 2, cfg)
	c := func(n uint64) map[string]loader.Counter {
		return map[string]loader.Counter{"drop_response": {Packets: n, Bytes: n}}
	}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	d.observe(at(0), c(1_000_000))
	if ev := d.observe(at(1), c(1_005_000)); ev == nil || ev.Kind != AttackStarted {
		t.Fatalf("no start: %+v", ev)
	}
	if ev := d.observe(at(2), c(3000)); ev != nil { // reset: interval unknown
		t.Fatalf("reset made %+v", ev)
	}
	d.observe(at(3), c(8000))
	d.observe(at(4), c(8000))
	ev := d.observe(at(5), c(8000))
	if ev == nil || ev.Kind != AttackEnded || ev.Packets != 10000 {
		t.Fatalf("end after reset: %+v (want 5000 before and 5000 after the reset)", ev)
	}
}

// TestAttackDetectorGone: an interface that goes away ends its attack.
func TestAttackDetectorGone(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	d := newAttackDetector("eth0", 2, testAttackCfg)
	if ev := d.gone(t0, "x"); ev != nil {
		t.Fatalf("gone without an attack: %+v", ev)
	}
	feed(t, d, t0, []uint64{2000, 2000, 2000})
	ev := d.gone(t0.Add(4*time.Second), "deleted")
	if ev == nil || ev.Kind != AttackEnded || ev.Why != "deleted" || ev.Packets != 6000 || ev.Duration != 4*time.Second {
		t.Fatalf("gone: %+v", ev)
	}
}

type fakeObs struct{ calls []string }

func (f *fakeObs) AttackStarted(i string) { f.calls = append(f.calls, "start "+i) }
func (f *fakeObs) AttackEnded(i string)   { f.calls = append(f.calls, "end "+i) }

// fakeSamples hands out queued samples once, as the ring does.
type fakeSamples struct {
	queued []loader.Sample
	err    error
	reads  int
}

func (f *fakeSamples) ReadSamples() ([]loader.Sample, error) {
	f.reads++
	if f.err != nil {
		return nil, f.err
	}
	out := f.queued
	f.queued = nil
	return out, nil
}

// sampled returns k samples from src on ifindex at t.
func sampled(k int, src string, ifindex int, at time.Time) []loader.Sample {
	s := loader.Sample{Ifindex: ifindex, Time: at}
	if src != "" {
		s.Src = netip.MustParseAddr(src)
	}
	return slices.Repeat([]loader.Sample{s}, k)
}

// logLines parses a JSON slog output.
func logLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAttackMonitorLogs: the monitor sums an interface's hooks, logs one
// JSON line per event with the fields operators read, names the top
// sources when a sample source is there, tells the metrics observer, and
// ends the attack of an interface that disappears.
func TestAttackMonitorLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	obs := &fakeObs{}
	samples := &fakeSamples{}
	cfg := testAttackCfg
	cfg.MinDuration = 0
	m := newAttackMonitor(log, obs, samples, cfg)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	// The attack's samples, and samples it must not count: taken before
	// it began, and of eth1, which has no attack.
	samples.queued = slices.Concat(
		sampled(60, "198.51.100.7", 2, t0.Add(500*time.Millisecond)),
		sampled(40, "203.0.113.9", 2, t0.Add(time.Second)),
		sampled(500, "192.0.2.99", 2, t0.Add(-time.Second)),
		sampled(500, "192.0.2.98", 3, t0.Add(time.Second)))
	st := func(xdp, tc uint64) []loader.InterfaceStats {
		return []loader.InterfaceStats{
			{Interface: "eth0", Ifindex: 2, Hook: "xdp", Counters: map[string]loader.Counter{"drop_request": {Packets: xdp, Bytes: xdp * 64}}},
			{Interface: "eth0", Ifindex: 2, Hook: "tc", Counters: map[string]loader.Counter{"drop_response": {Packets: tc, Bytes: tc * 1400}}},
			{Interface: "eth1", Ifindex: 3, Hook: "xdp", Counters: map[string]loader.Counter{"drop_request": {Packets: 5, Bytes: 320}}},
		}
	}
	m.step(t0, st(0, 0))
	m.step(t0.Add(time.Second), st(600, 600)) // 1200 pps over both hooks
	lines := logLines(t, &buf)
	if len(lines) != 1 {
		t.Fatalf("want one line, got %v", lines)
	}
	l := lines[0]
	if l["msg"] != "attack started" || l["level"] != "WARN" || l["interface"] != "eth0" || l["rate_pps"] != 1200.0 ||
		l["packets"] != 1200.0 || l["bytes"] != float64(600*64+600*1400) {
		t.Errorf("attack started line: %v", l)
	}
	rs, _ := l["reasons_pps"].(map[string]any)
	if rs["drop_request"] != 600.0 || rs["drop_response"] != 600.0 || len(rs) != 2 {
		t.Errorf("reasons_pps: %v", l["reasons_pps"])
	}
	wantTop := func(l map[string]any, want string) {
		t.Helper()
		if got := fmt.Sprint(l["top_sources"]); got != want {
			t.Errorf("%s: top_sources %s, want %s", l["msg"], got, want)
		}
	}
	wantTop(l, "[map[address:198.51.100.7 share:0.6] map[address:203.0.113.9 share:0.4]]")
	// The next event comes when no fresh sample has: it names the
	// sources of the attack so far, not of its last read only.
	buf.Reset()
	m.step(t0.Add(4*time.Second), st(4800, 4800))
	lines = logLines(t, &buf)
	if len(lines) != 1 || lines[0]["msg"] != "attack ongoing" || samples.reads != 2 {
		t.Fatalf("want one ongoing line after a second read of the samples, got %v (%d reads)", lines, samples.reads)
	}
	wantTop(lines[0], "[map[address:198.51.100.7 share:0.6] map[address:203.0.113.9 share:0.4]]")
	// eth0 is renamed eth9 (same ifindex): the same attack goes on.
	buf.Reset()
	renamed := st(4800, 4800)
	renamed[0].Interface, renamed[1].Interface = "eth9", "eth9"
	m.step(t0.Add(4500*time.Millisecond), renamed)
	if lines = logLines(t, &buf); len(lines) != 0 {
		t.Fatalf("a rename made %v", lines)
	}
	// eth9 is gone: the attack ends, under the new name in the log and
	// on the series it started on for the metrics; it lasted until 4 s,
	// where the quiet interval before the rename began.
	m.step(t0.Add(5*time.Second), st(4800, 4800)[2:])
	lines = logLines(t, &buf)
	if len(lines) != 1 || lines[0]["msg"] != "attack ended" || lines[0]["interface"] != "eth9" || lines[0]["packets"] != 9600.0 ||
		lines[0]["peak_pps"] != 2800.0 || lines[0]["duration_seconds"] != 4.0 || lines[0]["why"] == nil {
		t.Fatalf("ended on gone: %v", lines)
	}
	if got := strings.Join(obs.calls, ","); got != "start eth0,end eth0" {
		t.Errorf("observer calls %s", got)
	}
	// No sample source, or a failing one: no top_sources field; the
	// event still goes.
	for what, src := range map[string]SampleSource{
		"without a sample source":      nil,
		"from a failing sample source": &fakeSamples{err: errors.New("no ring buffer")},
	} {
		buf.Reset()
		m := newAttackMonitor(log, nil, src, cfg)
		m.step(t0, st(0, 0))
		m.step(t0.Add(time.Second), st(2000, 0))
		lines = logLines(t, &buf)
		if len(lines) != 1 || lines[0]["msg"] != "attack started" {
			t.Fatalf("%s: %v", what, lines)
		}
		if _, ok := lines[0]["top_sources"]; ok {
			t.Errorf("top_sources %s: %v", what, lines[0])
		}
	}
}

// TestSourceTally: sources are counted over an attack's samples since it
// began, shares of all those samples (non-IP ones included), largest first
// with ties by address, at most n.
func TestSourceTally(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	tally := newSourceTally(t0)
	for _, s := range slices.Concat(
		sampled(50, "198.51.100.7", 2, t0.Add(time.Second)),
		sampled(30, "2001:db8::5", 2, t0.Add(time.Second)),
		sampled(10, "203.0.113.9", 2, t0),
		sampled(5, "192.0.2.1", 2, t0.Add(2*time.Second)),
		sampled(5, "192.0.2.2", 2, t0.Add(2*time.Second)),
		sampled(5, "", 2, t0.Add(time.Second)),                   // not IP: counted, unnamed
		sampled(1000, "192.0.2.99", 2, t0.Add(-time.Nanosecond)), // before the attack
	) {
		tally.add(s)
	}
	got := tally.top(3)
	want := []TopSource{{"198.51.100.7", 0.476}, {"2001:db8::5", 0.286}, {"203.0.113.9", 0.095}}
	if !slices.Equal(got, want) {
		t.Fatalf("top 3: %v\nwant       %v", got, want)
	}
	if got, want := tally.top(5)[3:], []TopSource{{"192.0.2.1", 0.048}, {"192.0.2.2", 0.048}}; !slices.Equal(got, want) {
		t.Fatalf("ties: %v, want %v", got, want)
	}
	if got := newSourceTally(t0).top(3); got == nil || len(got) != 0 {
		t.Fatalf("no samples: %#v, want an empty list", got)
	}
}
