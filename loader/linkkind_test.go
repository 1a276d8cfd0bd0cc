package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpguard/xdpguard/internal/nstest"
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

// Attach reads the link type over netlink and picks the entry points from
// it: the L3 programs on links without a link-layer header, of every type
// listed, and a refusal that names the interface and its type, attaching
// nothing, on a type it cannot parse. Today's main attached the Ethernet
// program to all of them.
func TestAttachPicksEntryPointsByLinkType(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "xglt")
	pin := filepath.Join("/sys/fs/bpf", "xgtest-"+ns.Name())
	t.Cleanup(func() {
		if _, err := os.Stat(pin); err == nil {
			_ = ns.Do(func() error {
				g, err := Open(pin, false)
				if err != nil {
					return err
				}
				defer g.Close()
				_, err = g.DetachAll()
				return err
			})
		}
	})
	attach := func(name string) (AttachResult, error) {
		var res AttachResult
		err := ns.Do(func() error {
			g, err := Open(pin, true)
			if err != nil {
				return err
			}
			defer g.Close()
			res, err = g.Attach(name, AttachOptions{Egress: true})
			return err
		})
		return res, err
	}
	xdpName := func(name string) string {
		t.Helper()
		l, err := ns.Link(name)
		if err != nil {
			t.Fatal(err)
		}
		x := l.Attrs().Xdp
		if x == nil || !x.Attached {
			return ""
		}
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.Name
	}
	for i, typ := range []uint16{unix.ARPHRD_NONE, unix.ARPHRD_PPP, unix.ARPHRD_RAWIP, unix.ARPHRD_TUNNEL, unix.ARPHRD_TUNNEL6, unix.ARPHRD_SIT, unix.ARPHRD_IPGRE} {
		name := fmt.Sprintf("xgl3%d", i)
		nstest.TunOfType(t, ns, name, typ)
		if _, err := attach(name); err != nil {
			t.Fatalf("attach %s (ARPHRD %d): %v", name, typ, err)
		}
		if got := xdpName(name); got != "xdpguard_xdp_l3" {
			t.Errorf("%s (ARPHRD %d): XDP program %q, want xdpguard_xdp_l3", name, typ, got)
		}
		// A second attach finds the right program in place.
		if res, err := attach(name); err != nil || res.Action != "unchanged" {
			t.Errorf("%s (ARPHRD %d) attached again: %+v, %v; want unchanged", name, typ, res, err)
		}
	}
	nstest.TunOfType(t, ns, "xgib0", unix.ARPHRD_INFINIBAND)
	_, err := attach("xgib0")
	if err == nil || !strings.Contains(err.Error(), "xgib0") || !strings.Contains(err.Error(), `"infiniband"`) {
		t.Fatalf("attach to an InfiniBand link: %v, want a refusal naming xgib0 and its type", err)
	}
	if got := xdpName("xgib0"); got != "" {
		t.Fatalf("refused attach left XDP program %q on xgib0", got)
	}
}
