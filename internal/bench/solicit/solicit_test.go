package solicit

import (
	"testing"

	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/nstest"
)

// Run takes each setup down its own path (it fails otherwise) and gives
// every setup a cell with one sample per round.
func TestRun(t *testing.T) {
	nstest.RequireRoot(t)
	const rounds = 3
	res, err := Run(rounds, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, input string
		ingress     bool
		verdict     uint32
	}{
		{Both, Reply, true, frames.Drop}, {Solicited, Reply, true, frames.Pass}, {Unsolicit, Reply, true, frames.Drop},
		{Both + " egress", Request, false, tcShot}, {Record, Request, false, tcUnspec},
	} {
		r := res.Egress
		if c.ingress {
			r = res.Ingress
		}
		cell := r.Cells[c.name][c.input]
		if cell == nil || len(cell.Samples) != rounds || cell.Verdict != c.verdict {
			t.Errorf("%s on %s: %+v, want %d samples and verdict %#x", c.name, c.input, cell, rounds, c.verdict)
		}
	}
}
