package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// v0Object is the previous release's BPF object (testdata/v0/README.md).
const v0Object = "testdata/v0/xdpguard_bpfel.o"

// pinV0 sets up, under pin, what the previous release left pinned after
// `xdpguard attach <ifname> --egress`: its shared maps (the fragment table
// in the old layout), and per interface its counters, the XDP link and the
// egress program as v0Egress attaches it with egress. The paths are that
// release's, spelled out, as it wrote them. It returns the old fragment
// table's ID.
func pinV0(t *testing.T, ns *nstest.NS, pin, ifname string, egress TCBackend) ebpf.MapID {
	t.Helper()
	var fragsID ebpf.MapID
	err := ns.Do(func() error {
		if err := EnsureBPFFS(pin); err != nil {
			return err
		}
		spec, err := ebpf.LoadCollectionSpec(v0Object)
		if err != nil {
			return err
		}
		shared := map[string]string{
			"xdpguard_config": "config", "xdpguard_allow4": "allow4",
			"xdpguard_allow6": "allow6", "xdpguard_frags": "frags",
		}
		if err := os.MkdirAll(pin, 0o700); err != nil {
			return err
		}
		repl, release, err := pinOldMaps(spec, pin, shared)
		if err != nil {
			return err
		}
		defer release()
		// Its default config: enforce, track, 11211.
		if err := editLegacyConfig(repl["xdpguard_config"], func(c *legacyConfig) {
			c.Ports[DefaultPort/64] |= 1 << (DefaultPort % 64)
		}); err != nil {
			return err
		}
		info, err := repl["xdpguard_frags"].Info()
		if err != nil {
			return err
		}
		fragsID, _ = info.ID()
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			return verifierError(err)
		}
		defer coll.Close()
		l, err := ns.Link(ifname)
		if err != nil {
			return err
		}
		dir := filepath.Join(pin, "ifaces", strconv.Itoa(l.Attrs().Index))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := coll.Maps["xdpguard_stats"].Pin(filepath.Join(dir, "stats")); err != nil {
			return err
		}
		xl, err := link.AttachXDP(link.XDPOptions{Program: coll.Programs["xdpguard_xdp"], Interface: l.Attrs().Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		defer xl.Close()
		if err := xl.Pin(filepath.Join(dir, "xdp_link")); err != nil {
			return err
		}
		return v0Egress(l, dir, coll.Programs["xdpguard_tc"], egress)
	})
	if err != nil {
		t.Fatalf("pin the previous release's state: %v", err)
	}
	return fragsID
}

// v0Egress attaches prog to l's egress, in the calling thread's namespace,
// as the previous release (f67e802, the <pin>/ifaces/<ifindex> layout) did,
// recording it under that interface's dir: with TCX a tcx link pinned at
// tc_link; with TCLegacy a cls_bpf filter (priority 0xc0de, handle 1) on a
// clsact qdisc's egress, recorded by the directory tc_legacy and, when it
// added the qdisc, tc_legacy/clsact_made. "" attaches nothing. Its literals
// are that release's, spelled out, not this one's constants.
func v0Egress(l netlink.Link, dir string, prog *ebpf.Program, backend TCBackend) error {
	switch backend {
	case "":
		return nil
	case TCX:
		tl, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		defer tl.Close()
		return tl.Pin(filepath.Join(dir, "tc_link"))
	case TCLegacy:
		made := true
		err := netlink.QdiscAdd(&netlink.GenericQdisc{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
			QdiscType:  "clsact",
		})
		if errors.Is(err, unix.EEXIST) {
			made, err = false, nil
		}
		if err != nil {
			return fmt.Errorf("add clsact qdisc: %w", err)
		}
		err = netlink.FilterReplace(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: l.Attrs().Index,
				Parent:    netlink.HANDLE_MIN_EGRESS,
				Handle:    1,
				Protocol:  unix.ETH_P_ALL,
				Priority:  0xc0de,
			},
			Fd:           prog.FD(),
			Name:         "xdpguard_tc",
			DirectAction: true,
		})
		if err != nil {
			return fmt.Errorf("add cls_bpf egress filter: %w", err)
		}
		if err := os.Mkdir(filepath.Join(dir, "tc_legacy"), 0o700); err != nil {
			return err
		}
		if made {
			return os.Mkdir(filepath.Join(dir, "tc_legacy", "clsact_made"), 0o700)
		}
		return nil
	}
	return fmt.Errorf("v0 egress backend %q", backend)
}

// egressBackends are the egress layouts an old release may have left on
// this kernel: what it has, and legacy too where the kernel has tcx, since
// every host without tcx (Debian 12's 6.1) runs legacy and CI must cover it.
func egressBackends(t *testing.T) []TCBackend {
	if b := kernelEgress(t); b == TCX {
		return []TCBackend{TCX, TCLegacy}
	}
	return []TCBackend{TCLegacy}
}

// An upgrade from the previous release, whose pinned fragment table has
// another layout, replaces the table in place and swaps the programs under a
// flood with no request getting through (issue 9, item 6). Today's main
// refused: "pinned state is from an incompatible xdpguard version". The old
// egress is each layout that release may have left on this kernel.
func TestUpgradeFromV0FragmentTable(t *testing.T) {
	for _, backend := range egressBackends(t) {
		t.Run(string(backend), func(t *testing.T) { testUpgradeFromV0FragmentTable(t, backend) })
	}
}

func testUpgradeFromV0FragmentTable(t *testing.T, backend TCBackend) {
	r := newRig(t)
	attack, delivered := r.deliveryOracle(t)

	oldFrags := pinV0(t, r.host, r.pin, rigHostIf, backend)
	oldProg := r.xdpProgID(t)
	// The old release protects. Read its counters and table through the
	// pins, not Open: the upgrade must happen in the attach below.
	r.send(t, attack)
	nstest.Eventually(t, 5*time.Second, "the old release's drop counted", func() (bool, error) {
		return v0Dropped(t, r) == 1, nil
	})
	// A reader of the new release (stats) works on the old state and
	// changes nothing: it takes no lock, so it must not replace pins.
	err := r.host.Do(func() error {
		g, err := OpenReadOnly(r.pin)
		if err != nil {
			return err
		}
		defer g.Close()
		st, err := g.Stats()
		if err == nil && len(st) == 0 {
			t.Errorf("stats on the old state: no interfaces")
		}
		return err
	})
	if err != nil {
		t.Fatalf("read the previous release's state: %v", err)
	}
	if id := pinnedID(t, r, "frags"); id != oldFrags {
		t.Fatalf("frags pin names table %d before the upgrade, want the old %d", id, oldFrags)
	}

	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r.inj.Send(attack) == nil {
				sent.Add(1)
			}
		}
	}()
	res, err := r.tryAttach(rigHostIf, AttachOptions{Egress: true})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("upgrade from the previous release: %v", err)
	}
	if res.Action != "replaced" || res.Egress != string(backend) || r.xdpProgID(t) == oldProg || r.egressCount(t) != 1 {
		t.Fatalf("upgrade: %+v, XDP program %d (was %d), %d egress programs; want replaced, egress %s kept, a new program, one egress", res, r.xdpProgID(t), oldProg, r.egressCount(t), backend)
	}
	n := uint64(sent.Load())
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": n + 1})
	if got := delivered.Load(); got != 1 {
		t.Fatalf("%d requests reached the socket during the upgrade under a flood of %d; want none", got-1, n)
	}

	// The old table's pin is gone; the per-family tables are pinned, and
	// the attached program uses them, not the old one.
	err = r.host.Do(func() error {
		if _, err := os.Stat(filepath.Join(r.pin, pinFragsOld)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the old fragment table is still pinned after the upgrade (stat: %v)", err)
		}
		_, s, err := specs()
		if err != nil {
			return err
		}
		for name, spec := range map[string]*ebpf.MapSpec{pinFrags4: s.XdpguardFrags4, pinFrags6: s.XdpguardFrags6} {
			m, err := ebpf.LoadPinnedMap(filepath.Join(r.pin, name), nil)
			if err != nil {
				return err
			}
			if err := spec.Compatible(m); err != nil {
				t.Errorf("%s pin after the upgrade: %v", name, err)
			}
			m.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	newFrags, uses := pinnedID(t, r, pinFrags4), r.xdpMapIDs(t)
	if !uses[newFrags] || uses[oldFrags] {
		t.Fatalf("attached program uses maps %v: want the new IPv4 fragment table %d, not the old %d", uses, newFrags, oldFrags)
	}
	// Fragments go through the new table: the first dropped, the rest follow.
	f1, f2, f3 := frags(bigResp(attacker, hostAddr, 40000, testpkt.MemcachedPort, 0x0bad))
	for _, f := range [][]byte{f1, f2, f3} {
		copy(f[0:6], attack[0:6]) // the host's MAC, as the oracle addressed attack
	}
	r.send(t, f1, f2, f3)
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": n + 2, "drop_fragment": 2})
	t.Logf("upgraded from the previous release's fragment table under a flood of %d requests: none delivered", n)
}

// xdpMapIDs are the maps the XDP program attached to the rig's interface
// uses.
func (r *rig) xdpMapIDs(t *testing.T) map[ebpf.MapID]bool {
	t.Helper()
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(r.xdpProgID(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := info.MapIDs()
	out := map[ebpf.MapID]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out
}

// pinnedID is the ID of the map pinned at name under the rig's pin path.
func pinnedID(t *testing.T, r *rig, name string) ebpf.MapID {
	t.Helper()
	var id ebpf.MapID
	err := r.host.Do(func() error {
		m, err := ebpf.LoadPinnedMap(filepath.Join(r.pin, name), nil)
		if err != nil {
			return err
		}
		defer m.Close()
		info, err := m.Info()
		if err != nil {
			return err
		}
		id, _ = info.ID()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// v0Dropped reads the host interface's drop_request counter at XDP straight
// from its pin.
func v0Dropped(t *testing.T, r *rig) uint64 {
	t.Helper()
	var n uint64
	err := r.host.Do(func() error {
		dir := filepath.Join(r.pin, "ifaces", strconv.Itoa(r.hostLink(t).Attrs().Index))
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "stats"), nil)
		if err != nil {
			return err
		}
		defer m.Close()
		st, err := ReadStats(m, nil)
		n = st[HookXDP][ReasonDropRequest].Packets
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// editLegacyConfig applies fn to the config of a release before port
// directions, pinned in m.
func editLegacyConfig(m *ebpf.Map, fn func(*legacyConfig)) error {
	var c legacyConfig
	if err := m.Lookup(uint32(0), &c); err != nil {
		return err
	}
	fn(&c)
	return m.Update(uint32(0), &c, ebpf.UpdateExist)
}
