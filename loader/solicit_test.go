package loader

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/model"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// Ports of the solicited-reply cases: dns a response port, ntp a request
// port, memcached (mc) both.
const (
	dns = 53
	ntp = 123
)

// solicitPolicy protects dns as a response port, ntp as a request port and
// memcached in both directions.
func solicitPolicy() policy {
	return policy{
		ports: []uint16{dns, ntp, mc},
		dirs:  map[uint16]Direction{dns: DirResponse, ntp: DirRequest, mc: DirBoth},
	}
}

// hstep is one frame at one hook: request/reply sequences cross hooks.
type hstep struct {
	name  string
	hook  Hook
	frame []byte
	want  Reason
}

type solicitCase struct {
	name  string
	pol   policy
	steps []hstep
}

func out(name string, frame []byte, want Reason) hstep { return hstep{name, HookTC, frame, want} }
func in(name string, frame []byte, want Reason) hstep  { return hstep{name, HookXDP, frame, want} }

func udp(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) []byte {
	return fr(testpkt.UDP(src, dst, sport, dport, []byte("query")))
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func solicitCases() []solicitCase {
	pol := solicitPolicy()
	monitor := solicitPolicy()
	monitor.mode = ModeMonitor
	allow := solicitPolicy()
	allow.allow = []netip.Prefix{netip.PrefixFrom(far4, 32), netip.PrefixFrom(far6, 128)}
	short := solicitPolicy()
	short.expiry = map[uint16]time.Duration{dns: 5 * time.Second}
	expired := solicitPolicy()
	expired.reqs = []reqEntry{
		{ap(host4, 40000), ap(peer4, dns), time.Hour},    // live
		{ap(host4, 40001), ap(peer4, dns), -time.Second}, // expired a second ago
		{ap(host6, 40000), ap(peer6, dns), time.Hour},
		{ap(host6, 40001), ap(peer6, dns), -time.Second},
	}
	var cs []solicitCase
	for _, fam := range []struct {
		name            string
		host, peer, far netip.Addr
		other           netip.Addr // the host's other address
	}{
		{"v4", host4, peer4, far4, netip.MustParseAddr("192.0.2.11")},
		{"v6", host6, peer6, far6, netip.MustParseAddr("2001:db8::11")},
	} {
		h, p, f := fam.host, fam.peer, fam.far
		first, middle, last := frags(bigResp(p, h, dns, 40000, 0x4242))
		sfirst, smiddle, slast := frags(bigResp(f, h, dns, 40000, 0x4343))
		cs = append(cs,
			solicitCase{fam.name + "/response: a reply to a request sent is solicited, others are not", pol, []hstep{
				in("reply before any request", udp(p, dns, h, 40000), ReasonDropUnsolicited),
				out("request leaves", udp(h, 40000, p, dns), ReasonPass),
				in("its reply", udp(p, dns, h, 40000), ReasonSolicited),
				in("its reply again (the entry stays until it expires)", udp(p, dns, h, 40000), ReasonSolicited),
				in("spoofed reply from another address", udp(f, dns, h, 40000), ReasonDropUnsolicited),
				in("reply to another local port", udp(p, dns, h, 40001), ReasonDropUnsolicited),
				in("reply to another local address", udp(p, dns, fam.other, 40000), ReasonDropUnsolicited),
				in("reply from the peer's other port", udp(p, 5353, h, 40000), ReasonPass),
			}},
			solicitCase{fam.name + "/response: a server here answers; this host may be asked", pol, []hstep{
				in("request to the port arrives", udp(p, 40000, h, dns), ReasonPass),
				out("answer leaves from the port", udp(h, dns, p, 40000), ReasonPass),
			}},
			solicitCase{fam.name + "/request: requests in and answers out are dropped; this host is a client", pol, []hstep{
				in("request arrives", udp(p, 40000, h, ntp), ReasonDropRequest),
				out("answer leaves", udp(h, ntp, p, 40000), ReasonDropResponse),
				out("request leaves", udp(h, 40000, p, ntp), ReasonPass),
				in("answer arrives", udp(p, ntp, h, 40000), ReasonPass),
			}},
			solicitCase{fam.name + "/both: dropped both ways at both hooks, nothing recorded", pol, []hstep{
				out("request leaves", udp(h, 40000, p, mc), ReasonDropRequest),
				in("answer arrives anyway", udp(p, mc, h, 40000), ReasonDropResponse),
				in("request arrives", udp(p, 40000, h, mc), ReasonDropRequest),
				out("answer leaves", udp(h, mc, p, 40000), ReasonDropResponse),
			}},
			solicitCase{fam.name + "/two protected ports: the destination port first, a dropped request is not recorded", pol, []hstep{
				in("response port to request port", udp(p, dns, h, ntp), ReasonDropRequest),
				in("request port to response port", udp(p, ntp, h, dns), ReasonPass),
				out("from the request port to the response port", udp(h, ntp, p, dns), ReasonDropResponse),
				in("its reply: never recorded", udp(p, dns, h, ntp), ReasonDropRequest),
				out("from the both port to the response port", udp(h, mc, p, dns), ReasonDropResponse),
				in("its reply", udp(p, dns, h, mc), ReasonDropRequest),
			}},
			solicitCase{fam.name + "/fragments follow their first fragment", pol, []hstep{
				out("request leaves", udp(h, 40000, p, dns), ReasonPass),
				in("first fragment of the reply", first, ReasonSolicited),
				in("middle fragment", middle, ReasonSolicited),
				in("last fragment", last, ReasonSolicited),
				in("first fragment of a spoofed reply", sfirst, ReasonDropUnsolicited),
				in("its middle fragment", smiddle, ReasonDropFragment),
				in("its last fragment", slast, ReasonDropFragment),
			}},
			solicitCase{fam.name + "/monitor mode: unsolicited would be dropped", monitor, []hstep{
				in("unsolicited", udp(p, dns, h, 40000), ReasonWouldDrop),
				out("request leaves", udp(h, 40000, p, dns), ReasonPass),
				in("solicited", udp(p, dns, h, 40000), ReasonSolicited),
				in("unsolicited fragment", sfirst, ReasonWouldDrop),
				in("its next fragment", smiddle, ReasonWouldDrop),
			}},
			solicitCase{fam.name + "/the allow list opens a peer entirely", allow, []hstep{
				in("reply from an allowlisted peer, no request", udp(f, dns, h, 40000), ReasonAllowlisted),
				in("request from it to the request port", udp(f, 40000, h, ntp), ReasonAllowlisted),
				out("request to it: recorded, passed", udp(h, 40000, f, dns), ReasonPass),
				in("reply from it: allowlisted before solicited", udp(f, dns, h, 40000), ReasonAllowlisted),
				in("reply from another peer", udp(p, dns, h, 40000), ReasonDropUnsolicited),
			}},
			solicitCase{fam.name + "/expiry: a request awaits its reply until its port's expiry", expired, []hstep{
				in("reply to a live request", udp(p, dns, h, 40000), ReasonSolicited),
				in("reply to an expired request", udp(p, dns, h, 40001), ReasonDropUnsolicited),
				out("the request sent again", udp(h, 40001, p, dns), ReasonPass),
				in("its reply now", udp(p, dns, h, 40001), ReasonSolicited),
			}},
			solicitCase{fam.name + "/a port's own expiry", short, []hstep{
				out("request leaves", udp(h, 40000, p, dns), ReasonPass),
				in("its reply", udp(p, dns, h, 40000), ReasonSolicited),
			}},
		)
	}
	return cs
}

// TestSolicitTable runs request/reply sequences through the kernel's
// programs (Ethernet and L3 entry points) and the model: verdicts, counters
// (one slot, one packet) and, after every frame, the request table's keys.
// The expiry a recorded request gets is its port's, on the kernel's clock.
func TestSolicitTable(t *testing.T) {
	h := newHarness(t)
	for _, l3 := range []bool{false, true} {
		h.l3 = l3
		for _, c := range solicitCases() {
			t.Run(fmt.Sprintf("l3=%t/%s", l3, c.name), func(t *testing.T) { runSolicitCase(t, h, c) })
		}
	}
	h.l3 = false
}

func runSolicitCase(t *testing.T, h *harness, c solicitCase) {
	if err := h.configure(c.pol); err != nil {
		t.Fatal(err)
	}
	mod := c.pol.newModel()
	for i, s := range c.steps {
		frame := s.frame
		if h.l3 {
			ip, ok := testpkt.L3(frame)
			if !ok {
				t.Fatalf("step %d: no IP part", i)
			}
			frame = ip
		}
		before, err := MonotonicNow()
		if err != nil {
			t.Fatal(err)
		}
		ret, got, err := h.run(s.hook, frame, true)
		if err != nil {
			t.Fatalf("step %d %q: %v", i, s.name, err)
		}
		after, err := MonotonicNow()
		if err != nil {
			t.Fatal(err)
		}
		mr := h.classify(mod, frame, s.hook)
		if got != s.want || ret != wantRet(s.hook, s.want) || mr.Reason.String() != s.want.String() {
			t.Errorf("step %d %q at %s (%s): want %s; kernel %s (ret %#x); model %s\n  parsed: %s",
				i, s.name, s.hook, c.pol, s.want, got, ret, mr.Reason, mr.Parse)
		}
		kernel, err := h.m.Requests()
		if err != nil {
			t.Fatal(err)
		}
		var kkeys []model.RequestKey
		for _, r := range kernel {
			k := model.RequestKey{Local: r.Local.Addr(), Remote: r.Remote.Addr(), LocalPort: r.Local.Port(), RemotePort: r.Remote.Port()}
			kkeys = append(kkeys, k)
			// A request this step recorded: its port's expiry from
			// now, on the kernel's clock (coarse: a tick behind).
			mexp, ok := mod.Requests()[k]
			if ok && mexp-mod.Now() > 0 && s.hook == HookTC && k == (model.RequestKey{Local: mr.Parse.Src, Remote: mr.Parse.Dst, LocalPort: mr.Parse.SrcPort, RemotePort: mr.Parse.DstPort}) {
				ttl := mexp - mod.Now()
				if r.Expires < before+ttl-time.Second/10 || r.Expires > after+ttl {
					t.Errorf("step %d: request %v expires at %v, want %v after [%v, %v]", i, k, r.Expires, ttl, before, after)
				}
			}
		}
		mkeys := slices.Collect(maps.Keys(mod.Requests()))
		cmpKey := func(a, b model.RequestKey) int {
			if c := a.Local.Compare(b.Local); c != 0 {
				return c
			}
			if c := a.Remote.Compare(b.Remote); c != 0 {
				return c
			}
			return int(a.LocalPort)<<16 + int(a.RemotePort) - int(b.LocalPort)<<16 - int(b.RemotePort)
		}
		slices.SortFunc(kkeys, cmpKey)
		slices.SortFunc(mkeys, cmpKey)
		if !slices.Equal(kkeys, mkeys) {
			t.Errorf("step %d %q: request table: kernel %v, model %v", i, s.name, kkeys, mkeys)
		}
	}
}

// TestSolicitTableFull: the request table is an LRU of a fixed size; when
// requests outnumber it, the least recently used are forgotten and a reply
// to one of them is dropped as unsolicited, like a spoofed one. Every reply
// gets the verdict the model gives with the kernel's table as it is.
func TestSolicitTableFull(t *testing.T) {
	requireRoot(t)
	const size = 256
	m, err := NewMaps(MapSizes{RequestEntries: size})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dp, err := LoadDataplaneWith(m, Counters{}, harnessTimeouts)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	h := &harness{m: m, dp: dp}
	pol := solicitPolicy()
	if err := h.configure(pol); err != nil {
		t.Fatal(err)
	}
	const sent = 8 * size
	for i := range sent {
		ret, err := dp.TC.Run(&ebpf.RunOptions{Data: udp(host4, uint16(20000+i), peer4, dns)})
		if err != nil || ret != tcUnspec {
			t.Fatalf("request %d: ret %#x, %v", i, ret, err)
		}
	}
	table, err := m.Requests()
	if err != nil {
		t.Fatal(err)
	}
	if len(table) > size || len(table) == 0 {
		t.Fatalf("%d requests in a table of %d after %d sent", len(table), size, sent)
	}
	mod := pol.newModel()
	for _, r := range table {
		mod.SetRequest(model.RequestKey{Local: r.Local.Addr(), Remote: r.Remote.Addr(), LocalPort: r.Local.Port(), RemotePort: r.Remote.Port()}, time.Hour)
	}
	var solicited, dropped int
	for i := range sent {
		frame := udp(peer4, dns, host4, uint16(20000+i))
		_, got, err := h.run(HookXDP, frame, true)
		if err != nil {
			t.Fatal(err)
		}
		want := mod.Classify(frame, model.Ingress).Reason
		if got.String() != want.String() {
			t.Fatalf("reply to request %d: kernel %s, model (with the kernel's table) %s", i, got, want)
		}
		if got == ReasonSolicited {
			solicited++
		} else {
			dropped++
		}
	}
	if dropped < sent-size || solicited != len(table) {
		t.Fatalf("%d replies solicited, %d dropped; the table held %d of %d requests", solicited, dropped, len(table), sent)
	}
	// The newest request survives eviction.
	if _, got, err := h.run(HookXDP, udp(peer4, dns, host4, uint16(20000+sent-1)), true); err != nil || got != ReasonSolicited {
		t.Fatalf("reply to the newest request: %s, %v; want solicited", got, err)
	}
	t.Logf("%d requests sent into a table of %d: %d replies solicited, %d dropped as unsolicited", sent, size, solicited, dropped)
}
