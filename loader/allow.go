package loader

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

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
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	text := string(data)
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

// AllowAdd inserts prefixes, then turns on the lookup of each family that
// has entries: a packet never sees the switch on with the entry missing in a
// way that lets it pass (an empty trie only fails to allow).
//
// Prefixes go in sorted by address: each insert then walks the trie along
// nearly the same path as the one before, in cache. For 1M random IPv4
// prefixes that halves the kernel's time (2.2 s to 1.1 s, measured side by
// side on the benchmark machine).
func (m *Maps) AllowAdd(ps []netip.Prefix) error {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, comparePrefix)
	v4, v6 := splitFamilies(ps)
	if len(v4) > 0 {
		if err := batchUpdate(m.Allow4, v4); err != nil {
			return fmt.Errorf("add IPv4 allow entries: %w", err)
		}
		if err := m.setAllowActive(false, true); err != nil {
			return err
		}
	}
	if len(v6) > 0 {
		if err := batchUpdate(m.Allow6, v6); err != nil {
			return fmt.Errorf("add IPv6 allow entries: %w", err)
		}
		if err := m.setAllowActive(true, true); err != nil {
			return err
		}
	}
	return nil
}

// ErrNotAllowed is returned when deleting a prefix that is not on the list.
var ErrNotAllowed = errors.New("not on the allow list")

// AllowDel removes prefixes; a family left empty is no longer consulted.
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
	var out []netip.Prefix
	var k4 xdpguardLpmV4Key
	var v uint8
	it := m.Allow4.Iterate()
	for it.Next(&k4, &v) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(k4.Addr), int(k4.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv4 allow entries: %w", err)
	}
	var k6 xdpguardLpmV6Key
	it = m.Allow6.Iterate()
	for it.Next(&k6, &v) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom16(k6.Addr), int(k6.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv6 allow entries: %w", err)
	}
	slices.SortFunc(out, comparePrefix)
	return out, nil
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
	return nil
}
