package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
)

// The pin path holds the shared maps and, under ifaces/<ifindex>, what one
// attach made for one interface:
//
//	<pin>/config  allow4  allow6  frags
//	<pin>/ifaces/<ifindex>/stats  xdp_link  [tc_link | tc_legacy/]
const (
	pinConfig     = "config"
	pinAllow4     = "allow4"
	pinAllow6     = "allow6"
	pinFrags      = "frags"
	ifacesDir     = "ifaces"
	pinStats      = "stats"
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
	// created records that this Guard made the shared state: if nothing
	// ends up attached, Close's caller can undo it with removeIfUnused.
	created bool
}

// Open opens the state under pinPath to change it, holding the pin path's
// lock until Close. With create, missing state is made (bpffs mounted if
// needed, maps created holding DefaultConfig and pinned); without it,
// missing state is ErrNotSetUp.
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
		if g.lock, err = lockDir(pinPath); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				g.lock.Close()
			}
		}()
	}
	if g.Maps, g.created, err = g.openMaps(create); err != nil {
		if g.created || !exists {
			g.removeShared()
		}
		return nil, err
	}
	return g, nil
}

// openMaps opens the pinned shared maps, creating and pinning missing ones
// when create is set. It reports whether it created any.
func (g *Guard) openMaps(create bool) (m *Maps, created bool, err error) {
	_, s, err := specs()
	if err != nil {
		return nil, false, err
	}
	paths := map[*ebpf.MapSpec]string{
		s.XdpguardConfig: pinConfig,
		s.XdpguardAllow4: pinAllow4,
		s.XdpguardAllow6: pinAllow6,
		s.XdpguardFrags:  pinFrags,
	}
	open := func(spec *ebpf.MapSpec) (*ebpf.Map, error) {
		path := filepath.Join(g.pinPath, paths[spec])
		mp, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			if !create {
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
		if spec == s.XdpguardFrags { // a cache: an older layout is replaced in place
			return openFragsPin(path, want, mp, create)
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
	if len(missing) == 0 {
		return m, false, nil
	}
	// Initialise the config before pinning it: an attached program must
	// never read an all-zero port bitmap.
	if missing[pinConfig] {
		if err := m.WriteConfig(DefaultConfig()); err != nil {
			m.Close()
			return nil, true, err
		}
	}
	byName := map[string]*ebpf.Map{pinConfig: m.Config, pinAllow4: m.Allow4, pinAllow6: m.Allow6, pinFrags: m.Frags}
	for name := range missing {
		if err := byName[name].Pin(filepath.Join(g.pinPath, name)); err != nil {
			m.Close()
			return nil, true, fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return m, true, nil
}

// Close releases the lock and descriptors; pinned state lives on.
func (g *Guard) Close() error {
	var errs []error
	if g.Maps != nil {
		errs = append(errs, g.Maps.Close())
	}
	if g.lock != nil {
		errs = append(errs, g.lock.Close())
	}
	return errors.Join(errs...)
}

// PinPath is where the state lives.
func (g *Guard) PinPath() string { return g.pinPath }

func (g *Guard) ifaceDir(ifindex int) string {
	return filepath.Join(g.pinPath, ifacesDir, strconv.Itoa(ifindex))
}

// attachedIfindexes lists the interfaces with state, ascending.
func (g *Guard) attachedIfindexes() ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(g.pinPath, ifacesDir))
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

// removeIfUnused removes the shared state when no interface uses it.
// Detach calls it; so does a failed first attach (rollback).
func (g *Guard) removeIfUnused() error {
	ifs, err := g.attachedIfindexes()
	if err != nil {
		return err
	}
	if len(ifs) > 0 {
		return nil
	}
	return g.removeShared()
}

func (g *Guard) removeShared() error {
	var errs []error
	for _, name := range []string{pinConfig, pinAllow4, pinAllow6, pinFrags} {
		if err := os.Remove(filepath.Join(g.pinPath, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(filepath.Join(g.pinPath, ifacesDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.Remove(g.pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove %s: %w", g.pinPath, err)
	}
	return nil
}
