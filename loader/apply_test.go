package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// applySnapshot is what an Apply may change, read back from the kernel.
type applySnapshot struct {
	Config   Config
	Allow    []netip.Prefix
	V4, V6   int
	Active4  bool
	Active6  bool
	Attached []InterfaceSpec
	XG1Prog  uint32 // the XDP program on xg1: an upgrade rolled back restores it
	XG1TCX   int
}

func (r *rig) snapshot(t *testing.T) applySnapshot {
	t.Helper()
	var s applySnapshot
	r.do(t, func(g *Guard) (err error) {
		if s.Config, err = g.Maps.ReadConfig(); err != nil {
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
	s.XG1TCX = r.tcxCount(t)
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
func applyRig(t *testing.T) *rig {
	r := newRig(t)
	nstest.Veth(t, r.peer, "xg2", r.host, "xg3", 0)
	nstest.Veth(t, r.peer, "xg4", r.host, "xg5", 0)
	r.do(t, func(g *Guard) error {
		_, err := g.Apply(DesiredState{
			Interfaces: []InterfaceSpec{{Name: rigHostIf}, {Name: "xg5", Egress: true}},
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
	Config:     Config{Mode: ModeMonitor, FragPolicy: FragStrict, Ports: []uint16{53, DefaultPort}},
	Allow:      mustPrefixes("203.0.113.0/24", "198.51.100.0/24", "203.0.113.0/24"),
}

var applyEverything = ApplyScope{Interfaces: true, PruneInterfaces: true, Config: true, Allow: true}

// TestApplyRollsBackAtEveryStep fails one whole Apply at each step in turn:
// whatever it had changed by then is taken back, and the kernel holds what it
// held before, program for program.
func TestApplyRollsBackAtEveryStep(t *testing.T) {
	for _, step := range []string{"allow-add", "config", "replace-xdp", "replace-tc", "tc", "stats", "xdp", "done", "allow-del", "detach", "egress-remove", "end"} {
		t.Run(step, func(t *testing.T) {
			r := applyRig(t)
			before := r.snapshot(t)
			injected := errors.New("injected failure at " + step)
			hit := false
			r.do(t, func(g *Guard) error {
				want := applyWant
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
		{Interface: rigHostIf, What: "egress added", Detail: "tcx"},
		{Interface: "xg3", What: "attached", Detail: "xdp native, no egress"},
		{Interface: "xg5", What: "detached"},
	}
	slices.SortFunc(first, func(a, b Change) int { return compareChange(a, b) })
	slices.SortFunc(want, func(a, b Change) int { return compareChange(a, b) })
	if !slices.Equal(first, want) {
		t.Fatalf("changes:\n got %v\nwant %v", first, want)
	}
	s := r.snapshot(t)
	if s.V4 != 2 || s.V6 != 0 || !s.Active4 || s.Active6 || len(s.Attached) != 2 || s.XG1TCX != 1 {
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
		{Interfaces: []InterfaceSpec{{Name: "xg3"}, {Name: "nosuch0"}}, Config: Config{Mode: ModeMonitor, Ports: []uint16{11211}}},
		{Interfaces: []InterfaceSpec{{Name: "xg3"}, {Name: "xg3"}}},
		{Interfaces: []InterfaceSpec{{Name: "xg3", Mode: "offload"}}},
		{Config: Config{Mode: 7, Ports: []uint16{11211}}},
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
