package loader

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// mainObject is a data plane from before the allow-list block bitmaps and
// the per-family fragment tables, with state keyed by network namespace
// (testdata/v1/README.md).
const mainObject = "testdata/v1/xdpguard_bpfel.o"

// attachV1 does what main before issue 14 left pinned after `xdpguard
// attach <ifname> --egress` and an allow list given to Apply: its shared
// maps (one fragment table for both families, no block bitmaps), the
// allow-list record, and under netns/<inode>/<ifindex>/ the counters and
// the XDP and tcx links holding its programs, built from its own object.
func attachV1(t *testing.T, ns *nstest.NS, pin, ifname string, allow []netip.Prefix) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(mainObject)
	if err != nil {
		t.Fatal(err)
	}
	inode := netnsOf(t, ns)
	egress := kernelEgress(t)
	err = ns.Do(func() error {
		l, err := ns.Link(ifname)
		if err != nil {
			return err
		}
		if err := EnsureBPFFS(pin); err != nil {
			return err
		}
		if err := os.MkdirAll(pin, 0o700); err != nil {
			return err
		}
		repl, release, err := pinOldMaps(spec, pin, map[string]string{"xdpguard_config": pinConfig, "xdpguard_allow4": pinAllow4, "xdpguard_allow6": pinAllow6, "xdpguard_frags": pinFragsOld})
		if err != nil {
			return err
		}
		defer release()
		// Its default config (enforce, track, port 11211), lists on.
		raw := make([]byte, spec.Maps["xdpguard_config"].ValueSize)
		binary.NativeEndian.PutUint32(raw[8:], 1)
		binary.NativeEndian.PutUint32(raw[12:], 1)
		binary.NativeEndian.PutUint64(raw[16+8*(DefaultPort/64):], 1<<(DefaultPort%64))
		if err := repl["xdpguard_config"].Put(uint32(0), raw); err != nil {
			return err
		}
		k4, k6 := splitFamilies(allow)
		if err := batchUpdate(repl["xdpguard_allow4"], k4); err != nil {
			return err
		}
		if err := batchUpdate(repl["xdpguard_allow6"], k6); err != nil {
			return err
		}
		if err := pinOldAllowMeta(pin, allow); err != nil {
			return err
		}
		return attachOld(spec, repl, l, pin, inode, egress, map[string]string{"xdpguard_stats": pinStats})
	})
	if err != nil {
		t.Fatalf("pin main's state before issue 14: %v", err)
	}
}

// upgradeAllowList is a populated allow list for the upgrade tests: random
// IPv4 and IPv6 prefixes (none covering attacker), and the listed peer's
// address inside a /12, which spans 4096 blocks of the bitmap.
func upgradeAllowList(listed netip.Addr) []netip.Prefix {
	r := rand.New(rand.NewPCG(14, 14))
	out := []netip.Prefix{netip.PrefixFrom(listed, 12).Masked(), netip.MustParsePrefix("2001:db8:1::/48")}
	for len(out) < 3000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		var p netip.Prefix
		if len(out)%3 == 0 {
			b[0] = 0x20 | b[0]&0x1f
			p = netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(97)).Masked()
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte(b[:4])), 16+r.IntN(17)).Masked()
		}
		if p.Contains(attacker) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// An upgrade from state pinned before the block bitmaps, with a populated
// allow list, under a flood of requests from a listed and an unlisted peer:
// the bitmaps are filled from the tries before the new programs go in, so at
// every instant the listed peer's requests pass and the unlisted one's are
// dropped, each counted exactly. Both earlier layouts: the previous
// release's (<pin>/ifaces/, no record) and main's before issue 14.
func TestUpgradeKeepsAllowListUnderFlood(t *testing.T) {
	listed := netip.MustParseAddr("203.0.113.9")
	allow := upgradeAllowList(listed)
	for _, layout := range []string{"v0", "main"} {
		t.Run(layout, func(t *testing.T) {
			r := newRig(t)
			if layout == "v0" {
				attachV0(t, r.host, r.pin, rigHostIf, kernelEgress(t), allow...)
				// Its config has the same layout: switch the lists on.
				err := r.host.Do(func() error {
					m, err := ebpf.LoadPinnedMap(filepath.Join(r.pin, pinConfig), nil)
					if err != nil {
						return err
					}
					defer m.Close()
					return editLegacyConfig(m, func(c *legacyConfig) { c.Allow4Active = 1 })
				})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				attachV1(t, r.host, r.pin, rigHostIf, allow)
			}
			good, bad := request(t, listed), request(t, attacker)
			oldProg := r.xdpProgID(t)
			// A reader of this release (status, stats) works on the old
			// state and pins nothing: it holds no lock.
			err := r.host.Do(func() error {
				g, err := OpenReadOnly(r.pin)
				if err != nil {
					return err
				}
				defer g.Close()
				if _, err := g.Stats(); err != nil {
					return err
				}
				ps, err := g.AllowList()
				if err != nil {
					return err
				}
				if want := sortedSet(slices.Clone(allow)); !slices.Equal(ps, want) {
					t.Errorf("allow list read from the old state: %d prefixes, want %d", len(ps), len(want))
				}
				for _, name := range []string{pinAllow4Blk, pinAllow6Blk, pinFrags4, pinFrags6} {
					if _, err := os.Stat(filepath.Join(r.pin, name)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("a reader pinned %s (stat: %v)", name, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("read the old state: %v", err)
			}

			var sentGood, sentBad atomic.Uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if i%2 == 0 {
						if r.inj.Send(good) == nil {
							sentGood.Add(1)
						}
					} else if r.inj.Send(bad) == nil {
						sentBad.Add(1)
					}
				}
			}()
			// Frames of the old programs first, then the upgrade.
			nstest.Eventually(t, 5*time.Second, "the flood under way", func() (bool, error) {
				return sentGood.Load() > 100 && sentBad.Load() > 100, nil
			})
			res, err := r.tryAttach(rigHostIf, AttachOptions{Egress: true})
			// And frames of the new ones after it.
			n := sentGood.Load()
			nstest.Eventually(t, 5*time.Second, "the flood past the upgrade", func() (bool, error) {
				return sentGood.Load() > n+100, nil
			})
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			if res.Action != "replaced" || r.xdpProgID(t) == oldProg {
				t.Fatalf("upgrade: %+v, XDP program %d (was %d): want replaced by a new program", res, r.xdpProgID(t), oldProg)
			}
			r.expectCounters(t, "xdp", map[string]uint64{
				"allowlisted":  sentGood.Load(),
				"drop_request": sentBad.Load(),
			})
			t.Logf("upgraded from the %s layout under a flood: %d listed requests passed, %d unlisted dropped", layout, sentGood.Load(), sentBad.Load())

			// The bitmaps are pinned, hold exactly the blocks the list
			// touches, and the attached program reads them.
			var want4, want6 blockBitmap
			want4, want6 = blocksOf(allow)
			r.do(t, func(g *Guard) error {
				for _, c := range []struct {
					m    *ebpf.Map
					want blockBitmap
				}{{g.Maps.Allow4Blocks, want4}, {g.Maps.Allow6Blocks, want6}} {
					got, err := readBlocks(c.m)
					if err != nil {
						return err
					}
					for i := range got {
						if got[i] != c.want[i] {
							t.Errorf("bitmap word %d after the upgrade: %#x, want %#x", i, got[i], c.want[i])
							break
						}
					}
				}
				return nil
			})
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
			uses := map[ebpf.MapID]bool{}
			for _, id := range ids {
				uses[id] = true
			}
			for _, name := range []string{pinAllow4Blk, pinAllow6Blk, pinFrags4, pinFrags6} {
				if id := pinnedID(t, r, name); !uses[id] {
					t.Errorf("attached program does not use the pinned %s (map %d; uses %v)", name, id, ids)
				}
			}
		})
	}
}

// Allow-list changes under a flood: the listed peer is on every list the
// Applies switch between (through a /32, a /29 or its /24, each added and
// removed in turn, whole lists and edits), the unlisted one on none, though
// its block's bit is set and cleared as prefixes beside it come and go. At
// every instant the listed peer's requests pass and the unlisted one's are
// dropped: each counted exactly.
func TestAllowChangesUnderFlood(t *testing.T) {
	r := newRig(t)
	listed := netip.MustParseAddr("198.51.101.9") // attacker: 198.51.100.7
	lists := [][]netip.Prefix{
		mustPrefixes("198.51.101.9/32", "10.0.0.0/8"),
		mustPrefixes("198.51.101.8/29", "198.51.100.128/25", "2001:db8::/32"),
		mustPrefixes("198.51.101.0/24", "198.51.100.9/32"),
		mustPrefixes("198.51.101.9/32"),
	}
	r.attach(t, AttachOptions{})
	r.do(t, func(g *Guard) error {
		_, err := g.Apply(DesiredState{Allow: lists[0]}, ApplyOptions{Scope: ApplyScope{Allow: true}})
		return err
	})
	good, bad := request(t, listed), request(t, attacker)
	var sentGood, sentBad atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				if r.inj.Send(good) == nil {
					sentGood.Add(1)
				}
			} else if r.inj.Send(bad) == nil {
				sentBad.Add(1)
			}
		}
	}()
	cur := lists[0]
	for i := 1; i <= 40; i++ {
		next := lists[i%len(lists)]
		r.do(t, func(g *Guard) error {
			if i%2 == 0 {
				_, err := g.Apply(DesiredState{Allow: next}, ApplyOptions{Scope: ApplyScope{Allow: true}})
				return err
			}
			add, del := diffSorted(sortedSet(slices.Clone(next)), sortedSet(slices.Clone(cur)))
			_, err := g.Apply(DesiredState{AllowAdd: add, AllowDel: del}, ApplyOptions{Scope: ApplyScope{AllowEdit: true}})
			return err
		})
		cur = next
	}
	close(stop)
	wg.Wait()
	r.expectCounters(t, "xdp", map[string]uint64{
		"allowlisted":  sentGood.Load(),
		"drop_request": sentBad.Load(),
	})
	t.Logf("40 allow-list changes under a flood: %d listed requests passed, %d unlisted dropped", sentGood.Load(), sentBad.Load())
}

// A downgrade and an upgrade again: main before issue 14 runs over state
// this release made, and its loader adds a prefix to the trie alone (it
// knows no bitmap). The attach that swaps this release's programs back in
// sets the bits the tries need first, so the peer that release listed keeps
// passing.
func TestUpgradeAfterDowngradeSyncsBitmaps(t *testing.T) {
	r := newRig(t)
	listed := netip.MustParseAddr("203.0.113.9")
	r.attach(t, AttachOptions{})
	r.do(t, func(g *Guard) error {
		_, err := g.Apply(DesiredState{Allow: mustPrefixes("10.0.0.0/8")}, ApplyOptions{Scope: ApplyScope{Allow: true}})
		return err
	})
	// The downgrade: main's program on this release's pinned maps.
	spec, err := ebpf.LoadCollectionSpec(mainObject)
	if err != nil {
		t.Fatal(err)
	}
	err = r.host.Do(func() error {
		repl := map[string]*ebpf.Map{}
		for name, file := range map[string]string{"xdpguard_allow4": pinAllow4, "xdpguard_allow6": pinAllow6} {
			m, err := ebpf.LoadPinnedMap(filepath.Join(r.pin, file), nil)
			if err != nil {
				return err
			}
			defer m.Close()
			repl[name] = m
		}
		// Its config is of the layout before port directions: the
		// same configuration in that layout, as config_nodir keeps it
		// for programs of that release after an upgrade.
		cur, err := ebpf.LoadPinnedMap(filepath.Join(r.pin, pinConfig), nil)
		if err != nil {
			return err
		}
		defer cur.Close()
		var raw xdpguardConfig
		if err := cur.Lookup(uint32(0), &raw); err != nil {
			return err
		}
		old, err := ebpf.NewMap(spec.Maps["xdpguard_config"])
		if err != nil {
			return err
		}
		defer old.Close()
		if err := old.Update(uint32(0), legacyFromConfig(&raw), ebpf.UpdateExist); err != nil {
			return err
		}
		repl["xdpguard_config"] = old
		l, err := r.host.Link(rigHostIf)
		if err != nil {
			return err
		}
		dir := filepath.Join(r.pin, netnsDir, strconv.FormatUint(netnsOf(t, r.host), 10), strconv.Itoa(l.Attrs().Index))
		stats, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil)
		if err != nil {
			return err
		}
		defer stats.Close()
		repl["xdpguard_stats"] = stats
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			return verifierError(err)
		}
		defer coll.Close()
		xl, err := link.LoadPinnedLink(filepath.Join(dir, pinXDPLink), nil)
		if err != nil {
			return err
		}
		defer xl.Close()
		if err := xl.Update(coll.Programs["xdpguard_xdp"]); err != nil {
			return err
		}
		// Its `allow add`: the trie alone.
		return repl["xdpguard_allow4"].Put(v4Key(netip.PrefixFrom(listed, 32)), uint8(1))
	})
	if err != nil {
		t.Fatalf("downgrade: %v", err)
	}
	r.send(t, request(t, listed))
	r.expectCounters(t, "xdp", map[string]uint64{"allowlisted": 1})
	if res := r.attach(t, AttachOptions{}); res.Action != "replaced" {
		t.Fatalf("upgrade again: %+v, want replaced", res)
	}
	r.send(t, request(t, listed), request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"allowlisted": 2, "drop_request": 1})
}
