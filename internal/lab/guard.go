package lab

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// Guard drives the xdpguard command line tool inside one of the lab's
// namespaces, with its own pin path, as an operator would.
type Guard struct {
	Bin     string     // path to the xdpguard binary
	PinPath string     // --pin-path, a directory under /sys/fs/bpf
	NS      *nstest.NS // where it runs (interfaces are looked up there)
}

// Run runs `xdpguard --pin-path P ARGS...` in the namespace and returns
// its combined output; a non-zero exit is an error carrying the output.
func (g Guard) Run(args ...string) (string, error) {
	return g.NS.Run(g.Bin, append([]string{"--pin-path", g.PinPath}, args...)...)
}

// Counter is one reason's packets and bytes.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// InterfaceStats is one interface and hook in `stats --json`.
type InterfaceStats struct {
	Interface string             `json:"interface"`
	Ifindex   int                `json:"ifindex"`
	Hook      string             `json:"hook"`
	Counters  map[string]Counter `json:"counters"`
}

// Stats is `xdpguard stats --json`.
type Stats struct {
	Interfaces []InterfaceStats `json:"interfaces"`
}

// Stats reads the counters with `stats --json`.
func (g Guard) Stats() (Stats, error) {
	var st Stats
	out, err := g.NS.Command(g.Bin, "--pin-path", g.PinPath, "stats", "--json").Output()
	if err != nil {
		return st, fmt.Errorf("xdpguard stats --json in %s: %w", g.NS.Name(), err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("xdpguard stats --json: %w: %s", err, out)
	}
	return st, nil
}

// Packets sums a reason's packets over interfaces and hooks; hook "" means
// any hook, iface "" any interface.
func (s Stats) Packets(iface, hook, reason string) uint64 {
	var n uint64
	for _, i := range s.Interfaces {
		if (iface == "" || i.Interface == iface) && (hook == "" || i.Hook == hook) {
			n += i.Counters[reason].Packets
		}
	}
	return n
}

// Drops sums every drop_* reason's packets over all interfaces and hooks.
func (s Stats) Drops() uint64 { return s.drops("") }

// XDPDrops sums every drop_* reason's packets of the XDP (ingress) hook.
func (s Stats) XDPDrops() uint64 { return s.drops("xdp") }

func (s Stats) drops(hook string) uint64 {
	var n uint64
	for _, i := range s.Interfaces {
		if hook != "" && i.Hook != hook {
			continue
		}
		for reason, c := range i.Counters {
			if strings.HasPrefix(reason, "drop_") {
				n += c.Packets
			}
		}
	}
	return n
}
