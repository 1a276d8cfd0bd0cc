package main

import (
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/internal/bench/allowlist"
	"github.com/xdpguard/xdpguard/internal/bench/footprint"
	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/bench/perpacket"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/bench/sampling"
	"github.com/xdpguard/xdpguard/internal/bench/solicit"
	"github.com/xdpguard/xdpguard/loader"
)

func cell(med, p25, p75 float64) *perpacket.Cell {
	return &perpacket.Cell{MedianNs: med, P25: p25, P75: p75}
}

func TestSamplingReport(t *testing.T) {
	r := &report{sampling: &sampling.Result{
		PerPacket: &perpacket.Result{Rounds: 31, Repeat: 2_000_000, Cells: map[string]map[string]*perpacket.Cell{
			progs.Floor:    {sampling.Frame: cell(5.0, 4.9, 5.1)},
			sampling.Off:   {sampling.Frame: cell(14.1, 14.0, 14.3)},
			sampling.Spent: {sampling.Frame: cell(17.0, 16.8, 17.2)},
		}},
		Rate: 256,
		Counts: map[string]loader.SampleCounter{
			sampling.Off:   {Sampled: 0, Suppressed: 64_000_000},
			sampling.Spent: {Sampled: 2_816, Suppressed: 63_997_184},
		},
	}}
	var b strings.Builder
	samplingTarget(&b, r)
	samplingSection(&b, r)
	out := b.String()
	for _, want := range []string{
		"| 17.0 vs 14.1 ns (+2.9 ns) | reported |",
		"(31 of 2 000 000)",
		"default budget of 256 samples per second per CPU",
		"| floor | 5.0 [4.9–5.1] | | | |",
		"| sampling off | 14.1 [14.0–14.3] | 9.1 | 0 | 64 000 000 |",
		"| default budget, spent | 17.0 [16.8–17.2] | 12.0 | 2 816 | 63 997 184 |",
		"| difference (spent − off) | +2.9 | | | |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sampling report lacks %q:\n%s", want, out)
		}
	}
	var none strings.Builder
	samplingTarget(&none, &report{})
	samplingSection(&none, &report{})
	if none.Len() != 0 {
		t.Errorf("a run without the step wrote %q", none.String())
	}
}

func TestFootprintReport(t *testing.T) {
	r := &report{o: options{agentBatch: 100, agentMatchEvery: 10}, footprint: &footprint.Result{
		Pairs: 1000, Matched: 100,
		Ready:    footprint.Usage{RSS: 16 << 20, HWM: 16 << 20, CPU: 80 * time.Millisecond},
		Idle:     footprint.Usage{RSS: 17 << 20, HWM: 17 << 20, CPU: 90 * time.Millisecond},
		IdleFor:  5001 * time.Millisecond,
		Churn:    footprint.Usage{RSS: 28 << 20, HWM: 30 << 20, CPU: 15090 * time.Millisecond},
		ChurnFor: 41234 * time.Millisecond,
	}}
	var b strings.Builder
	footprintTarget(&b, r)
	footprintSection(&b, r)
	out := b.String()
	for _, want := range []string{
		"while 1 000 links come and go (reported, no threshold) | RSS 17.0 MiB idle, 30.0 MiB peak; CPU 10ms over 5s idle, 15s over the 41.2s churn | reported |",
		"| start, until `READY=1` | 16.0 MiB | 16.0 MiB | 80ms | |",
		"| idle | 17.0 MiB | 17.0 MiB | 10ms | 5s |",
		"| 1 000 pairs come and go, 100 attached | 28.0 MiB | 30.0 MiB | 15s | 41.2s |",
		"one in 10 has an end the include glob matches: 100 attaches",
		"100 at a time",
		"so 1 000 matching links would take about 6m52s;",
		"events of the others included: 150ms. Afterwards 0 interface",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("footprint report lacks %q:\n%s", want, out)
		}
	}
}

func TestSolicitReport(t *testing.T) {
	r := &report{solicit: &solicit.Result{
		Ingress: &perpacket.Result{Rounds: 31, Repeat: 2_000_000, Cells: map[string]map[string]*perpacket.Cell{
			progs.Floor:       {solicit.Reply: cell(5.0, 4.9, 5.1)},
			solicit.Both:      {solicit.Reply: cell(12.0, 11.9, 12.1)},
			solicit.Solicited: {solicit.Reply: cell(30.5, 30.0, 31.0)},
			solicit.Unsolicit: {solicit.Reply: cell(29.0, 28.5, 29.5)},
		}},
		Egress: &perpacket.Result{Rounds: 31, Repeat: 2_000_000, Cells: map[string]map[string]*perpacket.Cell{
			solicit.Both + " egress": {solicit.Request: cell(20.0, 19.0, 21.0)},
			solicit.Record:           {solicit.Request: cell(60.0, 59.0, 61.0)},
		}},
	}}
	var b strings.Builder
	solicitSection(&b, r)
	out := b.String()
	for _, want := range []string{
		"holds 10 000 other requests",
		"| ingress reply | both | drop_response | 12.0 [11.9–12.1] | +0.0 |",
		"| ingress reply | response, solicited | solicited | 30.5 [30.0–31.0] | +18.5 |",
		"| ingress reply | response, unsolicited | drop_unsolicited | 29.0 [28.5–29.5] | +17.0 |",
		"| egress request | response, recorded | pass, recorded | 60.0 [59.0–61.0] | +40.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("solicited-replies report lacks %q:\n%s", want, out)
		}
	}
	var none strings.Builder
	solicitSection(&none, &report{})
	if none.Len() != 0 {
		t.Errorf("a run without the step wrote %q", none.String())
	}
}

// The explanations of missed targets carry this run's figures, and are
// written only when the target was missed.
func TestMissedExplanations(t *testing.T) {
	frame := frames.Frame{Name: sampling.Frame}
	pp := &perpacket.Result{Cells: map[string]map[string]*perpacket.Cell{
		progs.Floor:    {sampling.Frame: cell(5.0, 4.9, 5.1)},
		progs.Xdpguard: {sampling.Frame: cell(16.0, 15.9, 16.1)},
		progs.Previous: {sampling.Frame: cell(11.0, 10.9, 11.1)},
	}}
	smp := &sampling.Result{PerPacket: &perpacket.Result{Cells: map[string]map[string]*perpacket.Cell{
		progs.Floor:    {sampling.Frame: cell(5.5, 5.4, 5.6)},
		sampling.Off:   {sampling.Frame: cell(14.5, 14.4, 14.6)},
		sampling.Spent: {sampling.Frame: cell(15.5, 15.4, 15.6)},
	}}}
	allow := []allowlist.SizeResult{
		{Family: 4, Size: 0, Outside: map[string]*perpacket.Cell{progs.Xdpguard: cell(16.0, 15.9, 16.1)}},
		{Family: 4, Size: 1000, Outside: map[string]*perpacket.Cell{progs.Xdpguard: cell(17.5, 17.4, 17.6)},
			Inside: map[string]*perpacket.Cell{progs.Xdpguard: cell(62.0, 61.9, 62.1), progs.Previous: cell(60.0, 59.0, 60.5)}},
	}
	r := &report{frames: []frames.Frame{frame}, perPacket: pp, sampling: smp, allow: allow}
	var b strings.Builder
	slowerMissed(&b, r)
	onListMissed(&b, r)
	out := b.String()
	for _, want := range []string{
		"xdpguard is 11.0 ns above the floor and the previous release\n6.0 ns",
		"is +1.0 ns over sampling off",
		"sampling off, 9.0 ns above the floor, still looks at the rate",
		"1 000 IPv4 prefixes +2.0 ns (+3%)",
		"(17.5 ns with 1 000 IPv4 prefixes against 16.0 with none)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explanations lack %q:\n%s", want, out)
		}
	}
	// Met: nothing written.
	pp.Cells[progs.Xdpguard][sampling.Frame] = cell(11.0, 10.9, 11.1)
	allow[1].Inside[progs.Xdpguard] = cell(60.0, 59.9, 60.1)
	var none strings.Builder
	slowerMissed(&none, r)
	onListMissed(&none, r)
	if none.Len() != 0 {
		t.Errorf("targets met, yet written: %q", none.String())
	}
}
