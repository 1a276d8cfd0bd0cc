package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
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
}

func featureProbe(err error, fix string) (bool, string) {
	if err != nil {
		return false, fmt.Sprintf("%v: %s", err, fix)
	}
	return true, ""
}

var probes = []probe{
	{"privileges (CAP_BPF, CAP_NET_ADMIN)", func(*cli) (bool, string) {
		return featureProbe(loader.CheckPrivileges(), "run as root")
	}},
	{"kernel version", func(*cli) (bool, string) {
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
	{"XDP programs", func(*cli) (bool, string) {
		return featureProbe(features.HaveProgramType(ebpf.XDP), "the kernel lacks XDP (CONFIG_BPF, CONFIG_XDP_SOCKETS)")
	}},
	{"TC programs", func(*cli) (bool, string) {
		return featureProbe(features.HaveProgramType(ebpf.SchedCLS), "the kernel lacks cls_bpf (CONFIG_NET_CLS_BPF)")
	}},
	{"LPM trie maps", func(*cli) (bool, string) {
		return featureProbe(features.HaveMapType(ebpf.LPMTrie), "the kernel lacks BPF_MAP_TYPE_LPM_TRIE (Linux 4.11+)")
	}},
	{"LRU hash maps", func(*cli) (bool, string) {
		return featureProbe(features.HaveMapType(ebpf.LRUHash), "the kernel lacks BPF_MAP_TYPE_LRU_HASH (Linux 4.10+)")
	}},
	{"per-CPU arrays", func(*cli) (bool, string) {
		return featureProbe(features.HaveMapType(ebpf.PerCPUArray), "the kernel lacks BPF_MAP_TYPE_PERCPU_ARRAY (Linux 4.6+)")
	}},
	{"BPF JIT", func(*cli) (bool, string) {
		b, err := os.ReadFile("/proc/sys/net/core/bpf_jit_enable")
		if err != nil {
			return true, "unknown (" + err.Error() + ")"
		}
		if strings.TrimSpace(string(b)) == "0" {
			return true, "off: programs run interpreted, several times slower (sysctl net.core.bpf_jit_enable=1)"
		}
		return true, "on"
	}},
	{"bpffs", func(c *cli) (bool, string) {
		if err := loader.EnsureBPFFS(c.pinPath); err != nil {
			return false, err.Error()
		}
		return true, "pins go to " + c.pinPath
	}},
	{"programs pass the verifier", func(*cli) (bool, string) {
		m, err := loader.NewMaps(loader.MapSizes{})
		if err != nil {
			return false, err.Error()
		}
		defer m.Close()
		dp, err := loader.LoadDataplane(m, nil)
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
them. Exits 1 if anything needed is missing.`,
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
			if !ok {
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
