package metrics

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// fragKeySize and fragValueSize are struct frag6_key's and struct
// frag_verdict's sizes in bpf/xdpguard.c: the tests fill the IPv6 table.
const (
	fragKeySize   = 40
	fragValueSize = 16
)

// newMaps makes unpinned shared maps of the compiled sizes.
func newMaps(t testing.TB) *loader.Maps {
	t.Helper()
	nstest.RequireRoot(t)
	m, err := loader.NewMaps(loader.MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if m.Frags6.KeySize() != fragKeySize || m.Frags6.ValueSize() != fragValueSize {
		t.Fatalf("fragment key and value are %d and %d bytes, this test writes %d and %d: update fragKeySize and fragValueSize",
			m.Frags6.KeySize(), m.Frags6.ValueSize(), fragKeySize, fragValueSize)
	}
	return m
}

// fillFrags inserts n distinct fragment keys, numbered from first, from one
// CPU. An LRU hash hands out free entries from per-CPU lists: inserts that
// migrate between CPUs leave up to 128 free entries stranded on another
// CPU's list and evict before the table is full (seen: 65,408 of 65,536).
func fillFrags(t testing.TB, frags *ebpf.Map, first, n int) {
	t.Helper()
	nstest.OnOneCPU(t, func() {
		keys := make([][fragKeySize]byte, n)
		vals := make([][fragValueSize]byte, n) // zero verdicts
		for i := range keys {
			binary.LittleEndian.PutUint32(keys[i][32:], uint32(first+i)) // the IP ID
			keys[i][0] = 0x20                                            // a source address
		}
		if _, err := frags.BatchUpdate(keys, vals, nil); err != nil {
			t.Fatalf("fill fragment table: %v", err)
		}
	})
}

// TestCountEntries counts the LRU fragment table empty, part full and full,
// with the batch walk and the key-by-key walk, which must agree.
func TestCountEntries(t *testing.T) {
	m := newMaps(t)
	max := int(m.Frags6.MaxEntries())
	for _, tc := range []struct {
		name       string
		first, add int
		inserted   int
	}{{"empty", 0, 0, 0}, {"1000", 0, 1000, 1000}, {"full", 1000, max - 1000, max}} {
		if tc.add > 0 {
			fillFrags(t, m.Frags6, tc.first, tc.add)
		}
		batched, err := CountEntries(m.Frags6)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		byKeys, err := countByKeys(m.Frags6)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Logf("%s: %d entries by batch, %d key by key", tc.name, batched, byKeys)
		if batched != byKeys {
			t.Errorf("%s: batch walk counts %d, key-by-key walk %d", tc.name, batched, byKeys)
		}
		// Inserted from one CPU (fillFrags), the LRU keeps every
		// entry up to its capacity.
		if batched != tc.inserted {
			t.Errorf("%s: counted %d entries, inserted %d", tc.name, batched, tc.inserted)
		}
	}
}

// BenchmarkCountFullFragTable is the cost of counting a full fragment table
// once, as an uncached scrape does.
func BenchmarkCountFullFragTable(b *testing.B) {
	m := newMaps(b)
	fillFrags(b, m.Frags6, 0, int(m.Frags6.MaxEntries()))
	for _, bc := range []struct {
		name  string
		count func(*ebpf.Map) (int, error)
	}{{"batch", CountEntries}, {"keys", countByKeys}} {
		b.Run(bc.name, func(b *testing.B) {
			var n int
			for b.Loop() {
				var err error
				if n, err = bc.count(m.Frags6); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "entries")
		})
	}
}

// BenchmarkScrapeFullFragTable is one whole scrape of the kernel state (open
// the pin path read-only, read config, allow counts and map fill, count the
// fragment table) with nothing attached, the fragment table empty, then
// full.
func BenchmarkScrapeFullFragTable(b *testing.B) {
	nstest.RequireRoot(b)
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("xgmetrics-bench-%d", os.Getpid()))
	g, err := loader.Open(pin, true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if _, err := g.DetachAll(); err != nil {
			b.Error(err)
		}
		g.Close()
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(NewGuardSource(pin, 0)))
	scrape := func(b *testing.B) {
		for b.Loop() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("empty", scrape)
	fillFrags(b, g.Maps.Frags6, 0, int(g.Maps.Frags6.MaxEntries()))
	b.Run("full", scrape)
}

// TestFragCountCache: a count is reused for its time to live, then taken
// afresh; with no time to live every scrape counts.
func TestFragCountCache(t *testing.T) {
	m := newMaps(t)
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	cached := &fragCounter{ttl: FragCountCacheFor, now: clock}
	uncached := &fragCounter{now: clock}
	expect := func(fc *fragCounter, want int, when string) {
		t.Helper()
		n, err := fc.count(m.Frags6)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s: counted %d, want %d", when, n, want)
		}
	}
	expect(cached, 0, "empty")
	fillFrags(t, m.Frags6, 0, 10)
	expect(uncached, 10, "uncached, at once")
	now = now.Add(FragCountCacheFor - time.Millisecond)
	expect(cached, 0, "cached, just before the count expires")
	now = now.Add(time.Millisecond)
	expect(cached, 10, "cached, once the count expired")
}
