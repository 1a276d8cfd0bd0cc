package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// EgressGap says that replies arriving for response ports cannot be matched
// with their requests on some interfaces: the request table is filled only by
// the egress program, so requests that leave by an interface without egress
// are never recorded and every reply to them is dropped (drop_unsolicited).
type EgressGap struct {
	// Ports are the response ports.
	Ports []uint16 `json:"ports"`
	// Interfaces are the attached interfaces without egress, as
	// "name" (this namespace) or "name (netns N)".
	Interfaces []string `json:"interfaces"`
	// None says no attached interface has egress: nothing is recorded
	// anywhere, so every reply from a response port is dropped.
	None bool `json:"none"`
}

// String is the warning attach, status and check print.
func (g EgressGap) String() string {
	ports := make([]string, len(g.Ports))
	for i, p := range g.Ports {
		ports[i] = fmt.Sprint(p)
	}
	if g.None {
		return fmt.Sprintf("response port(s) %s: no interface has the egress program, so no request is recorded and every reply from these ports is dropped (drop_unsolicited): attach the interfaces requests leave by with --egress",
			strings.Join(ports, ","))
	}
	return fmt.Sprintf("response port(s) %s: %s %s no egress program: requests that leave by them are not recorded, and their replies are dropped (drop_unsolicited): attach them with --egress",
		strings.Join(ports, ","), strings.Join(g.Interfaces, ", "), plural(len(g.Interfaces), "has", "have"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// FindEgressGap returns the gap cfg's response ports have on the attachments
// atts (as Attachments returns them), or nil when there is none: no response
// port, no attachment, or egress on every attached interface.
func FindEgressGap(cfg Config, atts []Attachment) *EgressGap {
	ports := cfg.ResponsePorts()
	if len(ports) == 0 || len(atts) == 0 {
		return nil
	}
	type iface struct {
		name  string
		netns uint64
		here  bool
	}
	var order []iface
	egress := map[iface]bool{}
	for _, a := range atts {
		k := iface{a.Interface, a.Netns, a.Here}
		if _, seen := egress[k]; !seen {
			order = append(order, k)
			egress[k] = false
		}
		if a.Hook == HookTC.String() {
			egress[k] = true
		}
	}
	gap := &EgressGap{Ports: ports, None: true}
	for _, k := range order {
		if egress[k] {
			gap.None = false
			continue
		}
		name := k.name
		if !k.here {
			name = fmt.Sprintf("%s (netns %d)", k.name, k.netns)
		}
		gap.Interfaces = append(gap.Interfaces, name)
	}
	if len(gap.Interfaces) == 0 {
		return nil
	}
	return gap
}

// Request is a request this host sent to a response port, awaiting its
// reply until Expires.
type Request struct {
	Local, Remote netip.AddrPort
	// Expires is on the data plane's clock, CLOCK_MONOTONIC (bpf ktime):
	// the reply is solicited while MonotonicNow() < Expires.
	Expires time.Duration
}

// MonotonicNow reads CLOCK_MONOTONIC, the clock of the request table.
func MonotonicNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// PutRequest records r in the request table, as the egress program does
// when this host sends a request (tests and benchmarks fill the table with
// it).
func (m *Maps) PutRequest(r Request) error {
	local, remote := r.Local.Addr().Unmap(), r.Remote.Addr().Unmap()
	if local.Is4() != remote.Is4() {
		return fmt.Errorf("request %s -> %s: the addresses are of two families", r.Local, r.Remote)
	}
	expires := uint64(r.Expires)
	if local.Is4() {
		k := xdpguardReq4Key{Lport: r.Local.Port(), Rport: r.Remote.Port()}
		k.Laddr, k.Raddr = addr4Word(local), addr4Word(remote)
		return m.Req4.Put(k, expires)
	}
	k := xdpguardReq6Key{Lport: r.Local.Port(), Rport: r.Remote.Port()}
	k.Laddr, k.Raddr = addr6Words(local), addr6Words(remote)
	return m.Req6.Put(k, expires)
}

// Requests returns the request table's entries, both families, expired
// ones included (the LRU drops them only when it needs room).
func (m *Maps) Requests() ([]Request, error) {
	var out []Request
	var k4 xdpguardReq4Key
	var v uint64
	it := m.Req4.Iterate()
	for it.Next(&k4, &v) {
		out = append(out, Request{
			Local:   netip.AddrPortFrom(wordAddr4(k4.Laddr), k4.Lport),
			Remote:  netip.AddrPortFrom(wordAddr4(k4.Raddr), k4.Rport),
			Expires: time.Duration(v),
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read IPv4 request table: %w", err)
	}
	var k6 xdpguardReq6Key
	it = m.Req6.Iterate()
	for it.Next(&k6, &v) {
		out = append(out, Request{
			Local:   netip.AddrPortFrom(wordsAddr6(k6.Laddr), k6.Lport),
			Remote:  netip.AddrPortFrom(wordsAddr6(k6.Raddr), k6.Rport),
			Expires: time.Duration(v),
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read IPv6 request table: %w", err)
	}
	slices.SortFunc(out, func(a, b Request) int {
		if c := a.Local.Compare(b.Local); c != 0 {
			return c
		}
		return a.Remote.Compare(b.Remote)
	})
	return out, nil
}

// The key's address words hold the address's bytes in network order, as
// copied from the packet: native-endian words of those bytes.
func addr4Word(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addr6Words(a netip.Addr) (w [4]uint32) {
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

func wordAddr4(w uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w)
	return netip.AddrFrom4(b)
}

func wordsAddr6(w [4]uint32) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	return netip.AddrFrom16(b)
}
