package metrics

import (
	"strings"
	"testing"

	"github.com/xdpguard/xdpguard/loader"
)

// Sample counters are exported per interface, hook and dropping reason (no
// address labels); an interface without them (attached by a release before
// sampling) has no series.
func TestCollectorSampleSeries(t *testing.T) {
	snap := fakeSnapshot()
	snap.Stats[0].Samples = map[string]loader.SampleCounter{}
	for _, r := range []string{"drop_request", "drop_response", "drop_fragment", "drop_orphan_fragment", "drop_malformed", "would_drop"} {
		snap.Stats[0].Samples[r] = loader.SampleCounter{}
	}
	snap.Stats[0].Samples["drop_request"] = loader.SampleCounter{Sampled: 3, Suppressed: 4}
	snap.Stats[0].Samples["drop_fragment"] = loader.SampleCounter{Sampled: 2}
	var want strings.Builder
	for _, m := range []struct {
		name string
		v    map[string]string
	}{
		{SamplesSuppr, map[string]string{"drop_request": "4"}},
		{SamplesTotal, map[string]string{"drop_request": "3", "drop_fragment": "2"}},
	} {
		want.WriteString("# TYPE " + m.name + " counter\n")
		for _, r := range []string{"drop_fragment", "drop_malformed", "drop_orphan_fragment", "drop_request", "drop_response", "would_drop"} {
			v := m.v[r]
			if v == "" {
				v = "0"
			}
			want.WriteString(m.name + `{hook="xdp",interface="eth0",reason="` + r + `"} ` + v + "\n")
		}
	}
	got := exposition(t, NewCollector(staticSource(snap)))
	var mine []string
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "xdpguard_samples_") {
			mine = append(mine, l)
		}
	}
	if err := compareSamples(strings.Join(mine, "\n"), want.String()); err != nil {
		t.Error(err)
	}
	if h := helpOf(got, SamplesTotal); !strings.Contains(h, "equals xdpguard_packets_total") {
		t.Errorf("%s HELP %q does not say what it adds up to", SamplesTotal, h)
	}
}
