package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// applySnapshot is what an Apply may change, read back from the kernel.
type applySnapshot struct {
	Config    Config
	Allow     []netip.Prefix
	V4, V6    int
	Active4   bool
	Active6   bool
	Attached  []InterfaceSpec
	XG1Prog   uint32 // the XDP program on xg1: an upgrade rolled back restores it
	XG1Egress int
	Sampling  uint32
}

func (r *rig) snapshot(t *testing.T) applySnapshot {
	t.Helper()
	var s applySnapshot
	r.do(t, func(g *Guard) (err error) {
		if s.Config, err = g.Maps.ReadConfig(); err != nil {
			return err
		}
		if s.Sampling, err = g.Maps.SampleRate(); err != nil {
			return err
		}
		if s.Allow, err = g.Maps.AllowList(); err != nil {
			return err
		}
		if s.V4, s.V6, err = g.AllowCounts(); err != nil {
			return err
		}
		if s.Active4, s.Active6, err = g.Maps.AllowActive(); err != nil {
			return err
		}
		s.Attached, err = g.AttachedHere()
		return err
	})
	s.XG1Prog = r.xdpProgID(t)
	s.XG1Egress = r.egressCount(t)
	return s
}

func (s applySnapshot) String() string {
	type plain applySnapshot // without this method
	return fmt.Sprintf("%+v", plain(s))
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// applyRig is a rig with xg1 attached, xg5 attached (to be pruned), xg3 not
// attached, an allow list of one prefix per family, and the default config.
func applyRig(t *testing.T) *rig { return applyRigWith(t, "") }

// withBackend is d with backend asked for on every interface with egress
// ("" leaves the choice to the kernel's features).
func withBackend(d DesiredState, backend TCBackend) DesiredState {
	d.Interfaces = slices.Clone(d.Interfaces)
	for i := range d.Interfaces {
		if d.Interfaces[i].Egress {
			d.Interfaces[i].TCBackend = backend
		}
	}
	return d
}

// applyRigWith is applyRig with xg5's egress through backend.
func applyRigWith(t *testing.T, backend TCBackend) *rig {
	r := newRig(t)
	nstest.Veth(t, r.peer, "xg2", r.host, "xg3", 0)
	nstest.Veth(t, r.peer, "xg4", r.host, "xg5", 0)
	r.do(t, func(g *Guard) error {
		_, err := g.Apply(DesiredState{
			Interfaces: []InterfaceSpec{{Name: rigHostIf}, {Name: "xg5", Egress: true, TCBackend: backend}},
			Config:     DefaultConfig(),
			Allow:      mustPrefixes("203.0.113.0/24", "2001:db8::/48"),
		}, ApplyOptions{Scope: ApplyScope{Interfaces: true, Config: true, Allow: true}})
		return err
	})
	return r
}

// applyWant changes every part: xg1 upgraded and given egress, xg3 attached,
// xg5 pruned, every config word, one prefix added and one deleted.
var applyWant = DesiredState{
	Interfaces: []InterfaceSpec{{Name: rigHostIf, Egress: true}, {Name: "xg3"}},
	Config:     Config{Mode: ModeMonitor, FragPolicy: FragStrict, Ports: BothPorts(53, DefaultPort)},
	Allow:      mustPrefixes("203.0.113.0/24", "198.51.100.0/24", "203.0.113.0/24"),
	SampleRate: 100,
}

var applyEverything = ApplyScope{Interfaces: true, PruneInterfaces: true, Config: true, Allow: true, SampleRate: true}

// TestApplyRollsBackAtEveryStep fails one whole Apply at each step in turn:
// whatever it had changed by then is taken back, and the kernel holds what it
// held before, program for program.
// With each egress backend the kernel can hold (legacy forced where it has
// tcx too): a legacy rollback once left tc_legacy/ behind its filter.
func TestApplyRollsBackAtEveryStep(t *testing.T) {
	for _, backend := range egressBackends(t) {
		t.Run(string(backend), func(t *testing.T) { testApplyRollsBackAtEveryStep(t, backend) })
	}
}

func testApplyRollsBackAtEveryStep(t *testing.T, backend TCBackend) {
	for _, step := range []string{"allow-add", "config", "sampling", "replace-xdp", "replace-tc", "tc", "stats", "xdp", "done", "allow-del", "detach", "egress-remove", "end"} {
		t.Run(step, func(t *testing.T) {
			r := applyRigWith(t, backend)
			before := r.snapshot(t)
			injected := errors.New("injected failure at " + step)
			hit := false
			r.do(t, func(g *Guard) error {
				want := withBackend(applyWant, backend)
				if step == "egress-remove" {
					// Egress off on xg5, kept: its removal is the step.
					want.Interfaces = append(slices.Clone(want.Interfaces), InterfaceSpec{Name: "xg5"})
				}
				_, err := g.Apply(want, ApplyOptions{Scope: applyEverything, Reload: true, failpoint: func(s string) error {
					if s == step {
						hit = true
						return injected
					}
					return nil
				}})
				if !errors.Is(err, injected) {
					return fmt.Errorf("Apply: %v, want the injected failure", err)
				}
				return nil
			})
			if !hit {
				t.Fatalf("step %q was never reached", step)
			}
			after := r.snapshot(t)
			if after.String() != before.String() {
				t.Fatalf("after a failure at %s:\n got %s\nwant %s", step, after, before)
			}
			r.send(t, request(t, attacker))
			r.expectCounters(t, "xdp", map[string]uint64{"drop_request": 1})
		})
	}
}

// TestApplyChangesThenNothing: the same Apply applied twice changes what it
// must the first time, and nothing at all the second.
func TestApplyChangesThenNothing(t *testing.T) {
	r := applyRig(t)
	var first, second []Change
	r.do(t, func(g *Guard) (err error) {
		first, err = g.Apply(applyWant, ApplyOptions{Scope: applyEverything})
		return err
	})
	want := []Change{
		{What: "allow", Detail: "+1 -1 prefixes"},
		{What: "mode", Detail: "enforce -> monitor"},
		{What: "fragments", Detail: "track -> strict"},
		{What: "ports", Detail: "11211 -> 53,11211"},
		{What: "sampling", Detail: "256 -> 100 per second per CPU"},
		{Interface: rigHostIf, What: "egress added", Detail: string(kernelEgress(t))},
		{Interface: "xg3", What: "attached", Detail: "xdp native, no egress"},
		{Interface: "xg5", What: "detached"},
	}
	slices.SortFunc(first, func(a, b Change) int { return compareChange(a, b) })
	slices.SortFunc(want, func(a, b Change) int { return compareChange(a, b) })
	if !slices.Equal(first, want) {
		t.Fatalf("changes:\n got %v\nwant %v", first, want)
	}
	s := r.snapshot(t)
	if s.V4 != 2 || s.V6 != 0 || !s.Active4 || s.Active6 || len(s.Attached) != 2 || s.XG1Egress != 1 || s.Sampling != 100 {
		t.Fatalf("after Apply: %s", s)
	}
	r.do(t, func(g *Guard) (err error) {
		second, err = g.Apply(applyWant, ApplyOptions{Scope: applyEverything})
		return err
	})
	if len(second) != 0 {
		t.Fatalf("the same Apply again changed %v", second)
	}
	if again := r.snapshot(t); again.String() != s.String() {
		t.Fatalf("a no-op Apply changed the kernel:\n got %s\nwant %s", again, s)
	}
}

func compareChange(a, b Change) int {
	return cmpString(a.Interface+"\x00"+a.What, b.Interface+"\x00"+b.What)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestApplyPruneOnlyThisNamespace: a prune detaches this namespace's
// unlisted interfaces and leaves another namespace's, on the same pin path
// and ifindex, as they are.
func TestApplyPruneOnlyThisNamespace(t *testing.T) {
	a, b := newRig(t), newRig(t)
	b.pin = a.pin
	a.attach(t, AttachOptions{})
	b.attach(t, AttachOptions{})
	bProg := b.xdpProgID(t)
	a.do(t, func(g *Guard) error {
		ch, err := g.Apply(DesiredState{}, ApplyOptions{Scope: ApplyScope{PruneInterfaces: true}})
		if err == nil && (len(ch) != 1 || ch[0].Interface != rigHostIf || ch[0].What != "detached") {
			err = fmt.Errorf("changes %v, want %s detached", ch, rigHostIf)
		}
		return err
	})
	if a.xdpProgID(t) != 0 || b.xdpProgID(t) != bProg {
		t.Fatalf("prune in A: A's XDP %d (want 0), B's %d (want %d)", a.xdpProgID(t), b.xdpProgID(t), bProg)
	}
}

// TestApplyRefusesBadInputChangingNothing: a bad interface name or config
// value fails before anything changes.
func TestApplyRefusesBadInputChangingNothing(t *testing.T) {
	r := applyRig(t)
	before := r.snapshot(t)
	for _, want := range []DesiredState{
		{Interfaces: []InterfaceSpec{{Name: "xg3"}, {Name: "nosuch0"}}, Config: Config{Mode: ModeMonitor, Ports: BothPorts(11211)}},
		{Interfaces: []InterfaceSpec{{Name: "xg3"}, {Name: "xg3"}}},
		{Interfaces: []InterfaceSpec{{Name: "xg3", Mode: "offload"}}},
		{Config: Config{Mode: 7, Ports: BothPorts(11211)}},
		{Interfaces: []InterfaceSpec{{Name: rigHostIf}}, Config: DefaultConfig(), SampleRate: MaxSampleRate + 1},
	} {
		r.do(t, func(g *Guard) error {
			if _, err := g.Apply(want, ApplyOptions{Scope: applyEverything}); err == nil {
				return fmt.Errorf("Apply(%+v) succeeded", want)
			}
			return nil
		})
		if after := r.snapshot(t); after.String() != before.String() {
			t.Fatalf("a refused Apply(%+v) changed:\n got %s\nwant %s", want, after, before)
		}
	}
}

// TestRunningProgramsRecognised: an interface running this binary's
// programs is recognised from the kernel's tags without loading anything
// (a no-op Apply stays cheap), and one running other programs is not.
func TestRunningProgramsRecognised(t *testing.T) {
	r := newRig(t)
	r.attach(t, AttachOptions{Egress: true})
	check := func() (ok bool) {
		t.Helper()
		r.do(t, func(g *Guard) error {
			ns, err := CurrentNetns()
			if err != nil {
				return err
			}
			l, err := netlink.LinkByName(rigHostIf)
			if err != nil {
				return err
			}
			a, err := loadAttachment(g.ifaceDir(ns, l.Attrs().Index), l.Attrs().Index)
			if err != nil {
				return err
			}
			defer a.close()
			ok, err = a.runsCurrentPrograms(l, linkEthernet)
			return err
		})
		return ok
	}
	if !check() {
		t.Fatal("the programs this binary attached are not recognised as its own")
	}
	// A program of the same type and name with other instructions.
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdpguard_xdp", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	info, err := other.Info()
	if err != nil {
		t.Fatal(err)
	}
	spec, _, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	if matchesSpec(spec, xdpguardProgXdpguardXdp, info) {
		t.Fatal("a program of the same name but other instructions is taken for this binary's")
	}
	if res := r.attach(t, AttachOptions{Egress: true}); res.Action != "unchanged" {
		t.Fatalf("attach again: %+v, want unchanged", res)
	}
}

// TestAllowCountsKeptExact: the counts status shows come from the record
// Apply keeps, not from walking the tries, and stay equal to the tries'
// contents through whole lists, edits, duplicates, failed edits and a flush;
// each family's lookup is on exactly when it has entries.
func TestAllowCountsKeptExact(t *testing.T) {
	r := newRig(t)
	check := func(when string, want4, want6 int) {
		t.Helper()
		r.do(t, func(g *Guard) error {
			v4, v6, err := g.AllowCounts()
			if err != nil {
				return err
			}
			w4, w6, err := g.Maps.AllowCount() // the walk
			if err != nil {
				return err
			}
			a4, a6, err := g.Maps.AllowActive()
			if err != nil {
				return err
			}
			if v4 != want4 || v6 != want6 || w4 != want4 || w6 != want6 || a4 != (want4 > 0) || a6 != (want6 > 0) {
				return fmt.Errorf("%s: record %d/%d, tries %d/%d, lookups on %v/%v; want %d/%d", when, v4, v6, w4, w6, a4, a6, want4, want6)
			}
			return nil
		})
	}
	apply := func(want DesiredState, scope ApplyScope) ([]Change, error) {
		var ch []Change
		var applyErr error
		r.do(t, func(g *Guard) error {
			ch, applyErr = g.Apply(want, ApplyOptions{Scope: scope})
			return nil
		})
		return ch, applyErr
	}
	whole := ApplyScope{Allow: true}
	edit := ApplyScope{AllowEdit: true}
	if _, err := apply(DesiredState{Allow: mustPrefixes("10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8", "2001:db8::/32")}, whole); err != nil {
		t.Fatal(err)
	}
	check("a whole list with a duplicate", 2, 1)
	if ch, err := apply(DesiredState{Allow: mustPrefixes("2001:db8::/32", "10.1.0.0/16", "10.0.0.0/8")}, whole); err != nil || len(ch) != 0 {
		t.Fatalf("the same set listed otherwise: %v, %v; want no change", ch, err)
	}
	if ch, err := apply(DesiredState{AllowAdd: mustPrefixes("10.0.0.0/8", "192.0.2.0/24")}, edit); err != nil || len(ch) != 1 || ch[0].Detail != "+1 prefixes" {
		t.Fatalf("add one new, one listed: %v, %v", ch, err)
	}
	check("an edit adding one new prefix and one listed", 3, 1)
	_, err := apply(DesiredState{AllowAdd: mustPrefixes("198.51.100.0/24"), AllowDel: mustPrefixes("192.0.2.0/24", "203.0.113.0/24")}, edit)
	if !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("deleting an unlisted prefix: %v, want ErrNotAllowed", err)
	}
	check("a failed edit (its addition taken back, its deletion put back)", 3, 1)
	if _, err := apply(DesiredState{AllowDel: mustPrefixes("2001:db8::/32")}, edit); err != nil {
		t.Fatal(err)
	}
	check("the last IPv6 prefix deleted", 3, 0)
	if _, err := apply(DesiredState{Allow: mustPrefixes("10.0.0.0/8", "2001:db8:1::/48")}, whole); err != nil {
		t.Fatal(err)
	}
	check("a whole list after edits", 1, 1)
	if _, err := apply(DesiredState{}, whole); err != nil {
		t.Fatal(err)
	}
	check("flushed", 0, 0)

	// Behind Apply's back the tries change, the record does not: status
	// reads the record (which is why only Apply may change pinned lists).
	r.do(t, func(g *Guard) error {
		if err := g.Maps.AllowAdd(mustPrefixes("192.0.2.0/24")); err != nil {
			return err
		}
		v4, _, err := g.AllowCounts()
		if err == nil && v4 != 0 {
			err = fmt.Errorf("AllowCounts %d after a change that bypassed Apply: it walked the trie", v4)
		}
		return err
	})
}

// TestApplyAfterStateRemoved: once the last detach removed the shared
// state, the Guard that did it refuses further changes instead of attaching
// programs to maps that are pinned nowhere.
func TestApplyAfterStateRemoved(t *testing.T) {
	r := newRig(t)
	r.attach(t, AttachOptions{})
	r.do(t, func(g *Guard) error {
		if _, err := g.DetachAll(); err != nil {
			return err
		}
		_, err := g.Apply(DesiredState{Interfaces: []InterfaceSpec{{Name: rigHostIf}}}, ApplyOptions{Scope: ApplyScope{Interfaces: true}})
		if !errors.Is(err, ErrNotSetUp) {
			return fmt.Errorf("Apply after the state was removed: %v, want ErrNotSetUp", err)
		}
		return nil
	})
	r.requireNothingLeft(t, "after an Apply refused on removed state")
}

// TestDetachEverywhere: from one namespace, every namespace's attachments
// go (a cls_bpf filter and the clsact qdisc made for it too, in their own
// namespace), and so does the state.
func TestDetachEverywhere(t *testing.T) {
	a, b := newRig(t), newRig(t)
	b.pin = a.pin
	a.attach(t, AttachOptions{Egress: true})
	b.attach(t, AttachOptions{Egress: true, TCBackend: TCLegacy})
	a.do(t, func(g *Guard) error {
		ch, err := g.DetachEverywhere()
		if err == nil && len(ch) != 2 {
			err = fmt.Errorf("changes %v, want two detaches", ch)
		}
		return err
	})
	a.requireNothingLeft(t, "A after detach --all-namespaces")
	b.requireNothingLeft(t, "B after detach --all-namespaces")
	qdiscs, err := b.host.Handle().QdiscList(b.hostLink(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			t.Errorf("B's clsact qdisc, made by attach, is left")
		}
	}
	// With the qdisc gone there is no filter list to read (an error);
	// a filter of ours still listed is the failure.
	if id, err := legacyProgramIDAt(b.host.Handle(), b.hostLink(t)); err == nil && id != 0 {
		t.Errorf("B's cls_bpf filter (program %d) is left", id)
	}
}

// TestUpgradeOfTheEgressProgramAlone: an attached interface whose egress
// program differs from this binary's (an upgrade that changed only the TC
// program) is upgraded, not left "unchanged", with each egress backend the
// kernel can hold.
func TestUpgradeOfTheEgressProgramAlone(t *testing.T) {
	for _, backend := range egressBackends(t) {
		t.Run(string(backend), func(t *testing.T) { testUpgradeOfTheEgressProgramAlone(t, backend) })
	}
}

func testUpgradeOfTheEgressProgramAlone(t *testing.T, backend TCBackend) {
	r := newRig(t)
	r.attach(t, AttachOptions{Egress: true, TCBackend: backend})
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xdpguard_tc", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherInfo, _ := other.Info()
	otherID, _ := otherInfo.ID()
	// withEgress runs fn with xg1's attachment and link, in its namespace.
	withEgress := func(fn func(a *attachment, l netlink.Link) error) {
		t.Helper()
		r.do(t, func(g *Guard) error {
			ns, err := CurrentNetns()
			if err != nil {
				return err
			}
			l, err := netlink.LinkByName(rigHostIf)
			if err != nil {
				return err
			}
			a, err := loadAttachment(g.ifaceDir(ns, l.Attrs().Index), l.Attrs().Index)
			if err != nil {
				return err
			}
			defer a.close()
			if a.egress() != string(backend) {
				return fmt.Errorf("xg1's egress is %q, want %s", a.egress(), backend)
			}
			return fn(a, l)
		})
	}
	tcProgOnLink := func() ebpf.ProgramID {
		t.Helper()
		var id ebpf.ProgramID
		withEgress(func(a *attachment, l netlink.Link) error {
			if a.legacy {
				var err error
				id, err = legacyProgramID(l)
				return err
			}
			info, err := a.tc.Info()
			if err == nil {
				id = info.Program
			}
			return err
		})
		return id
	}
	withEgress(func(a *attachment, l netlink.Link) error {
		if a.legacy {
			return netlink.FilterReplace(legacyFilter(l.Attrs().Index, other.FD()))
		}
		return a.tc.Update(other)
	})
	if tcProgOnLink() != otherID {
		t.Fatal("the test could not put another egress program in place")
	}
	if res := r.attach(t, AttachOptions{Egress: true}); res.Action != "replaced" || res.Egress != string(backend) {
		t.Fatalf("attach over another egress program: %+v, want replaced, egress %s kept", res, backend)
	}
	if id := tcProgOnLink(); id == otherID || id == 0 {
		t.Fatalf("egress program %d after the upgrade; want a new one, not the other (%d)", id, otherID)
	}
}

// Every allow-list change Apply makes leaves each block bitmap holding
// exactly the blocks the list touches: whole lists and edits, deletions of a
// prefix whose block another prefix keeps, an edit that adds into the block
// of a prefix it deletes (the kept copy of the list predates the addition),
// a failed Apply rolled back, and the empty list.
func TestApplyKeepsBlockBitmapsExact(t *testing.T) {
	r := newRig(t)
	var list []netip.Prefix // what the tries must hold
	check := func(when string) {
		t.Helper()
		r.do(t, func(g *Guard) error {
			got, err := g.Maps.AllowList()
			if err != nil {
				return err
			}
			if !slices.Equal(got, sortedSet(slices.Clone(list))) {
				return fmt.Errorf("%s: tries hold %v, want %v", when, got, list)
			}
			w4, w6 := blocksOf(list)
			for _, c := range []struct {
				m    *ebpf.Map
				want blockBitmap
			}{{g.Maps.Allow4Blocks, w4}, {g.Maps.Allow6Blocks, w6}} {
				bm, err := readBlocks(c.m)
				if err != nil {
					return err
				}
				for i := range bm {
					if want := uint64(0); c.want != nil && bm[i] != c.want[i] || c.want == nil && bm[i] != want {
						return fmt.Errorf("%s: bitmap word %#x is %#x, list %v", when, i, bm[i], list)
					}
				}
			}
			return nil
		})
	}
	apply := func(want DesiredState, scope ApplyScope, fail func(string) error) error {
		var applyErr error
		r.do(t, func(g *Guard) error {
			_, applyErr = g.Apply(want, ApplyOptions{Scope: scope, failpoint: fail})
			return nil
		})
		return applyErr
	}
	whole, edit := ApplyScope{Allow: true}, ApplyScope{AllowEdit: true}
	list = mustPrefixes("10.0.0.0/8", "10.1.2.0/24", "10.1.2.128/25", "192.0.2.7/32", "2001:db8::/32", "2001:db8:1::/48", "::/0")
	if err := apply(DesiredState{Allow: list}, whole, nil); err != nil {
		t.Fatal(err)
	}
	check("a whole list")
	// Add into 192.0.2.0/24 while deleting its only prefix, with this
	// process's copy of the list made by the whole list's Apply.
	if err := apply(DesiredState{AllowAdd: mustPrefixes("192.0.2.9/32"), AllowDel: mustPrefixes("192.0.2.7/32")}, edit, nil); err != nil {
		t.Fatal(err)
	}
	list = mustPrefixes("10.0.0.0/8", "10.1.2.0/24", "10.1.2.128/25", "192.0.2.9/32", "2001:db8::/32", "2001:db8:1::/48", "::/0")
	check("an edit adding into the block it deletes from")
	// 10.1.2.0/24 stays: its block keeps its bit; ::/0 goes: only
	// 2001:db8::/24's block stays set.
	if err := apply(DesiredState{AllowDel: mustPrefixes("10.1.2.128/25", "::/0")}, edit, nil); err != nil {
		t.Fatal(err)
	}
	list = mustPrefixes("10.0.0.0/8", "10.1.2.0/24", "192.0.2.9/32", "2001:db8::/32", "2001:db8:1::/48")
	check("deletions inside kept blocks")
	// A whole list that drops the /8 and the /32 and adds elsewhere.
	list = mustPrefixes("10.1.2.0/24", "198.51.100.0/24", "2001:db8:1::/48")
	if err := apply(DesiredState{Allow: list}, whole, nil); err != nil {
		t.Fatal(err)
	}
	check("a whole list replacing another")
	// Failing at the end: everything rolled back, deleted bits set again.
	if err := apply(DesiredState{Allow: mustPrefixes("203.0.113.0/24")}, whole, failAt("end", errors.New("injected"))); err == nil {
		t.Fatal("the failpoint did not fail the Apply")
	}
	r.do(t, func(g *Guard) error {
		// The rolled-back addition may leave its bit set (the trie says
		// no): set it in the expectation by adding and deleting it.
		bm, err := readBlocks(g.Maps.Allow4Blocks)
		if err != nil {
			return err
		}
		w4, _ := blocksOf(append(slices.Clone(list), mustPrefixes("203.0.113.0/24")...))
		min4, _ := blocksOf(list)
		for i := range bm {
			if bm[i]&min4[i] != min4[i] || bm[i]&^w4[i] != 0 {
				return fmt.Errorf("after a rollback: bitmap word %#x is %#x: must hold %#x and no more than %#x", i, bm[i], min4[i], w4[i])
			}
		}
		return nil
	})
	list = nil
	if err := apply(DesiredState{Allow: nil}, whole, nil); err != nil {
		t.Fatal(err)
	}
	check("the empty list")
}
