// Package lab is xdpguard's lab topology, the one implementation behind the
// end-to-end tests, `make demo` (scripts/lab.sh, scripts/demo.sh) and the
// benchmarks:
//
//	attacker ──att0/r-att── router ──r-refl0/refl0── reflector (memcached)
//	                          │    ──r-refl1/refl1──
//	                          └──r-vic/vic0── victim
//
// Four network namespaces, named PREFIX-attacker, PREFIX-router,
// PREFIX-reflector and PREFIX-victim. The attacker spoofs the victim's
// address in UDP requests to the reflector's real memcached; the router
// forwards them (rp_filter off) and forwards the amplified answers to the
// victim over a link whose IPv4 path MTU is 1000, so every full 1400-byte
// memcached datagram arrives there as IP fragments.
//
// refl0 is the interface xdpguard protects. refl1 is an unfiltered path:
// requests arriving there are answered out of refl0 (the reflector routes
// the victim via refl0), which only xdpguard's TC egress program can stop.
//
// Every link carries IPv4 and IPv6. The victim link's MTU is 1280, not
// 1000: Linux turns IPv6 off on an interface below IPv6's minimum MTU. The
// router holds IPv4 to the victim to 1000 bytes with a locked route MTU
// (forwarded datagrams are fragmented to it), and the reflector sends IPv6
// to the victim with a 1280 route MTU, so it fragments its IPv6 answers
// itself as IPv6 requires.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// Interface names, the same in every lab (they live in its namespaces).
const (
	AttackerIf    = "att0"    // attacker's link to the router
	RouterAttIf   = "r-att"   // router's end of it
	Refl0If       = "refl0"   // reflector's protected link
	RouterRefl0If = "r-refl0" // router's end of it
	Refl1If       = "refl1"   // reflector's unfiltered link
	RouterRefl1If = "r-refl1" // router's end of it
	VictimIf      = "vic0"    // victim's link to the router
	RouterVicIf   = "r-vic"   // router's end of it
)

// MTUs of the victim link.
const (
	// VictimLinkMTU is the router–victim link's MTU: IPv6's minimum, so
	// the link keeps IPv6.
	VictimLinkMTU = 1280
	// VictimPathMTU4 is the IPv4 MTU the router forwards to the victim
	// with: memcached's 1436-byte answers become two fragments each.
	VictimPathMTU4 = 1000
)

// MemcachedPort is the port the lab's memcached serves TCP and UDP on.
const MemcachedPort = 11211

// VictimPort is the source port attacks spoof: the victim's "service" the
// reflected flood is aimed at. Nothing listens there.
const VictimPort = 40000

// BarrierPort is where the victim listens for the lab's flush datagrams.
const BarrierPort = 40009

// Addresses of one family on the lab's links.
type Addrs struct {
	Attacker, RouterAtt netip.Addr
	Refl0, RouterRefl0  netip.Addr
	Refl1, RouterRefl1  netip.Addr
	Victim, RouterVic   netip.Addr
	AttNet, Refl0Net    netip.Prefix
	Refl1Net, VicNet    netip.Prefix
	Bits                int
	DefaultRoute        string
	loopback            netip.Addr
	family              int
}

// V4 and V6 are the lab's addresses.
var (
	V4 = Addrs{
		Attacker: mustAddr("10.77.1.2"), RouterAtt: mustAddr("10.77.1.1"),
		Refl0: mustAddr("10.77.2.2"), RouterRefl0: mustAddr("10.77.2.1"),
		Refl1: mustAddr("10.77.3.2"), RouterRefl1: mustAddr("10.77.3.1"),
		Victim: mustAddr("10.77.4.2"), RouterVic: mustAddr("10.77.4.1"),
		AttNet: netip.MustParsePrefix("10.77.1.0/24"), Refl0Net: netip.MustParsePrefix("10.77.2.0/24"),
		Refl1Net: netip.MustParsePrefix("10.77.3.0/24"), VicNet: netip.MustParsePrefix("10.77.4.0/24"),
		Bits: 24, DefaultRoute: "default", loopback: mustAddr("127.0.0.1"), family: 4,
	}
	V6 = Addrs{
		Attacker: mustAddr("fd77:1::2"), RouterAtt: mustAddr("fd77:1::1"),
		Refl0: mustAddr("fd77:2::2"), RouterRefl0: mustAddr("fd77:2::1"),
		Refl1: mustAddr("fd77:3::2"), RouterRefl1: mustAddr("fd77:3::1"),
		Victim: mustAddr("fd77:4::2"), RouterVic: mustAddr("fd77:4::1"),
		AttNet: netip.MustParsePrefix("fd77:1::/64"), Refl0Net: netip.MustParsePrefix("fd77:2::/64"),
		Refl1Net: netip.MustParsePrefix("fd77:3::/64"), VicNet: netip.MustParsePrefix("fd77:4::/64"),
		Bits: 64, DefaultRoute: "default6", loopback: mustAddr("::1"), family: 6,
	}
)

// Family returns V4 for 4 and V6 for 6.
func Family(f int) Addrs {
	if f == 6 {
		return V6
	}
	return V4
}

// Family is 4 or 6.
func (a Addrs) Family() int { return a.family }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func cidr(a netip.Addr, bits int) string { return netip.PrefixFrom(a, bits).String() }

// Roles of the namespaces, in creation order.
var Roles = []string{"attacker", "router", "reflector", "victim"}

// NamespaceName is the name of a role's namespace in the lab PREFIX.
func NamespaceName(prefix, role string) string { return prefix + "-" + role }

// StateDir holds labs' memcached pid and log files (for the command line
// tool, whose labs outlive it).
const StateDir = "/run/xdpguard-lab"

// Lab is one running lab.
type Lab struct {
	Prefix                              string
	Attacker, Router, Reflector, Victim *nstest.NS
	memcached                           *memcached
}

// New builds a lab with a unique prefix for a test, with memcached running
// and answering, and tears it all down in t.Cleanup.
func New(t testing.TB) *Lab {
	t.Helper()
	nstest.RequireRoot(t)
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("lab: random prefix: %v", err)
	}
	l, err := Build("xgt" + hex.EncodeToString(suffix[:]))
	if err != nil {
		if l != nil {
			_ = l.Close()
		}
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab: %v", err)
		}
	})
	if err := l.StartMemcached(false); err != nil {
		t.Fatalf("lab: %v", err)
	}
	return l
}

// Build creates the namespaces and links of lab PREFIX and configures
// addresses, routes and sysctls; it does not start memcached. On error the
// returned Lab (possibly partial) should be Closed.
func Build(prefix string) (*Lab, error) {
	l := &Lab{Prefix: prefix}
	nss := make([]*nstest.NS, len(Roles))
	for i, role := range Roles {
		ns, err := nstest.Create(NamespaceName(prefix, role))
		if err != nil {
			return l, err
		}
		nss[i] = ns
		l.setRole(role, ns)
	}
	return l, l.configure()
}

func (l *Lab) setRole(role string, ns *nstest.NS) {
	switch role {
	case "attacker":
		l.Attacker = ns
	case "router":
		l.Router = ns
	case "reflector":
		l.Reflector = ns
	case "victim":
		l.Victim = ns
	}
}

func (l *Lab) configure() error {
	links := []struct {
		a      *nstest.NS
		aName  string
		b      *nstest.NS
		bName  string
		mtu    int
		aAddrs func(Addrs) netip.Addr
		bAddrs func(Addrs) netip.Addr
	}{
		{l.Attacker, AttackerIf, l.Router, RouterAttIf, 1500, func(a Addrs) netip.Addr { return a.Attacker }, func(a Addrs) netip.Addr { return a.RouterAtt }},
		{l.Reflector, Refl0If, l.Router, RouterRefl0If, 1500, func(a Addrs) netip.Addr { return a.Refl0 }, func(a Addrs) netip.Addr { return a.RouterRefl0 }},
		{l.Reflector, Refl1If, l.Router, RouterRefl1If, 1500, func(a Addrs) netip.Addr { return a.Refl1 }, func(a Addrs) netip.Addr { return a.RouterRefl1 }},
		{l.Victim, VictimIf, l.Router, RouterVicIf, VictimLinkMTU, func(a Addrs) netip.Addr { return a.Victim }, func(a Addrs) netip.Addr { return a.RouterVic }},
	}
	// Sysctls first: per-interface defaults are copied at creation.
	for _, ns := range []*nstest.NS{l.Router, l.Reflector} {
		for _, kv := range [][2]string{
			// Spoofed sources must pass: the router sees the victim's
			// address arrive from the attacker, the reflector sees it
			// arrive on refl1 though it routes it via refl0.
			{"net.ipv4.conf.all.rp_filter", "0"},
			{"net.ipv4.conf.default.rp_filter", "0"},
		} {
			if err := ns.Sysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"}} {
		if err := l.Router.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	// memcached's UDP sockets then send without DF, so the router fragments
	// its answers instead of dropping them with "fragmentation needed".
	// Sockets read this when created: before memcached starts.
	if err := l.Reflector.Sysctl("net.ipv4.ip_no_pmtu_disc", "1"); err != nil {
		return err
	}
	for _, lk := range links {
		if err := nstest.VethPair(lk.a, lk.aName, lk.b, lk.bName, lk.mtu); err != nil {
			return err
		}
		for _, end := range []struct {
			ns   *nstest.NS
			name string
			addr func(Addrs) netip.Addr
		}{{lk.a, lk.aName, lk.aAddrs}, {lk.b, lk.bName, lk.bAddrs}} {
			for _, fam := range []Addrs{V4, V6} {
				if err := end.ns.AddAddr(end.name, cidr(end.addr(fam), fam.Bits)); err != nil {
					return err
				}
			}
			// NAPI on every receiving end: frames keep their order from
			// any sender CPU, which the flush barrier relies on.
			if err := end.ns.SetGRO(end.name, true); err != nil {
				return err
			}
			if end.ns == l.Router || end.ns == l.Reflector {
				if err := end.ns.Sysctl("net.ipv4.conf."+end.name+".rp_filter", "0"); err != nil {
					return err
				}
			}
		}
	}
	for _, fam := range []Addrs{V4, V6} {
		routes := []struct {
			ns              *nstest.NS
			dst, gw, ifname string
			mtu             int
		}{
			{l.Attacker, fam.DefaultRoute, fam.RouterAtt.String(), AttackerIf, 0},
			{l.Victim, fam.DefaultRoute, fam.RouterVic.String(), VictimIf, 0},
			// Everything not on refl1's own subnet leaves via refl0: that
			// makes refl1 the asymmetric, unfiltered path.
			{l.Reflector, fam.DefaultRoute, fam.RouterRefl0.String(), Refl0If, 0},
		}
		if fam.family == 6 {
			routes = append(routes, struct {
				ns              *nstest.NS
				dst, gw, ifname string
				mtu             int
			}{l.Reflector, fam.VicNet.String(), fam.RouterRefl0.String(), Refl0If, VictimLinkMTU})
		}
		for _, r := range routes {
			if err := r.ns.AddRoute(r.dst, r.gw, r.ifname, r.mtu); err != nil {
				return err
			}
		}
	}
	// The locked IPv4 route MTU on the router: forwarded datagrams to the
	// victim are fragmented to 1000 bytes.
	if out, err := l.Router.Run("ip", "-4", "route", "replace", V4.VicNet.String(), "dev", RouterVicIf, "mtu", "lock", fmt.Sprint(VictimPathMTU4)); err != nil {
		return fmt.Errorf("router: victim route MTU: %w (%s)", err, out)
	}
	return nil
}

// Open attaches to the running lab PREFIX (built by another process).
func Open(prefix string) (*Lab, error) {
	l := &Lab{Prefix: prefix}
	for _, role := range Roles {
		ns, err := nstest.Open(NamespaceName(prefix, role))
		if err != nil {
			l.Release()
			return nil, fmt.Errorf("lab %s is not up: %w", prefix, err)
		}
		l.setRole(role, ns)
	}
	l.memcached = &memcached{pidFile: pidFile(prefix)}
	return l, nil
}

// Exists reports whether any namespace of lab PREFIX exists.
func Exists(prefix string) bool {
	for _, role := range Roles {
		if nstest.Exists(NamespaceName(prefix, role)) {
			return true
		}
	}
	return false
}

// Namespaces lists the lab's namespaces in role order.
func (l *Lab) Namespaces() []*nstest.NS {
	return []*nstest.NS{l.Attacker, l.Router, l.Reflector, l.Victim}
}

// Release lets go of this process's handles, leaving the lab running.
func (l *Lab) Release() {
	for _, ns := range l.Namespaces() {
		if ns != nil {
			ns.Release()
		}
	}
}

// Close stops memcached and removes the lab's namespaces (their links and
// anything attached to them go with them).
func (l *Lab) Close() error {
	var errs []error
	if l.memcached != nil {
		errs = append(errs, l.memcached.stop())
	} else {
		errs = append(errs, stopPidFile(pidFile(l.Prefix)))
	}
	for _, ns := range l.Namespaces() {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}

// Down removes lab PREFIX, whoever built it, and is a no-op when it is not
// there: scripts/lab.sh down is idempotent.
func Down(prefix string) error {
	errs := []error{stopPidFile(pidFile(prefix))}
	for _, role := range Roles {
		errs = append(errs, nstest.Remove(NamespaceName(prefix, role)))
	}
	_ = os.Remove(logFile(prefix))
	return errors.Join(errs...)
}

func pidFile(prefix string) string { return filepath.Join(StateDir, prefix+".memcached.pid") }
func logFile(prefix string) string { return filepath.Join(StateDir, prefix+".memcached.log") }

// String describes the lab for humans.
func (l *Lab) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lab %s:\n", l.Prefix)
	fmt.Fprintf(&b, "  %-13s %-8s %s, %s\n", l.Attacker.Name(), AttackerIf, V4.Attacker, V6.Attacker)
	fmt.Fprintf(&b, "  %-13s %-8s %s, %s (memcached :%d tcp+udp; protected link)\n", l.Reflector.Name(), Refl0If, V4.Refl0, V6.Refl0, MemcachedPort)
	fmt.Fprintf(&b, "  %-13s %-8s %s, %s (unfiltered path, answers leave via %s)\n", "", Refl1If, V4.Refl1, V6.Refl1, Refl0If)
	fmt.Fprintf(&b, "  %-13s %-8s %s, %s (link MTU %d, IPv4 path MTU %d)\n", l.Victim.Name(), VictimIf, V4.Victim, V6.Victim, VictimLinkMTU, VictimPathMTU4)
	fmt.Fprintf(&b, "  %-13s forwards between them, rp_filter off\n", l.Router.Name())
	return b.String()
}
