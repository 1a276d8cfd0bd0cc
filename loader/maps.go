package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Maps are the maps every attached program shares: a change to them reaches
// all interfaces at once, with no re-attach.
type Maps struct {
	Config *ebpf.Map // one slot: mode, fragment policy, port bitmap
	Allow4 *ebpf.Map // LPM trie of trusted IPv4 peers
	Allow6 *ebpf.Map // LPM trie of trusted IPv6 peers
	Frags  *ebpf.Map // LRU of first-fragment verdicts
	// Sampling (bpf/sample.h): the ring buffer of drop samples, the
	// budget in samples per second per CPU, and each CPU's token bucket.
	Samples       *ebpf.Map
	SampleRateMap *ebpf.Map
	SampleBudget  *ebpf.Map
}

// MapSizes overrides map sizes at creation; zero keeps the compiled default.
type MapSizes struct {
	AllowEntries uint32 // per family
	FragEntries  uint32
}

// specs returns a fresh copy of the compiled specs, so callers may edit it.
func specs() (*ebpf.CollectionSpec, *xdpguardSpecs, error) {
	spec, err := loadXdpguard()
	if err != nil {
		return nil, nil, err
	}
	var s xdpguardSpecs
	if err := spec.Assign(&s); err != nil {
		return nil, nil, fmt.Errorf("assign specs: %w", err)
	}
	return spec, &s, nil
}

// NewMaps creates unpinned shared maps holding DefaultConfig. Tests and
// benchmarks use it; Open creates pinned ones.
func NewMaps(sizes MapSizes) (*Maps, error) {
	if err := removeMemlock(); err != nil {
		return nil, err
	}
	_, s, err := specs()
	if err != nil {
		return nil, err
	}
	applySizes(s, sizes)
	m, err := createMaps(s, nil)
	if err != nil {
		return nil, err
	}
	if err := m.SetSampleRate(DefaultSampleRate); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.WriteConfig(DefaultConfig()); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func applySizes(s *xdpguardSpecs, sizes MapSizes) {
	if sizes.AllowEntries != 0 {
		s.XdpguardAllow4.MaxEntries = sizes.AllowEntries
		s.XdpguardAllow6.MaxEntries = sizes.AllowEntries
	}
	if sizes.FragEntries != 0 {
		s.XdpguardFrags.MaxEntries = sizes.FragEntries
	}
}

// createMaps creates the shared maps; open, when not nil, is tried first for
// each (it returns a pinned map, or os.ErrNotExist).
func createMaps(s *xdpguardSpecs, open func(*ebpf.MapSpec) (*ebpf.Map, error)) (_ *Maps, err error) {
	// Not the named result: a failing return sets that to nil, and what
	// was opened so far must still be closed.
	m := &Maps{}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	for _, p := range []struct {
		dst  **ebpf.Map
		spec *ebpf.MapSpec
	}{
		{&m.Config, s.XdpguardConfig},
		{&m.Allow4, s.XdpguardAllow4},
		{&m.Allow6, s.XdpguardAllow6},
		{&m.Frags, s.XdpguardFrags},
		{&m.Samples, s.XdpguardRing},
		{&m.SampleRateMap, s.XdpguardSrate},
		{&m.SampleBudget, s.XdpguardTokens},
	} {
		if open != nil {
			if *p.dst, err = open(p.spec); err != nil {
				return nil, err
			}
			if *p.dst != nil {
				continue
			}
		}
		if *p.dst, err = ebpf.NewMap(p.spec); err != nil {
			return nil, fmt.Errorf("create map %s: %w", p.spec.Name, err)
		}
	}
	return m, nil
}

// Close releases the file descriptors; pinned maps live on.
func (m *Maps) Close() error {
	var errs []error
	for _, mp := range []*ebpf.Map{m.Config, m.Allow4, m.Allow6, m.Frags, m.Samples, m.SampleRateMap, m.SampleBudget} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

func (m *Maps) replacements() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		xdpguardMapXdpguardConfig: m.Config,
		xdpguardMapXdpguardAllow4: m.Allow4,
		xdpguardMapXdpguardAllow6: m.Allow6,
		xdpguardMapXdpguardFrags:  m.Frags,

		xdpguardMapXdpguardRing:   m.Samples,
		xdpguardMapXdpguardSrate:  m.SampleRateMap,
		xdpguardMapXdpguardTokens: m.SampleBudget,
	}
}

func (m *Maps) readRaw() (xdpguardConfig, error) {
	var raw xdpguardConfig
	if err := m.Config.Lookup(uint32(0), &raw); err != nil {
		return raw, fmt.Errorf("read config: %w", err)
	}
	return raw, nil
}

func (m *Maps) writeRaw(raw *xdpguardConfig) error {
	if err := m.Config.Update(uint32(0), raw, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// ReadConfig returns the live configuration.
func (m *Maps) ReadConfig() (Config, error) {
	raw, err := m.readRaw()
	if err != nil {
		return Config{}, err
	}
	return Config{
		Mode:       Mode(raw.Mode),
		FragPolicy: FragPolicy(raw.FragPolicy),
		Ports:      portsFromBitmap(&raw.Ports),
	}, nil
}

// WriteConfig replaces mode, fragment policy and ports in one map update.
// The allow-list switches are kept as they are. Words of the port bitmap that
// do not change are rewritten with their own value, so no protected port is
// ever seen unprotected by a concurrent reader.
func (m *Maps) WriteConfig(c Config) error {
	raw, err := m.readRaw()
	if err != nil {
		return err
	}
	raw.Mode = xdpguardMode(c.Mode)
	raw.FragPolicy = xdpguardFragPolicy(c.FragPolicy)
	raw.Ports = portBitmap(c.Ports)
	return m.writeRaw(&raw)
}

// UpdateConfig applies fn to the live configuration and writes it back.
// Callers serialise writers (Guard holds a lock file).
func (m *Maps) UpdateConfig(fn func(*Config) error) error {
	c, err := m.ReadConfig()
	if err != nil {
		return err
	}
	if err := fn(&c); err != nil {
		return err
	}
	return m.WriteConfig(c)
}

// setAllowActive turns the lookup of one family's allow list on or off.
func (m *Maps) setAllowActive(v6 bool, active bool) error {
	raw, err := m.readRaw()
	if err != nil {
		return err
	}
	var v uint32
	if active {
		v = 1
	}
	if v6 {
		raw.Allow6Active = v
	} else {
		raw.Allow4Active = v
	}
	return m.writeRaw(&raw)
}

// AllowActive reports whether each family's allow list is consulted.
func (m *Maps) AllowActive() (v4, v6 bool, err error) {
	raw, err := m.readRaw()
	if err != nil {
		return false, false, err
	}
	return raw.Allow4Active != 0, raw.Allow6Active != 0, nil
}

// ClearFrags empties the fragment table (tests reset state between frames).
func (m *Maps) ClearFrags() error {
	var key xdpguardFragKey
	var keys []xdpguardFragKey
	it := m.Frags.Iterate()
	var v xdpguardFragVerdict
	for it.Next(&key, &v) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate fragment table: %w", err)
	}
	for _, k := range keys {
		if err := m.Frags.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear fragment table: %w", err)
		}
	}
	return nil
}
