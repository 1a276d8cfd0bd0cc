package loader

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkKind is where a link's frames start, which picks the programs that
// parse them.
type linkKind int

const (
	linkEthernet linkKind = iota // an Ethernet header (VLAN tags allowed)
	linkL3                       // the IP header: no link-layer header at all
)

func (k linkKind) String() string {
	if k == linkL3 {
		return "IP"
	}
	return "Ethernet"
}

// linkKinds maps a link's type (dev->type, ARPHRD_*), as netlink names it in
// LinkAttrs.EncapType, to what its frames start with, at XDP and on TC egress
// alike. netlink has no name for ARPHRD_RAWIP and calls it "unknown519".
var linkKinds = map[string]linkKind{
	"ether":    linkEthernet, // Ethernet NICs, veth, bridges, bonds, VXLAN, macvlan, gretap
	"loopback": linkEthernet, // lo builds a (zeroed) Ethernet header
	"none":     linkL3,       // ARPHRD_NONE: tun, WireGuard
	"ipip":     linkL3,       // ARPHRD_TUNNEL: IPIP
	"tunnel6":  linkL3,       // ARPHRD_TUNNEL6: ip6tnl
	"sit":      linkL3,       // ARPHRD_SIT
	"gre":      linkL3,       // ARPHRD_IPGRE: GRE (gretap is "ether")
	"ppp":      linkL3,       // ARPHRD_PPP: PPP, PPPoE sessions
	fmt.Sprintf("unknown%d", unix.ARPHRD_RAWIP): linkL3, // raw-IP modems (rmnet, qmi_wwan)
}

// programNames names the XDP and TC programs that parse frames of kind k,
// as the compiled object names them.
func programNames(k linkKind) (xdp, tc string) {
	if k == linkL3 {
		return xdpguardProgXdpguardXdpL3, xdpguardProgXdpguardTcL3
	}
	return xdpguardProgXdpguardXdp, xdpguardProgXdpguardTc
}

// entryPoints says which programs parse l's frames, from the link's type.
// A type whose frames xdpguard cannot parse is refused: attaching there
// would report protection that is not there.
func entryPoints(l netlink.Link) (linkKind, error) {
	a := l.Attrs()
	k, ok := linkKinds[a.EncapType]
	if !ok {
		return 0, fmt.Errorf("interface %s has link type %q, whose frames xdpguard cannot parse: it protects Ethernet links and links whose frames start at the IP header (tun, WireGuard, IPIP, GRE, sit, PPP, raw IP)",
			a.Name, a.EncapType)
	}
	return k, nil
}

// CheckLinkType says whether xdpguard can protect l: nil for Ethernet links
// and links whose frames start at the IP header, an error naming the
// interface and its type otherwise. An agent that protects every interface
// matching a glob uses it to leave alone, rather than retry forever, links
// it can never parse.
func CheckLinkType(l netlink.Link) error {
	_, err := entryPoints(l)
	return err
}
