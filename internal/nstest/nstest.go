// Package nstest is a test kit for Linux network namespaces: named
// namespaces removed when the test ends, veth pairs across them, addresses,
// sysctls, commands run inside a namespace, and a raw-frame injector.
//
// Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); call
// RequireRoot first so unprivileged runs skip with a clear message.
//
// Namespaces are bound under /run/netns like `ip netns add` does, so the
// usual tools can look into them while a test runs. Do not use
// `ip netns exec` on them from tests: it remounts /sys and hides bpffs.
// Command runs programs under `nsenter --net=PATH`, which does not.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bound, as iproute2 does.
const RunDir = "/run/netns"

// RequireRoot skips the test unless it runs as root: namespaces, veth pairs,
// XDP and bpffs all need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, veth, XDP, bpffs); run with sudo, e.g. `sudo make test`")
	}
}

// NS is a named network namespace.
type NS struct {
	name   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// New creates a network namespace named prefix plus a random suffix, bound
// at /run/netns/NAME, with its loopback up. It is removed in t.Cleanup;
// anything still inside (veth ends, attached programs) goes with it once
// the last process inside has left.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("nstest: random name: %v", err)
	}
	ns, err := Create(prefix + hex.EncodeToString(suffix[:]))
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("nstest: %v", err)
		}
	})
	return ns
}

// Create creates the named network namespace NAME with its loopback up, for
// callers that manage its lifetime themselves (the lab's command line tool);
// tests use New. It fails if the name is taken.
func Create(name string) (*NS, error) {
	if len(name) > 200 || strings.ContainsAny(name, "/\x00") || name == "" {
		return nil, fmt.Errorf("create namespace %q: invalid name", name)
	}
	var h netns.NsHandle
	err := onNewThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("get current namespace: %w", err)
		}
		defer orig.Close()
		// NewNamed unshares this (locked) thread into the new namespace.
		h, err = netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create namespace %q: %w", name, err)
		}
		if err := netns.Set(orig); err != nil {
			return errThreadLost{fmt.Errorf("return from namespace %q: %w", name, err)}
		}
		return nil
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
			_ = netns.DeleteNamed(name)
		}
		return nil, err
	}
	ns, err := wrap(name, h)
	if err != nil {
		_ = ns.Close()
		return nil, err
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("namespace %s: loopback up: %w", name, err)
	}
	return ns, nil
}

// Open opens the existing named namespace NAME (bound under /run/netns).
// Close on the result removes the namespace; use Release to only let go.
func Open(name string) (*NS, error) {
	h, err := netns.GetFromPath(filepath.Join(RunDir, name))
	if err != nil {
		return nil, fmt.Errorf("open namespace %q: %w", name, err)
	}
	ns, err := wrap(name, h)
	if err != nil {
		ns.Release()
		return nil, err
	}
	return ns, nil
}

// Exists reports whether a namespace NAME is bound under /run/netns.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(RunDir, name))
	return err == nil
}

// Remove unbinds the named namespace NAME if it exists. The kernel frees it
// once no process or open handle refers to it.
func Remove(name string) error {
	if !Exists(name) {
		return nil
	}
	if err := netns.DeleteNamed(name); err != nil {
		return fmt.Errorf("remove namespace %q: %w", name, err)
	}
	return nil
}

func wrap(name string, h netns.NsHandle) (*NS, error) {
	ns := &NS{name: name, handle: h}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return ns, fmt.Errorf("namespace %s: netlink handle: %w", name, err)
	}
	ns.nl = nl
	return ns, nil
}

// Release closes this process's handles on the namespace without removing
// it.
func (ns *NS) Release() {
	if ns.nl != nil {
		ns.nl.Close()
		ns.nl = nil
	}
	if ns.handle.IsOpen() {
		ns.handle.Close()
	}
}

// Close releases the handles and removes the namespace's binding.
func (ns *NS) Close() error {
	ns.Release()
	return Remove(ns.name)
}

// Name is the namespace's name under /run/netns.
func (ns *NS) Name() string { return ns.name }

// Path is the namespace's bind-mount path, for `nsenter --net=PATH`.
func (ns *NS) Path() string { return filepath.Join(RunDir, ns.name) }

// Handle is a netlink handle operating inside the namespace. It belongs to
// the NS: do not close it.
func (ns *NS) Handle() *netlink.Handle { return ns.nl }

// NsHandle is the namespace's file handle (for netlink.NsFd and friends).
func (ns *NS) NsHandle() netns.NsHandle { return ns.handle }

// errThreadLost marks a failure to switch a locked thread back to its
// namespace: the thread must then die with its goroutine rather than go back
// to the scheduler in the wrong namespace.
type errThreadLost struct{ error }

func (e errThreadLost) Unwrap() error { return e.error }

// onNewThread runs fn on a fresh goroutine locked to its OS thread, so the
// caller's thread never changes namespace. If fn reports errThreadLost the
// thread stays locked and Go terminates it when the goroutine exits.
func onNewThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		var lost errThreadLost
		if !errors.As(err, &lost) {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// Do runs fn on an OS thread inside the namespace and then switches that
// thread back. Sockets fn opens stay in the namespace for their lifetime,
// and /proc/sys/net and /proc/thread-self/net read there show the
// namespace's view. (Use /proc/thread-self/net, not /proc/net: the latter
// is the main thread's namespace.)
func (ns *NS) Do(fn func() error) error {
	return onNewThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("get current namespace: %w", err)
		}
		defer orig.Close()
		if err := netns.Set(ns.handle); err != nil {
			return fmt.Errorf("enter namespace %s: %w", ns.name, err)
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return errThreadLost{errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns.name, err))}
		}
		return ferr
	})
}

// Command is exec.Command running name inside the namespace under
// `nsenter --net=PATH`, which (unlike `ip netns exec`) leaves /sys and bpffs
// as they are.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output,
// with the output in the error when it fails.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", ns.name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl writes a sysctl inside the namespace; key is dotted or slashed
// (net.ipv4.ip_forward or net/ipv4/ip_forward).
func (ns *NS) Sysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return ns.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns.name, err)
		}
		return nil
	})
}

// ReadFile reads a file while inside the namespace, e.g.
// /proc/thread-self/net/snmp.
func (ns *NS) ReadFile(path string) ([]byte, error) {
	var b []byte
	err := ns.Do(func() error {
		var err error
		b, err = os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s in %s: %w", path, ns.name, err)
		}
		return nil
	})
	return b, err
}

// Link looks up an interface in the namespace by name.
func (ns *NS) Link(name string) (netlink.Link, error) {
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: link %s: %w", ns.name, name, err)
	}
	return l, nil
}

// AddAddr adds an address in CIDR form ("10.0.0.1/24", "fd00::1/64") to an
// interface. IPv6 addresses skip duplicate address detection so they are
// usable at once instead of after DAD's delay.
func (ns *NS) AddAddr(ifname, cidr string) error {
	l, err := ns.Link(ifname)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("address %q: %w", cidr, err)
	}
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := ns.nl.AddrReplace(l, a); err != nil {
		return fmt.Errorf("%s: add %s to %s: %w", ns.name, cidr, ifname, err)
	}
	return nil
}

// AddRoute adds (or replaces) a route to dst (CIDR, or "default" /
// "default6") via gw, optionally pinned to an interface and with a route MTU
// (0: none).
func (ns *NS) AddRoute(dst, gw, ifname string, mtu int) error {
	r := netlink.Route{Gw: net.ParseIP(gw), MTU: mtu}
	switch dst {
	case "default":
		_, r.Dst, _ = net.ParseCIDR("0.0.0.0/0")
	case "default6":
		_, r.Dst, _ = net.ParseCIDR("::/0")
	default:
		_, n, err := net.ParseCIDR(dst)
		if err != nil {
			return fmt.Errorf("route %q: %w", dst, err)
		}
		r.Dst = n
	}
	if r.Gw == nil {
		return fmt.Errorf("route %s: invalid gateway %q", dst, gw)
	}
	if ifname != "" {
		l, err := ns.Link(ifname)
		if err != nil {
			return err
		}
		r.LinkIndex = l.Attrs().Index
	}
	if err := ns.nl.RouteReplace(&r); err != nil {
		return fmt.Errorf("%s: route %s via %s: %w", ns.name, dst, gw, err)
	}
	return nil
}

// Veth creates a veth pair, aName in a and bName in b, both with the given
// MTU (0: the default) and both up. It fails the test on error; the pair
// goes away with its namespaces.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string, mtu int) {
	t.Helper()
	if err := VethPair(a, aName, b, bName, mtu); err != nil {
		t.Fatalf("nstest: %v", err)
	}
}

// VethPair is Veth returning an error, for callers outside tests.
func VethPair(a *NS, aName string, b *NS, bName string, mtu int) error {
	if err := AddVethPair(a, aName, b, bName, mtu); err != nil {
		return err
	}
	// Up is not yet able to send: until the kernel's linkwatch work has
	// seen the carrier, a device's root qdisc is noop, which frees every
	// frame given to it without an error. On a host that work runs at
	// once; in an emulated guest it was seen to run late enough that a
	// test's first frame vanished. Wait for both ends to be operationally
	// up with their real qdisc in place.
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		if err := WaitFor(5*time.Second, end.ns.name+"/"+end.name+" able to send", func() (bool, error) {
			return end.ns.ready(end.name)
		}); err != nil {
			return err
		}
	}
	return nil
}

// AddVethPair makes the pair as VethPair does and sets both ends up, without
// waiting until they can carry frames: for links made as fast as netlink
// allows that carry no traffic (a burst of interfaces for the agent).
func AddVethPair(a *NS, aName string, b *NS, bName string, mtu int) error {
	// One queue each way. A veth end with more TX queues than its peer has
	// RX queues hands the peer skbs on queues the peer has no NAPI ring for,
	// and the peer takes those in without running its native XDP program:
	// an XDP test would pass or fail with the sending CPU's flow hash.
	v := netlink.NewVeth(netlink.LinkAttrs{Name: aName, MTU: mtu, NumTxQueues: 1, NumRxQueues: 1})
	v.PeerNumTxQueues, v.PeerNumRxQueues = 1, 1
	v.PeerName = bName
	v.PeerMTU = uint32(mtu)
	v.PeerNamespace = netlink.NsFd(int(b.handle))
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s <-> %s/%s: %w", a.name, aName, b.name, bName, err)
	}
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		l, err := end.ns.Link(end.name)
		if err != nil {
			return err
		}
		if err := end.ns.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: set %s up: %w", end.ns.name, end.name, err)
		}
	}
	return nil
}

// ready reports whether a link is operationally up and its root qdisc is
// no longer the noop one a device has until linkwatch activates it.
func (ns *NS) ready(ifname string) (bool, error) {
	l, err := ns.Link(ifname)
	if err != nil {
		return false, err
	}
	if l.Attrs().OperState != netlink.OperUp {
		return false, fmt.Errorf("operstate %s", l.Attrs().OperState)
	}
	qdiscs, err := ns.nl.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Type() == "noop" {
			return false, errors.New("root qdisc still noop")
		}
	}
	return true, nil
}

// LinkStats returns the interface's counters as netlink reports them.
func (ns *NS) LinkStats(ifname string) (netlink.LinkStatistics, error) {
	l, err := ns.Link(ifname)
	if err != nil {
		return netlink.LinkStatistics{}, err
	}
	if l.Attrs().Statistics == nil {
		return netlink.LinkStatistics{}, fmt.Errorf("%s: %s: no statistics", ns.name, ifname)
	}
	return *l.Attrs().Statistics, nil
}

// HardwareAddr returns an interface's MAC address.
func (ns *NS) HardwareAddr(ifname string) (net.HardwareAddr, error) {
	l, err := ns.Link(ifname)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// Eventually polls cond until it returns true, or until timeout passes and
// then fails the test with the last error cond returned. Errors do not stop
// the polling: a condition may be unreadable for a while (a process still
// starting). It is the kit's replacement for sleeping: wait on a condition
// with a deadline.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	if err := WaitFor(timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// WaitFor polls cond until it returns true (nil) or timeout passes (an error
// naming what was waited for, wrapping cond's last error). Polls back off
// from 1ms to 50ms, so quick conditions are seen quickly without spinning.
//
// The timeout is stretched by the time scale (Scaled): an emulated guest
// gets the same deadlines in its own time.
func WaitFor(timeout time.Duration, what string, cond func() (bool, error)) error {
	timeout = Scaled(timeout)
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("timed out after %v waiting for %s: %w", timeout, what, lastErr)
			}
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		// A timer on a channel is a bounded poll interval, not a sleep used
		// as synchronisation: the loop exits only on the condition or the
		// deadline.
		<-time.After(wait)
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// SetGRO switches generic receive offload on an interface in the namespace.
// On veth, GRO on gives the receiving end a NAPI ring, as XDP does: frames
// are then processed in the order they were sent, whichever CPU sent them
// (with GRO off each sender's CPU backlog is its own queue).
func (ns *NS) SetGRO(ifname string, on bool) error {
	const (
		siocEthtool = 0x8946
		ethtoolSGRO = 0x2c
	)
	val := struct{ cmd, data uint32 }{cmd: ethtoolSGRO}
	if on {
		val.data = 1
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&val)
		if errno != 0 {
			return fmt.Errorf("%s: set GRO %v on %s: %w", ns.name, on, ifname, errno)
		}
		return nil
	})
}
