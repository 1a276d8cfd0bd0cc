package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/lab"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// The reflection rig: a victim that is a client of DNS, NTP and memcached,
// the real servers of all three one router away, and the router's end of the
// victim's link as the place reflected floods are injected from:
//
//	victim ──rv-vic/rv-rtr── router ──rv-srv/rv-s── servers (dnsmasq, chronyd, memcached)
//
// dnsmasq and chronyd are Debian's, unpacked by scripts/testbins.sh and never
// installed (testBin), so the host's own time and name services are not
// touched; every file they write is in the test's temp dir.
// Every link has the default 1500-byte MTU, so the capture's full-size
// fragments fit.
const (
	rvVictimIf = "rv-vic" // victim's link, where xdpguard is attached
	rvRouterIf = "rv-rtr" // router's end of it: the injector
	rvRtrSrvIf = "rv-srv" // router's end of the servers' link
	rvServerIf = "rv-s"   // servers' link
	rvZone     = "xdpguard.test."
	discard    = 9 // the port spoofs from the real servers' address go to
)

var (
	rvVictim4, rvRouterV4 = netip.MustParseAddr("10.78.1.2"), netip.MustParseAddr("10.78.1.1")
	rvServer4, rvRouterS4 = netip.MustParseAddr("10.78.2.2"), netip.MustParseAddr("10.78.2.1")
	rvVictim6, rvRouterV6 = netip.MustParseAddr("fd78:1::2"), netip.MustParseAddr("fd78:1::1")
	rvServer6, rvRouterS6 = netip.MustParseAddr("fd78:2::2"), netip.MustParseAddr("fd78:2::1")
)

type reflectionRig struct {
	victim, router, servers *nstest.NS
	dir                     string
	inject                  *nstest.Injector
	victimMAC, routerMAC    net.HardwareAddr
	chronyd, dnsmasq        string // absolute paths of the unpacked servers
}

func newReflectionRig(t *testing.T) *reflectionRig {
	t.Helper()
	nstest.RequireRoot(t)
	t.Parallel()
	for _, bin := range []string{"memcached", "dig", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: run scripts/deps.sh (%v)", bin, err)
		}
	}
	r := &reflectionRig{
		chronyd: testBin(t, "chrony", "usr/sbin/chronyd"),
		dnsmasq: testBin(t, "dnsmasq-base", "usr/sbin/dnsmasq"),
	}
	r.victim, r.router, r.servers = nstest.New(t, "xgrv-vic-"), nstest.New(t, "xgrv-rtr-"), nstest.New(t, "xgrv-srv-")
	r.dir = t.TempDir()
	// The daemons run as root but read their files from here.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nstest.Veth(t, r.victim, rvVictimIf, r.router, rvRouterIf, 0)
	nstest.Veth(t, r.router, rvRtrSrvIf, r.servers, rvServerIf, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.victim.AddAddr(rvVictimIf, rvVictim4.String()+"/24"))
	must(r.victim.AddAddr(rvVictimIf, rvVictim6.String()+"/64"))
	must(r.router.AddAddr(rvRouterIf, rvRouterV4.String()+"/24"))
	must(r.router.AddAddr(rvRouterIf, rvRouterV6.String()+"/64"))
	must(r.router.AddAddr(rvRtrSrvIf, rvRouterS4.String()+"/24"))
	must(r.router.AddAddr(rvRtrSrvIf, rvRouterS6.String()+"/64"))
	must(r.servers.AddAddr(rvServerIf, rvServer4.String()+"/24"))
	must(r.servers.AddAddr(rvServerIf, rvServer6.String()+"/64"))
	must(r.victim.AddRoute("default", rvRouterV4.String(), rvVictimIf, 0))
	must(r.victim.AddRoute("default6", rvRouterV6.String(), rvVictimIf, 0))
	must(r.servers.AddRoute("default", rvRouterS4.String(), rvServerIf, 0))
	must(r.servers.AddRoute("default6", rvRouterS6.String(), rvServerIf, 0))
	must(r.router.Sysctl("net.ipv4.ip_forward", "1"))
	must(r.router.Sysctl("net.ipv6.conf.all.forwarding", "1"))

	var err error
	r.victimMAC, err = r.victim.HardwareAddr(rvVictimIf)
	must(err)
	r.routerMAC, err = r.router.HardwareAddr(rvRouterIf)
	must(err)
	r.inject = nstest.NewInjector(t, r.router, rvRouterIf)

	r.startDNS(t)
	r.startChrony(t)
	r.startMemcached(t)
	r.countStrays(t)
	return r
}

// daemon starts a server (a name in PATH, or an absolute path) in the
// servers' namespace, in the foreground, and stops it (SIGTERM, then waits)
// when the test ends.
func (r *reflectionRig) daemon(t *testing.T, bin string, args ...string) {
	t.Helper()
	name := filepath.Base(bin)
	log, err := os.Create(filepath.Join(r.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := r.servers.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	t.Cleanup(func() {
		// nsenter execs the daemon in place: the pid is the daemon's.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s log:\n%s", name, b)
		}
	})
}

// rvNames are the names the DNS server answers, with their IPv4 (A) and
// IPv6 (AAAA) addresses.
var rvNames = map[string][2]string{
	"www":   {"192.0.2.10", "2001:db8::10"},
	"mail":  {"192.0.2.25", "2001:db8::25"},
	"ntp":   {"192.0.2.123", "2001:db8::123"},
	"cache": {"192.0.2.211", "2001:db8::211"},
}

// startDNS runs dnsmasq as an authoritative server of the names above only:
// its config is the temp dir's file alone (no /etc/dnsmasq.conf, hosts or
// resolv.conf), no upstream, no DHCP, the pid file in the temp dir, root
// kept (Debian's default user "dnsmasq" exists only where dnsmasq-base is
// installed), listening on the servers' two addresses only.
func (r *reflectionRig) startDNS(t *testing.T) {
	t.Helper()
	var conf strings.Builder
	fmt.Fprintf(&conf, "port=53\nlisten-address=%s\nlisten-address=%s\nbind-interfaces\n", rvServer4, rvServer6)
	fmt.Fprintf(&conf, "no-resolv\nno-hosts\nno-poll\nlocal=/%s/\n", strings.TrimSuffix(rvZone, "."))
	fmt.Fprintf(&conf, "user=root\ngroup=root\npid-file=%s\nlog-facility=-\n", filepath.Join(r.dir, "dnsmasq.pid"))
	for name, addr := range rvNames {
		fmt.Fprintf(&conf, "host-record=%s.%s,%s,%s\n", name, strings.TrimSuffix(rvZone, "."), addr[0], addr[1])
	}
	path := filepath.Join(r.dir, "dnsmasq.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r.daemon(t, r.dnsmasq, "--keep-in-foreground", "--conf-file="+path)
	nstest.Eventually(t, 10*time.Second, "dnsmasq to answer", func() (bool, error) {
		_, err := r.lookup(r.servers, rvServer4, "www")
		return err == nil, err
	})
}

func (r *reflectionRig) startChrony(t *testing.T) {
	t.Helper()
	// A server of local time only (local stratum), for everyone (allow),
	// that never touches this host's clock (-x).
	// No command sockets (cmdport 0, bindcmdaddress /): parallel tests
	// would fight over the Unix socket's fixed path, under /run/chrony.
	// The pid file in the temp dir; no driftfile, dumpdir, ntsdumpdir, logdir
	// or rtcfile, so nothing is written anywhere else (checked with strace:
	// chronyd 4.3 opens only its config and pid file, and /etc's passwd,
	// nsswitch.conf and localtime, read only).
	conf := fmt.Sprintf("local stratum 8\nallow all\nport 123\ncmdport 0\nbindcmdaddress /\nbindaddress %s\nbindaddress %s\npidfile %s\n",
		rvServer4, rvServer6, filepath.Join(r.dir, "chronyd.pid"))
	path := filepath.Join(r.dir, "chrony.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -u root: Debian's chronyd otherwise drops to _chrony, a user only the
	// package's installation creates.
	r.daemon(t, r.chronyd, "-d", "-x", "-u", "root", "-f", path)
	nstest.Eventually(t, 10*time.Second, "chronyd to serve time", func() (bool, error) {
		err := r.syncClock(r.servers, rvServer4)
		return err == nil, err
	})
}

func (r *reflectionRig) startMemcached(t *testing.T) {
	t.Helper()
	r.daemon(t, "memcached", "-u", "nobody", "-p", fmt.Sprint(lab.MemcachedPort), "-U", fmt.Sprint(lab.MemcachedPort), "-t", "1", "-m", "16")
	nstest.Eventually(t, 10*time.Second, "memcached to answer over UDP", func() (bool, error) {
		_, err := r.mcGet(r.servers, rvServer4, "nothing", 1)
		return err == nil, err
	})
}

// lookup resolves NAME.xdpguard.test with dig from ns, its A and then its
// AAAA record, one try each, checks both answers and returns how many
// answers came.
func (r *reflectionRig) lookup(ns *nstest.NS, server netip.Addr, name string) (answers uint64, err error) {
	for i, qtype := range []string{"A", "AAAA"} {
		out, err := ns.Run("dig", "@"+server.String(), name+"."+rvZone, qtype, "+short", "+tries=1", "+time=5")
		if err != nil {
			return answers, fmt.Errorf("dig %s %s @%s: %w", name, qtype, server, err)
		}
		answers++
		if got, want := strings.TrimSpace(out), rvNames[name][i]; got != want {
			return answers, fmt.Errorf("dig %s %s @%s: got %q, want %s", name, qtype, server, got, want)
		}
	}
	return answers, nil
}

// syncClock measures the clock against server once, as `chronyd -q` would
// set it, without setting it (-Q).
func (r *reflectionRig) syncClock(ns *nstest.NS, server netip.Addr) error {
	out, err := ns.Run(r.chronyd, "-Q", "-t", "10", "-u", "root",
		"server "+server.String()+" iburst maxsamples 1", "cmdport 0", "bindcmdaddress /", "pidfile "+filepath.Join(r.dir, "client-"+ns.Name()+".pid"))
	if err != nil {
		return fmt.Errorf("chronyd -Q against %s: %w", server, err)
	}
	if !strings.Contains(out, "System clock wrong by") {
		return fmt.Errorf("chronyd -Q against %s: no measurement: %s", server, out)
	}
	return nil
}

// mcGet fetches key over memcached's UDP protocol from ns and returns the
// value ("" on a miss).
func (r *reflectionRig) mcGet(ns *nstest.NS, server netip.Addr, key string, reqID uint16) (string, error) {
	var c *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(server, lab.MemcachedPort)))
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(testpkt.MemcachedPayload(reqID, "get "+key+"\r\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("memcached UDP get %s from %s: %w", key, server, err)
	}
	if n < 8 || binary.BigEndian.Uint16(buf[0:2]) != reqID {
		return "", fmt.Errorf("memcached UDP get %s: answer of %d bytes is not to request %d", key, n, reqID)
	}
	body := string(buf[8:n])
	if body == "END\r\n" {
		return "", nil
	}
	// VALUE key flags bytes\r\ndata\r\nEND\r\n
	lines := strings.Split(body, "\r\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "VALUE "+key+" ") || lines[2] != "END" {
		return "", fmt.Errorf("memcached UDP get %s: unexpected answer %q", key, body)
	}
	return lines[1], nil
}

// mcSet stores a value over memcached's TCP protocol, from the servers'
// namespace.
func (r *reflectionRig) mcSet(t *testing.T, key, value string) {
	t.Helper()
	var c net.Conn
	if err := r.servers.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(rvServer4, lab.MemcachedPort).String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "set %s 0 0 %d\r\n%s\r\n", key, len(value), value)
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "STORED\r\n" {
		t.Fatalf("memcached set %s: %q %v", key, buf[:n], err)
	}
}

// countStrays puts nftables counters on the victim's link, at the netdev
// ingress hook: after XDP, before the IP layer. Whatever they count reached
// the victim's IP stack. stray4 and stray6 count IP packets and fragments
// from anyone but the real servers (and the router's neighbour discovery);
// spoofsrv counts datagrams from the real servers to the discard port,
// which no request of the victim's ever came from.
func (r *reflectionRig) countStrays(t *testing.T) {
	t.Helper()
	rules := fmt.Sprintf(`table netdev xgrv {
	counter stray4 {}
	counter stray6 {}
	counter spoofsrv {}
	chain in {
		type filter hook ingress device %q priority 0; policy accept;
		ip saddr != %s counter name stray4
		ip6 saddr != { %s, %s, fe80::/10 } counter name stray6
		ip saddr %s udp dport %d counter name spoofsrv
		ip6 saddr %s udp dport %d counter name spoofsrv
	}
}
`, rvVictimIf, rvServer4, rvServer6, rvRouterV6, rvServer4, discard, rvServer6, discard)
	path := filepath.Join(r.dir, "victim.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := r.victim.Run("nft", "-f", path); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
}

// strays reads the victim's nftables counters.
func (r *reflectionRig) strays(t *testing.T) map[string]uint64 {
	t.Helper()
	out, err := r.victim.Command("nft", "-j", "list", "counters", "table", "netdev", "xgrv").Output()
	if err != nil {
		t.Fatalf("nft list counters: %v", err)
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nft -j: %v: %s", err, out)
	}
	got := map[string]uint64{}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			got[o.Counter.Name] = o.Counter.Packets
		}
	}
	if len(got) != 3 {
		t.Fatalf("nft counters: %v, want stray4, stray6 and spoofsrv", got)
	}
	return got
}

// send injects one frame, addressed to the victim's link, into it from the
// router's end; a frame refused for a full queue is sent again.
func (r *reflectionRig) send(frame []byte) error {
	copy(frame[0:6], r.victimMAC)
	copy(frame[6:12], r.routerMAC)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.inject.Send(frame)
		if err == nil || !errors.Is(err, unix.ENOBUFS) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// floodCount is what a flood injected: datagrams (whole, or the first
// fragment of one) and later fragments.
type floodCount struct{ datagrams, later uint64 }

func (c *floodCount) add(o floodCount) { c.datagrams += o.datagrams; c.later += o.later }

// spoofs are reflected answers as the victim receives them in a flood: from
// many addresses, from the protected ports, to random ports of the victim,
// some large enough to arrive as fragments; and answers spoofed from the
// real servers' own addresses to the discard port.
type spoofs struct {
	rng *rand.Rand
	id  uint32
}

var rvFloodPorts = []uint16{53, 123, lab.MemcachedPort}

func (s *spoofs) next() (frames [][]byte, c floodCount, err error) {
	s.id++
	sport := rvFloodPorts[s.rng.IntN(len(rvFloodPorts))]
	dport := uint16(1024 + s.rng.IntN(64511))
	var src, dst netip.Addr
	six := s.rng.IntN(2) == 1
	switch {
	case s.id%16 == 1 && six: // from the real server, to a port no request came from (never fragmented: nft counts by port)
		src, dst, dport = rvServer6, rvVictim6, discard
	case s.id%16 == 1:
		src, dst, dport = rvServer4, rvVictim4, discard
	case six:
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8}
		binary.BigEndian.PutUint64(a[8:], s.rng.Uint64())
		src, dst = netip.AddrFrom16(a), rvVictim6
	default:
		src, dst = netip.AddrFrom4([4]byte{198, 18 + byte(s.rng.IntN(2)), byte(s.rng.IntN(256)), byte(1 + s.rng.IntN(254))}), rvVictim4
	}
	size := 40 + s.rng.IntN(400)
	if s.id%4 == 0 {
		size = 1500 + s.rng.IntN(2500) // an amplified answer: fragments
	}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(s.rng.Uint32())
	}
	p := testpkt.UDP(src, dst, sport, dport, payload)
	p.ID = s.id
	if size < 1400 {
		f, err := p.Frame()
		return [][]byte{f}, floodCount{datagrams: 1}, err
	}
	frames, err = p.Fragments(1400)
	return frames, floodCount{datagrams: 1, later: uint64(len(frames) - 1)}, err
}

// flood injects spoofed answers until stop is closed and at least least
// datagrams are sent, pacing itself to about 20,000 datagrams a second so the
// victim's clients share two CPUs with it, and reports what it sent.
func (r *reflectionRig) flood(seed uint64, least int, stop <-chan struct{}) (floodCount, error) {
	s := &spoofs{rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	var sent floodCount
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	burst := 20
	if nstest.Emulated() {
		// At full pace the flood took an emulated guest's CPU from the
		// clients, and the test 8-12 minutes; what is checked per
		// frame is the same at a tenth.
		burst = 2
	}
	for {
		for range burst {
			frames, c, err := s.next()
			if err != nil {
				return sent, err
			}
			for _, f := range frames {
				if err := r.send(f); err != nil {
					return sent, err
				}
			}
			sent.add(c)
		}
		select {
		case <-stop:
			if sent.datagrams >= uint64(least) {
				return sent, nil
			}
		default:
		}
		<-tick.C
	}
}

// captureFrames is the real reflected DNS attack in testdata, every UDP
// frame of it (the attack's answers, their fragments and any other UDP),
// readdressed to the victim, with its expected verdicts counted as the
// loader's replay test classifies them.
type captureFrames struct {
	frames                 [][]byte
	datagrams, afterFirst  uint64 // first fragments and whole answers from port 53; later fragments after their first
	orphans, tooLong, udp6 uint64
}

func readReflectedCapture(t *testing.T) captureFrames {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "amp.dns.RRSIG.fragmented.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var c captureFrames
	type key struct {
		src [4]byte
		id  uint16
	}
	seen := map[key]bool{} // first fragments so far, keyed as the victim sees them (one destination)
	for {
		data, _, err := rd.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		off := 0 // where the IP header starts
		var ip4 *layers.IPv4
		var ip6 *layers.IPv6
		for _, l := range p.Layers() {
			if v, ok := l.(*layers.IPv4); ok {
				ip4 = v
				break
			}
			if v, ok := l.(*layers.IPv6); ok {
				ip6 = v
				break
			}
			off += len(l.LayerContents())
		}
		switch {
		case ip4 != nil && ip4.Protocol == layers.IPProtocolUDP:
			frame := bytes.Clone(data)
			k := key{[4]byte(ip4.SrcIP.To4()), ip4.Id}
			first := ip4.FragOffset == 0
			from53 := first && len(ip4.Payload) >= 2 && binary.BigEndian.Uint16(ip4.Payload) == 53
			switch {
			case !first && !seen[k]:
				c.orphans++
			case !first:
				c.afterFirst++
			case from53:
				c.datagrams++
				if ip4.Flags&layers.IPv4MoreFragments != 0 {
					seen[k] = true
				}
			case ip4.Flags&layers.IPv4MoreFragments != 0:
				// Its later fragments would follow a pass verdict: the
				// counts below would not hold. The capture has none.
				t.Fatalf("capture: a fragmented UDP datagram from port %d", binary.BigEndian.Uint16(ip4.Payload))
			default:
				continue // whole UDP from another port: not the attack, and not protected
			}
			if len(frame) > 1514 {
				c.tooLong++
				continue
			}
			readdress4(frame[off:], rvVictim4, first)
			c.frames = append(c.frames, frame)
		case ip6 != nil:
			u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if !ok || u.SrcPort != 53 || ip6.NextHeader != layers.IPProtocolUDP {
				continue
			}
			frame := bytes.Clone(data)
			readdress6(frame[off:], rvVictim6)
			c.frames = append(c.frames, frame)
			c.datagrams++
			c.udp6++
		}
	}
	return c
}

// readdress4 rewrites an IPv4 packet's destination and fixes its header
// checksum, and (in a first fragment or whole datagram) its UDP checksum,
// incrementally (RFC 1624) so the reassembled datagram stays valid.
func readdress4(ip []byte, dst netip.Addr, first bool) {
	ihl := int(ip[0]&0x0f) * 4
	old := bytes.Clone(ip[16:20])
	a := dst.As4()
	copy(ip[16:20], a[:])
	binary.BigEndian.PutUint16(ip[10:12], 0)
	binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(ip[:ihl])))
	if first && len(ip) >= ihl+8 {
		adjustChecksum(ip[ihl+6:ihl+8], old, a[:])
	}
}

func readdress6(ip []byte, dst netip.Addr) {
	old := bytes.Clone(ip[24:40])
	a := dst.As16()
	copy(ip[24:40], a[:])
	adjustChecksum(ip[40+6:40+8], old, a[:]) // a UDP header right after the fixed one
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// adjustChecksum updates a UDP checksum for replaced pseudo-header bytes:
// HC' = ~(~HC + ~m + m'). A zero (absent) IPv4 UDP checksum stays zero.
func adjustChecksum(field, old, repl []byte) {
	hc := binary.BigEndian.Uint16(field)
	if hc == 0 {
		return
	}
	s := uint32(^hc)
	s += uint32(^fold(sum(old)))
	s += sum(repl)
	n := ^fold(s)
	if n == 0 {
		n = 0xffff
	}
	binary.BigEndian.PutUint16(field, n)
}

// TestReflectionVictimKeepsItsClients protects a host as the victim of DNS,
// NTP and memcached reflection (ports 53, 123 and 11211 as `response`) and
// checks that it still uses all three as a client, with real servers, while
// reflected floods arrive: spoofed answers from many addresses and the real
// reflected-DNS capture. Every lookup, clock sync and get must succeed;
// nothing unsolicited may reach the victim's IP layer; xdpguard must count
// exactly what was injected.
func TestReflectionVictimKeepsItsClients(t *testing.T) {
	r := newReflectionRig(t)
	r.mcSet(t, "k", "reflection-free")

	// Unprotected: the clients work, and the flood reaches the victim's IP
	// layer, counted exactly by the oracle this test relies on.
	clients := func(rounds int) (answers uint64) {
		t.Helper()
		for i := range rounds {
			server := []netip.Addr{rvServer4, rvServer6}[i%2]
			for name := range rvNames {
				n, err := r.lookup(r.victim, server, name)
				if err != nil {
					t.Errorf("round %d: %v", i, err)
				}
				answers += n
			}
			if v, err := r.mcGet(r.victim, server, "k", uint16(100+i)); err != nil || v != "reflection-free" {
				t.Errorf("round %d: memcached get k from %s: %q, %v", i, server, v, err)
			}
			answers++
			if i%3 == 0 {
				if err := r.syncClock(r.victim, server); err != nil {
					t.Errorf("round %d: %v", i, err)
				}
				answers++
			}
		}
		return answers
	}
	clients(2)
	if t.Failed() {
		t.Fatal("the clients fail without xdpguard: the rig is broken")
	}
	before := r.strays(t)
	stop := make(chan struct{})
	close(stop)
	open, err := r.flood(1, 200, stop)
	if err != nil {
		t.Fatal(err)
	}
	wantStray := open.datagrams + open.later
	nstest.Eventually(t, 10*time.Second, "the unprotected flood to reach the victim's IP layer", func() (bool, error) {
		s := r.strays(t)
		got := s["stray4"] + s["stray6"] + s["spoofsrv"] - before["stray4"] - before["stray6"] - before["spoofsrv"]
		return got >= wantStray, fmt.Errorf("counted %d of %d frames", got, wantStray)
	})
	if s := r.strays(t); s["spoofsrv"] == before["spoofsrv"] ||
		s["stray4"]+s["stray6"]+s["spoofsrv"]-before["stray4"]-before["stray6"]-before["spoofsrv"] != wantStray {
		t.Fatalf("unprotected: nft counted %v (from %v), want %d frames of which some from the servers' address: the oracle is broken", s, before, wantStray)
	}

	// Protected: as an operator would, with the profiles for DNS and NTP
	// and memcached's port as response; strict fragments, so orphan
	// fragments of the capture are dropped too.
	g := newGuard(t, r.victim)
	run(t, g, "attach", rvVictimIf, "--egress")
	run(t, g, "ports", "add", "--profile", "dns,ntp")
	run(t, g, "ports", "add", fmt.Sprint(lab.MemcachedPort), "--direction", "response")
	run(t, g, "fragments", "strict")
	if out := run(t, g, "ports", "list"); !strings.Contains(out, "53") || !strings.Contains(out, "123") {
		t.Fatalf("ports list after the profiles: %s", out)
	}
	st0 := stats(t, g)
	stray0 := r.strays(t)

	capture := readReflectedCapture(t)
	if capture.tooLong != 0 || capture.datagrams == 0 || capture.afterFirst == 0 || capture.orphans == 0 {
		t.Fatalf("capture: %+v: want answers, fragments after and before their first, none over 1514 bytes", capture)
	}

	var (
		wg       sync.WaitGroup
		flooded  floodCount
		floodErr error
	)
	stop = make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		flooded, floodErr = r.flood(2, 2000, stop)
	}()
	// Every client on both servers, before and after the capture; in an
	// emulated guest each exchange forks a client and costs seconds, so
	// fewer rounds (both servers and NTP syncs still).
	during, after := 9, 3
	if nstest.Emulated() {
		during, after = 4, 1
	}
	answers := clients(during)
	for _, f := range capture.frames {
		if err := r.send(f); err != nil {
			t.Fatal(err)
		}
	}
	answers += clients(after)
	close(stop)
	wg.Wait()
	if floodErr != nil {
		t.Fatal(floodErr)
	}

	want := map[string]uint64{
		"drop_unsolicited":     flooded.datagrams + capture.datagrams,
		"drop_fragment":        flooded.later + capture.afterFirst,
		"drop_orphan_fragment": capture.orphans,
	}
	st := st0
	nstest.Eventually(t, 10*time.Second, "xdpguard to count every injected frame", func() (bool, error) {
		st = stats(t, g)
		for reason, n := range want {
			if got := st.Packets(rvVictimIf, "xdp", reason) - st0.Packets(rvVictimIf, "xdp", reason); got < n {
				return false, fmt.Errorf("%s %d of %d", reason, got, n)
			}
		}
		return true, nil
	})
	for reason, n := range want {
		if got := st.Packets(rvVictimIf, "xdp", reason) - st0.Packets(rvVictimIf, "xdp", reason); got != n {
			t.Errorf("xdp %s: counted %d, injected %d", reason, got, n)
		}
	}
	if got := st.Packets(rvVictimIf, "xdp", "solicited") - st0.Packets(rvVictimIf, "xdp", "solicited"); got < answers {
		t.Errorf("xdp solicited: %d, want at least the clients' %d answers", got, answers)
	}
	for reason, n := range map[string]uint64{"drop_response": 0, "drop_request": 0, "pass_orphan_fragment": 0} {
		if got := st.Packets(rvVictimIf, "xdp", reason) - st0.Packets(rvVictimIf, "xdp", reason); got != n {
			t.Errorf("xdp %s: %d, want %d", reason, got, n)
		}
	}
	stray := r.strays(t)
	for name, n := range stray {
		if n != stray0[name] {
			t.Errorf("%d unsolicited packets or fragments reached the victim's IP layer (nft counter %s)", n-stray0[name], name)
		}
	}

	// Port 53 protected both ways, as before directions: the server's
	// answers are dropped, so the clients' check above can fail.
	run(t, g, "ports", "add", "53", "--direction", "both")
	if _, err := r.lookup(r.victim, rvServer4, "www"); err == nil {
		t.Error("a lookup succeeded with port 53 protected both ways: dropped answers would go unseen")
	}
	t.Logf("flood: %d datagrams, %d later fragments; capture: %d answers (%d IPv6), %d later fragments after their first, %d orphans; clients: %d answers",
		flooded.datagrams, flooded.later, capture.datagrams, capture.udp6, capture.afterFirst, capture.orphans, answers)
}
