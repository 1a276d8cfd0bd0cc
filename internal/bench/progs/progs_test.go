package progs

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

func TestPortKeyIsNetworkOrderInLowBytes(t *testing.T) {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], portKey(11211))
	if b != [4]byte{0x2b, 0xcb, 0, 0} {
		t.Fatalf("portKey(11211) bytes = % x, want 2b cb 00 00", b)
	}
}

// The three programs the benchmark compares load and give the verdicts the
// report prints: the floor drops everything, xdpguard gives every frame its
// policy's verdict, and xdp-filter, configured as its CLI would be, drops
// requests and answers but passes the non-first fragment (it reads ports
// from payload bytes).
func TestProgramsGiveTheBenchmarkedVerdicts(t *testing.T) {
	nstest.RequireRoot(t)
	fs, err := frames.All()
	if err != nil {
		t.Fatal(err)
	}
	floor, err := LoadFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer floor.Close()
	guard, _, err := LoadXdpguard(loader.MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	defer guard.Close()
	filter, err := LoadXDPFilter(XDPFilterObject, loader.DefaultPort)
	if err != nil {
		t.Fatalf("%v (xdp-tools is installed by scripts/deps.sh)", err)
	}
	defer filter.Close()
	prev, err := LoadPrevious("../../../" + PreviousObject)
	if err != nil {
		t.Fatal(err)
	}
	defer prev.Close()
	for _, f := range fs {
		wantFilter := f.Want
		if f.Prime != nil {
			wantFilter = frames.Pass // the non-first fragments: no ports where it reads them
		}
		for _, c := range []struct {
			p    *Program
			want uint32
		}{{floor, frames.Drop}, {guard, f.Want}, {filter, wantFilter}, {prev.Program, f.Want}} {
			for _, prime := range f.Prime {
				if _, err := c.p.Prog.Run(&ebpf.RunOptions{Data: prime}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := c.p.Prog.Run(&ebpf.RunOptions{Data: f.Data})
			if err != nil {
				t.Fatalf("%s on %s: %v", c.p.Name, f.Name, err)
			}
			if got != c.want {
				t.Errorf("%s on %s: %s, want %s", c.p.Name, f.Name, frames.VerdictName(got), frames.VerdictName(c.want))
			}
		}
	}
}
