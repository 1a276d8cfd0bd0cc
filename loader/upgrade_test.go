package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// ifindexLayoutObject is the data plane of the release whose pinned layout
// was <pin>/ifaces/<ifindex>/ (git show main:loader/xdpguard_bpfel.o at the
// time; the data-plane branch adds the same file for its own upgrade test).
const ifindexLayoutObject = "testdata/v0/xdpguard_bpfel.o"

// attachV0 does what that release's attach did, with its own object: the
// shared maps pinned under pin (made on first use, holding its default
// config), and for ifname in ns the counters and the XDP link pinned under
// <pin>/ifaces/<ifindex>/, and the egress program as v0Egress attaches it.
// It returns the XDP link's id.
func attachV0(t *testing.T, ns *nstest.NS, pin, ifname string, egress TCBackend, allow ...netip.Prefix) link.ID {
	t.Helper()
	return attachObject(t, ifindexLayoutObject, func(_ uint64, ifindex int) string {
		return filepath.Join(pin, oldIfacesDir, strconv.Itoa(ifindex))
	}, ns, pin, ifname, egress, allow...)
}

// attachObject attaches as attachV0 does, with the object obj and the
// interface's pins in dirOf(its namespace's inode, its ifindex).
func attachObject(t *testing.T, obj string, dirOf func(netns uint64, ifindex int) string,
	ns *nstest.NS, pin, ifname string, egress TCBackend, allow ...netip.Prefix) link.ID {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	var id link.ID
	err = ns.Do(func() error {
		l, err := ns.Link(ifname)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(pin, 0o700); err != nil {
			return err
		}
		repl := map[string]*ebpf.Map{}
		for name, file := range map[string]string{"xdpguard_config": pinConfig, "xdpguard_allow4": pinAllow4, "xdpguard_allow6": pinAllow6, "xdpguard_frags": pinFragsOld} {
			path := filepath.Join(pin, file)
			m, err := ebpf.LoadPinnedMap(path, nil)
			if errors.Is(err, os.ErrNotExist) {
				if m, err = ebpf.NewMap(spec.Maps[name]); err != nil {
					return err
				}
				if name == "xdpguard_config" {
					// Its default: enforce, track, port 11211.
					raw := make([]byte, spec.Maps[name].ValueSize)
					binary.NativeEndian.PutUint64(raw[16+8*(DefaultPort/64):], 1<<(DefaultPort%64))
					if err := m.Put(uint32(0), raw); err != nil {
						return err
					}
				}
				if err := m.Pin(path); err != nil {
					return err
				}
			}
			if err != nil {
				return err
			}
			defer m.Close()
			repl[name] = m
		}
		for _, p := range allow {
			var err error
			if p.Addr().Is4() {
				err = repl["xdpguard_allow4"].Put(v4Key(p), uint8(1))
			} else {
				err = repl["xdpguard_allow6"].Put(v6Key(p), uint8(1))
			}
			if err != nil {
				return err
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			return err
		}
		defer coll.Close()
		netns, err := CurrentNetns()
		if err != nil {
			return err
		}
		dir := dirOf(netns, l.Attrs().Index)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := coll.Maps["xdpguard_stats"].Pin(filepath.Join(dir, pinStats)); err != nil {
			return err
		}
		xl, err := link.AttachXDP(link.XDPOptions{Program: coll.Programs["xdpguard_xdp"], Interface: l.Attrs().Index})
		if err != nil {
			return err
		}
		defer xl.Close()
		if err := xl.Pin(filepath.Join(dir, pinXDPLink)); err != nil {
			return err
		}
		info, err := xl.Info()
		if err != nil {
			return err
		}
		id = info.ID
		return v0Egress(l, dir, coll.Programs["xdpguard_tc"], egress)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// xdpLinkID is the id of the XDP link pinned for ifname in r's namespace.
func (r *rig) xdpLinkID(t *testing.T, ifname string) link.ID {
	t.Helper()
	l, err := r.host.Link(ifname)
	if err != nil {
		t.Fatal(err)
	}
	ns := netnsOf(t, r.host)
	xl, err := link.LoadPinnedLink(filepath.Join(r.pin, netnsDir, strconv.FormatUint(ns, 10), strconv.Itoa(l.Attrs().Index), pinXDPLink), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer xl.Close()
	info, err := xl.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// TestUpgradeFromIfindexLayout: a host running the release that pinned
// <pin>/ifaces/<ifindex> upgrades by attach with no gap: the very links that
// were attached stay attached (moved, not re-made), counters and allow list
// are kept, and the allow-list counts are set up once. Entries of another
// namespace stay until xdpguard runs there, which then upgrades them too.
// A's egress is each layout the old release may have left on this kernel.
func TestUpgradeFromIfindexLayout(t *testing.T) {
	for _, backend := range egressBackends(t) {
		t.Run(string(backend), func(t *testing.T) { testUpgradeFromIfindexLayout(t, backend) })
	}
}

func testUpgradeFromIfindexLayout(t *testing.T, backend TCBackend) {
	a, b := newRig(t), newRig(t)
	b.pin = a.pin
	nstest.Veth(t, b.peer, "xg2", b.host, "xg3", 0)
	allow := mustPrefixes("203.0.113.0/24", "198.51.100.128/25", "2001:db8::/48")
	linkA := attachV0(t, a.host, a.pin, rigHostIf, backend, allow...)
	linkB := attachV0(t, b.host, b.pin, "xg3", "")
	progA := a.xdpProgID(t)
	a.send(t, request(t, attacker))
	a.expectCountersV0(t, 1)

	// Status from A before any upgrade: A's and B's entries, namespace
	// unknown (it is read-only: nothing moves).
	var atts []Attachment
	err := a.host.Do(func() error {
		g, err := OpenReadOnly(a.pin)
		if err != nil {
			return err
		}
		defer g.Close()
		atts, err = g.Attachments()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 3 || atts[0].Netns != 0 {
		t.Fatalf("status of the old layout: %+v, want 3 attachments of unknown namespace", atts)
	}
	// stats of a new binary reads A's counters before any upgrade.
	err = a.host.Do(func() error {
		g, err := OpenReadOnly(a.pin)
		if err != nil {
			return err
		}
		defer g.Close()
		st, err := g.Stats(rigHostIf)
		if err == nil && (len(st) != 2 || st[0].Counters[ReasonDropRequest.String()].Packets != 1) {
			err = fmt.Errorf("stats on the old layout: %+v, want xg1's xdp and tc with 1 drop_request", st)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	res := a.attach(t, AttachOptions{Egress: true})
	if res.Action != "unchanged" && res.Action != "replaced" {
		t.Fatalf("upgrade attach: %+v", res)
	}
	if got := a.xdpLinkID(t, rigHostIf); got != linkA {
		t.Fatalf("the upgrade re-made A's XDP link (%d, was %d): a gap", got, linkA)
	}
	if res.Action == "unchanged" && a.xdpProgID(t) != progA {
		t.Fatalf("unchanged, but A's program went from %d to %d", progA, a.xdpProgID(t))
	}
	if res.Egress != string(backend) || a.egressCount(t) != 1 {
		t.Fatalf("A's egress after the upgrade: %q, %d programs; want the old %s kept, one program", res.Egress, a.egressCount(t), backend)
	}
	if _, err := os.Stat(filepath.Join(a.pin, oldIfacesDir)); err != nil {
		t.Fatalf("B's old entry went before B upgraded: %v", err)
	}
	a.send(t, request(t, attacker))
	a.expectCountersV0(t, 2) // the counters lived on

	var v4, v6 int
	a.do(t, func(g *Guard) (err error) {
		v4, v6, err = g.AllowCounts()
		if err == nil {
			atts, err = g.Attachments()
		}
		return err
	})
	if v4 != 2 || v6 != 1 {
		t.Fatalf("allow-list counts after the upgrade: %d IPv4, %d IPv6, want 2 and 1", v4, v6)
	}
	nsA := netnsOf(t, a.host)
	var sawB bool
	for _, at := range atts {
		if at.Interface == rigHostIf && at.Netns != nsA {
			t.Errorf("A's %s attachment in netns %d, want %d", at.Hook, at.Netns, nsA)
		}
		sawB = sawB || at.Netns == 0
	}
	if !sawB {
		t.Errorf("B's entry, not yet upgraded, is missing from status: %+v", atts)
	}

	// Detaching A's last interface keeps the state B's old entry uses.
	a.do(t, func(g *Guard) error { _, err := g.DetachAll(); return err })
	if _, err := os.Stat(filepath.Join(a.pin, pinConfig)); err != nil {
		t.Fatalf("the shared maps went while B (old layout) still uses them: %v", err)
	}

	// B upgrades by opening the state in its namespace.
	b.do(t, func(g *Guard) error { return nil })
	if got := b.xdpLinkID(t, "xg3"); got != linkB {
		t.Fatalf("B's XDP link is %d after the upgrade, was %d", got, linkB)
	}
	if _, err := os.Stat(filepath.Join(a.pin, oldIfacesDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old layout's directory remains after every entry moved: %v", err)
	}
	b.do(t, func(g *Guard) error { _, err := g.DetachAll(); return err })
	if _, err := os.Stat(a.pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the pin path remains after the last detach: %v", err)
	}
}

// expectCountersV0 waits for n drop_request packets on xg1's XDP hook,
// reading the pinned counters map wherever the layout keeps it.
func (r *rig) expectCountersV0(t *testing.T, n uint64) {
	t.Helper()
	l := r.hostLink(t)
	ns := netnsOf(t, r.host)
	nstest.Eventually(t, 5*time.Second, "drop_request counted", func() (bool, error) {
		for _, dir := range []string{
			filepath.Join(r.pin, oldIfacesDir, strconv.Itoa(l.Attrs().Index)),
			filepath.Join(r.pin, netnsDir, strconv.FormatUint(ns, 10), strconv.Itoa(l.Attrs().Index)),
		} {
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return false, err
			}
			st, err := ReadStats(m, nil)
			m.Close()
			if err != nil {
				return false, err
			}
			got := st[HookXDP][ReasonDropRequest].Packets
			if got > n {
				return false, errors.New("more drops counted than requests sent")
			}
			return got == n, nil
		}
		return false, nil
	})
}

// TestIncompatiblePinnedMapIsAnError: a pinned shared map whose layout this
// binary cannot use is refused with ErrIncompatible and the remedy, not a
// crash, and the pin path's lock is released for the next writer.
func TestIncompatiblePinnedMapIsAnError(t *testing.T) {
	nstest.RequireRoot(t)
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("xgtest-incompat-%d", time.Now().UnixNano()))
	if err := EnsureBPFFS(pin); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(pin, sharedPinMode); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pin) })
	// A config map of another layout: one slot, but an 8-byte value.
	bad, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Pin(filepath.Join(pin, pinConfig)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // twice: the first Open must have let go of the lock
		_, err := Open(pin, true)
		if !errors.Is(err, ErrIncompatible) {
			t.Fatalf("open %d over an incompatible config map: %v, want ErrIncompatible", i, err)
		}
	}
}
