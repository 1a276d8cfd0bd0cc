package perpacket

import (
	"testing"

	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/bench/progs"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// Run gives every program a cell per frame, one sample per round, and the
// verdict each program returns: the floor drops, xdpguard passes TCP.
func TestRun(t *testing.T) {
	nstest.RequireRoot(t)
	floor, err := progs.LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer floor.Close()
	guard, _, err := progs.LoadXdpguard(loader.MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	defer guard.Close()
	fs, err := frames.All()
	if err != nil {
		t.Fatal(err)
	}
	var tcp frames.Frame
	for _, f := range fs {
		if f.Name == "tcp_443" {
			tcp = f
		}
	}
	const rounds = 3
	res, err := Run([]Subject{{Name: "floor", Prog: floor.Prog}, {Name: "xdpguard", Prog: guard.Prog}},
		[]Input{{Name: tcp.Name, Data: tcp.Data}}, rounds, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"floor": frames.Drop, "xdpguard": frames.Pass} {
		c := res.Cells[name][tcp.Name]
		if c == nil {
			t.Fatalf("no cell for %s", name)
		}
		if c.Verdict != want {
			t.Errorf("%s: verdict %s, want %s", name, frames.VerdictName(c.Verdict), frames.VerdictName(want))
		}
		if len(c.Samples) != rounds {
			t.Errorf("%s: %d samples, want %d", name, len(c.Samples), rounds)
		}
		if c.P25 > c.MedianNs || c.MedianNs > c.P75 {
			t.Errorf("%s: quartiles out of order: %v %v %v", name, c.P25, c.MedianNs, c.P75)
		}
	}
}
