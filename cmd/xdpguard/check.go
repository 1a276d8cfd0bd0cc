package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/loader"
)

func init() {
	commands = append(commands, checkCmd, versionCmd)
}

// A probe answers one question about this host; detail says why not.
type probe struct {
	name string
	run  func(c *cli) (ok bool, detail string)
	// warns: a false answer is a warning (the host can run xdpguard, but
	// something should be changed), not a failure.
	warns bool
}

func featureProbe(err error, fix string) (bool, string) {
	if err != nil {
		return false, fmt.Sprintf("%v: %s", err, fix)
	}
	return true, ""
}

// localPortsAtRisk are the live ports (or the defaults when nothing is set
// up) that drop UDP addressed to this host's own sockets bound to them:
// request and both ports. A response port drops only datagrams coming from
// it, so a local socket bound to it is not affected.
func localPortsAtRisk(c *cli) ([]uint16, error) {
	cfg, err := currentConfig(c)
	var out []uint16
	for _, p := range cfg.Ports {
		if p.Direction != loader.DirResponse {
			out = append(out, p.Number)
		}
	}
	return out, err
}

// portRangeAdvice warns about protected ports the kernel may hand out as
// local (ephemeral) ports: a UDP socket of this host bound to one, say a
// resolver's query, has its replies addressed to a protected port, and
// xdpguard drops them. rangeText is net.ipv4.ip_local_port_range ("32768
// 60999"), reservedText net.ipv4.ip_local_reserved_ports ("8080,9000-9100");
// both are per network namespace, and IPv6 uses them too. It returns "" when
// no port is at risk.
func portRangeAdvice(ports []uint16, rangeText, reservedText string) (string, error) {
	var lo, hi int
	if _, err := fmt.Sscanf(strings.TrimSpace(rangeText), "%d %d", &lo, &hi); err != nil {
		return "", fmt.Errorf("read net.ipv4.ip_local_port_range %q: %w", rangeText, err)
	}
	reserved := map[int]bool{}
	var kept []string
	for _, f := range strings.Split(strings.TrimSpace(reservedText), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		kept = append(kept, f)
		a, b, isRange := strings.Cut(f, "-")
		from, err := strconv.Atoi(a)
		to := from
		if err == nil && isRange {
			to, err = strconv.Atoi(b)
		}
		if err != nil {
			return "", fmt.Errorf("read net.ipv4.ip_local_reserved_ports %q: %w", reservedText, err)
		}
		for p := from; p <= to && p <= 65535; p++ {
			reserved[p] = true
		}
	}
	var risky []string
	for _, p := range ports {
		if int(p) >= lo && int(p) <= hi && !reserved[int(p)] {
			risky = append(risky, strconv.Itoa(int(p)))
		}
	}
	if len(risky) == 0 {
		return "", nil
	}
	all := strings.Join(append(kept, risky...), ",")
	return fmt.Sprintf("protected port(s) %s lie in net.ipv4.ip_local_port_range (%d-%d) and are not reserved: "+
		"this host may give one to its own outgoing UDP (a DNS query, say), and xdpguard then drops the replies. "+
		"Reserve them: sysctl -w net.ipv4.ip_local_reserved_ports=%s "+
		"and, to keep it across reboots: echo 'net.ipv4.ip_local_reserved_ports = %s' > /etc/sysctl.d/60-xdpguard.conf",
		strings.Join(risky, ","), lo, hi, all, all), nil
}

var probes = []probe{
	{name: "privileges (CAP_BPF, CAP_NET_ADMIN)", run: func(*cli) (bool, string) {
		return featureProbe(loader.CheckPrivileges(), "run as root")
	}},
	{name: "kernel version", run: func(*cli) (bool, string) {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return false, err.Error()
		}
		rel := unix.ByteSliceToString(u.Release[:])
		var major, minor int
		fmt.Sscanf(rel, "%d.%d", &major, &minor)
		switch {
		case major < 5 || major == 5 && minor < 9:
			return false, rel + ": XDP through bpf_link needs Linux 5.9 or later"
		case major < 6 || major == 6 && minor < 6:
			return true, rel + ": no tcx; --egress uses a clsact qdisc and cls_bpf"
		}
		return true, rel
	}},
	{name: "XDP programs", run: func(*cli) (bool, string) {
		return featureProbe(features.HaveProgramType(ebpf.XDP), "the kernel lacks XDP support (CONFIG_BPF_SYSCALL=y; XDP comes with it, and CONFIG_BPF_JIT=y makes it fast)")
	}},
	{name: "TC programs", run: func(*cli) (bool, string) {
		return featureProbe(features.HaveProgramType(ebpf.SchedCLS), "the kernel lacks cls_bpf (CONFIG_NET_CLS_BPF)")
	}},
	{name: "LPM trie maps", run: func(*cli) (bool, string) {
		return featureProbe(features.HaveMapType(ebpf.LPMTrie), "the kernel lacks BPF_MAP_TYPE_LPM_TRIE (Linux 4.11+)")
	}},
	{name: "LRU hash maps", run: func(*cli) (bool, string) {
		return featureProbe(features.HaveMapType(ebpf.LRUHash), "the kernel lacks BPF_MAP_TYPE_LRU_HASH (Linux 4.10+)")
	}},
	{name: "per-CPU arrays", run: func(*cli) (bool, string) {
		return featureProbe(features.HaveMapType(ebpf.PerCPUArray), "the kernel lacks BPF_MAP_TYPE_PERCPU_ARRAY (Linux 4.6+)")
	}},
	{name: "BPF JIT", run: func(*cli) (bool, string) {
		b, err := os.ReadFile("/proc/sys/net/core/bpf_jit_enable")
		if err != nil {
			return true, "unknown (" + err.Error() + ")"
		}
		if strings.TrimSpace(string(b)) == "0" {
			return true, "off: programs run interpreted, several times slower (sysctl net.core.bpf_jit_enable=1)"
		}
		return true, "on"
	}},
	{name: "bpffs", run: func(c *cli) (bool, string) {
		if err := loader.EnsureBPFFS(c.pinPath); err != nil {
			return false, err.Error()
		}
		return true, "pins go to " + c.pinPath
	}},
	{name: "protected ports outside the local port range", warns: true, run: func(c *cli) (bool, string) {
		ports, err := localPortsAtRisk(c)
		if err != nil {
			return false, err.Error()
		}
		rng, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err != nil {
			return false, err.Error()
		}
		res, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
		if err != nil {
			return false, err.Error()
		}
		advice, err := portRangeAdvice(ports, string(rng), string(res))
		if err != nil {
			return false, err.Error()
		}
		if advice != "" {
			return false, advice
		}
		return true, "ports " + joinPorts(loader.BothPorts(ports...))
	}},
	{name: "response ports have egress to record requests", warns: true, run: func(c *cli) (bool, string) {
		var gap *loader.EgressGap
		var n int
		err := readConfig(c, func(g *loader.Guard) (err error) {
			cfg, err := g.Maps.ReadConfig()
			if err != nil {
				return err
			}
			n = len(cfg.ResponsePorts())
			gap, err = egressGap(g)
			return err
		})
		switch {
		case errors.Is(err, loader.ErrNotSetUp):
			return true, "nothing attached"
		case err != nil:
			return false, err.Error()
		case gap != nil:
			return false, gap.String()
		case n == 0:
			return true, "no response port"
		}
		return true, fmt.Sprintf("%d response port(s), egress on every attached interface", n)
	}},
	{name: "programs pass the verifier", run: func(*cli) (bool, string) {
		m, err := loader.NewMaps(loader.MapSizes{})
		if err != nil {
			return false, err.Error()
		}
		defer m.Close()
		dp, err := loader.LoadDataplane(m, loader.Counters{})
		if err != nil {
			return false, err.Error()
		}
		dp.Close()
		return true, ""
	}},
}

var checkCmd = &command{
	name:    "check",
	args:    "",
	summary: "can this host run xdpguard, and if not, why not",
	help: `Probes what xdpguard needs: privileges, kernel version, program and map
types, the JIT, a BPF filesystem for the pin path (mounting /sys/fs/bpf if
missing), and loads the programs through the verifier without attaching
them. Warns (and still exits 0) when a protected port lies in the range the
kernel hands out as local ports and is not reserved, and says how to
reserve it; and when a response port's requests leave by an interface
without the egress program (they are not recorded, so every reply to them is
dropped). Exits 1 if anything needed is missing.`,
	example: `  sudo xdpguard check`,
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) > 0 {
			return usagef("check takes no arguments")
		}
		tw := table(c.stdout)
		failed := 0
		for _, p := range probes {
			ok, detail := p.run(c)
			mark := "ok"
			switch {
			case !ok && p.warns:
				mark = "warn"
			case !ok:
				mark = "FAIL"
				failed++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", mark, p.name, detail)
		}
		tw.Flush()
		if failed > 0 {
			return fmt.Errorf("%d check(s) failed: this host cannot run xdpguard as it is", failed)
		}
		return nil
	},
}

var versionCmd = &command{
	name:    "version",
	summary: "print the version",
	help:    `Prints xdpguard's version, the Go toolchain and the cilium/ebpf version.`,
	example: `  xdpguard version`,
	run: func(c *cli, fs *pflag.FlagSet, args []string) error {
		if len(args) > 0 {
			return usagef("version takes no arguments")
		}
		ebpfVersion := "?"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, d := range bi.Deps {
				if d.Path == "github.com/cilium/ebpf" {
					ebpfVersion = d.Version
				}
			}
		}
		fmt.Fprintf(c.stdout, "xdpguard %s (%s, cilium/ebpf %s)\n", version, runtime.Version(), ebpfVersion)
		return nil
	},
}
