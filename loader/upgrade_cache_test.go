package loader

import (
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// preCacheObject is main's data plane before the fragment caches
// (testdata/v3/README.md).
const preCacheObject = "testdata/v3/xdpguard_bpfel.o"

// attachV3 does what main before the fragment caches left pinned after
// `xdpguard attach <ifname> --egress` and `allow load` of allow: every shared
// map it pins (its config, allow-list and bitmap layouts are this
// release's), the allow-list record, and under netns/<inode>/<ifindex>/ the
// counters and the links holding its programs, built from its own object.
func attachV3(t *testing.T, ns *nstest.NS, pin, ifname string, allow []netip.Prefix) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(preCacheObject)
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
		repl, release, err := pinOldMaps(spec, pin, map[string]string{
			"xdpguard_config": pinConfig, "xdpguard_allow4": pinAllow4, "xdpguard_allow6": pinAllow6,
			"xdpguard_blk4": pinAllow4Blk, "xdpguard_blk6": pinAllow6Blk,
			"xdpguard_frags4": pinFrags4, "xdpguard_frags6": pinFrags6,
			"xdpguard_req4": pinReq4, "xdpguard_req6": pinReq6, "xdpguard_expiry": pinExpiry,
			"xdpguard_ring": pinSamples, "xdpguard_srate": pinSampleRate, "xdpguard_tokens": pinSampleBudget,
		})
		if err != nil {
			return err
		}
		defer release()
		old := &Maps{Config: repl["xdpguard_config"], Allow4: repl["xdpguard_allow4"], Allow6: repl["xdpguard_allow6"],
			Allow4Blocks: repl["xdpguard_blk4"], Allow6Blocks: repl["xdpguard_blk6"]}
		if err := old.WriteConfig(DefaultConfig()); err != nil {
			return err
		}
		if err := old.AllowAdd(allow); err != nil {
			return err
		}
		if err := repl["xdpguard_srate"].Put(uint32(0), uint32(DefaultSampleRate)); err != nil {
			return err
		}
		if err := pinOldAllowMeta(pin, allow); err != nil {
			return err
		}
		netns, err := CurrentNetns()
		if err != nil {
			return err
		}
		if err := spec.Variables["sample_netns"].Set(netns); err != nil {
			return err
		}
		if err := spec.Variables["coarse_clock"].Set(haveCoarseClock()); err != nil {
			return err
		}
		return attachOld(spec, repl, l, pin, inode, egress, map[string]string{
			"xdpguard_stats": pinStats, "xdpguard_stats2": pinStats2,
			"xdpguard_sstats": pinSampleStats, "xdpguard_sstat2": pinSampleStats2,
		})
	})
	if err != nil {
		t.Fatalf("pin main's state before the fragment caches: %v", err)
	}
}

// TestUpgradeToFragmentCachesUnderFlood: a host protected by main before the
// fragment caches upgrades by attach while later fragments of reflected
// answers keep coming, their first fragments dropped by the old programs
// (recorded in the tables alone), and whole new datagrams too, each judged
// by whichever programs are in, and requests from a peer on its allow list.
// Every later fragment is dropped as its first was, none passes as an
// orphan, every listed request passes; the allow list is kept, the caches
// are pinned, and the programs swapped in use them.
func TestUpgradeToFragmentCachesUnderFlood(t *testing.T) {
	r := newRig(t)
	listed := netip.MustParseAddr("203.0.113.9")
	allow := upgradeAllowList(listed)
	attachV3(t, r.host, r.pin, rigHostIf, allow)
	oldProg := r.xdpProgID(t)

	answer := func(id uint32) (first, middle, last []byte) {
		return frags(bigResp(attacker, hostAddr, testpkt.MemcachedPort, 40000, id))
	}
	// Datagrams whose first fragments only the old programs see.
	const early = 64
	var later [][]byte
	for id := range uint32(early) {
		f1, f2, f3 := answer(0x1000 + id)
		r.send(t, f1)
		later = append(later, f2, f3)
	}
	r.expectCounters(t, "xdp", map[string]uint64{"drop_response": early})

	good := request(t, listed)
	var firsts, rest, goods atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// A later fragment of an early datagram, then a whole new
			// one in order.
			if r.inj.Send(later[i%uint32(len(later))]) == nil {
				rest.Add(1)
			}
			if r.inj.Send(good) == nil {
				goods.Add(1)
			}
			f1, f2, f3 := answer(0x8000 + i%0x7000)
			if r.inj.Send(f1) != nil {
				continue
			}
			firsts.Add(1)
			for _, f := range [][]byte{f2, f3} {
				if r.inj.Send(f) == nil {
					rest.Add(1)
				}
			}
		}
	}()
	nstest.Eventually(t, 5*time.Second, "the flood under way", func() (bool, error) {
		return rest.Load() > 300, nil
	})
	res, err := r.tryAttach(rigHostIf, AttachOptions{Egress: true})
	n := rest.Load()
	nstest.Eventually(t, 10*time.Second, "the flood past the upgrade", func() (bool, error) {
		return rest.Load() > n+300, nil
	})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if res.Action != "replaced" || r.xdpProgID(t) == oldProg {
		t.Fatalf("upgrade: %+v, program %d (was %d): want the programs replaced", res, r.xdpProgID(t), oldProg)
	}
	r.expectCounters(t, "xdp", map[string]uint64{
		"drop_response": early + firsts.Load(),
		"drop_fragment": rest.Load(),
		"allowlisted":   goods.Load(),
	})
	r.do(t, func(g *Guard) error {
		ps, err := g.AllowList()
		if err == nil && !slices.Equal(ps, sortedSet(slices.Clone(allow))) {
			t.Errorf("allow list after the upgrade: %d prefixes, want the %d given", len(ps), len(allow))
		}
		return err
	})

	if cacheID, uses := pinnedID(t, r, pinFragCache4), r.xdpMapIDs(t); !uses[cacheID] {
		t.Errorf("attached program uses maps %v, not the pinned IPv4 fragment cache %d", uses, cacheID)
	}
	t.Logf("upgraded under a flood of %d later fragments and %d new datagrams: every later fragment dropped", rest.Load(), firsts.Load())
}
