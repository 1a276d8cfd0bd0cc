package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// rig is a veth pair across two namespaces: frames injected into xg0 (in
// peer) meet whatever is attached to xg1 (in host), under a pin path of its
// own.
type rig struct {
	peer, host *nstest.NS
	pin        string
	inj        *nstest.Injector
}

const (
	rigPeerIf = "xg0"
	rigHostIf = "xg1"
)

var (
	attacker = netip.MustParseAddr("198.51.100.7")
	hostAddr = netip.MustParseAddr("192.0.2.1")
)

func newRig(t *testing.T) *rig {
	t.Helper()
	nstest.RequireRoot(t)
	r := &rig{peer: nstest.New(t, "xgp"), host: nstest.New(t, "xgh")}
	for _, ns := range []*nstest.NS{r.peer, r.host} {
		// No IPv6 autoconfiguration chatter: counters must count only
		// the frames a test injects.
		if err := ns.Sysctl("net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	nstest.Veth(t, r.peer, rigPeerIf, r.host, rigHostIf, 0)
	r.pin = filepath.Join("/sys/fs/bpf", "xgtest-"+r.host.Name())
	t.Cleanup(func() {
		if _, err := os.Stat(r.pin); err == nil {
			_ = r.host.Do(func() error {
				g, err := Open(r.pin, false)
				if err != nil {
					return err
				}
				defer g.Close()
				_, err = g.DetachAll()
				return err
			})
		}
	})
	r.inj = nstest.NewInjector(t, r.peer, rigPeerIf)
	return r
}

// do runs fn with the rig's Guard inside the host namespace.
func (r *rig) do(t *testing.T, fn func(g *Guard) error) {
	t.Helper()
	err := r.host.Do(func() error {
		g, err := Open(r.pin, true)
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

// tryAttach attaches name in the host namespace, creating state if needed.
func (r *rig) tryAttach(name string, opts AttachOptions) (AttachResult, error) {
	var res AttachResult
	err := r.host.Do(func() error {
		g, err := Open(r.pin, true)
		if err != nil {
			return err
		}
		defer g.Close()
		res, err = g.Attach(name, opts)
		return err
	})
	return res, err
}

func (r *rig) attach(t *testing.T, opts AttachOptions) AttachResult {
	t.Helper()
	res, err := r.tryAttach(rigHostIf, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (r *rig) hostLink(t *testing.T) netlink.Link {
	t.Helper()
	l, err := r.host.Link(rigHostIf)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// xdpProgID is the XDP program on the host interface, 0 if none.
func (r *rig) xdpProgID(t *testing.T) uint32 {
	x := r.hostLink(t).Attrs().Xdp
	if x == nil || !x.Attached {
		return 0
	}
	return x.ProgId
}

// requireNothingLeft fails the test unless the host interface carries no
// XDP or egress program and the pin path is gone.
func (r *rig) requireNothingLeft(t *testing.T, when string) {
	t.Helper()
	if id := r.xdpProgID(t); id != 0 {
		t.Errorf("%s: XDP program %d still attached", when, id)
	}
	if n := r.egressCount(t); n != 0 {
		t.Errorf("%s: %d egress programs left", when, n)
	}
	if _, err := os.Stat(r.pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: the pin path remains: %v", when, err)
	}
}

func (r *rig) counters(t *testing.T) map[string]map[string]Counter {
	t.Helper()
	out := map[string]map[string]Counter{}
	r.do(t, func(g *Guard) error {
		st, err := g.Stats(rigHostIf)
		for _, s := range st {
			out[s.Hook] = s.Counters
		}
		return err
	})
	return out
}

// waitPackets waits until the hook's counters add up to n packets, then
// checks they stay there and match want exactly.
func (r *rig) expectCounters(t *testing.T, hook string, want map[string]uint64) {
	t.Helper()
	var total uint64
	for _, n := range want {
		total += n
	}
	var got map[string]Counter
	nstest.Eventually(t, 5*time.Second, fmt.Sprintf("%d packets counted on %s", total, hook), func() (bool, error) {
		got = r.counters(t)[hook]
		var sum uint64
		for _, c := range got {
			sum += c.Packets
		}
		return sum >= total, nil
	})
	for _, reason := range Reasons() {
		if got[reason.String()].Packets != want[reason.String()] {
			t.Errorf("%s %s: %d packets, want %d (all: %v)", hook, reason, got[reason.String()].Packets, want[reason.String()], got)
		}
	}
}

// failAt is a failpoint that fails at step with err.
func failAt(step string, err error) func(string) error {
	return func(s string) error {
		if s == step {
			return err
		}
		return nil
	}
}

func frame(t *testing.T, p testpkt.Packet) []byte {
	t.Helper()
	b, err := p.Frame()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func request(t *testing.T, src netip.Addr) []byte {
	return frame(t, testpkt.MemcachedRequest(src, hostAddr, 40000, testpkt.Stats))
}

func (r *rig) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	if err := r.inj.SendAll(frames...); err != nil {
		t.Fatal(err)
	}
}

func TestAttachIdempotentUpgradeDetach(t *testing.T) {
	r := newRig(t)
	res := r.attach(t, AttachOptions{Egress: true})
	if res.Action != "attached" || res.Mode != XDPNative || res.Egress != string(kernelEgress(t)) {
		t.Fatalf("first attach: %+v, want attached, native, %s", res, kernelEgress(t))
	}
	first := r.xdpProgID(t)
	if first == 0 || r.egressCount(t) != 1 {
		t.Fatalf("after attach: XDP program %d, %d egress programs; want one of each", first, r.egressCount(t))
	}

	res = r.attach(t, AttachOptions{Egress: true})
	if res.Action != "unchanged" || r.xdpProgID(t) != first || r.egressCount(t) != 1 {
		t.Fatalf("second attach: %+v, program %d (was %d), %d egress: want unchanged, same, 1", res, r.xdpProgID(t), first, r.egressCount(t))
	}

	r.send(t, request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 1})

	// An upgrade swaps the programs in place and keeps the counters.
	res = r.attach(t, AttachOptions{Reload: true})
	if res.Action != "replaced" || r.xdpProgID(t) == first || r.egressCount(t) != 1 {
		t.Fatalf("reload: %+v, program %d (was %d), %d egress: want replaced, new id, 1", res, r.xdpProgID(t), first, r.egressCount(t))
	}
	r.send(t, request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 2})

	// A mode change is refused rather than done with a gap.
	_, err := r.tryAttach(rigHostIf, AttachOptions{Mode: XDPGeneric})
	if !errors.Is(err, ErrModeMismatch) {
		t.Fatalf("attach --mode generic over native: %v, want ErrModeMismatch", err)
	}

	r.do(t, func(g *Guard) error { _, err := g.Detach(rigHostIf); return err })
	r.requireNothingLeft(t, "after the last detach")
}

func TestAttachRollsBack(t *testing.T) {
	for _, step := range []string{"stats", "xdp", "tc", "done"} {
		t.Run(step, func(t *testing.T) {
			r := newRig(t)
			injected := errors.New("injected failure at " + step)
			_, err := r.tryAttach(rigHostIf, AttachOptions{Egress: true, failpoint: failAt(step, injected)})
			if !errors.Is(err, injected) {
				t.Fatalf("attach: %v, want the injected failure", err)
			}
			r.requireNothingLeft(t, "after the rollback")
		})
	}
}

func TestAttachRollbackKeepsOtherInterfaces(t *testing.T) {
	r := newRig(t)
	nstest.Veth(t, r.peer, "xg2", r.host, "xg3", 0)
	r.attach(t, AttachOptions{})
	r.do(t, func(g *Guard) error {
		if _, err := g.Attach("xg3", AttachOptions{failpoint: failAt("xdp", errors.New("injected"))}); err == nil {
			return errors.New("attach xg3 succeeded despite the failpoint")
		}
		return nil
	})
	var atts []Attachment
	r.do(t, func(g *Guard) (err error) {
		atts, err = g.Attachments()
		return err
	})
	if len(atts) != 1 || atts[0].Interface != rigHostIf {
		t.Fatalf("attachments after a failed second attach: %+v, want only %s", atts, rigHostIf)
	}
	r.send(t, request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 1})
}

func TestAttachLegacyTC(t *testing.T) {
	r := newRig(t)
	res := r.attach(t, AttachOptions{Egress: true, TCBackend: TCLegacy})
	if res.Egress != string(TCLegacy) {
		t.Fatalf("egress %q, want legacy", res.Egress)
	}
	l := r.hostLink(t)
	var id ebpf.ProgramID
	err := r.host.Do(func() (err error) {
		id, err = legacyProgramID(l)
		return err
	})
	if err != nil || id == 0 {
		t.Fatalf("cls_bpf filter: id %d, %v; want our filter", id, err)
	}
	r.do(t, func(g *Guard) error { _, err := g.Detach(rigHostIf); return err })
	qdiscs, err := r.host.Handle().QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			t.Errorf("detach left the clsact qdisc it created")
		}
	}
}

// foreignXDP attaches a program that is not ours, the way other tools do
// (netlink, no bpf_link).
func foreignXDP(t *testing.T, r *rig) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "not_xdpguard", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	l := r.hostLink(t)
	if err := r.host.Do(func() error { return netlink.LinkSetXdpFd(l, prog.FD()) }); err != nil {
		t.Fatal(err)
	}
	return prog
}

func TestAttachRefusesForeignProgram(t *testing.T) {
	r := newRig(t)
	prog := foreignXDP(t, r)
	info, _ := prog.Info()
	id, _ := info.ID()

	_, err := r.tryAttach(rigHostIf, AttachOptions{})
	if !errors.Is(err, ErrForeignProgram) {
		t.Fatalf("attach over a foreign program: %v, want ErrForeignProgram", err)
	}
	if want := fmt.Sprintf("program id %d, name \"not_xdpguard\"", id); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the program (%s)", err, want)
	}
	if r.xdpProgID(t) != uint32(id) {
		t.Errorf("the refused attach changed the interface's program")
	}
	if _, err := os.Stat(r.pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused first attach left state behind: %v", err)
	}

	// A --force attach that fails puts the program it removed back.
	_, err = r.tryAttach(rigHostIf, AttachOptions{Force: true, failpoint: failAt("done", errors.New("injected"))})
	if err == nil || r.xdpProgID(t) != uint32(id) {
		t.Fatalf("a failed --force attach: %v, program %d on the interface, want %d back", err, r.xdpProgID(t), id)
	}

	res := r.attach(t, AttachOptions{Force: true})
	if res.Action != "attached" || r.xdpProgID(t) == uint32(id) {
		t.Fatalf("--force: %+v, program %d: want ours attached", res, r.xdpProgID(t))
	}
}

func TestLiveConfigAndExactCounters(t *testing.T) {
	r := newRig(t)
	r.attach(t, AttachOptions{})
	trusted := netip.MustParseAddr("203.0.113.9")
	tcp := frame(t, testpkt.TCP(attacker, hostAddr, 40000, 443, nil))
	custom := frame(t, testpkt.UDP(attacker, hostAddr, 40000, 5353, []byte("x")))

	// 3 requests, 2 TCP, 1 UDP to a port not yet protected.
	r.send(t, request(t, attacker), request(t, trusted), request(t, attacker), tcp, tcp, custom)
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 3, "pass": 3})

	// Allow one peer: its requests pass as allowlisted, others still drop.
	r.do(t, func(g *Guard) error { return g.Maps.AllowAdd([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}) })
	r.send(t, request(t, trusted), request(t, attacker))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 4, "pass": 3, "allowlisted": 1})

	// Remove it again: closed at once.
	r.do(t, func(g *Guard) error { return g.Maps.AllowDel([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}) })
	r.send(t, request(t, trusted))
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 5, "pass": 3, "allowlisted": 1})

	// Protect another port, live.
	r.do(t, func(g *Guard) error {
		return g.Maps.UpdateConfig(func(c *Config) error { c.Ports = append(c.Ports, Port{Number: 5353}); return nil })
	})
	r.send(t, custom)
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 6, "pass": 3, "allowlisted": 1})

	// Monitor: would_drop instead of drops.
	r.do(t, func(g *Guard) error {
		return g.Maps.UpdateConfig(func(c *Config) error { c.Mode = ModeMonitor; return nil })
	})
	r.send(t, request(t, attacker), custom)
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 6, "pass": 3, "allowlisted": 1, "would_drop": 2})
}

// deliveryOracle gives the rig's host an address and a UDP socket on the
// protected port, and returns an attack request addressed to it and the
// count of datagrams that socket received. One unfiltered request is sent
// and seen delivered first (the count starts at 1), so that a count that
// stays put later means filtered, not lost.
func (r *rig) deliveryOracle(t *testing.T) ([]byte, *atomic.Int64) {
	t.Helper()
	if err := r.host.AddAddr(rigHostIf, hostAddr.String()+"/24"); err != nil {
		t.Fatal(err)
	}
	mac, err := r.host.HardwareAddr(rigHostIf)
	if err != nil {
		t.Fatal(err)
	}
	attack := request(t, attacker)
	copy(attack[0:6], mac) // addressed to the host, so a passed frame is delivered

	var delivered atomic.Int64
	var conn *net.UDPConn
	err = r.host.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: hostAddr.AsSlice(), Port: int(testpkt.MemcachedPort)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 2048)
		for {
			if _, _, err := conn.ReadFromUDP(buf); err != nil {
				return
			}
			delivered.Add(1)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-readerDone })

	r.send(t, attack)
	nstest.Eventually(t, 5*time.Second, "an unfiltered request delivered", func() (bool, error) {
		return delivered.Load() == 1, nil
	})
	return attack, &delivered
}

// TestUpgradeUnderFloodPassesNothing reloads the programs again and again
// while attack frames stream in: not one may reach the host's socket.
func TestUpgradeUnderFloodPassesNothing(t *testing.T) {
	r := newRig(t)
	attack, delivered := r.deliveryOracle(t)

	r.attach(t, AttachOptions{Egress: true})
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
	reloads := 20
	if nstest.Emulated() {
		// Each reload verifies both programs, seconds under TCG.
		reloads = 5
	}
	for range reloads {
		if res := r.attach(t, AttachOptions{Reload: true}); res.Action != "replaced" {
			t.Fatalf("reload: %+v", res)
		}
	}
	close(stop)
	wg.Wait()

	n := uint64(sent.Load())
	r.expectCounters(t, "xdp", map[string]uint64{"drop_request": n})
	if got := delivered.Load(); got != 1 {
		t.Fatalf("%d attack datagrams reached the socket during %d reloads under a flood of %d; want none", got-1, reloads, n)
	}
	t.Logf("%d reloads under a flood of %d frames: all dropped", reloads, n)
}

// TestSameInterfaceInTwoNamespaces: with one pin path, as every operator
// has, an interface with the same name and ifindex in two namespaces is two
// interfaces: attaching in B after A attaches B (it said "unchanged" and left
// B unprotected), status tells them apart, and detaching in A leaves B
// protected.
func TestSameInterfaceInTwoNamespaces(t *testing.T) {
	a, b := newRig(t), newRig(t)
	b.pin = a.pin
	if ia, ib := a.hostLink(t).Attrs().Index, b.hostLink(t).Attrs().Index; ia != ib {
		t.Fatalf("ifindexes %d and %d; the test needs them equal", ia, ib)
	}
	if res := a.attach(t, AttachOptions{}); res.Action != "attached" {
		t.Fatalf("attach in A: %+v", res)
	}
	if res := b.attach(t, AttachOptions{Egress: true}); res.Action != "attached" || res.Egress == "" {
		t.Fatalf("attach in B after A: %+v, want attached with egress", res)
	}
	if a.xdpProgID(t) == 0 || b.xdpProgID(t) == 0 || a.xdpProgID(t) == b.xdpProgID(t) {
		t.Fatalf("XDP programs %d (A) and %d (B): want one of its own on each", a.xdpProgID(t), b.xdpProgID(t))
	}
	if n := a.egressCount(t); n != 0 {
		t.Fatalf("egress asked for in B landed in A too (%d egress programs)", n)
	}

	var atts []Attachment
	a.do(t, func(g *Guard) (err error) {
		atts, err = g.Attachments()
		return err
	})
	nsA, nsB := netnsOf(t, a.host), netnsOf(t, b.host)
	want := map[string]bool{
		fmt.Sprintf("%d xdp here", nsA): true, fmt.Sprintf("%d xdp", nsB): true, fmt.Sprintf("%d tc", nsB): true,
	}
	for _, at := range atts {
		k := fmt.Sprintf("%d %s", at.Netns, at.Hook)
		if at.Here {
			k += " here"
		}
		if !want[k] || at.Interface != rigHostIf {
			t.Errorf("status from A lists %+v; want %s's xdp here, and B's xdp and tc", at, rigHostIf)
		}
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("status from A misses %v: %+v", want, atts)
	}

	a.do(t, func(g *Guard) error { _, err := g.Detach(rigHostIf); return err })
	if id := a.xdpProgID(t); id != 0 {
		t.Errorf("A still has XDP program %d", id)
	}
	if id := b.xdpProgID(t); id == 0 || b.egressCount(t) != 1 {
		t.Fatalf("detaching in A detached B: XDP %d, %d egress", id, b.egressCount(t))
	}
	if _, err := os.Stat(a.pin); err != nil {
		t.Fatalf("detaching A's last interface removed the state B uses: %v", err)
	}
	b.send(t, request(t, attacker))
	b.expectCounters(t, "xdp", map[string]uint64{"drop_request": 1})
	b.do(t, func(g *Guard) error { _, err := g.DetachAll(); return err })
	b.requireNothingLeft(t, "after B's detach --all")
}

// netnsOf is the inode of ns's network namespace.
func netnsOf(t *testing.T, ns *nstest.NS) uint64 {
	t.Helper()
	var ino uint64
	if err := ns.Do(func() (err error) { ino, err = CurrentNetns(); return err }); err != nil {
		t.Fatal(err)
	}
	return ino
}

func TestEnsureBPFFSRefusesOtherFilesystems(t *testing.T) {
	dir := t.TempDir()
	err := EnsureBPFFS(filepath.Join(dir, "pins"))
	if !errors.Is(err, ErrNotBPFFS) {
		t.Fatalf("pin path on %s: %v, want ErrNotBPFFS", dir, err)
	}
}

// TestWritersSerialisedReadersFree: one writer at a time holds the pin path,
// and a reader (stats --watch) never holds a writer up.
func TestWritersSerialisedReadersFree(t *testing.T) {
	r := newRig(t)
	r.attach(t, AttachOptions{})
	err := r.host.Do(func() error {
		reader, err := OpenReadOnly(r.pin)
		if err != nil {
			return err
		}
		defer reader.Close()
		w1, err := Open(r.pin, false) // must not wait for the reader
		if err != nil {
			return err
		}
		second := make(chan error, 1)
		go func() {
			w2, err := Open(r.pin, false)
			if err == nil {
				w2.Close()
			}
			second <- err
		}()
		select {
		case err := <-second:
			w1.Close()
			return fmt.Errorf("a second writer got in while the first held the lock (%v)", err)
		case <-time.After(100 * time.Millisecond):
			// Still waiting, as it should: the only way to see a
			// writer blocked is to see it not finish.
		}
		w1.Close()
		select {
		case err := <-second:
			return err
		case <-time.After(nstest.Scaled(5 * time.Second)):
			return errors.New("the second writer never got the lock after the first closed")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestForceOverLinkedPrograms: --force detaches a foreign program held by a
// bpf_link, and never one in another namespace: links name an ifindex, not a
// namespace, and ifindexes repeat across namespaces.
func TestForceOverLinkedPrograms(t *testing.T) {
	newProg := func() *ebpf.Program {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "not_xdpguard", Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { prog.Close() })
		return prog
	}
	linkTo := func(r *rig, prog *ebpf.Program) {
		idx := r.hostLink(t).Attrs().Index
		err := r.host.Do(func() error {
			l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: idx})
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	idOf := func(p *ebpf.Program) uint32 {
		info, _ := p.Info()
		id, _ := info.ID()
		return uint32(id)
	}
	forceAttach := func(r *rig) error {
		_, err := r.tryAttach(rigHostIf, AttachOptions{Force: true})
		return err
	}

	t.Run("distinct programs", func(t *testing.T) {
		r1, r2 := newRig(t), newRig(t)
		if a, b := r1.hostLink(t).Attrs().Index, r2.hostLink(t).Attrs().Index; a != b {
			t.Fatalf("ifindexes %d and %d; the test needs them equal", a, b)
		}
		p1, p2 := newProg(), newProg()
		linkTo(r2, p2) // first, so a search by ifindex alone would find it
		linkTo(r1, p1)
		if err := forceAttach(r1); err != nil {
			t.Fatal(err)
		}
		if r1.xdpProgID(t) == idOf(p1) {
			t.Fatal("--force left the foreign program attached")
		}
		if got := r2.xdpProgID(t); got != idOf(p2) {
			t.Fatalf("--force in one namespace changed another's program: %d, want %d", got, idOf(p2))
		}
	})

	t.Run("one program in two namespaces", func(t *testing.T) {
		r1, r2 := newRig(t), newRig(t)
		p := newProg()
		linkTo(r2, p)
		linkTo(r1, p)
		err := forceAttach(r1)
		if !errors.Is(err, ErrForeignProgram) || !strings.Contains(err.Error(), "bpftool link detach") {
			t.Fatalf("--force with two indistinguishable links: %v, want a refusal that says what to do", err)
		}
		if r1.xdpProgID(t) != idOf(p) || r2.xdpProgID(t) != idOf(p) {
			t.Fatalf("a refused --force changed a program: %d, %d, want %d on both", r1.xdpProgID(t), r2.xdpProgID(t), idOf(p))
		}
	})
}

// TestAutoFallsBackToGeneric: a bridge has no native XDP; auto mode attaches
// in generic mode and warns, naming the driver; native mode refuses.
func TestAutoFallsBackToGeneric(t *testing.T) {
	r := newRig(t)
	err := r.host.Do(func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "xgbr0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	var res AttachResult
	var nativeErr error
	// Two Guards: the failed first attach removes the state it made, and
	// the Guard that made it may change nothing more.
	r.do(t, func(g *Guard) (err error) {
		_, nativeErr = g.Attach("xgbr0", AttachOptions{Mode: XDPNative})
		return nil
	})
	r.do(t, func(g *Guard) (err error) {
		res, err = g.Attach("xgbr0", AttachOptions{Warn: func(w string) { warnings = append(warnings, w) }})
		return err
	})
	if nativeErr == nil || !strings.Contains(nativeErr.Error(), "driver bridge") || !strings.Contains(nativeErr.Error(), "--mode generic") {
		t.Errorf("native on a bridge: %v, want an error naming the driver and the fix", nativeErr)
	}
	if res.Mode != XDPGeneric {
		t.Fatalf("auto on a bridge attached in %q mode, want generic", res.Mode)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "driver bridge") || !strings.Contains(warnings[0], "generic mode") {
		t.Fatalf("warnings %q, want one naming the driver and generic mode", warnings)
	}
	var atts []Attachment
	r.do(t, func(g *Guard) (err error) {
		atts, err = g.Attachments()
		return err
	})
	if len(atts) != 1 || atts[0].Mode != "generic" {
		t.Fatalf("status: %+v, want xgbr0 in generic mode", atts)
	}
}

func TestLoadFailureShowsVerifierLog(t *testing.T) {
	nstest.RequireRoot(t)
	// Returns without setting R0: the verifier refuses, and says so.
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Return()},
	})
	if err == nil {
		t.Fatal("the verifier accepted a program that never sets R0")
	}
	msg := verifierError(err).Error()
	if !strings.Contains(msg, "load BPF programs") || !strings.Contains(msg, "R0 !read_ok") || !strings.Contains(msg, "0: (95) exit") {
		t.Fatalf("the error does not carry the verifier's log:\n%s", msg)
	}
}
