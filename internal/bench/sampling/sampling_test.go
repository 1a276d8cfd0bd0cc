package sampling

import (
	"testing"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// A small run: both setups drop, sampling off takes no sample, and the
// spent budget suppresses almost every drop yet still takes the few its
// refill allows (the sampling path is live, not off).
func TestRun(t *testing.T) {
	nstest.RequireRoot(t)
	const rounds, repeat = 3, 100_000
	res, err := Run(rounds, repeat)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{Off, Spent} {
		c := res.PerPacket.Cells[name][Frame]
		if len(c.Samples) != rounds || c.MedianNs <= 0 {
			t.Errorf("%s: %d samples, median %.1f ns: want %d samples and a positive median", name, len(c.Samples), c.MedianNs, rounds)
		}
	}
	off, spent := res.Counts[Off], res.Counts[Spent]
	// Every drop of the measuring rounds is counted, plus the spending run,
	// the first verdict and the overhead runs.
	minDrops := uint64(spendRepeats + rounds*repeat)
	if off.Sampled != 0 || off.Suppressed < minDrops {
		t.Errorf("sampling off: %+v, want 0 sampled and at least %d suppressed", off, minDrops)
	}
	if spent.Sampled == 0 || spent.Sampled+spent.Suppressed < minDrops || spent.Sampled*100 > spent.Suppressed {
		t.Errorf("budget spent: %+v, want some sampled, under 1%% of the %d+ drops", spent, minDrops)
	}
	t.Logf("off %.1f ns, spent %.1f ns (%+.1f); counts %+v", res.Cost(Off), res.Cost(Spent), res.Extra(), res.Counts)
}
