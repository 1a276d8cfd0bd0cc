package loader

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/model"
	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/testpkt"
)

// A first fragment's verdict is kept per hook: a datagram forwarded through
// the host meets both, and one hook's verdict must not decide the other's
// (issue 9, item 6). Today's main shared them.
func TestFragmentVerdictsPerHook(t *testing.T) {
	h := newHarness(t)
	pol := policy{}
	if err := h.configure(pol); err != nil {
		t.Fatal(err)
	}
	mod := model.New(pol.model())
	f1, f2, f3 := frags(bigResp(peer4, host4, 40000, mc, 0x6060))
	g1, g2, _ := frags(bigResp(peer6, host6, 40000, mc, 0x6061))
	for i, s := range []struct {
		hook  Hook
		frame []byte
		want  Reason
	}{
		{HookTC, f1, ReasonDropRequest},
		{HookXDP, f2, ReasonPassOrphanFragment}, // egress's verdict is not ingress's
		{HookTC, f2, ReasonDropFragment},
		{HookXDP, f1, ReasonDropRequest},
		{HookXDP, f3, ReasonDropFragment},
		{HookXDP, g1, ReasonDropRequest},
		{HookTC, g2, ReasonPassOrphanFragment},
		{HookXDP, g2, ReasonDropFragment},
	} {
		_, got, err := h.run(s.hook, s.frame, true)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		mr := mod.Classify(s.frame, modelHook(s.hook))
		if got != s.want || mr.Reason.String() != s.want.String() {
			t.Errorf("step %d at %s: kernel %s, model %s, want %s", i, s.hook, got, mr.Reason, s.want)
		}
	}
}

// A verdict lasts as long as the kernel's reassembly timeout for its family,
// then counts as absent (issue 9, item 6). The programs are loaded with short
// timeouts; the model is given the same and its clock moved the same way.
func TestFragmentVerdictsExpire(t *testing.T) {
	requireRoot(t)
	m, err := NewMaps(MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	timeouts := FragTimeouts{IPv4: 300 * time.Millisecond, IPv6: 900 * time.Millisecond}
	dp, err := LoadDataplaneWith(m, Counters{}, timeouts)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	h := &harness{m: m, dp: dp}
	pol := policy{}
	if err := h.configure(pol); err != nil {
		t.Fatal(err)
	}
	mc := pol.model()
	mc.FragTimeout4, mc.FragTimeout6 = timeouts.IPv4, timeouts.IPv6
	mod := model.New(mc)

	f1, f2, _ := frags(bigResp(peer4, host4, 40000, testpkt.MemcachedPort, 0x7070))
	g1, g2, _ := frags(bigResp(peer6, host6, 40000, testpkt.MemcachedPort, 0x7071))
	reason := func(frame []byte) Reason {
		t.Helper()
		_, r, err := h.run(HookXDP, frame, true)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	start := time.Now()
	for _, fr := range [][]byte{f1, g1} {
		if r := reason(fr); r != ReasonDropRequest {
			t.Fatalf("first fragment: %s", r)
		}
		mod.Classify(fr, model.Ingress)
	}
	// Within the timeout: the verdict holds, in the kernel and the model.
	if r := reason(f2); r != ReasonDropFragment && time.Since(start) < timeouts.IPv4 {
		t.Fatalf("IPv4 later fragment within the timeout: %s", r)
	}
	if r := mod.Classify(f2, model.Ingress).Reason; r != model.DropFragment {
		t.Fatalf("model, IPv4 later fragment within the timeout: %s", r)
	}
	// Past it: an orphan. Polled, since the kernel's clock is its own.
	nstest.Eventually(t, 5*time.Second, "the IPv4 verdict to expire", func() (bool, error) {
		return reason(f2) == ReasonPassOrphanFragment, nil
	})
	if el := time.Since(start); el < timeouts.IPv4 {
		t.Fatalf("IPv4 verdict gone after %v, before its timeout of %v", el, timeouts.IPv4)
	}
	if r := reason(g2); r != ReasonDropFragment && time.Since(start) < timeouts.IPv6 {
		t.Fatalf("IPv6 later fragment within its (longer) timeout: %s", r)
	}
	nstest.Eventually(t, 5*time.Second, "the IPv6 verdict to expire", func() (bool, error) {
		return reason(g2) == ReasonPassOrphanFragment, nil
	})
	if el := time.Since(start); el < timeouts.IPv6 {
		t.Fatalf("IPv6 verdict gone after %v, before its timeout of %v", el, timeouts.IPv6)
	}
	mod.Advance(timeouts.IPv4 + time.Millisecond)
	if r := mod.Classify(f2, model.Ingress).Reason; r != model.PassOrphanFragment {
		t.Fatalf("model, IPv4 later fragment past the timeout: %s", r)
	}
	if r := mod.Classify(g2, model.Ingress).Reason; r != model.DropFragment {
		t.Fatalf("model, IPv6 later fragment past the IPv4 timeout only: %s", r)
	}
	// A new first fragment renews it.
	if r := reason(f1); r != ReasonDropRequest {
		t.Fatalf("first fragment again: %s", r)
	}
	if r := reason(f2); r != ReasonDropFragment {
		t.Fatalf("later fragment after a renewed first: %s", r)
	}
}

// The programs carry the timeouts they were loaded with.
func TestLoadSetsFragTimeouts(t *testing.T) {
	requireRoot(t)
	m, err := NewMaps(MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := FragTimeouts{IPv4: 7 * time.Second, IPv6: 11 * time.Second}
	dp, err := LoadDataplaneWith(m, Counters{}, want)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	spec, _, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	info, err := dp.XDP.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := info.MapIDs()
	found := false
	for _, id := range ids {
		mp, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		mi, err := mp.Info()
		if err != nil || !strings.HasSuffix(mi.Name, ".rodata") {
			mp.Close()
			continue
		}
		raw := make([]byte, mi.ValueSize)
		err = mp.Lookup(uint32(0), &raw)
		mp.Close()
		if err != nil {
			t.Fatal(err)
		}
		for name, d := range map[string]time.Duration{xdpguardVarIpfragTimeNs: want.IPv4, xdpguardVarIp6fragTimeNs: want.IPv6} {
			off := spec.Variables[name].Offset
			if got := binary.NativeEndian.Uint64(raw[off:]); got != uint64(d.Nanoseconds()) {
				t.Errorf("%s in the loaded program: %d ns, want %d", name, got, d.Nanoseconds())
			}
		}
		found = true
	}
	if !found {
		t.Fatal("the XDP program uses no .rodata map")
	}
}

// ReadFragTimeouts reads the two sysctls, in seconds, and falls back to the
// kernel's defaults where IPv6 is compiled out or disabled at boot.
func TestReadFragTimeouts(t *testing.T) {
	dir := t.TempDir()
	old := sysctlDir
	sysctlDir = dir
	defer func() { sysctlDir = old }()
	write := func(rel, v string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ipv4/ipfrag_time", "17\n")
	got, err := ReadFragTimeouts()
	if err != nil || got != (FragTimeouts{IPv4: 17 * time.Second, IPv6: 60 * time.Second}) {
		t.Fatalf("IPv4 only: %+v, %v", got, err)
	}
	write("ipv6/ip6frag_time", "45\n")
	if got, err = ReadFragTimeouts(); err != nil || got != (FragTimeouts{IPv4: 17 * time.Second, IPv6: 45 * time.Second}) {
		t.Fatalf("both: %+v, %v", got, err)
	}
	write("ipv4/ipfrag_time", "soon\n")
	if _, err = ReadFragTimeouts(); err == nil || !strings.Contains(err.Error(), "ipfrag_time") {
		t.Fatalf("garbage: %v, want an error naming the file", err)
	}
}

// The timeouts come from the namespace of the thread that loads the
// programs, which is the namespace attach works in: each namespace has its
// own reassembly timeouts.
func TestReadFragTimeoutsPerNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "xgft")
	if err := ns.Sysctl("net.ipv4.ipfrag_time", "7"); err != nil {
		t.Fatal(err)
	}
	if err := ns.Sysctl("net.ipv6.ip6frag_time", "13"); err != nil {
		t.Fatal(err)
	}
	var got FragTimeouts
	if err := ns.Do(func() (err error) { got, err = ReadFragTimeouts(); return err }); err != nil {
		t.Fatal(err)
	}
	if want := (FragTimeouts{IPv4: 7 * time.Second, IPv6: 13 * time.Second}); got != want {
		t.Fatalf("in %s: %+v, want %+v", ns.Name(), got, want)
	}
	here, err := ReadFragTimeouts()
	if err != nil {
		t.Fatal(err)
	}
	if here == got {
		t.Fatalf("the test's own namespace reads %+v too: the read does not follow the namespace", here)
	}
}
