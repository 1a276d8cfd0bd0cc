package metrics

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/loader"
)

// Snapshot is xdpguard's kernel state as one scrape sees it.
type Snapshot struct {
	Stats       []loader.InterfaceStats // per interface and hook, summed over CPUs
	Attachments []loader.Attachment
	Config      loader.Config
	Allow       AllowCounts
	Maps        []MapFill // the bounded shared maps
}

// AllowCounts are the allow list's prefixes per family.
type AllowCounts struct {
	IPv4, IPv6 int
}

// MapFill is how full one bounded map is.
type MapFill struct {
	Name       string // allow4, allow6 or frags: the map's pin name
	Entries    int
	MaxEntries int
}

// Source reads the kernel's state. The collector calls Read once per
// scrape and keeps nothing of it. A Source returns an error wrapping
// loader.ErrNotSetUp when nothing is pinned yet.
type Source interface {
	Read() (*Snapshot, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func() (*Snapshot, error)

// Read calls f.
func (f SourceFunc) Read() (*Snapshot, error) { return f() }

// GuardSource reads the pinned state under one pin path. Every Read opens
// it read-only (loader.OpenReadOnly): a scrape never takes the pin path's
// lock, so it never holds up an attach, a config change or the agent's
// reconcile, and it sees the state as it is now, not as it was when the
// source was made.
type GuardSource struct {
	pinPath    string
	interfaces []string
	frags      *fragCounter
}

// FragCountCacheFor is how long the agent reuses a count of the fragment
// table. Counting walks the whole table (CountEntries): with the table full
// (65,536 entries) a whole scrape took 22 to 57 ms against 2 to 5 ms with it
// empty (BenchmarkScrapeFullFragTable, 2-core VM shared with other test
// runs), and the walk takes the table's bucket locks, which the XDP program
// needs to insert during a fragment flood. Cached, any number of scrapers
// cost one walk per period; a fill level a few seconds old is still a fill
// level. Counters are never cached.
const FragCountCacheFor = 5 * time.Second

// NewGuardSource reads the state under pinPath; interfaces, when given,
// restrict the per-interface series to those interfaces. fragCacheFor is
// how long a count of the fragment table is reused (the agent passes
// FragCountCacheFor); 0 counts it at every Read.
func NewGuardSource(pinPath string, fragCacheFor time.Duration, interfaces ...string) *GuardSource {
	return &GuardSource{pinPath: pinPath, interfaces: interfaces, frags: &fragCounter{ttl: fragCacheFor, now: time.Now}}
}

// Read opens the state read-only, reads it and closes it again.
func (s *GuardSource) Read() (*Snapshot, error) {
	g, err := loader.OpenReadOnly(s.pinPath)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return readGuard(g, s.frags, s.interfaces...)
}

// ReadGuard reads a snapshot from an open Guard, counting the fragment
// table afresh. interfaces, when given, restrict the per-interface series.
func ReadGuard(g *loader.Guard, interfaces ...string) (*Snapshot, error) {
	return readGuard(g, &fragCounter{now: time.Now}, interfaces...)
}

func readGuard(g *loader.Guard, frags *fragCounter, interfaces ...string) (*Snapshot, error) {
	var snap Snapshot
	var err error
	if snap.Stats, err = g.Stats(interfaces...); err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	if snap.Attachments, err = g.Attachments(); err != nil {
		return nil, fmt.Errorf("read attachments: %w", err)
	}
	if len(interfaces) > 0 {
		snap.Attachments = onlyInterfaces(snap.Attachments, snap.Stats)
	}
	if snap.Config, err = g.Maps.ReadConfig(); err != nil {
		return nil, err
	}
	// The counts Apply keeps next to the allow list: no walk of a trie of
	// a million prefixes per scrape.
	if snap.Allow.IPv4, snap.Allow.IPv6, err = g.AllowCounts(); err != nil {
		return nil, fmt.Errorf("count allow list: %w", err)
	}
	fragCount, err := frags.count(g.Maps.Frags)
	if err != nil {
		return nil, err
	}
	snap.Maps = []MapFill{
		{Name: "allow4", Entries: snap.Allow.IPv4, MaxEntries: int(g.Maps.Allow4.MaxEntries())},
		{Name: "allow6", Entries: snap.Allow.IPv6, MaxEntries: int(g.Maps.Allow6.MaxEntries())},
		{Name: "frags", Entries: fragCount, MaxEntries: int(g.Maps.Frags.MaxEntries())},
	}
	return &snap, nil
}

// onlyInterfaces keeps the attachments of the interfaces stats covers.
func onlyInterfaces(as []loader.Attachment, stats []loader.InterfaceStats) []loader.Attachment {
	want := map[int]bool{}
	for _, s := range stats {
		want[s.Ifindex] = true
	}
	var out []loader.Attachment
	for _, a := range as {
		if want[a.Ifindex] {
			out = append(out, a)
		}
	}
	return out
}

// fragCounter counts the fragment table, reusing a count for ttl.
type fragCounter struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	at time.Time
	n  int
	ok bool
}

func (f *fragCounter) count(m *ebpf.Map) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if f.ok && f.ttl > 0 && now.Sub(f.at) < f.ttl {
		return f.n, nil
	}
	n, err := CountEntries(m)
	if err != nil {
		return 0, fmt.Errorf("count fragment table: %w", err)
	}
	f.at, f.n, f.ok = now, n, true
	return n, nil
}

// countBatch is how many entries one BPF_MAP_LOOKUP_BATCH call returns at
// most: 16 calls walk a full 65,536-entry fragment table.
const countBatch = 4096

// CountEntries counts the entries of a hash map (LRU included), which the
// kernel does not report: it walks the map with BPF_MAP_LOOKUP_BATCH,
// countBatch entries per system call, falling back to one BPF_MAP_GET_NEXT_KEY
// per entry on kernels without batch operations. Under concurrent inserts
// and evictions the count is approximate, as any walk of a changing map is.
func CountEntries(m *ebpf.Map) (int, error) {
	n, err := countBatched(m, countBatch)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return countByKeys(m)
	}
	return n, err
}

func countBatched(m *ebpf.Map, batch int) (int, error) {
	// The kernel copies out whole keys and values: buffers of byte arrays
	// of the map's own sizes fit any key and value type.
	keys := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(int(m.KeySize()), reflect.TypeFor[byte]())), batch, batch).Interface()
	vals := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(int(m.ValueSize()), reflect.TypeFor[byte]())), batch, batch).Interface()
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil // the walk reached the end
		}
		if err != nil {
			return 0, fmt.Errorf("batch lookup: %w", err)
		}
	}
}

// countByKeys walks key by key. A hash map restarts a walk from its first
// key when the previous key was deleted meanwhile, so under churn the walk
// could revisit entries: it stops at the map's capacity.
func countByKeys(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	var prev any // nil: start from the first key
	n := 0
	for n < int(m.MaxEntries()) {
		err := m.NextKey(prev, &key)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("next key: %w", err)
		}
		n++
		prev = key
	}
	return n, nil
}
