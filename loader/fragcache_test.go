package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xdpguard/xdpguard/internal/model"
)

// The fragment caches' hash and tag, as bpf/xdpguard.c computes them
// (frag4_words_of, frag4_hash, frag_slot, frag_tag): the tests aim
// datagrams at one slot and forge slots with them.
const (
	fragHashM0    = 0x9e3779b97f4a7c15
	fragHashM1    = 0xc2b2ae3d27d4eb4f
	fragHashM2    = 0x165667b19e3779f9
	fragHashM3    = 0xd6e8feb86659fd93
	fragHashM4    = 0xff51afd7ed558ccd
	fragTagLive   = 0x5bd1e9955bd1e995
	fragCacheBits = 14
)

func frag4Hash(src, dst netip.Addr, id uint16, proto uint8, hook Hook) uint64 {
	s, d := src.As4(), dst.As4()
	w0 := binary.LittleEndian.Uint64(append(s[:], d[:]...))
	w1 := uint64(id) | uint64(proto)<<16 | uint64(hook)<<24
	return w0*fragHashM0 + w1*fragHashM1
}

func frag6Hash(src, dst netip.Addr, id uint32, hook Hook) uint64 {
	s, d := src.As16(), dst.As16()
	w := [5]uint64{
		binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:]),
		binary.LittleEndian.Uint64(d[:8]), binary.LittleEndian.Uint64(d[8:]),
		uint64(id) | uint64(hook)<<32,
	}
	return w[0]*fragHashM0 + w[1]*fragHashM1 + w[2]*fragHashM2 + w[3]*fragHashM3 + w[4]*fragHashM4
}

func fragSlot(hash uint64) uint32 { return uint32(hash >> (64 - fragCacheBits)) }

func fragTag(hash, seen uint64, reason Reason) uint64 {
	return hash ^ seen ^ uint64(reason)<<32 ^ fragTagLive
}

// Two datagrams in flight whose keys share a cache slot: the second's first
// fragment takes the slot, and the first's later fragments find their
// verdict in the table behind it. A cache that answered for a key it does
// not hold, or a lookup that stopped at the cache, fails here.
func TestFragmentCacheSharedSlot(t *testing.T) {
	h := newHarness(t)
	pol := policy{}
	if err := h.configure(pol); err != nil {
		t.Fatal(err)
	}
	const udp = 17
	// A request to memcached (dropped) and a datagram to port 53 (passed),
	// same addresses, IDs chosen to collide.
	dropID := uint16(0x7000)
	want := fragSlot(frag4Hash(peer4, host4, dropID, udp, HookXDP))
	passID := dropID + 1
	for fragSlot(frag4Hash(peer4, host4, passID, udp, HookXDP)) != want {
		passID++
	}
	dropID6 := uint32(0x70000)
	want6 := fragSlot(frag6Hash(peer6, host6, dropID6, HookXDP))
	passID6 := dropID6 + 1
	for fragSlot(frag6Hash(peer6, host6, passID6, HookXDP)) != want6 {
		passID6++
	}
	d1, d2, _ := frags(bigResp(peer4, host4, 40000, mc, uint32(dropID)))
	p1, p2, _ := frags(bigResp(peer4, host4, 40000, 53, uint32(passID)))
	e1, e2, _ := frags(bigResp(peer6, host6, 40000, mc, dropID6))
	q1, q2, _ := frags(bigResp(peer6, host6, 40000, 53, passID6))
	mod := model.New(pol.model())
	for i, s := range []struct {
		frame []byte
		want  Reason
	}{
		{d1, ReasonDropRequest},
		{p1, ReasonPass}, // takes the slot
		{d2, ReasonDropFragment},
		{p2, ReasonPass},
		{e1, ReasonDropRequest},
		{q1, ReasonPass},
		{e2, ReasonDropFragment},
		{q2, ReasonPass},
	} {
		_, got, err := h.run(HookXDP, s.frame, true)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		mr := mod.Classify(s.frame, model.Ingress)
		if got != s.want || mr.Reason.String() != s.want.String() {
			t.Errorf("step %d: kernel %s, model %s, want %s", i, got, mr.Reason, s.want)
		}
	}
	// The slots hold the datagrams recorded last: the dropped ones'
	// fragments were judged by the tables.
	var s4 xdpguardFrag4Slot
	if err := h.m.FragCache4.Lookup(want, &s4); err != nil {
		t.Fatal(err)
	}
	if s4.Key.Id != passID || s4.Reason != uint32(ReasonPass) {
		t.Errorf("IPv4 slot %d holds ID %#x reason %d, want the passed datagram's %#x", want, s4.Key.Id, s4.Reason, passID)
	}
	var s6 xdpguardFrag6Slot
	if err := h.m.FragCache6.Lookup(want6, &s6); err != nil {
		t.Fatal(err)
	}
	if s6.Key.Id != passID6 || s6.Reason != uint32(ReasonPass) {
		t.Errorf("IPv6 slot %d holds ID %#x reason %d, want the passed datagram's %#x", want6, s6.Key.Id, s6.Reason, passID6)
	}
}

// A slot is believed only when its tag matches its fields: one caught half
// written (here, forged with the verdict changed and the tag of the old one)
// sends the lookup to the table. The same slot with a matching tag is
// believed, which shows the forged slot was the one looked at.
func TestFragmentCacheChecksTag(t *testing.T) {
	h := newHarness(t)
	if err := h.configure(policy{}); err != nil {
		t.Fatal(err)
	}
	const id = 0x5151
	f1, f2, _ := frags(bigResp(peer4, host4, 40000, mc, id))
	if _, got, err := h.run(HookXDP, f1, true); err != nil || got != ReasonDropRequest {
		t.Fatalf("first fragment: %s, %v", got, err)
	}
	hash := frag4Hash(peer4, host4, id, 17, HookXDP)
	slot := fragSlot(hash)
	var s xdpguardFrag4Slot
	if err := h.m.FragCache4.Lookup(slot, &s); err != nil {
		t.Fatal(err)
	}
	if s.Tag != fragTag(hash, s.SeenNs, ReasonDropRequest) {
		t.Fatalf("slot %d after the first fragment: %+v, tag not the data plane's", slot, s)
	}
	torn := s
	torn.Reason = uint32(ReasonAllowlisted) // another write's verdict, this one's tag
	if err := h.m.FragCache4.Update(slot, &torn, 0); err != nil {
		t.Fatal(err)
	}
	if _, got, err := h.run(HookXDP, f2, true); err != nil || got != ReasonDropFragment {
		t.Errorf("later fragment with the slot half written: %s, %v; want drop_fragment, from the table", got, err)
	}
	whole := torn
	whole.Tag = fragTag(hash, torn.SeenNs, ReasonAllowlisted)
	if err := h.m.FragCache4.Update(slot, &whole, 0); err != nil {
		t.Fatal(err)
	}
	if _, got, err := h.run(HookXDP, f2, true); err != nil || got != ReasonAllowlisted {
		t.Errorf("later fragment with the slot whole: %s, %v; want the slot's allowlisted", got, err)
	}
}

// Programs of another build may have written the tables alone (a release
// before the caches) or left a cache behind a downgrade: attach empties the
// caches when it swaps programs out, and only then.
func TestFragmentCacheEmptiedWhenProgramsReplaced(t *testing.T) {
	r := newRig(t)
	r.attach(t, AttachOptions{})
	hash := frag4Hash(peer4, host4, 0x4242, 17, HookXDP)
	slot := fragSlot(hash)
	forged := xdpguardFrag4Slot{SeenNs: 1, Reason: uint32(ReasonAllowlisted)}
	forged.Tag = fragTag(hash, forged.SeenNs, ReasonAllowlisted)
	held := func() bool {
		var s xdpguardFrag4Slot
		r.do(t, func(g *Guard) error { return g.Maps.FragCache4.Lookup(slot, &s) })
		return s == forged
	}
	r.do(t, func(g *Guard) error { return g.Maps.FragCache4.Update(slot, &forged, 0) })
	if res := r.attach(t, AttachOptions{}); res.Action != "unchanged" || !held() {
		t.Fatalf("attach again, %s: the slot was changed; want it kept (nothing replaced)", res.Action)
	}
	if res := r.attach(t, AttachOptions{Reload: true}); res.Action != "replaced" || held() {
		t.Fatalf("attach --reload, %s: the slot is still there; want the caches emptied", res.Action)
	}
}
