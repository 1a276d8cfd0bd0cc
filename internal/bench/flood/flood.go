// Package flood measures a memcached reflector under a UDP request flood:
// trafgen in an attacker namespace sends memcached gets at full rate into
// the reflector's veth, which runs a real memcached, while a client in a
// third namespace times TCP gets. It compares xdpguard against nftables
// drop rules and against no protection at all.
package flood

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdpguard/xdpguard/internal/bench/frames"
	"github.com/xdpguard/xdpguard/internal/memcache"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/loader"
)

// Setup names what guards the reflector during one flood.
type Setup struct {
	Name string
	Desc string
	// RandomSources: the flood's sources cycle through RandomSources()
	// instead of one address.
	RandomSources bool
	up            func(l *Lab) error
	down          func(l *Lab) error
}

// Setups returns the four setups in the order they run. No protection runs
// last so memcached's backlog from it cannot spill into another window.
func Setups() []Setup {
	return []Setup{
		{Name: "xdpguard", Desc: "xdpguard attached (XDP, native mode on veth)", up: attach, down: detach},
		{Name: "nft-netdev", Desc: "nftables netdev ingress: udp dport " + portStr + " drop",
			up: func(l *Lab) error {
				return l.nft("table netdev xgbench {\n\tchain ingress {\n\t\ttype filter hook ingress device \"" + ReflIf + "\" priority 0; policy accept;\n\t\tudp dport " + portStr + " drop\n\t}\n}")
			},
			down: func(l *Lab) error { return l.nft("delete table netdev xgbench") }},
		{Name: "nft-inet", Desc: "nftables inet input: udp dport " + portStr + " drop",
			up: func(l *Lab) error {
				return l.nft("table inet xgbench {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tudp dport " + portStr + " drop\n\t}\n}")
			},
			down: func(l *Lab) error { return l.nft("delete table inet xgbench") }},
		{Name: "xdpguard-rnd", Desc: fmt.Sprintf("xdpguard, empty allow list, %d random sources", len(RandomSources())),
			RandomSources: true, up: attach, down: detach},
		{Name: "xdpguard-rnd-1M", Desc: fmt.Sprintf("xdpguard, allow list of %d prefixes none of the sources is on, the same %d random sources", AllowListSize, len(RandomSources())),
			RandomSources: true,
			up: func(l *Lab) error {
				if err := attach(l); err != nil {
					return err
				}
				if l.AllowFile == "" {
					return errors.New("no allow-list file for the flood (Lab.AllowFile)")
				}
				_, err := l.Refl.Run(l.Xdpguard, "--pin-path", l.PinPath, "allow", "load", l.AllowFile)
				return err
			},
			down: detach},
		{Name: "none", Desc: "no protection: memcached answers every get",
			up:   func(*Lab) error { return nil },
			down: func(*Lab) error { return nil }},
	}
}

func attach(l *Lab) error {
	_, err := l.Refl.Run(l.Xdpguard, "--pin-path", l.PinPath, "attach", ReflIf)
	return err
}

// detach removes the attachment and, with it, the state and allow list.
func detach(l *Lab) error {
	_, err := l.Refl.Run(l.Xdpguard, "--pin-path", l.PinPath, "detach", ReflIf)
	return err
}

// AllowListSize is the size of the allow list of the xdpguard-rnd-1M setup,
// which the caller writes to Lab.AllowFile.
const AllowListSize = 1_000_000

// The random sources' first three octets each step by one per frame
// (trafgen's dinc) through ranges of pairwise coprime lengths, so the
// sequence repeats only after their product: 223 * 225 * 2 = 100,350
// distinct sources spread over 1.0.0.0 to 223.224.1.7, every frame in
// another /24 from the one before. The last octet is fixed.
var sourceOctets = [3]struct{ lo, hi byte }{{1, 223}, {0, 224}, {0, 1}}

const sourceLast = 7

// RandomSources returns every source address the randomised flood sends
// from.
func RandomSources() []netip.Addr {
	var out []netip.Addr
	for a := sourceOctets[0].lo; ; a++ {
		for b := sourceOctets[1].lo; ; b++ {
			for c := sourceOctets[2].lo; ; c++ {
				out = append(out, netip.AddrFrom4([4]byte{a, b, c, sourceLast}))
				if c == sourceOctets[2].hi {
					break
				}
			}
			if b == sourceOctets[1].hi {
				break
			}
		}
		if a == sourceOctets[0].hi {
			break
		}
	}
	return out
}

// memcached serves TCP and UDP on the port xdpguard protects by default.
var (
	portStr       = strconv.Itoa(loader.DefaultPort)
	memcachedAddr = net.JoinHostPort(reflCl, portStr)
)

// Interface names and addresses of the lab.
const (
	AtkIf  = "atk0"
	ReflIf = "refl0"
	CliIf  = "cli0"
	ReflCl = "refl1"
	atkIP  = "10.77.0.1"
	reflIP = "10.77.0.2"
	cliIP  = "10.78.0.1"
	reflCl = "10.78.0.2"
)

// Lab is the three namespaces, memcached and the tools' paths.
type Lab struct {
	Atk, Refl, Cli *nstest.NS
	Xdpguard       string // the CLI binary
	PinPath        string // throwaway, under a bpffs
	Dir            string // scratch files
	AllowFile      string // AllowListSize prefixes, none covering RandomSources()
	memcached      *exec.Cmd
}

// NewLab builds attacker <-> reflector <-> client with namespaces named
// prefix+{a,r,c} and starts memcached (TCP and UDP on 11211) in the
// reflector. Close undoes all of it.
func NewLab(prefix, xdpguard, pinPath, dir string) (l *Lab, err error) {
	l = &Lab{Xdpguard: xdpguard, PinPath: pinPath, Dir: dir}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, n := range []struct {
		dst  **nstest.NS
		name string
	}{{&l.Atk, prefix + "a"}, {&l.Refl, prefix + "r"}, {&l.Cli, prefix + "c"}} {
		if *n.dst, err = nstest.Create(n.name); err != nil {
			return l, err
		}
	}
	if err := nstest.VethPair(l.Atk, AtkIf, l.Refl, ReflIf, 0); err != nil {
		return l, err
	}
	if err := nstest.VethPair(l.Cli, CliIf, l.Refl, ReflCl, 0); err != nil {
		return l, err
	}
	for _, a := range []struct {
		ns         *nstest.NS
		ifname, ip string
	}{{l.Atk, AtkIf, atkIP}, {l.Refl, ReflIf, reflIP}, {l.Cli, CliIf, cliIP}, {l.Refl, ReflCl, reflCl}} {
		if err := a.ns.AddAddr(a.ifname, a.ip+"/24"); err != nil {
			return l, err
		}
	}
	// memcached refuses to run as root without -u. UDP is off by default
	// since 1.5.6; the flood needs it on, as on a vulnerable reflector.
	l.memcached = l.Refl.Command("memcached", "-u", "nobody", "-l", "0.0.0.0", "-p", portStr, "-U", portStr, "-t", "2", "-m", "64", "-c", "1024")
	l.memcached.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := l.memcached.Start(); err != nil {
		return l, fmt.Errorf("start memcached: %w", err)
	}
	err = nstest.WaitFor(10*time.Second, "memcached to accept TCP", func() (bool, error) {
		c, err := dial(l.Cli, memcachedAddr)
		if err != nil {
			return false, err
		}
		defer c.Close()
		return true, c.Set(latencyKey, []byte("hello"))
	})
	return l, err
}

// Close stops memcached and removes the namespaces and the pin path.
func (l *Lab) Close() error {
	var errs []error
	if l.memcached != nil && l.memcached.Process != nil {
		l.memcached.Process.Kill()
		l.memcached.Wait()
	}
	for _, ns := range []*nstest.NS{l.Atk, l.Refl, l.Cli} {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	if l.PinPath != "" {
		errs = append(errs, os.RemoveAll(l.PinPath))
	}
	return errors.Join(errs...)
}

func (l *Lab) nft(script string) error {
	p := filepath.Join(l.Dir, "rules.nft")
	if err := os.WriteFile(p, []byte(script+"\n"), 0o600); err != nil {
		return fmt.Errorf("write nft script: %w", err)
	}
	_, err := l.Refl.Run("nft", "-f", p)
	return err
}

// attackFrame is a memcached UDP get for a key nobody set, from the
// attacker's address to the reflector, with the reflector's MAC.
func (l *Lab) attackFrame() ([]byte, error) {
	mac, err := l.Refl.HardwareAddr(ReflIf)
	if err != nil {
		return nil, err
	}
	f, err := frames.RequestTo(atkIP, reflIP)
	if err != nil {
		return nil, err
	}
	// testpkt gives every frame the same made-up MACs; the stack takes the
	// frame as its own only with the reflector's.
	copy(f[0:6], mac)
	return f, nil
}

// Offsets in an Ethernet + IPv4 + UDP frame.
const (
	ipv4Checksum = 14 + 10
	ipv4Source   = 14 + 12
	ipv4End      = 14 + 20
	udpChecksum  = 14 + 20 + 6
)

// trafgenConfig writes the frame as a trafgen packet: one byte list. With
// random, the source address's first three octets step through
// sourceOctets per frame, the IPv4 checksum is recomputed per frame
// (csumip) and the UDP checksum is zero (none, which IPv4 allows).
func (l *Lab) trafgenConfig(frame []byte, random bool) (string, error) {
	var b strings.Builder
	b.WriteString("{ ")
	for i := 0; i < len(frame); i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		switch {
		case random && i >= ipv4Source && i < ipv4Source+3:
			o := sourceOctets[i-ipv4Source]
			fmt.Fprintf(&b, "dinc(%d, %d, 1)", o.lo, o.hi)
		case random && i == ipv4Source+3:
			fmt.Fprintf(&b, "%d", sourceLast)
		case random && i == ipv4Checksum:
			fmt.Fprintf(&b, "csumip(14, %d)", ipv4End-1)
			i++ // csumip fills both bytes
		case random && (i == udpChecksum || i == udpChecksum+1):
			b.WriteString("0x00")
		default:
			fmt.Fprintf(&b, "0x%02x", frame[i])
		}
	}
	b.WriteString(" }\n")
	p := filepath.Join(l.Dir, "flood.trafgen")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("write trafgen config: %w", err)
	}
	return p, nil
}

// Result is what one setup saw over one or more flood windows: raw totals,
// so that windows merge by adding, and rates derived from them.
type Result struct {
	Setup          Setup
	Elapsed        time.Duration // measured window time, all windows
	Sent           uint64        // frames the attacker's veth transmitted
	Received       uint64        // frames the reflector's veth received
	RxDropped      uint64        // frames the reflector's veth dropped
	SoftirqTicks   uint64        // see snapshot
	MemcachedTicks uint64
	AttackGets     uint64 // gets memcached served that the client did not send
	Latency        Latency
}

// Merge adds another window of the same setup.
func (r *Result) Merge(o Result) {
	r.Elapsed += o.Elapsed
	r.Sent += o.Sent
	r.Received += o.Received
	r.RxDropped += o.RxDropped
	r.SoftirqTicks += o.SoftirqTicks
	r.MemcachedTicks += o.MemcachedTicks
	r.AttackGets += o.AttackGets
	r.Latency.merge(o.Latency)
}

// SentPPS is the attacker's transmit rate.
func (r Result) SentPPS() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }

// RxPPS is the rate of frames the reflector's veth received.
func (r Result) RxPPS() float64 { return float64(r.Received) / r.Elapsed.Seconds() }

// SoftirqNs is softirq CPU time per received frame.
func (r Result) SoftirqNs() float64 { return r.perFrame(r.SoftirqTicks) }

// MemcachedNs is memcached's CPU time per received frame.
func (r Result) MemcachedNs() float64 { return r.perFrame(r.MemcachedTicks) }

// CPUNs is the receiver's CPU time per received frame.
func (r Result) CPUNs() float64 { return r.SoftirqNs() + r.MemcachedNs() }

func (r Result) perFrame(ticks uint64) float64 {
	if r.Received == 0 {
		return 0
	}
	return float64(ticks) * tickNs / float64(r.Received)
}

// Run floods the reflector under setup for window and returns what it saw.
func (l *Lab) Run(ctx context.Context, s Setup, window time.Duration) (res Result, err error) {
	res.Setup = s
	if err := s.up(l); err != nil {
		return res, fmt.Errorf("set up %s: %w", s.Name, err)
	}
	defer func() {
		if derr := s.down(l); derr != nil && err == nil {
			err = fmt.Errorf("tear down %s: %w", s.Name, derr)
		}
	}()
	frame, err := l.attackFrame()
	if err != nil {
		return res, err
	}
	cfg, err := l.trafgenConfig(frame, s.RandomSources)
	if err != nil {
		return res, err
	}
	stats, err := dial(l.Cli, memcachedAddr)
	if err != nil {
		return res, err
	}
	defer stats.Close()
	before, err := l.snapshot(stats)
	if err != nil {
		return res, err
	}
	// One trafgen process on one CPU: the other CPU is left to the
	// receiver, memcached and the client. The qdisc is bypassed, as
	// trafgen does by default, so frames go straight into veth_xmit.
	tg := l.Atk.Command("trafgen", "--dev", AtkIf, "--conf", cfg, "--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats")
	// trafgen forks a worker per CPU and the parent does not pass SIGINT
	// on: it runs in a process group of its own, signalled as a whole.
	tg.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var tgOut strings.Builder
	tg.Stdout, tg.Stderr = &tgOut, &tgOut
	if err := tg.Start(); err != nil {
		return res, fmt.Errorf("start trafgen: %w", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		group := -tg.Process.Pid
		syscall.Kill(group, syscall.SIGINT)
		done := make(chan struct{})
		go func() { tg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(group, syscall.SIGKILL)
			<-done
		}
	}
	defer stop()
	// The window opens once frames arrive, not after a guessed delay.
	err = nstest.WaitFor(10*time.Second, "flood frames at the reflector", func() (bool, error) {
		st, err := l.Refl.LinkStats(ReflIf)
		if err != nil {
			return false, err
		}
		return st.RxPackets+st.RxDropped > before.rxPackets+before.rxDropped+10000, nil
	})
	if err != nil {
		return res, fmt.Errorf("%w (trafgen: %s)", err, strings.TrimSpace(tgOut.String()))
	}
	start, err := l.snapshot(stats)
	if err != nil {
		return res, err
	}
	lctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	res.Latency, err = MeasureLatency(lctx, l.Cli, memcachedAddr)
	if err != nil {
		return res, err
	}
	end, err := l.snapshot(stats)
	if err != nil {
		return res, err
	}
	stop()
	res.Elapsed = end.at.Sub(start.at)
	res.Sent = end.txPackets - start.txPackets
	res.Received = end.rxPackets - start.rxPackets
	res.RxDropped = end.rxDropped - start.rxDropped
	res.SoftirqTicks = end.softirq - start.softirq
	res.MemcachedTicks = end.memcachedCPU - start.memcachedCPU
	// The client's gets all hit the key it set; every miss is an attack
	// frame memcached parsed and answered.
	res.AttackGets = end.getMisses - start.getMisses
	// Requests still queued in memcached's socket would be answered in the
	// next setup's window: wait until it has drained them.
	if err := l.settle(stats); err != nil {
		return res, err
	}
	return res, nil
}

// settle waits until memcached has served every request that reached it:
// its UDP sockets' receive queues are empty and its get counter has stopped
// moving between two polls.
func (l *Lab) settle(mc *memcache.Client) error {
	var last uint64
	first := true
	return nstest.WaitFor(10*time.Second, "memcached to drain its UDP queue", func() (bool, error) {
		queued, err := l.udpQueued()
		if err != nil {
			return false, err
		}
		st, err := mc.Stats()
		if err != nil {
			return false, err
		}
		stable := !first && queued == 0 && st["cmd_get"] == last
		first, last = false, st["cmd_get"]
		return stable, nil
	})
}

// udpQueued sums the receive queues of the reflector's UDP sockets on
// memcached's port, from /proc/net/udp (one socket per memcached thread).
func (l *Lab) udpQueued() (uint64, error) {
	b, err := l.Refl.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, err
	}
	return parseUDPQueued(string(b), loader.DefaultPort)
}

// parseUDPQueued reads /proc/net/udp's text: "sl local_address rem_address
// st tx_queue:rx_queue ...", addresses as HEXIP:HEXPORT, queues in hex.
func parseUDPQueued(table string, port uint16) (uint64, error) {
	var total uint64
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			return 0, fmt.Errorf("/proc/net/udp: bad queue field %q", f[4])
		}
		n, err := strconv.ParseUint(rx, 16, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/net/udp: bad rx_queue %q: %w", rx, err)
		}
		total += n
	}
	return total, nil
}
