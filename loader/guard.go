package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// The pin path holds the shared maps and, under netns/<inode>/<ifindex>,
// what one attach made for one interface of one network namespace:
//
//	<pin>/config  allow4  allow6  allow4_blocks  allow6_blocks  frags4  frags6  meta
//	      frag_cache4  frag_cache6  requests4  requests6  expiry  [config_nodir]
//	<pin>/netns/<netns inode>/<ifindex>/stats  xdp_link  [tc_link | tc_legacy/]
//
// Ifindexes repeat across network namespaces (every namespace's first veth
// may be ifindex 2), so an interface is named by its namespace's inode and
// its ifindex, as cloudflare/tubular names its state. Releases before this
// layout kept <pin>/ifaces/<ifindex>/...; Open moves those entries into
// place (see migrateOldLayout).
const (
	pinConfig     = "config"
	pinAllow4     = "allow4"
	pinAllow6     = "allow6"
	pinAllow4Blk  = "allow4_blocks"
	pinAllow6Blk  = "allow6_blocks"
	pinFrags4     = "frags4"
	pinFrags6     = "frags6"
	pinFragsOld   = "frags" // both families' table before issue 14: removed
	pinFragCache4 = "frag_cache4"
	pinFragCache6 = "frag_cache6"
	pinReq4       = "requests4"
	pinReq6       = "requests6"
	pinExpiry     = "expiry"
	pinMeta       = "meta"
	netnsDir      = "netns"
	oldIfacesDir  = "ifaces" // the layout before netns/: upgraded by Open
	pinStats      = "stats"
	pinStats2     = "stats2" // the counters of reasons added with port directions
	pinXDPLink    = "xdp_link"
	pinTCLink     = "tc_link"
	tcLegacyDir   = "tc_legacy"   // present: egress is a cls_bpf filter
	clsactMadeDir = "clsact_made" // inside tc_legacy: we added the qdisc
	sharedPinMode = fs.FileMode(0o700)
)

// ErrNotSetUp means nothing is pinned under the pin path yet.
var ErrNotSetUp = errors.New("xdpguard is not set up here")

// ErrIncompatible means pinned state was made by an incompatible version.
var ErrIncompatible = errors.New("pinned state is from an incompatible xdpguard version")

// Guard is xdpguard's pinned state under one pin path. Open it, use it,
// Close it. While open it holds an exclusive lock on the pin path, so one
// writer at a time changes the state.
type Guard struct {
	pinPath string
	lock    *os.File
	Maps    *Maps
	// meta holds the allow-list counts and digest (allowMeta); nil only
	// for a read-only open of state that predates it.
	meta *ebpf.Map
	// created records that this Guard made the shared state and no Apply
	// has succeeded since: a failed Apply then undoes it with
	// removeIfUnused, so a failed first attach leaves nothing behind.
	created bool
	// removed records that this Guard removed the shared state: its maps
	// are pinned nowhere, and it may change nothing more.
	removed bool
	// blocksSynced records that the block bitmaps were checked against the
	// tries (syncBlocks) since this Guard was opened; holding the lock, only
	// this Guard changes the tries after that, keeping them in step.
	blocksSynced bool
}

// Open opens the state under pinPath to change it, holding the pin path's
// lock until Close. With create, missing state is made (bpffs mounted if
// needed, maps created holding DefaultConfig and pinned); without it,
// missing state is ErrNotSetUp. State pinned by an older release is
// upgraded in place (see migrateOldLayout).
func Open(pinPath string, create bool) (*Guard, error) {
	return open(pinPath, create, true)
}

// OpenReadOnly opens existing state to read it, without the lock, so that a
// long reader (stats --watch) never holds up an attach or a config change.
func OpenReadOnly(pinPath string) (*Guard, error) {
	return open(pinPath, false, false)
}

func open(pinPath string, create, lock bool) (g *Guard, err error) {
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	if err := removeMemlock(); err != nil {
		return nil, err
	}
	pinPath = filepath.Clean(pinPath)
	if err := EnsureBPFFS(pinPath); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(pinPath, pinConfig))
	exists := statErr == nil
	if !exists && !create {
		return nil, fmt.Errorf("%s: %w: attach an interface first (xdpguard attach IFACE)", pinPath, ErrNotSetUp)
	}
	if !exists {
		if err := os.MkdirAll(pinPath, sharedPinMode); err != nil {
			return nil, fmt.Errorf("create pin path: %w", err)
		}
	}
	g = &Guard{pinPath: pinPath}
	if lock {
		var lk *os.File
		if lk, err = lockDir(pinPath); err != nil {
			return nil, err
		}
		g.lock = lk
		// lk, not g.lock: every failure below returns a nil g.
		defer func() {
			if err != nil {
				lk.Close()
			}
		}()
	}
	if g.Maps, g.created, err = g.openMaps(create, lock); err != nil {
		if g.created || !exists {
			g.removeShared()
		}
		return nil, err
	}
	if g.meta, err = g.openMeta(lock); err != nil {
		g.Maps.Close()
		if g.created {
			g.removeShared()
		}
		return nil, err
	}
	if lock {
		if err := g.migrateOldLayout(); err != nil {
			g.Close()
			return nil, err
		}
	}
	return g, nil
}

var memlockOnce = sync.OnceValue(func() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raise RLIMIT_MEMLOCK for BPF maps (kernels before 5.11 charge maps to it): %w", err)
	}
	return nil
})

// removeMemlock lifts RLIMIT_MEMLOCK where the kernel charges BPF maps and
// programs to it (before Linux 5.11): the fragment table alone is larger
// than the common 8 MiB limit. On later kernels it changes nothing. It runs
// before anything is created or loaded.
func removeMemlock() error { return memlockOnce() }

// openMaps opens the pinned shared maps, creating and pinning missing ones
// when create is set. It reports whether it created the state (its config).
//
// State pinned by a release before the block bitmaps and the per-family
// fragment tables (issue 14) has none of them. A writer (it holds the lock)
// makes them and pins them: each bitmap filled from the tries before it is
// pinned, so that no program of this release, which reads it, is attached
// before it agrees with the tries; the fragment tables empty (a cache; see
// openFragsPin), and the old table's pin removed (programs still attached
// keep their reference to it until they are swapped). A reader gets
// unpinned ones it may not change, the bitmaps with every bit set (exact
// whatever the tries hold, without walking them).
func (g *Guard) openMaps(create, writer bool) (m *Maps, created bool, err error) {
	_, s, err := specs()
	if err != nil {
		return nil, false, err
	}
	paths := map[*ebpf.MapSpec]string{
		s.XdpguardConfig: pinConfig,
		s.XdpguardAllow4: pinAllow4,
		s.XdpguardAllow6: pinAllow6,
		s.XdpguardBlk4:   pinAllow4Blk,
		s.XdpguardBlk6:   pinAllow6Blk,
		s.XdpguardFrags4: pinFrags4,
		s.XdpguardFrags6: pinFrags6,
		s.XdpguardFc4:    pinFragCache4,
		s.XdpguardFc6:    pinFragCache6,
		s.XdpguardReq4:   pinReq4,
		s.XdpguardReq6:   pinReq6,
		s.XdpguardExpiry: pinExpiry,
		s.XdpguardRing:   pinSamples,
		s.XdpguardSrate:  pinSampleRate,
		s.XdpguardTokens: pinSampleBudget,
	}
	// Made by later releases, missing in older state: made here (pinned by
	// a writer, unpinned on a read-only open), as an upgrade, not as the
	// making of the state.
	added := map[string]bool{pinAllow4Blk: true, pinAllow6Blk: true, pinFrags4: true, pinFrags6: true,
		pinFragCache4: true, pinFragCache6: true, pinSamples: true, pinSampleRate: true, pinSampleBudget: true,
		pinReq4: true, pinReq6: true, pinExpiry: true}
	// The config map of a release before port directions, upgraded in
	// place (configmap.go).
	var legacy *ebpf.Map
	defer func() {
		if err != nil && legacy != nil {
			legacy.Close()
		}
	}()
	open := func(spec *ebpf.MapSpec) (*ebpf.Map, error) {
		path := filepath.Join(g.pinPath, paths[spec])
		mp, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			if !create && !added[paths[spec]] {
				return nil, fmt.Errorf("%s: %w", path, ErrNotSetUp)
			}
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		want := spec.Copy()
		if info, err := mp.Info(); err == nil {
			want.MaxEntries = info.MaxEntries // sizes may be overridden
		}
		switch spec {
		case s.XdpguardFrags4, s.XdpguardFrags6, s.XdpguardFc4, s.XdpguardFc6, s.XdpguardReq4, s.XdpguardReq6:
			// A cache: an older layout is replaced in place.
			return openFragsPin(path, want, mp, create)
		case s.XdpguardConfig:
			if isLegacyConfig(mp) {
				next, err := upgradeConfigPin(g.pinPath, want, mp, writer)
				if err != nil {
					mp.Close()
					return nil, err
				}
				legacy = mp
				return next, nil
			}
		}
		if err := want.Compatible(mp); err != nil {
			mp.Close()
			return nil, fmt.Errorf("%s: %w (%v): run `xdpguard detach --all`, then attach again", path, ErrIncompatible, err)
		}
		return mp, nil
	}
	missing := map[string]bool{}
	m, err = createMaps(s, func(spec *ebpf.MapSpec) (*ebpf.Map, error) {
		mp, err := open(spec)
		if mp == nil && err == nil {
			missing[paths[spec]] = true // createMaps makes it; we pin it
		}
		return mp, err
	})
	if err != nil {
		return nil, false, err
	}
	created = missing[pinConfig] || missing[pinAllow4] || missing[pinAllow6]
	if legacy == nil && !created {
		if legacy, err = openLegacyConfig(g.pinPath); err != nil {
			m.Close()
			return nil, false, err
		}
	}
	m.LegacyConfig, legacy = legacy, nil // m owns it now
	if len(missing) == 0 {
		return m, false, nil
	}
	fail := func(err error) (*Maps, bool, error) {
		m.Close()
		return nil, created, err
	}
	if missing[pinSampleRate] {
		if err := m.SetSampleRate(DefaultSampleRate); err != nil {
			return fail(err)
		}
	}
	// Initialise the config before pinning it: an attached program must
	// never read an all-zero port bitmap.
	if missing[pinConfig] {
		if err := m.WriteConfig(DefaultConfig()); err != nil {
			return fail(err)
		}
	}
	if missing[pinAllow4Blk] || missing[pinAllow6Blk] {
		if !writer {
			if err := m.fillAllBlocks(); err != nil {
				return fail(err)
			}
		} else if !created {
			ps, err := m.AllowList()
			if err != nil {
				return fail(err)
			}
			if err := m.setBlocks(ps); err != nil {
				return fail(err)
			}
		}
	}
	if !writer {
		return m, false, nil
	}
	byName := map[string]*ebpf.Map{
		pinConfig: m.Config, pinAllow4: m.Allow4, pinAllow6: m.Allow6,
		pinAllow4Blk: m.Allow4Blocks, pinAllow6Blk: m.Allow6Blocks,
		pinFrags4: m.Frags4, pinFrags6: m.Frags6, pinFragCache4: m.FragCache4, pinFragCache6: m.FragCache6,
		pinReq4: m.Req4, pinReq6: m.Req6, pinExpiry: m.Expiry,
		pinSamples: m.Samples, pinSampleRate: m.SampleRateMap, pinSampleBudget: m.SampleBudget,
	}
	for name := range missing {
		if err := byName[name].Pin(filepath.Join(g.pinPath, name)); err != nil {
			return fail(fmt.Errorf("pin map %s: %w", name, err))
		}
	}
	if err := os.Remove(filepath.Join(g.pinPath, pinFragsOld)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(fmt.Errorf("remove the fragment table of the layout before issue 14: %w", err))
	}
	return m, created, nil
}

// Close releases the lock and descriptors; pinned state lives on.
func (g *Guard) Close() error {
	var errs []error
	if g.Maps != nil {
		errs = append(errs, g.Maps.Close())
	}
	if g.meta != nil {
		errs = append(errs, g.meta.Close())
	}
	if g.lock != nil {
		errs = append(errs, g.lock.Close())
	}
	return errors.Join(errs...)
}

// PinPath is where the state lives.
func (g *Guard) PinPath() string { return g.pinPath }

// CurrentNetns is the inode of the calling thread's network namespace: the
// name of its state under <pin>/netns/ and the "netns" of status. A thread,
// not the process: Go programs (and tests) move single threads into other
// namespaces.
func CurrentNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("read this thread's network namespace: %w", err)
	}
	return st.Ino, nil
}

func (g *Guard) netnsPath(netns uint64) string {
	return filepath.Join(g.pinPath, netnsDir, strconv.FormatUint(netns, 10))
}

func (g *Guard) ifaceDir(netns uint64, ifindex int) string {
	return filepath.Join(g.netnsPath(netns), strconv.Itoa(ifindex))
}

// entry is one interface's pinned state: where it is and whose it is.
type entry struct {
	netns   uint64 // 0: the layout before netns/, namespace not known yet
	ifindex int
	dir     string
}

// listIfindexes lists the numeric subdirectories of dir, ascending.
func listIfindexes(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list attached interfaces: %w", err)
	}
	var out []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// entriesIn lists one namespace's interfaces with state, by ifindex.
func (g *Guard) entriesIn(netns uint64) ([]entry, error) {
	idxs, err := listIfindexes(g.netnsPath(netns))
	if err != nil {
		return nil, err
	}
	out := make([]entry, 0, len(idxs))
	for _, idx := range idxs {
		out = append(out, entry{netns: netns, ifindex: idx, dir: g.ifaceDir(netns, idx)})
	}
	return out, nil
}

// allEntries lists every namespace's interfaces with state, by namespace
// then ifindex, then any left in the old layout (netns 0).
func (g *Guard) allEntries() ([]entry, error) {
	dirs, err := os.ReadDir(filepath.Join(g.pinPath, netnsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var nss []uint64
	for _, d := range dirs {
		if n, err := strconv.ParseUint(d.Name(), 10, 64); err == nil && d.IsDir() {
			nss = append(nss, n)
		}
	}
	slices.Sort(nss)
	var out []entry
	for _, ns := range nss {
		es, err := g.entriesIn(ns)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	old, err := listIfindexes(filepath.Join(g.pinPath, oldIfacesDir))
	if err != nil {
		return nil, err
	}
	for _, idx := range old {
		out = append(out, entry{ifindex: idx, dir: filepath.Join(g.pinPath, oldIfacesDir, strconv.Itoa(idx))})
	}
	return out, nil
}

// removeIfUnused removes the shared state when no namespace has an
// interface attached. Entries whose XDP link is defunct (their interface, or
// its namespace, is gone) protect nothing and are removed first. Detach
// calls it; so does a failed Apply that created the state (rollback). The
// Guard must be closed afterwards.
func (g *Guard) removeIfUnused() error {
	es, err := g.allEntries()
	if err != nil {
		return err
	}
	live := 0
	for _, e := range es {
		if defunct, err := entryDefunct(e.dir); err == nil && defunct {
			if err := removeDefunct(e); err != nil {
				return err
			}
			continue
		}
		live++
	}
	if live > 0 {
		return nil
	}
	return g.removeShared()
}

// RemoveIfUnused removes the shared maps (config, allow lists, fragment
// table) and the pin directory when no network namespace has an interface
// attached any more: the last detach leaves nothing behind. Close the Guard
// afterwards; it reports whether it removed them.
func (g *Guard) RemoveIfUnused() (bool, error) {
	if err := g.removeIfUnused(); err != nil {
		return false, err
	}
	_, err := os.Stat(filepath.Join(g.pinPath, pinConfig))
	return errors.Is(err, os.ErrNotExist), nil
}

func (g *Guard) removeShared() error {
	var errs []error
	for _, name := range []string{pinConfig, pinConfigLegacy, pinAllow4, pinAllow6, pinAllow4Blk, pinAllow6Blk, pinFrags4, pinFrags6, pinFragsOld,
		pinFragCache4, pinFragCache6, pinReq4, pinReq6, pinExpiry, pinMeta, pinSamples, pinSampleRate, pinSampleBudget, sampleReaderDir} {
		if err := os.Remove(filepath.Join(g.pinPath, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Empty namespace directories, then the roots; a directory that still
	// holds something makes Remove fail, which is reported.
	if dirs, err := os.ReadDir(filepath.Join(g.pinPath, netnsDir)); err == nil {
		for _, d := range dirs {
			if err := os.Remove(filepath.Join(g.pinPath, netnsDir, d.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, dir := range []string{netnsDir, oldIfacesDir} {
		if err := os.Remove(filepath.Join(g.pinPath, dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(g.pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	forgetAllow(g.pinPath)
	g.removed = true
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove %s: %w", g.pinPath, err)
	}
	return nil
}
