// Package profiles holds xdpguard's built-in reflection profiles: for each
// known UDP reflection (amplification) vector, the port(s) its servers answer
// from, the direction to protect by default, and its published bandwidth
// amplification factor with the source it comes from.
//
// A profile is a convenience for `xdpguard ports add --profile NAME` and the
// agent's `{profile: NAME}`: it expands to ports with a direction and changes
// nothing by itself.
//
// How the default direction is chosen, per vector:
//   - response: ordinary hosts (or common infrastructure such as monitoring
//     stations and domain members) are clients of the protocol, so answers to
//     their own requests must keep flowing; only unsolicited answers, the
//     reflected flood, are dropped.
//   - both: no ordinary host needs to be a client, so every answer from the
//     port is a reflected one and every request to it is abuse of this host
//     as a reflector.
//   - request: the answers do not come from the well-known port (TFTP), so
//     only the reflector side can be protected by port.
package profiles

import (
	"fmt"
	"slices"
	"strings"
)

// Direction is what a profile protects by default, with the meanings of
// xdpguard's per-port directions: "request" drops UDP to the port, "response"
// drops UDP from the port unless it answers a request this host sent, "both"
// drops both. It is spelled as the loader's direction strings so that the CLI
// and the agent parse it with the loader's own parser.
type Direction string

// The directions, as the loader spells them.
const (
	Both     Direction = "both"
	Request  Direction = "request"
	Response Direction = "response"
)

// Directions are the valid directions.
var Directions = []Direction{Both, Request, Response}

// Factor is a published bandwidth amplification factor: UDP payload bytes of
// the answer over UDP payload bytes of the request, as the source measured it.
type Factor struct {
	Min, Max float64 // Min == Max for a single figure
	// Text is the figure exactly as the source gives it, e.g. "28 to 54".
	Text string
}

func (f Factor) String() string { return f.Text }

// Profile is one reflection vector.
type Profile struct {
	Name        string    // lower case, what --profile takes
	Protocol    string    // the protocol's name as the source gives it
	Ports       []uint16  // the UDP port(s) its servers answer from
	Direction   Direction // the default direction
	Factor      Factor
	Source      string // URL of the publication the factor is taken from
	SourceTitle string // that publication, briefly
	Why         string // why this default direction
	Limitations string // what the port-based protection cannot see, if anything
}

// TA14-017A is US-CERT's (now CISA's) alert "UDP-Based Amplification
// Attacks", first released 17 January 2014 and revised since (CLDAP, LDAP
// and TFTP added after its April 2016 revision, Memcached on 27 February
// 2018). Its table "Protocol / Bandwidth Amplification Factor / Vulnerable
// Command" is the source of most factors here. The figures were checked
// against public copies of that table's text; stored copies of the alert
// itself (2015, 2016 and 2018 revisions) confirm its list of vectors and its
// definition of the factor, not every row.
const (
	ta14017a      = "https://www.cisa.gov/news-events/alerts/2014/01/17/udp-based-amplification-attacks"
	ta14017aTitle = "US-CERT TA14-017A"
)

// multicastCaveat applies to discovery protocols whose requests go to a
// multicast group: the answers come from each responder's own address, which
// the request table cannot match, so a network that uses the protocol must be
// on the allow list.
const multicastCaveat = "discovery by multicast is answered from addresses the request was not sent to: put the local network on the allow list (xdpguard allow add) if it uses this protocol"

// builtin is the table. Kept in the order of TA14-017A's table, with later
// vectors after it. Vectors left out on purpose:
//   - BitTorrent (3.8) and Kad (16.3): no fixed port, peers pick their own,
//     so a port profile cannot name them.
//   - LDAP (46 to 55): TCP; its UDP form is CLDAP, below.
//   - SLP (CVE-2023-29552), OpenVPN, CoAP, Jenkins: no factor that could be
//     checked against its source here.
var builtin = []Profile{
	{
		Name: "dns", Protocol: "DNS", Ports: []uint16{53}, Direction: Response,
		Factor: Factor{28, 54, "28 to 54"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "every host resolves names: answers to its own queries must pass",
	},
	{
		Name: "ntp", Protocol: "NTP", Ports: []uint16{123}, Direction: Response,
		Factor: Factor{556.9, 556.9, "556.9"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "every host sets its clock from NTP servers: answers to its own queries must pass",
	},
	{
		Name: "snmp", Protocol: "SNMPv2", Ports: []uint16{161}, Direction: Response,
		Factor: Factor{6.3, 6.3, "6.3"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "monitoring stations poll SNMP agents: their answers must pass",
	},
	{
		Name: "netbios", Protocol: "NetBIOS", Ports: []uint16{137}, Direction: Response,
		Factor: Factor{3.8, 3.8, "3.8"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "Windows and Samba clients resolve NetBIOS names: answers to their queries must pass",
	},
	{
		Name: "ssdp", Protocol: "SSDP", Ports: []uint16{1900}, Direction: Response,
		Factor: Factor{30.8, 30.8, "30.8"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why:         "desktops search for UPnP devices: answers to their own searches must pass",
		Limitations: multicastCaveat,
	},
	{
		Name: "chargen", Protocol: "CharGEN", Ports: []uint16{19}, Direction: Both,
		Factor: Factor{358.8, 358.8, "358.8"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "a test service no host needs as a client: every answer is reflected, every request is abuse",
	},
	{
		Name: "qotd", Protocol: "QOTD", Ports: []uint16{17}, Direction: Both,
		Factor: Factor{140.3, 140.3, "140.3"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "a test service no host needs as a client: every answer is reflected, every request is abuse",
	},
	{
		Name: "quake", Protocol: "Quake Network Protocol", Ports: []uint16{26000}, Direction: Response,
		Factor: Factor{63.9, 63.9, "63.9"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "game clients query game servers: answers to their own queries must pass",
	},
	{
		Name: "steam", Protocol: "Steam Protocol", Ports: []uint16{27015}, Direction: Response,
		Factor: Factor{5.5, 5.5, "5.5"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "game clients query game servers: answers to their own queries must pass",
	},
	{
		Name: "mdns", Protocol: "Multicast DNS (mDNS)", Ports: []uint16{5353}, Direction: Response,
		Factor: Factor{2, 10, "2 to 10"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why:         "desktops resolve .local names: answers to their own unicast queries must pass",
		Limitations: multicastCaveat,
	},
	{
		Name: "ripv1", Protocol: "RIPv1", Ports: []uint16{520}, Direction: Both,
		Factor: Factor{131.24, 131.24, "131.24"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "only routers speak RIP, from port 520 to port 520; a host that is not a router has no use for it",
	},
	{
		Name: "portmap", Protocol: "Portmap (RPCbind)", Ports: []uint16{111}, Direction: Response,
		Factor: Factor{7, 28, "7 to 28"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "NFS and other RPC clients ask rpcbind for ports: answers to their own queries must pass",
	},
	{
		Name: "cldap", Protocol: "CLDAP", Ports: []uint16{389}, Direction: Response,
		Factor: Factor{56, 70, "56 to 70"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "Active Directory members locate domain controllers with CLDAP: answers to their own pings must pass",
	},
	{
		Name: "tftp", Protocol: "TFTP", Ports: []uint16{69}, Direction: Request,
		Factor: Factor{60, 60, "60"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why:         "a TFTP server answers from a new port of its own, never from 69: only requests to 69 can be recognised by port",
		Limitations: "reflected TFTP answers do not come from port 69, so no port filter sees them at the victim",
	},
	{
		Name: "memcached", Protocol: "Memcached", Ports: []uint16{11211}, Direction: Both,
		Factor: Factor{10000, 51000, "10,000 to 51,000"}, Source: ta14017a, SourceTitle: ta14017aTitle,
		Why: "memcached clients use TCP; UDP from or to 11211 is an attack (xdpguard's default port and direction)",
	},
	{
		Name: "ws-discovery", Protocol: "WS-Discovery", Ports: []uint16{3702}, Direction: Response,
		// Akamai SIRT measured answers of "up to 15,300%" of the request's
		// size. The public copies of TA14-017A's table found give 15,000 for
		// this row, a figure the alert's own text could not be checked for,
		// so the measurement is cited instead.
		Factor:      Factor{153, 153, "up to 153"},
		Source:      "https://www.akamai.com/blog/security/new-ddos-vector-observed-in-the-wild-wsd-attacks-hitting-35gbps",
		SourceTitle: "Akamai SIRT, 2019",
		Why:         "Windows hosts and ONVIF clients probe for devices: answers to their own probes must pass",
		Limitations: multicastCaveat,
	},
	{
		Name: "arms", Protocol: "Apple Remote Management Service (ARMS)", Ports: []uint16{3283}, Direction: Both,
		// The FBI's Private Industry Notification of July 2020 gives 35.5:1,
		// as reported in the cited article.
		Factor:      Factor{35.5, 35.5, "35.5"},
		Source:      "https://www.itsecurityguru.org/2020/07/27/fbi-warns-of-network-protocols-abused-in-large-scale-ddos-attacks/",
		SourceTitle: "FBI PIN, July 2020, as reported",
		Why:         "only Apple Remote Desktop's admin console is a client; ordinary hosts never are",
	},
}

// All returns the built-in profiles, in table order. The slice is a copy.
func All() []Profile {
	out := make([]Profile, len(builtin))
	for i, p := range builtin {
		p.Ports = slices.Clone(p.Ports)
		out[i] = p
	}
	return out
}

// Names returns the profiles' names in table order.
func Names() []string {
	names := make([]string, len(builtin))
	for i, p := range builtin {
		names[i] = p.Name
	}
	return names
}

// Lookup finds a profile by name, ignoring case and surrounding space. An
// unknown name is an error that names it and lists the valid names.
func Lookup(name string) (Profile, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	for _, p := range builtin {
		if p.Name == key {
			p.Ports = slices.Clone(p.Ports)
			return p, nil
		}
	}
	return Profile{}, fmt.Errorf("unknown reflection profile %q: use one of %s (see xdpguard ports profiles)", name, strings.Join(Names(), ", "))
}

// LookupList resolves a comma-separated list such as "dns,ntp", each name at
// most once. An empty item or an unknown name is an error, and nothing is
// returned.
func LookupList(list string) ([]Profile, error) {
	var out []Profile
	for _, name := range strings.Split(list, ",") {
		if strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("empty profile name in %q: give names separated by commas, e.g. dns,ntp", list)
		}
		p, err := Lookup(name)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(out, func(q Profile) bool { return q.Name == p.Name }) {
			out = append(out, p)
		}
	}
	return out, nil
}
