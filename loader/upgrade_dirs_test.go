package loader

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// preDirectionsObject is main's data plane before port directions
// (testdata/v2/README.md).
const preDirectionsObject = "testdata/v2/xdpguard_bpfel.o"

// attachV2 does what main before port directions left pinned after
// `xdpguard attach <ifname> --egress`, `ports add` of ports and an allow
// list: every shared map it pins, the allow-list record, and under
// netns/<inode>/<ifindex>/ the counters, sample counters and the XDP and
// egress links holding its programs, built from its own object.
func attachV2(t *testing.T, ns *nstest.NS, pin, ifname string, ports []uint16, allow []netip.Prefix) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(preDirectionsObject)
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
			"xdpguard_ring": pinSamples, "xdpguard_srate": pinSampleRate, "xdpguard_tokens": pinSampleBudget,
		})
		if err != nil {
			return err
		}
		defer release()
		old := &Maps{Allow4: repl["xdpguard_allow4"], Allow6: repl["xdpguard_allow6"],
			Allow4Blocks: repl["xdpguard_blk4"], Allow6Blocks: repl["xdpguard_blk6"]}
		k4, k6 := splitFamilies(allow)
		if err := batchUpdate(old.Allow4, k4); err != nil {
			return err
		}
		if err := batchUpdate(old.Allow6, k6); err != nil {
			return err
		}
		if err := old.setBlocks(allow); err != nil {
			return err
		}
		if err := repl["xdpguard_srate"].Put(uint32(0), uint32(DefaultSampleRate)); err != nil {
			return err
		}
		v4, v6 := countFamilies(sortedSet(slices.Clone(allow)))
		if err := editLegacyConfig(repl["xdpguard_config"], func(c *legacyConfig) {
			for _, p := range ports {
				c.Ports[p/64] |= 1 << (p % 64)
			}
			c.Allow4Active = uint32(min(v4, 1))
			c.Allow6Active = uint32(min(v6, 1))
		}); err != nil {
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
		// As main's loader did: without the coarse clock (before 5.11)
		// the verifier refuses its helper even in a branch never taken.
		if err := spec.Variables["coarse_clock"].Set(haveCoarseClock()); err != nil {
			return err
		}
		return attachOld(spec, repl, l, pin, inode, egress,
			map[string]string{"xdpguard_stats": pinStats, "xdpguard_sstats": pinSampleStats})
	})
	if err != nil {
		t.Fatalf("pin main's state before port directions: %v", err)
	}
}

// TestUpgradeToDirectionsUnderFlood: a host protected by main before port
// directions (ports 53 and 11211, an allow list) upgrades by attach under a
// flood of requests from a listed and an unlisted peer and of answers from
// port 53: the same XDP link, every frame counted exactly under the reason
// the old and the new programs both give it (no gap, no double count), its
// ports kept as both, its allow list kept. The old config map stays pinned
// as config_nodir and follows later changes, which the new programs read
// from the new one: 53 made a response port then drops unsolicited
// replies, counted in the counters map the upgrade added.
func TestUpgradeToDirectionsUnderFlood(t *testing.T) {
	r := newRig(t)
	listed := netip.MustParseAddr("203.0.113.9")
	allow := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}
	attachV2(t, r.host, r.pin, rigHostIf, []uint16{53, DefaultPort}, allow)
	linkID := r.xdpLinkID(t, rigHostIf)
	oldProg := r.xdpProgID(t)
	good, bad := request(t, listed), request(t, attacker)
	answer := frame(t, testpkt.UDP(attacker, hostAddr, 53, 40000, []byte("reflected")))

	var sentGood, sentBad, sentAnswer atomic.Uint64
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
			switch i % 3 {
			case 0:
				if r.inj.Send(good) == nil {
					sentGood.Add(1)
				}
			case 1:
				if r.inj.Send(bad) == nil {
					sentBad.Add(1)
				}
			default:
				if r.inj.Send(answer) == nil {
					sentAnswer.Add(1)
				}
			}
		}
	}()
	nstest.Eventually(t, 5*time.Second, "the flood under way", func() (bool, error) {
		return sentAnswer.Load() > 100, nil
	})
	res, err := r.tryAttach(rigHostIf, AttachOptions{Egress: true})
	n := sentAnswer.Load()
	nstest.Eventually(t, 5*time.Second, "the flood past the upgrade", func() (bool, error) {
		return sentAnswer.Load() > n+100, nil
	})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if res.Action != "replaced" || r.xdpProgID(t) == oldProg || r.xdpLinkID(t, rigHostIf) != linkID {
		t.Fatalf("upgrade: %+v, program %d (was %d), link %d (was %d): want the programs replaced through the same link",
			res, r.xdpProgID(t), oldProg, r.xdpLinkID(t, rigHostIf), linkID)
	}
	r.expectCounters(t, "xdp", map[string]uint64{
		"allowlisted":   sentGood.Load(),
		"drop_request":  sentBad.Load(),
		"drop_response": sentAnswer.Load(),
	})

	r.do(t, func(g *Guard) error {
		cfg, err := g.Maps.ReadConfig()
		if err != nil {
			return err
		}
		if want := BothPorts(53, DefaultPort); !slices.Equal(cfg.Ports, want) {
			t.Errorf("ports after the upgrade: %v, want %v", cfg.Ports, want)
		}
		ps, err := g.AllowList()
		if err != nil {
			return err
		}
		if !slices.Equal(ps, sortedSet(slices.Clone(allow))) {
			t.Errorf("allow list after the upgrade: %v, want %v", ps, allow)
		}
		if g.Maps.LegacyConfig == nil {
			t.Error("the old config map is not kept for the old release's programs")
		}
		// 53 becomes a response port.
		cfg.Ports = []Port{{Number: 53, Direction: DirResponse}, {Number: DefaultPort}}
		_, err = g.Apply(DesiredState{Config: cfg}, ApplyOptions{Scope: ApplyScope{Config: true}})
		return err
	})
	for _, name := range []string{pinConfigLegacy, pinReq4, pinReq6, pinExpiry} {
		if _, err := os.Stat(filepath.Join(r.pin, name)); err != nil {
			t.Errorf("after the upgrade: %v", err)
		}
	}
	// The old map follows: its programs could only drop 53 both ways.
	err = r.host.Do(func() error {
		m, err := ebpf.LoadPinnedMap(filepath.Join(r.pin, pinConfigLegacy), nil)
		if err != nil {
			return err
		}
		defer m.Close()
		var old legacyConfig
		if err := m.Lookup(uint32(0), &old); err != nil {
			return err
		}
		if got := portsFromBitmaps(&old.Ports, &old.Ports, nil); !slices.Equal(got, BothPorts(53, DefaultPort)) || old.Allow4Active != 1 {
			t.Errorf("the kept old config: ports %v, IPv4 list on %d; want 53 and 11211, on", got, old.Allow4Active)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.send(t, answer, answer, good)
	r.expectCounters(t, "xdp", map[string]uint64{
		"allowlisted":      sentGood.Load() + 1,
		"drop_request":     sentBad.Load(),
		"drop_response":    sentAnswer.Load(),
		"drop_unsolicited": 2,
	})

	// The last detach removes everything, the kept old config too.
	r.do(t, func(g *Guard) error { _, err := g.DetachAll(); return err })
	if _, err := os.Stat(r.pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the pin path remains after the last detach: %v", err)
	}
}
