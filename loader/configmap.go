package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// legacyConfig is the config value of every release before port directions
// (testdata/v0, testdata/v1, and main before issue 12): one port bitmap,
// whose ports were dropped both ways.
type legacyConfig struct {
	Mode         uint32
	FragPolicy   uint32
	Allow4Active uint32
	Allow6Active uint32
	Ports        portBits
}

// legacyConfigSize is the value size of that layout's config map.
const legacyConfigSize = 16 + 8*len(portBits{})

// pinConfigLegacy is where the config map of the release before directions
// stays pinned after the upgrade, for as long as this pin path lives:
// programs of that release attached in namespaces xdpguard has not run in
// since still read it, and every write of the config goes to it as well.
const pinConfigLegacy = "config_nodir"

// isLegacyConfig reports whether mp is a config map of the layout before
// directions.
func isLegacyConfig(mp *ebpf.Map) bool {
	return mp.Type() == ebpf.Array && mp.KeySize() == 4 && mp.ValueSize() == uint32(legacyConfigSize) && mp.MaxEntries() == 1
}

// configFromLegacy is the config a legacy one means: its ports in both
// directions, which is what its programs did with them.
func configFromLegacy(old *legacyConfig) xdpguardConfig {
	return xdpguardConfig{
		Mode:          xdpguardMode(old.Mode),
		FragPolicy:    xdpguardFragPolicy(old.FragPolicy),
		Allow4Active:  old.Allow4Active,
		Allow6Active:  old.Allow6Active,
		RequestPorts:  old.Ports,
		ResponsePorts: old.Ports,
	}
}

// legacyFromConfig is what programs of the release before directions are
// given to read: every protected port, whatever its direction, since they
// can only drop both ways. A response port is then closed to its replies on
// those interfaces until they are upgraded (attach): more is dropped, never
// less.
func legacyFromConfig(raw *xdpguardConfig) legacyConfig {
	old := legacyConfig{
		Mode:         uint32(raw.Mode),
		FragPolicy:   uint32(raw.FragPolicy),
		Allow4Active: raw.Allow4Active,
		Allow6Active: raw.Allow6Active,
	}
	for i := range old.Ports {
		old.Ports[i] = raw.RequestPorts[i] | raw.ResponsePorts[i]
	}
	return old
}

// upgradeConfigPin replaces the pinned config map at path, of the layout
// before directions (old), by a new map of spec's layout holding the same
// configuration, its ports in both directions. With pin (a writer holding
// the lock), the old map is first pinned at pinConfigLegacy beside it, then
// the new one renamed over path: bpffs renames atomically, so path always
// names a config map, and the programs still attached keep reading the old
// one, which writeRaw keeps in step. No program changes what it drops: the
// ones attached read the old map as before; the new programs that attach
// swaps in read the new one, which says the same. Without pin (a reader),
// the new map stays unpinned. It returns the new map; old is returned as
// the legacy map to keep writing (closed by the caller on error).
func upgradeConfigPin(dir string, spec *ebpf.MapSpec, old *ebpf.Map, pin bool) (*ebpf.Map, error) {
	var raw legacyConfig
	if err := old.Lookup(uint32(0), &raw); err != nil {
		return nil, fmt.Errorf("read the config of the release before directions: %w", err)
	}
	next, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create the config map of port directions: %w", err)
	}
	cfg := configFromLegacy(&raw)
	if err := next.Update(uint32(0), &cfg, ebpf.UpdateExist); err != nil {
		next.Close()
		return nil, fmt.Errorf("fill the config map of port directions: %w", err)
	}
	if !pin {
		return next, nil
	}
	legacyPath := filepath.Join(dir, pinConfigLegacy)
	// Left by a crash after this step: the map at path is still the old
	// one (the rename had not happened), so pin it again.
	if err := os.Remove(legacyPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		next.Close()
		return nil, fmt.Errorf("upgrade config: %w", err)
	}
	if err := old.Pin(legacyPath); err != nil {
		next.Close()
		return nil, fmt.Errorf("upgrade config: keep the old config pinned: %w", err)
	}
	path := filepath.Join(dir, pinConfig)
	tmp := path + "_new"
	_ = os.Remove(tmp) // left by a crash mid-upgrade
	if err := next.Pin(tmp); err != nil {
		next.Close()
		return nil, fmt.Errorf("upgrade config: pin the new config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		next.Unpin()
		next.Close()
		return nil, fmt.Errorf("upgrade config: replace %s: %w", path, err)
	}
	return next, nil
}

// openLegacyConfig opens the config map of the release before directions
// kept pinned after an upgrade; nil when there is none.
func openLegacyConfig(dir string) (*ebpf.Map, error) {
	mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinConfigLegacy), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", pinConfigLegacy, err)
	}
	if !isLegacyConfig(mp) {
		mp.Close()
		return nil, fmt.Errorf("%s: %w: run `xdpguard detach --all`, then attach again", filepath.Join(dir, pinConfigLegacy), ErrIncompatible)
	}
	return mp, nil
}
