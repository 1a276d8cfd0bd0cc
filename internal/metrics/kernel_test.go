package metrics

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
	"github.com/xdpguard/xdpguard/loader"
)

// rig is a veth pair across two namespaces with xdpguard attached, XDP and
// TC egress, to hostIf in host, under a pin path of its own. Frames injected
// at peerIf meet the XDP program; frames injected at hostIf leave through
// the TC program.
type rig struct {
	peer, host *nstest.NS
	pin        string
	in, out    *nstest.Injector
}

const (
	peerIf = "xm0"
	hostIf = "xm1"
)

var (
	attacker = netip.MustParseAddr("198.51.100.7")
	trusted  = netip.MustParseAddr("203.0.113.9")
	hostAddr = netip.MustParseAddr("192.0.2.1")
)

func newRig(t *testing.T) *rig {
	t.Helper()
	nstest.RequireRoot(t)
	r := &rig{peer: nstest.New(t, "xmp"), host: nstest.New(t, "xmh")}
	for _, ns := range []*nstest.NS{r.peer, r.host} {
		// No IPv6 autoconfiguration chatter: counters count only the
		// frames the test injects.
		if err := ns.Sysctl("net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	nstest.Veth(t, r.peer, peerIf, r.host, hostIf, 0)
	r.pin = filepath.Join("/sys/fs/bpf", "xgmetrics-"+r.host.Name())
	t.Cleanup(func() {
		if _, err := os.Stat(r.pin); err != nil {
			return
		}
		err := r.host.Do(func() error {
			g, err := loader.Open(r.pin, false)
			if err != nil {
				return err
			}
			defer g.Close()
			_, err = g.DetachAll()
			return err
		})
		if err != nil {
			t.Errorf("clean up %s: %v", r.pin, err)
		}
	})
	r.do(t, func(g *loader.Guard) error {
		_, err := g.Attach(hostIf, loader.AttachOptions{Egress: true})
		return err
	})
	r.in = nstest.NewInjector(t, r.peer, peerIf)
	r.out = nstest.NewInjector(t, r.host, hostIf)
	return r
}

// do runs fn with the rig's Guard, locked for writing, in the host namespace.
func (r *rig) do(t *testing.T, fn func(g *loader.Guard) error) {
	t.Helper()
	err := r.host.Do(func() error {
		g, err := loader.Open(r.pin, true)
		if err != nil {
			return err
		}
		defer g.Close()
		return fn(g)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// source is a GuardSource on the rig's pin path, read inside the host
// namespace, where the attached interface's name resolves (the agent runs
// in the namespace of the interfaces it names).
func (r *rig) source() Source {
	gs := NewGuardSource(r.pin, 0)
	return SourceFunc(func() (snap *Snapshot, err error) {
		derr := r.host.Do(func() error {
			snap, err = gs.Read()
			return nil
		})
		if derr != nil {
			return nil, derr
		}
		return snap, err
	})
}

// stats reads the counters straight from the loader.
func (r *rig) stats(t *testing.T) []loader.InterfaceStats {
	t.Helper()
	var st []loader.InterfaceStats
	r.do(t, func(g *loader.Guard) error {
		var err error
		st, err = g.Stats()
		return err
	})
	return st
}

func frame(t *testing.T, p testpkt.Packet) []byte {
	t.Helper()
	b, err := p.Frame()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// attack configures the rig (ports 53 and 11211, one allowed prefix per
// family), sends a known mix both ways and waits until every frame is
// counted. It returns the packets expected per hook and reason.
func (r *rig) attack(t *testing.T) map[string]map[string]uint64 {
	t.Helper()
	r.do(t, func(g *loader.Guard) error {
		// Through Apply, as the CLI and the agent change it: Apply keeps
		// the allow-list counts the collector reads.
		cfg := loader.DefaultConfig()
		cfg.Ports = loader.BothPorts(53, 11211)
		_, err := g.Apply(loader.DesiredState{
			Config: cfg,
			Allow:  []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/48")},
		}, loader.ApplyOptions{Scope: loader.ApplyScope{Config: true, Allow: true}})
		return err
	})
	request := frame(t, testpkt.MemcachedRequest(attacker, hostAddr, 40000, testpkt.Stats))
	allowed := frame(t, testpkt.MemcachedRequest(trusted, hostAddr, 40000, testpkt.Stats))
	dns := frame(t, testpkt.UDP(attacker, hostAddr, 40000, 53, []byte("query")))
	tcp := frame(t, testpkt.TCP(attacker, hostAddr, 40000, 443, nil))
	// The first fragment of a large request: dropped, and its verdict
	// kept in the fragment table for the fragments that would follow.
	big := testpkt.MemcachedRequest(attacker, hostAddr, 40001, strings.Repeat("x", 3000))
	big.ID = 0x1234
	frags, err := big.Fragments(1480)
	if err != nil {
		t.Fatal(err)
	}
	// Leaving the host: an amplified answer from memcached's port, and TCP.
	answer := frame(t, testpkt.UDP(hostAddr, attacker, 11211, 40000, []byte("VALUE x 0 9999\r\n")))
	tcpOut := frame(t, testpkt.TCP(hostAddr, attacker, 443, 40000, nil))

	for _, f := range [][]byte{request, request, request, allowed, allowed, dns, tcp, frags[0]} {
		if err := r.in.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range [][]byte{answer, answer} {
		// A drop at TC egress is the sender's ENOBUFS.
		if err := r.out.Send(f); !errors.Is(err, unix.ENOBUFS) {
			t.Fatalf("sending an amplified answer: %v, want ENOBUFS (dropped at TC egress)", err)
		}
	}
	if err := r.out.Send(tcpOut); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]uint64{
		"xdp": {"drop_request": 5, "allowlisted": 2, "pass": 1},
		"tc":  {"drop_response": 2, "pass": 1},
	}
	nstest.Eventually(t, 5*time.Second, "every frame counted", func() (bool, error) {
		for _, s := range r.stats(t) {
			var sum, wantSum uint64
			for _, c := range s.Counters {
				sum += c.Packets
			}
			for _, n := range want[s.Hook] {
				wantSum += n
			}
			if sum < wantSum {
				return false, fmt.Errorf("%s: %d of %d packets counted", s.Hook, sum, wantSum)
			}
		}
		return true, nil
	})
	return want
}

// TestGuardSourceReadsKernel attaches xdpguard, sends a known attack and
// checks every series the collector makes from the kernel: counters equal
// to the loader's Stats and to what was sent, the attachments, the config
// and the fill of each bounded map.
func TestGuardSourceReadsKernel(t *testing.T) {
	r := newRig(t)
	want := r.attack(t)
	st := r.stats(t)

	var exp strings.Builder
	for _, s := range st {
		if s.Interface != hostIf {
			t.Fatalf("stats name interface %q, want %q", s.Interface, hostIf)
		}
		for _, reason := range loader.Reasons() {
			c := s.Counters[reason.String()]
			if c.Packets != want[s.Hook][reason.String()] {
				t.Errorf("%s %s: the kernel counted %d packets, %d were sent", s.Hook, reason, c.Packets, want[s.Hook][reason.String()])
			}
			fmt.Fprintf(&exp, "xdpguard_packets_total{hook=%q,interface=%q,reason=%q} %d\n", s.Hook, hostIf, reason, c.Packets)
			fmt.Fprintf(&exp, "xdpguard_bytes_total{hook=%q,interface=%q,reason=%q} %d\n", s.Hook, hostIf, reason, c.Bytes)
			sc, sampled := s.Samples[reason.String()]
			if sampled != (reason.Dropped() || reason == loader.ReasonWouldDrop) {
				t.Errorf("%s %s: sample counters present: %v", s.Hook, reason, sampled)
			}
			if !sampled {
				continue
			}
			if sc.Sampled+sc.Suppressed != c.Packets {
				t.Errorf("%s %s: %d sampled + %d suppressed, %d dropped", s.Hook, reason, sc.Sampled, sc.Suppressed, c.Packets)
			}
			fmt.Fprintf(&exp, "xdpguard_samples_total{hook=%q,interface=%q,reason=%q} %d\n", s.Hook, hostIf, reason, sc.Sampled)
			fmt.Fprintf(&exp, "xdpguard_samples_suppressed_total{hook=%q,interface=%q,reason=%q} %d\n", s.Hook, hostIf, reason, sc.Suppressed)
		}
	}
	if len(st) != 2 {
		t.Fatalf("stats has %d rows, want xdp and tc", len(st))
	}
	netns := r.netns(t, r.host)
	fmt.Fprintf(&exp, `xdpguard_attached{hook="tc",interface="xm1",mode="tcx",netns="%d"} 1
xdpguard_attached{hook="xdp",interface="xm1",mode="native",netns="%d"} 1
`, netns, netns)
	exp.WriteString(`xdpguard_config_info{fragments="track",mode="enforce"} 1
xdpguard_protected_port{port="53"} 1
xdpguard_protected_port{port="11211"} 1
xdpguard_allow_prefixes{family="ipv4"} 1
xdpguard_allow_prefixes{family="ipv6"} 1
xdpguard_map_entries{map="allow4"} 1
xdpguard_map_entries{map="allow6"} 1
xdpguard_map_entries{map="frags4"} 1
xdpguard_map_entries{map="frags6"} 0
xdpguard_map_max_entries{map="allow4"} 1.048576e+06
xdpguard_map_max_entries{map="allow6"} 1.048576e+06
xdpguard_map_max_entries{map="frags4"} 65536
xdpguard_map_max_entries{map="frags6"} 65536
`)
	got := exposition(t, NewCollector(r.source()))
	if err := compareSamples(got, exp.String()); err != nil {
		t.Error(err)
	}
}

// netns is the inode of ns, as the loader records it.
func (r *rig) netns(t *testing.T, ns *nstest.NS) uint64 {
	t.Helper()
	var ino uint64
	if err := ns.Do(func() (err error) { ino, err = loader.CurrentNetns(); return err }); err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestSameNameInTwoNamespaces: xm1 attached in two namespaces under one pin
// path gives two sets of xdpguard_attached series told apart by netns, and
// the scrape does not fail on duplicate series.
func TestSameNameInTwoNamespaces(t *testing.T) {
	r := newRig(t)
	other, otherPeer := nstest.New(t, "xmo"), nstest.New(t, "xmq")
	nstest.Veth(t, otherPeer, peerIf, other, hostIf, 0)
	err := other.Do(func() error {
		g, err := loader.Open(r.pin, false)
		if err != nil {
			return err
		}
		defer g.Close()
		// The same mode as in the rig's namespace: only netns tells
		// the two series apart.
		if _, err := g.Attach(hostIf, loader.AttachOptions{Mode: loader.XDPNative}); err != nil {
			return err
		}
		t.Cleanup(func() {
			err := other.Do(func() error {
				g, err := loader.Open(r.pin, false)
				if err != nil {
					return err
				}
				defer g.Close()
				_, err = g.Detach(hostIf)
				return err
			})
			if err != nil {
				t.Errorf("detach %s in %s: %v", hostIf, other.Name(), err)
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(r.source()))
	var b strings.Builder
	if err := WriteText(&b, reg); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	here, there := r.netns(t, r.host), r.netns(t, other)
	for _, want := range []string{
		fmt.Sprintf(`xdpguard_attached{hook="tc",interface="xm1",mode="tcx",netns="%d"} 1`, here),
		fmt.Sprintf(`xdpguard_attached{hook="xdp",interface="xm1",mode="native",netns="%d"} 1`, here),
		fmt.Sprintf(`xdpguard_attached{hook="xdp",interface="xm1",mode="native",netns="%d"} 1`, there),
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing %s in:\n%s", want, b.String())
		}
	}
	if n := strings.Count(b.String(), "\nxdpguard_attached{"); n != 3 {
		t.Errorf("%d xdpguard_attached series, want 3:\n%s", n, b.String())
	}
}

// TestScrapeTakesNoLock: a scrape succeeds while a writer holds the pin
// path's lock (an attach or the agent's reconcile in progress).
func TestScrapeTakesNoLock(t *testing.T) {
	r := newRig(t)
	var writer *loader.Guard
	if err := r.host.Do(func() (err error) { writer, err = loader.Open(r.pin, false); return err }); err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(r.source()))
	done := make(chan error, 1)
	go func() { _, err := reg.Gather(); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("scrape while the lock is held: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("scrape blocked on the pin path's lock")
	}
}
