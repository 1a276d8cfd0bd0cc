package loader

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
)

// verifierBudget bounds the instructions the verifier may process for one
// program. Each attach verifies the programs anew, so this is most of what
// attaching an interface costs: 200 ms per interface on a 2-CPU VM when the
// IPv6 extension walk made the verifier walk it once per mix of header kinds
// (115,715 instructions for xdpguard_xdp on 6.18); about 24,000 since. The
// budget leaves room for the program to grow, not for that to come back.
const verifierBudget = 60_000

var processedInsns = regexp.MustCompile(`processed (\d+) insns`)

// TestVerifierWork loads each program alone as an attach does and holds the
// verifier's work to verifierBudget, on whatever kernel runs the test.
func TestVerifierWork(t *testing.T) {
	requireRoot(t)
	m, err := NewMaps(MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	spec, opts, err := dataplaneSpec(m, Counters{}, harnessTimeouts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Programs.LogLevel = ebpf.LogLevelStats
	for _, name := range []string{xdpguardProgXdpguardXdp, xdpguardProgXdpguardXdpL3, xdpguardProgXdpguardTc, xdpguardProgXdpguardTcL3} {
		one := spec.Copy()
		for n := range one.Programs {
			if n != name {
				delete(one.Programs, n)
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(one, *opts)
		if err != nil {
			t.Fatalf("%s: %v", name, verifierError(err))
		}
		log := coll.Programs[name].VerifierLog
		coll.Close()
		got := processedInsns.FindStringSubmatch(log)
		if got == nil {
			t.Fatalf("%s: no instruction count in the verifier's log %q", name, log)
		}
		n, _ := strconv.Atoi(got[1])
		t.Logf("%s: the verifier processed %d instructions", name, n)
		if n > verifierBudget {
			t.Errorf("%s: the verifier processed %d instructions, over the budget of %d: every attach pays for them", name, n, verifierBudget)
		}
	}
}
