package memory

import (
	"testing"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

func TestDefaults(t *testing.T) {
	nstest.RequireRoot(t)
	maps, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Map{}
	for _, m := range maps {
		byName[m.Name] = m
	}
	for _, name := range []string{"xdpguard_config", "xdpguard_allow4", "xdpguard_allow6", "xdpguard_frags", "xdpguard_stats",
		"xdpguard_ring", "xdpguard_srate", "xdpguard_tokens", "xdpguard_sstats"} {
		if _, ok := byName[name]; !ok {
			t.Fatalf("no %s in %v", name, maps)
		}
	}
	// Preallocated maps use at least their entries' worth of memory; the
	// empty tries use none.
	if f := byName["xdpguard_frags"]; f.Memlock < uint64(f.MaxEntries)*uint64(f.KeySize+f.ValueSize) {
		t.Errorf("frags: %d bytes for %d entries of %d+%d bytes", f.Memlock, f.MaxEntries, f.KeySize, f.ValueSize)
	}
	if a := byName["xdpguard_allow4"]; a.Memlock != 0 {
		t.Errorf("empty allow4 trie accounted %d bytes", a.Memlock)
	}
	if r := byName["xdpguard_ring"]; r.Memlock < 4<<20 || r.Scope != "host" {
		t.Errorf("ring: %d bytes, scope %q, want its 4 MiB, shared", r.Memlock, r.Scope)
	}
	if s := byName["xdpguard_stats"]; !s.PerCPU || s.Scope != "interface" {
		t.Errorf("stats: per CPU %v scope %q, want per CPU and interface", s.PerCPU, s.Scope)
	}
}
