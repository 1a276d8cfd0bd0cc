package loader

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// entryPoints picks the programs from the link type and refuses types whose
// frames xdpguard cannot parse, naming the interface and the type.
func TestEntryPoints(t *testing.T) {
	link := func(name, encap string) netlink.Link {
		return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, EncapType: encap}}
	}
	for encap, want := range map[string]linkKind{
		"ether": linkEthernet, "loopback": linkEthernet,
		"none": linkL3, "ipip": linkL3, "tunnel6": linkL3, "sit": linkL3, "gre": linkL3, "ppp": linkL3,
		"unknown519": linkL3, // ARPHRD_RAWIP
	} {
		if got, err := entryPoints(link("x0", encap)); err != nil || got != want {
			t.Errorf("link type %s: %v, %v; want %v", encap, got, err, want)
		}
	}
	for _, encap := range []string{"infiniband", "ieee802.11", "unknown823", "can", "", "void"} {
		_, err := entryPoints(link("odd0", encap))
		if err == nil || !strings.Contains(err.Error(), "odd0") || !strings.Contains(err.Error(), `"`+encap+`"`) {
			t.Errorf("link type %q: %v, want an error naming odd0 and the type", encap, err)
		}
	}
}

// Programs hands out the pair for the kind: the kernel's names say which.
func TestDataplanePrograms(t *testing.T) {
	h := newHarness(t)
	x, c := h.dp.Programs(linkEthernet)
	x3, c3 := h.dp.Programs(linkL3)
	for want, prog := range map[string]*ebpf.Program{"xdpguard_xdp": x, "xdpguard_tc": c, "xdpguard_xdp_l3": x3, "xdpguard_tc_l3": c3} {
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != want {
			t.Errorf("program %q where %q was wanted", info.Name, want)
		}
	}
}
