package loader

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Maps are the maps every attached program shares: a change to them reaches
// all interfaces at once, with no re-attach.
type Maps struct {
	Config *ebpf.Map // one slot: mode, fragment policy, port bitmap
	Allow4 *ebpf.Map // LPM trie of trusted IPv4 peers
	Allow6 *ebpf.Map // LPM trie of trusted IPv6 peers
	// Bitmaps of the /24 blocks (IPv4 and IPv6) the tries touch: the
	// data plane walks a trie only where its block's bit is set.
	Allow4Blocks *ebpf.Map
	Allow6Blocks *ebpf.Map
	Frags4       *ebpf.Map // LRU of IPv4 first-fragment verdicts
	Frags6       *ebpf.Map // LRU of IPv6 first-fragment verdicts
	// Caches of Frags4 and Frags6 in front of them (an array slot per
	// hash of the key): later fragments look there first.
	FragCache4 *ebpf.Map
	FragCache6 *ebpf.Map
	// Requests sent to response ports (LRU per family), and per port the
	// seconds a request awaits its reply.
	Req4   *ebpf.Map
	Req6   *ebpf.Map
	Expiry *ebpf.Map
	// LegacyConfig is the config map of a release before directions,
	// upgraded in place (configmap.go): programs of that release still
	// attached read it, so every config write goes to it too. nil when
	// there is none.
	LegacyConfig *ebpf.Map
	// Sampling (bpf/sample.h): the ring buffer of drop samples, the
	// budget in samples per second per CPU, and each CPU's token bucket.
	Samples       *ebpf.Map
	SampleRateMap *ebpf.Map
	SampleBudget  *ebpf.Map
}

// MapSizes overrides map sizes at creation; zero keeps the compiled default.
type MapSizes struct {
	AllowEntries   uint32 // per family
	FragEntries    uint32
	RequestEntries uint32 // per family: requests awaiting a reply
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
		s.XdpguardFrags4.MaxEntries = sizes.FragEntries
		s.XdpguardFrags6.MaxEntries = sizes.FragEntries
	}
	if sizes.RequestEntries != 0 {
		s.XdpguardReq4.MaxEntries = sizes.RequestEntries
		s.XdpguardReq6.MaxEntries = sizes.RequestEntries
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
		{&m.Allow4Blocks, s.XdpguardBlk4},
		{&m.Allow6Blocks, s.XdpguardBlk6},
		{&m.Frags4, s.XdpguardFrags4},
		{&m.Frags6, s.XdpguardFrags6},
		{&m.FragCache4, s.XdpguardFc4},
		{&m.FragCache6, s.XdpguardFc6},
		{&m.Req4, s.XdpguardReq4},
		{&m.Req6, s.XdpguardReq6},
		{&m.Expiry, s.XdpguardExpiry},
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
	for _, mp := range m.all() {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

func (m *Maps) all() []*ebpf.Map {
	return []*ebpf.Map{m.Config, m.Allow4, m.Allow6, m.Allow4Blocks, m.Allow6Blocks, m.Frags4, m.Frags6,
		m.FragCache4, m.FragCache6, m.Req4, m.Req6, m.Expiry, m.LegacyConfig, m.Samples, m.SampleRateMap, m.SampleBudget}
}

func (m *Maps) replacements() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		xdpguardMapXdpguardConfig: m.Config,
		xdpguardMapXdpguardAllow4: m.Allow4,
		xdpguardMapXdpguardAllow6: m.Allow6,
		xdpguardMapXdpguardBlk4:   m.Allow4Blocks,
		xdpguardMapXdpguardBlk6:   m.Allow6Blocks,
		xdpguardMapXdpguardFrags4: m.Frags4,
		xdpguardMapXdpguardFrags6: m.Frags6,
		xdpguardMapXdpguardFc4:    m.FragCache4,
		xdpguardMapXdpguardFc6:    m.FragCache6,
		xdpguardMapXdpguardReq4:   m.Req4,
		xdpguardMapXdpguardReq6:   m.Req6,
		xdpguardMapXdpguardExpiry: m.Expiry,
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

// writeRaw writes the config, then, where programs of a release before
// directions are still attached, its translation into their layout.
func (m *Maps) writeRaw(raw *xdpguardConfig) error {
	if err := m.Config.Update(uint32(0), raw, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if m.LegacyConfig != nil {
		old := legacyFromConfig(raw)
		if err := m.LegacyConfig.Update(uint32(0), &old, ebpf.UpdateExist); err != nil {
			return fmt.Errorf("write the config of the release before directions: %w", err)
		}
	}
	return nil
}

// ReadConfig returns the live configuration.
func (m *Maps) ReadConfig() (Config, error) {
	raw, err := m.readRaw()
	if err != nil {
		return Config{}, err
	}
	var expiryErr error
	ports := portsFromBitmaps(&raw.RequestPorts, &raw.ResponsePorts, func(port uint16) time.Duration {
		var sec uint32
		if err := m.Expiry.Lookup(uint32(port), &sec); err != nil {
			expiryErr = fmt.Errorf("read the expiry of port %d: %w", port, err)
		}
		return time.Duration(sec) * time.Second
	})
	if expiryErr != nil {
		return Config{}, expiryErr
	}
	return Config{
		Mode:       Mode(raw.Mode),
		FragPolicy: FragPolicy(raw.FragPolicy),
		Ports:      ports,
	}, nil
}

// WriteConfig replaces mode, fragment policy and ports in one map update.
// The allow-list switches are kept as they are. Words of the port bitmaps
// that do not change are rewritten with their own value, so no protected
// port is ever seen unprotected by a concurrent reader. The expiries of
// response ports are written first: a port becomes a response port with its
// own expiry already in place.
func (m *Maps) WriteConfig(c Config) error {
	ports, err := normalisePorts(c.Ports)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if p.Direction != DirResponse {
			continue
		}
		if err := m.Expiry.Update(uint32(p.Number), uint32(p.Expiry/time.Second), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write the expiry of port %d: %w", p.Number, err)
		}
	}
	raw, err := m.readRaw()
	if err != nil {
		return err
	}
	raw.Mode = xdpguardMode(c.Mode)
	raw.FragPolicy = xdpguardFragPolicy(c.FragPolicy)
	raw.RequestPorts, raw.ResponsePorts = portBitmaps(ports)
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

// ClearRequests empties the request tables (tests reset state between
// frames).
func (m *Maps) ClearRequests() error {
	if err := clearMapOf[xdpguardReq4Key, uint64](m.Req4); err != nil {
		return fmt.Errorf("clear IPv4 request table: %w", err)
	}
	if err := clearMapOf[xdpguardReq6Key, uint64](m.Req6); err != nil {
		return fmt.Errorf("clear IPv6 request table: %w", err)
	}
	return nil
}

// ClearFrags empties the fragment tables and their caches (tests reset
// state between frames).
func (m *Maps) ClearFrags() error {
	if err := clearMap[xdpguardFrag4Key](m.Frags4); err != nil {
		return fmt.Errorf("clear IPv4 fragment table: %w", err)
	}
	if err := clearMap[xdpguardFrag6Key](m.Frags6); err != nil {
		return fmt.Errorf("clear IPv6 fragment table: %w", err)
	}
	return m.ClearFragCaches()
}

// ClearFragCaches empties the fragment tables' caches: every slot zero,
// which matches no key. Always safe: a lookup the cache cannot answer asks
// the table, and a slot caught half zeroed fails its tag check.
func (m *Maps) ClearFragCaches() error {
	for _, c := range []struct {
		mp   *ebpf.Map
		name string
	}{{m.FragCache4, "IPv4"}, {m.FragCache6, "IPv6"}} {
		if err := zeroMapped(c.mp); err != nil {
			return fmt.Errorf("clear %s fragment cache: %w", c.name, err)
		}
	}
	return nil
}

// zeroMapped zeroes a memory-mapped (BPF_F_MMAPABLE) array in place: a
// batch update of its 16,384 slots, once per test frame, was most of the
// table tests' time in an emulated guest.
func zeroMapped(mp *ebpf.Map) error {
	mem, err := mp.Memory()
	if err != nil {
		return err
	}
	_, err = mem.WriteAt(make([]byte, mem.Size()), 0)
	return err
}

func clearMap[K any](mp *ebpf.Map) error { return clearMapOf[K, xdpguardFragVerdict](mp) }

func clearMapOf[K, V any](mp *ebpf.Map) error {
	var key K
	var keys []K
	var v V
	it := mp.Iterate()
	for it.Next(&key, &v) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if err := mp.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}
