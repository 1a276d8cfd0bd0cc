package loader

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
)

// ParsePrefix parses an allow-list entry: a CIDR, or a bare address meaning
// one host. A prefix with host bits set is refused rather than silently
// widened or narrowed: the operator meant something, and we say what.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: give an address or prefix such as 192.0.2.0/24 or 2001:db8::/32", s)
		}
		return netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: give an address or prefix such as 192.0.2.0/24 or 2001:db8::/32", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: remove the zone", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: IPv4-mapped IPv6; write the IPv4 prefix instead", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: host bits set; did you mean %s?", s, m)
	}
	return p, nil
}

// ParsePrefixes parses allow-list entries one per line; blank lines and
// anything after '#' are ignored. Errors name the line.
//
// The input is read whole and the result sized from its line count: for a
// million lines, growing the slice and the garbage of a string per line cost
// more than the parsing itself.
func ParsePrefixes(r io.Reader, name string) ([]netip.Prefix, error) {
	var buf bytes.Buffer
	if f, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			buf.Grow(int(fi.Size()) + 1) // +1: ReadFrom's check for the end
		}
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	// The lines are cut from the buffer in place: it is never written
	// again, and a copy of 16 MiB (a million lines) cost as much as
	// parsing them.
	data := buf.Bytes()
	text := unsafe.String(unsafe.SliceData(data), len(data))
	out := make([]netip.Prefix, 0, strings.Count(text, "\n")+1)
	for n := 1; text != ""; n++ {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		p, err := ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func v4Key(p netip.Prefix) xdpguardLpmV4Key {
	return xdpguardLpmV4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func v6Key(p netip.Prefix) xdpguardLpmV6Key {
	return xdpguardLpmV6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

func splitFamilies(ps []netip.Prefix) (v4 []xdpguardLpmV4Key, v6 []xdpguardLpmV6Key) {
	n4, n6 := countFamilies(ps)
	v4, v6 = make([]xdpguardLpmV4Key, 0, n4), make([]xdpguardLpmV6Key, 0, n6)
	for _, p := range ps {
		if p.Addr().Is4() {
			v4 = append(v4, v4Key(p))
		} else {
			v6 = append(v6, v6Key(p))
		}
	}
	return v4, v6
}

// batchChunk bounds one BPF_MAP_UPDATE_BATCH call's key and value buffers.
const batchChunk = 65536

func batchUpdate[K any](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		n := min(len(keys), batchChunk)
		vals := make([]uint8, n)
		for i := range vals {
			vals[i] = 1
		}
		_, err := m.BatchUpdate(keys[:n], vals, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			for _, k := range keys[:n] {
				if err := m.Update(k, uint8(1), ebpf.UpdateAny); err != nil {
					return err
				}
			}
		} else if err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

// AllowAdd inserts prefixes, sets their blocks' bits, then turns on the
// lookup of each family that has entries: a packet never sees a bit or the
// switch on with the entry missing in a way that lets it pass (an empty trie
// only fails to allow). See allowblocks.go for the order.
//
// Prefixes go in sorted by address: each insert then walks the trie along
// nearly the same path as the one before, in cache. For 1M random IPv4
// prefixes that halves the kernel's time (2.2 s to 1.1 s, measured side by
// side on the benchmark machine).
func (m *Maps) AllowAdd(ps []netip.Prefix) error {
	if !slices.IsSortedFunc(ps, comparePrefix) {
		// A copy, not the caller's: Apply's callers pass a list
		// they sorted (a copy of a million is 24 MiB of fresh memory).
		ps = slices.Clone(ps)
		slices.SortFunc(ps, comparePrefix)
	}
	v4, v6 := splitFamilies(ps)
	// Sorted, IPv4 comes first: each family is a part of ps.
	ps4, ps6 := ps[:len(v4)], ps[len(v4):]
	if len(v4) > 0 {
		if err := batchUpdate(m.Allow4, v4); err != nil {
			return fmt.Errorf("add IPv4 allow entries: %w", err)
		}
		if err := m.setBlocks(ps4); err != nil {
			return err
		}
		if err := m.setAllowActive(false, true); err != nil {
			return err
		}
	}
	if len(v6) > 0 {
		if err := batchUpdate(m.Allow6, v6); err != nil {
			return fmt.Errorf("add IPv6 allow entries: %w", err)
		}
		if err := m.setBlocks(ps6); err != nil {
			return err
		}
		if err := m.setAllowActive(true, true); err != nil {
			return err
		}
	}
	return nil
}

// ErrNotAllowed is returned when deleting a prefix that is not on the list.
var ErrNotAllowed = errors.New("not on the allow list")

// AllowDel removes prefixes, then clears the bits of blocks no remaining
// prefix touches (read back from the tries); a family left empty is no
// longer consulted.
func (m *Maps) AllowDel(ps []netip.Prefix) error {
	for _, p := range ps {
		var err error
		if p.Addr().Is4() {
			err = m.Allow4.Delete(v4Key(p))
		} else {
			err = m.Allow6.Delete(v6Key(p))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", p, ErrNotAllowed)
		}
		if err != nil {
			return fmt.Errorf("delete %s: %w", p, err)
		}
	}
	remaining, err := m.AllowList()
	if err != nil {
		return err
	}
	if err := m.clearBlocks(ps, remaining); err != nil {
		return err
	}
	return m.syncAllowActive()
}

// syncAllowActive switches off the lookup of families whose trie is empty.
func (m *Maps) syncAllowActive() error {
	for _, f := range []struct {
		v6 bool
		m  *ebpf.Map
	}{{false, m.Allow4}, {true, m.Allow6}} {
		empty, err := isEmpty(f.m)
		if err != nil {
			return err
		}
		if empty {
			if err := m.setAllowActive(f.v6, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func isEmpty(m *ebpf.Map) (bool, error) {
	key := make([]byte, m.KeySize())
	err := m.NextKey(nil, &key)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read allow list: %w", err)
	}
	return false, nil
}

// AllowList returns every allowed prefix, IPv4 first, each family sorted.
func (m *Maps) AllowList() ([]netip.Prefix, error) {
	k4, err := allowKeys[xdpguardLpmV4Key](m.Allow4)
	if err != nil {
		return nil, fmt.Errorf("list IPv4 allow entries: %w", err)
	}
	k6, err := allowKeys[xdpguardLpmV6Key](m.Allow6)
	if err != nil {
		return nil, fmt.Errorf("list IPv6 allow entries: %w", err)
	}
	out := make([]netip.Prefix, 0, len(k4)+len(k6))
	for _, k := range k4 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)))
	}
	for _, k := range k6 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)))
	}
	slices.SortFunc(out, comparePrefix)
	return out, nil
}

// allowKeys reads every key of a trie. In batches where the kernel has
// them: a get-next-key and a lookup syscall per prefix take seconds for a
// million (295,484 prefixes: 3.7 s one by one, 0.13 s in batches of 65,536,
// measured side by side here). One by one where it has not.
func allowKeys[K any](m *ebpf.Map) ([]K, error) {
	keys := make([]K, batchChunk)
	vals := make([]uint8, batchChunk)
	var out []K
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		out = append(out, keys[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	out = out[:0]
	var k K
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	return out, it.Err()
}

// comparePrefix orders by address, then shorter prefix first: a covering
// prefix comes before the prefixes it covers.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// AllowCount counts entries per family.
func (m *Maps) AllowCount() (v4, v6 int, err error) {
	ps, err := m.AllowList()
	if err != nil {
		return 0, 0, err
	}
	for _, p := range ps {
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	return v4, v6, nil
}

// AllowFlush empties both allow lists. The lookups are switched off first:
// from then on every peer is treated as untrusted, which only drops more.
func (m *Maps) AllowFlush() error {
	if err := m.setAllowActive(false, false); err != nil {
		return err
	}
	if err := m.setAllowActive(true, false); err != nil {
		return err
	}
	ps, err := m.AllowList()
	if err != nil {
		return err
	}
	for _, p := range ps {
		var err error
		if p.Addr().Is4() {
			err = m.Allow4.Delete(v4Key(p))
		} else {
			err = m.Allow6.Delete(v6Key(p))
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("flush %s: %w", p, err)
		}
	}
	return m.clearAllBlocks()
}

// allowMeta is the pinned record (<pin>/meta) that Apply keeps next to the
// allow lists, so that neither status nor an Apply that changes nothing has
// to walk a trie of a million prefixes (walking one takes seconds: a
// get-next-key and a lookup per prefix): the count of each family, a digest
// of the set the tries hold, and a digest of the list last given to Apply.
type allowMeta struct {
	Version uint32 // allowMetaVersion
	Known   uint32 // 1: InputLen and InputSum describe the set in the tries
	IPv4    uint64 // prefixes in each trie
	IPv6    uint64
	// Epoch names this state (random, set when it is made) and Gen counts
	// its allow-list changes: together they say whether a copy of the list
	// kept in memory (allowCache) is still true.
	Epoch uint64
	Gen   uint64
	// SetSum is the digest of the set of prefixes in the tries.
	SetSum [2]uint64
	// InputLen and InputSum are the length and digest of the list, as given
	// (duplicates included), that Apply last made the tries hold. Digests
	// are sums of one hash per prefix, so they do not depend on order: an
	// unchanged list is recognised in one pass in memory, without sorting.
	InputLen uint64
	InputSum [2]uint64
}

const allowMetaVersion = 1

var allowMetaSpec = &ebpf.MapSpec{
	Name:       "xdpguard_meta",
	Type:       ebpf.Array,
	KeySize:    4,
	ValueSize:  uint32(binary.Size(allowMeta{})),
	MaxEntries: 1,
}

// openMeta opens the pinned allow-list record, making it when the state has
// none (new state, or state pinned by a release before it: its counts are
// then read from the tries, once). A reader of such older state gets nil and
// counts by walking the tries, as that release did.
func (g *Guard) openMeta(writer bool) (*ebpf.Map, error) {
	path := filepath.Join(g.pinPath, pinMeta)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err == nil {
		if err := allowMetaSpec.Compatible(m); err != nil {
			m.Close()
			return nil, fmt.Errorf("%s: %w (%v): run `xdpguard detach --all`, then attach again", path, ErrIncompatible, err)
		}
		return m, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if !writer {
		return nil, nil
	}
	m, err = ebpf.NewMap(allowMetaSpec)
	if err != nil {
		return nil, fmt.Errorf("create map %s: %w", allowMetaSpec.Name, err)
	}
	ps, err := g.Maps.AllowList()
	if err != nil {
		m.Close()
		return nil, err
	}
	var epoch [8]byte
	if _, err := rand.Read(epoch[:]); err != nil {
		m.Close()
		return nil, fmt.Errorf("make %s: %w", path, err)
	}
	meta := allowMeta{Version: allowMetaVersion, Epoch: binary.LittleEndian.Uint64(epoch[:])}
	meta.IPv4, meta.IPv6 = countFamilies(ps)
	_, meta.SetSum = allowDigest(ps)
	if err := m.Put(uint32(0), &meta); err != nil {
		m.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := m.Pin(path); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	cacheAllow(g.pinPath, meta, ps, true)
	return m, nil
}

func countFamilies(ps []netip.Prefix) (v4, v6 uint64) {
	for _, p := range ps {
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	return v4, v6
}

func (g *Guard) readMeta() (allowMeta, error) {
	var meta allowMeta
	if err := g.meta.Lookup(uint32(0), &meta); err != nil {
		return meta, fmt.Errorf("read allow-list record: %w", err)
	}
	return meta, nil
}

// AllowCounts counts the allow list's prefixes per family from the record
// Apply keeps, without walking the tries.
func (g *Guard) AllowCounts() (v4, v6 int, err error) {
	if g.meta == nil {
		return g.Maps.AllowCount() // state from before the record; read-only
	}
	meta, err := g.readMeta()
	if err != nil {
		return 0, 0, err
	}
	return int(meta.IPv4), int(meta.IPv6), nil
}

// allowCache is a copy of one state's allow list in this process's memory,
// true while the state's record still has its epoch and generation: a
// long-running process (the agent) that changes the list through Apply
// diffs in memory instead of walking the tries again.
type allowCache struct {
	epoch, gen uint64
	list       []netip.Prefix // sorted without duplicates when sorted
	sorted     bool
}

var allowCaches = struct {
	sync.Mutex
	byPin map[string]allowCache
}{byPin: map[string]allowCache{}}

func cacheAllow(pin string, meta allowMeta, list []netip.Prefix, sorted bool) {
	allowCaches.Lock()
	defer allowCaches.Unlock()
	allowCaches.byPin[pin] = allowCache{epoch: meta.Epoch, gen: meta.Gen, list: list, sorted: sorted}
}

func forgetAllow(pin string) {
	allowCaches.Lock()
	defer allowCaches.Unlock()
	delete(allowCaches.byPin, pin)
}

// cachedAllow returns the kept copy of the list if it is still true, sorted
// without duplicates.
func cachedAllow(pin string, meta allowMeta) ([]netip.Prefix, bool) {
	allowCaches.Lock()
	defer allowCaches.Unlock()
	c, ok := allowCaches.byPin[pin]
	if !ok || c.epoch != meta.Epoch || c.gen != meta.Gen {
		return nil, false
	}
	if !c.sorted {
		c.list = sortedSet(c.list)
		c.sorted = true
		allowCaches.byPin[pin] = c
	}
	return c.list, true
}

// sortedSet sorts a list in place by comparePrefix and drops duplicates.
func sortedSet(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, comparePrefix)
	return slices.Compact(ps)
}

// AllowList returns the allow list, IPv4 first, each family sorted: from
// this process's copy when it is still true, else by walking the tries.
func (g *Guard) AllowList() ([]netip.Prefix, error) {
	if g.meta != nil {
		meta, err := g.readMeta()
		if err != nil {
			return nil, err
		}
		if ps, ok := cachedAllow(g.pinPath, meta); ok {
			return slices.Clone(ps), nil
		}
		ps, err := g.Maps.AllowList()
		if err != nil {
			return nil, err
		}
		cacheAllow(g.pinPath, meta, slices.Clone(ps), true)
		return ps, nil
	}
	return g.Maps.AllowList()
}

// mix64 is splitmix64's finaliser: a fixed, well-mixed 64-bit hash step.
func mix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	return z ^ z>>31
}

// prefixHash is two independent 64-bit hashes of one prefix.
func prefixHash(p netip.Prefix) (uint64, uint64) {
	a := p.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	bits := uint64(p.Bits())
	if p.Addr().Is4() {
		bits |= 1 << 8 // 10.0.0.0/8 and ::a00:0/8 differ
	}
	return mix64(hi + mix64(lo+mix64(bits+0x9e3779b97f4a7c15))), mix64(lo ^ mix64(hi^mix64(bits^0xc2b2ae3d27d4eb4f)))
}

// allowDigest is the order-independent digest of a list of prefixes: its
// length and the sums of the two hashes of each prefix. Not a defence
// against a chosen collision: the list is the operator's own.
func allowDigest(ps []netip.Prefix) (n uint64, sum [2]uint64) {
	for _, p := range ps {
		h1, h2 := prefixHash(p)
		sum[0] += h1
		sum[1] += h2
	}
	return uint64(len(ps)), sum
}

// allowPlan is what Apply will do to the allow list.
type allowPlan struct {
	unchanged bool // the tries hold it already: at most the record changes
	meta      allowMeta
	next      allowMeta      // the record once done
	set       []netip.Prefix // the whole list, for the cache; nil if unknown
	add, del  []netip.Prefix
	edit      bool // AllowAdd/AllowDel: adds may already be there
}

func checkPrefixes(ps []netip.Prefix) error {
	for _, p := range ps {
		if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return fmt.Errorf("invalid allow-list prefix %s: give it as ParsePrefix accepts it", p)
		}
	}
	return nil
}

// planAllow compares the wanted list with the tries: through the record
// when the list is the one Apply last put there (one pass in memory), else
// by its set digest (a sort), else by diffing with the tries' contents
// (this process's copy, or a walk of the tries).
func (g *Guard) planAllow(want []netip.Prefix) (*allowPlan, error) {
	meta, err := g.readMeta()
	if err != nil {
		return nil, err
	}
	plan := &allowPlan{meta: meta, next: meta}
	plan.next.Known = 1
	plan.next.InputLen, plan.next.InputSum = allowDigest(want)
	if meta.Known == 1 && meta.InputLen == plan.next.InputLen && meta.InputSum == plan.next.InputSum {
		plan.unchanged = true
		if _, ok := cachedAllow(g.pinPath, meta); !ok {
			cacheAllow(g.pinPath, meta, slices.Clone(want), false) // sorted when first needed
		}
		return plan, nil // checked when it was applied
	}
	if err := checkPrefixes(want); err != nil {
		return nil, err
	}
	set := sortedSet(slices.Clone(want))
	v4, v6 := countFamilies(set)
	_, setSum := allowDigest(set)
	if setSum == meta.SetSum && v4 == meta.IPv4 && v6 == meta.IPv6 {
		plan.unchanged = true // the same set, listed otherwise
		plan.set = set
		return plan, nil
	}
	cur, err := g.AllowList()
	if err != nil {
		return nil, err
	}
	plan.set = set
	plan.add, plan.del = diffSorted(set, cur)
	plan.next.IPv4, plan.next.IPv6 = v4, v6
	plan.next.SetSum = setSum
	plan.next.Gen++
	return plan, nil
}

// planAllowEdit plans additions and deletions without reading the list:
// an addition of a prefix already there changes nothing, a deletion of one
// that is not there is an error (ErrNotAllowed).
func (g *Guard) planAllowEdit(add, del []netip.Prefix) (*allowPlan, error) {
	if err := checkPrefixes(add); err != nil {
		return nil, err
	}
	if err := checkPrefixes(del); err != nil {
		return nil, err
	}
	add, del = sortedSet(slices.Clone(add)), sortedSet(slices.Clone(del))
	for _, p := range del {
		if _, found := slices.BinarySearchFunc(add, p, comparePrefix); found {
			return nil, fmt.Errorf("%s is both added and deleted: do one or the other", p)
		}
	}
	meta, err := g.readMeta()
	if err != nil {
		return nil, err
	}
	plan := &allowPlan{meta: meta, next: meta, add: add, del: del, edit: true}
	plan.next.Known = 0 // the tries no longer hold a list given whole
	plan.next.Gen++
	return plan, nil
}

// diffSorted returns what is in want and not in have, and the reverse; both
// are sorted by comparePrefix without duplicates.
func diffSorted(want, have []netip.Prefix) (add, del []netip.Prefix) {
	i, j := 0, 0
	for i < len(want) || j < len(have) {
		switch {
		case j == len(have) || i < len(want) && comparePrefix(want[i], have[j]) < 0:
			add = append(add, want[i])
			i++
		case i == len(want) || comparePrefix(want[i], have[j]) > 0:
			del = append(del, have[j])
			j++
		default:
			i++
			j++
		}
	}
	return add, del
}

// restoreActive puts the lookup switches back as they were.
func (r *applyRun) restoreActive(v4, v6 bool) {
	r.g.Maps.setAllowActive(false, v4)
	r.g.Maps.setAllowActive(true, v6)
}

// allowAdd inserts the plan's additions; AllowAdd turns a family's lookup
// on after its entries are in. For an edit, a prefix already on the list is
// left alone (and not counted). A rollback deletes what was added, then puts
// the switches back: in between, a switch left on over fewer entries only
// drops more.
func (r *applyRun) allowAdd(plan *allowPlan) error {
	v4, v6, err := r.g.Maps.AllowActive()
	if err != nil {
		return err
	}
	added := plan.add
	if plan.edit {
		// Insert one by one, refusing to overwrite: the kernel says
		// which prefixes were new (batches cannot refuse per entry).
		added = make([]netip.Prefix, 0, len(plan.add))
		r.t.onFail(func() {
			deletePrefixes(r.g.Maps, added)
			r.restoreActive(v4, v6)
		})
		batched := map[bool]bool{} // by Is4: the family went in as one batch
		var single []netip.Prefix  // inserted one by one
		for _, p := range plan.add {
			var err error
			if batched[p.Addr().Is4()] {
				continue
			}
			if empty := p.Addr().Is4() && plan.meta.IPv4 == 0 || !p.Addr().Is4() && plan.meta.IPv6 == 0; empty {
				// Into an empty trie every prefix is new: one batch
				// per family, as a whole list's load.
				fam := familyOf(plan.add, p.Addr().Is4())
				if err := r.g.Maps.AllowAdd(fam); err != nil {
					return err
				}
				added = append(added, fam...)
				batched[p.Addr().Is4()] = true
				continue
			}
			if p.Addr().Is4() {
				err = r.g.Maps.Allow4.Update(v4Key(p), uint8(1), ebpf.UpdateNoExist)
			} else {
				err = r.g.Maps.Allow6.Update(v6Key(p), uint8(1), ebpf.UpdateNoExist)
			}
			if errors.Is(err, ebpf.ErrKeyExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("add %s: %w", p, err)
			}
			added = append(added, p)
			single = append(single, p)
		}
		// AllowAdd set the bits of its batches; these are the rest.
		if err := r.g.Maps.setBlocks(single); err != nil {
			return err
		}
		a4, a6 := countFamilies(added)
		if err := r.switchOn(a4 > 0, a6 > 0); err != nil {
			return err
		}
	} else {
		r.t.onFail(func() {
			deletePrefixes(r.g.Maps, added)
			r.restoreActive(v4, v6)
		})
		if err := r.g.Maps.AllowAdd(added); err != nil {
			return err
		}
	}
	if plan.edit {
		a4, a6 := countFamilies(added)
		plan.next.IPv4 += a4
		plan.next.IPv6 += a6
		for _, p := range added {
			h1, h2 := prefixHash(p)
			plan.next.SetSum[0] += h1
			plan.next.SetSum[1] += h2
		}
	}
	if len(added) > 0 {
		r.change("", "allow", fmt.Sprintf("+%d prefixes", len(added)))
	}
	return nil
}

// familyOf returns the prefixes of one family of ps, sorted by
// comparePrefix: IPv4 comes first (netip.Addr.Compare orders by length), so
// a family is one run of ps, returned without a copy.
func familyOf(ps []netip.Prefix, v4 bool) []netip.Prefix {
	split, _ := slices.BinarySearchFunc(ps, false, func(p netip.Prefix, _ bool) int {
		if p.Addr().Is4() {
			return -1
		}
		return 1
	})
	if v4 {
		return ps[:split]
	}
	return ps[split:]
}

// switchOn turns on the lookup of the families given.
func (r *applyRun) switchOn(v4, v6 bool) error {
	if v4 {
		if err := r.g.Maps.setAllowActive(false, true); err != nil {
			return err
		}
	}
	if v6 {
		if err := r.g.Maps.setAllowActive(true, true); err != nil {
			return err
		}
	}
	return nil
}

// allowDel deletes the plan's deletions. A family left empty has its lookup
// switched off first, as AllowFlush does: from then on its peers are
// untrusted, which only drops more. For an edit, a prefix not on the list
// fails the whole Apply (ErrNotAllowed). A rollback re-adds what was
// deleted, then puts the switches back.
func (r *applyRun) allowDel(plan *allowPlan) error {
	v4, v6, err := r.g.Maps.AllowActive()
	if err != nil {
		return err
	}
	d4, d6 := countFamilies(plan.del)
	left4, left6 := plan.next.IPv4, plan.next.IPv6
	if plan.edit {
		left4, left6 = left4-min(left4, d4), left6-min(left6, d6)
	}
	// What the tries hold once the deletions are done, to know which
	// blocks still hold a prefix: the list asked for, or for an edit the
	// list (this process's copy from before this Apply's additions, or
	// read from the tries) with the additions, less the deletions.
	remaining := plan.set
	if plan.edit {
		cur, err := r.g.AllowList()
		if err != nil {
			return err
		}
		remaining, _ = diffSorted(sortedSet(append(cur, plan.add...)), plan.del)
	}
	var deleted []netip.Prefix
	r.t.onFail(func() {
		a4, a6 := splitFamilies(deleted)
		batchUpdate(r.g.Maps.Allow4, a4)
		batchUpdate(r.g.Maps.Allow6, a6)
		r.g.Maps.setBlocks(deleted)
		r.restoreActive(v4, v6)
	})
	if left4 == 0 && d4 > 0 && v4 {
		if err := r.g.Maps.setAllowActive(false, false); err != nil {
			return err
		}
	}
	if left6 == 0 && d6 > 0 && v6 {
		if err := r.g.Maps.setAllowActive(true, false); err != nil {
			return err
		}
	}
	for _, p := range plan.del {
		var err error
		if p.Addr().Is4() {
			err = r.g.Maps.Allow4.Delete(v4Key(p))
		} else {
			err = r.g.Maps.Allow6.Delete(v6Key(p))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) && plan.edit {
			return fmt.Errorf("delete %s: %w", p, ErrNotAllowed)
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", p, err)
		}
		deleted = append(deleted, p)
	}
	if err := r.g.Maps.clearBlocks(deleted, remaining); err != nil {
		return err
	}
	if plan.edit {
		plan.next.IPv4, plan.next.IPv6 = left4, left6
		for _, p := range deleted {
			h1, h2 := prefixHash(p)
			plan.next.SetSum[0] -= h1
			plan.next.SetSum[1] -= h2
		}
	}
	for i, c := range r.changes {
		if c.What == "allow" && c.Interface == "" { // this Apply's additions
			r.changes[i].Detail = strings.TrimSuffix(c.Detail, " prefixes") + fmt.Sprintf(" -%d prefixes", len(deleted))
			return nil
		}
	}
	r.change("", "allow", fmt.Sprintf("-%d prefixes", len(deleted)))
	return nil
}

// deletePrefixes deletes prefixes; one already gone is not an error.
func deletePrefixes(m *Maps, ps []netip.Prefix) error {
	for _, p := range ps {
		var err error
		if p.Addr().Is4() {
			err = m.Allow4.Delete(v4Key(p))
		} else {
			err = m.Allow6.Delete(v6Key(p))
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", p, err)
		}
	}
	return nil
}

// writeAllowMeta records the new counts and digests, last: until then a
// failure leaves the old record, which the rollback makes true again.
func (r *applyRun) writeAllowMeta(plan *allowPlan) error {
	if plan.next == plan.meta {
		return nil
	}
	if err := r.g.meta.Put(uint32(0), &plan.next); err != nil {
		return fmt.Errorf("write allow-list record: %w", err)
	}
	r.t.onFail(func() {
		r.g.meta.Put(uint32(0), &plan.meta)
		forgetAllow(r.g.pinPath)
	})
	return nil
}
