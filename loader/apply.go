package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// InterfaceSpec is one interface xdpguard must protect in the calling
// thread's network namespace.
type InterfaceSpec struct {
	Name      string
	Mode      XDPMode   // "" is XDPAuto
	Egress    bool      // also the TC egress program
	TCBackend TCBackend // how egress is attached; "" is TCAuto
}

// DesiredState is what the kernel must hold for this network namespace's
// interfaces and for the configuration shared by every namespace.
type DesiredState struct {
	Interfaces []InterfaceSpec
	Config     Config         // mode, fragment policy, ports
	Allow      []netip.Prefix // the whole allow list; duplicates are fine

	// AllowAdd and AllowDel edit the allow list instead (Scope.AllowEdit):
	// what `allow add` and `allow del` do, without reading the whole list.
	// Adding a prefix already listed changes nothing; deleting one that is
	// not listed fails the Apply (ErrNotAllowed).
	AllowAdd, AllowDel []netip.Prefix

	// SampleRate is the drop-sampling budget, samples per second per CPU
	// (0: off; at most MaxSampleRate), shared like Config
	// (Scope.SampleRate). It lives in a map of its own, not in Config's.
	SampleRate uint32
}

// ApplyScope says which parts of a DesiredState Apply makes true; the
// others are left as they are.
type ApplyScope struct {
	// Interfaces: attach each listed interface that is not attached here,
	// add egress where it is asked for and missing, and swap in this
	// binary's programs where others run (an upgrade).
	Interfaces bool
	// PruneInterfaces: also detach this namespace's attachments that are not
	// listed, and take egress off listed interfaces that do not ask for it.
	// Other namespaces' attachments are never touched.
	PruneInterfaces bool
	Config          bool // write Config if it differs
	Allow           bool // make the allow list equal Allow
	AllowEdit       bool // add AllowAdd, delete AllowDel (not with Allow)
	SampleRate      bool // write SampleRate if it differs
}

// ApplyOptions say how Apply works.
type ApplyOptions struct {
	Scope ApplyScope
	// Force replaces an XDP program that is not xdpguard's.
	Force bool
	// Reload loads the programs anew and swaps them in even when the
	// attached ones are this binary's.
	Reload bool
	// Warn receives warnings (a fallback to generic mode, say).
	Warn func(string)

	// failpoint, when set, is called at each named step; an error it
	// returns fails the Apply there (tests prove rollback with it).
	failpoint func(step string) error
}

// Change is one thing Apply changed, one per line of output:
//
//	{"eth0", "attached", "xdp native, egress via tcx"}
//	{"eth0", "replaced", "xdp native, no egress"}       an upgrade
//	{"eth0", "egress added", "tcx"}   {"eth0", "egress removed", "tcx"}
//	{"eth0", "detached", ""}
//	{"", "mode", "enforce -> monitor"}   {"", "fragments", "track -> strict"}
//	{"", "ports", "11211 -> 53,11211"}   {"", "allow", "+3 -1 prefixes"}
type Change struct {
	Interface string `json:"interface,omitempty"` // "" for shared config
	What      string `json:"what"`
	Detail    string `json:"detail,omitempty"`
}

func (c Change) String() string {
	s := c.What
	if c.Interface != "" {
		s = c.Interface + ": " + s
	}
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// ErrReadOnly means a change was asked of state opened with OpenReadOnly.
var ErrReadOnly = errors.New("state opened read-only")

// Apply makes the kernel hold want, within opts.Scope, as one transaction:
// it returns what it changed, or an error after taking back everything it
// changed, leaving the previous state in force. An Apply that finds nothing
// to change changes nothing in the kernel and costs no more than reading
// what is attached and one pass over want.Allow in memory (the allow list
// is compared through a digest kept next to it, never by walking the trie).
//
// The order of the steps is chosen so that no step opens a window in which
// traffic the old or the new state drops would pass:
//
//  1. Allow-list additions. They only let more of a listed peer's traffic
//     through, which both states allow.
//  2. The config words (mode, fragment policy, ports), in one map update and
//     only if they differ: every attached program sees old and new at the same
//     instant, never a mix. It comes before any attach so that a new interface
//     runs under the new config from its first packet: with monitor asked for,
//     a newly attached interface never drops; with a port added, it is
//     protected from its first packet.
//  3. Attaches, upgrades (programs swapped atomically through the pinned
//     links) and egress added.
//  4. Allow-list deletions: only drop more.
//  5. Detaches and egress removal (PruneInterfaces), last: until everything
//     else has worked, every interface stays protected.
//
// A failure at any step takes back the steps before it, newest first: the
// config is written back as it was, added prefixes are deleted and deleted
// ones re-added, new attachments detached, upgraded ones swapped back to
// their old programs, and detached ones attached again.
func (g *Guard) Apply(want DesiredState, opts ApplyOptions) (changes []Change, err error) {
	if g.lock == nil {
		return nil, fmt.Errorf("apply: %w: use Open", ErrReadOnly)
	}
	if g.removed {
		return nil, fmt.Errorf("apply: %s: %w: the state was removed (the last interface detached, or a first Apply failed): Open it again", g.pinPath, ErrNotSetUp)
	}
	r := &applyRun{g: g, opts: opts}
	if r.opts.Warn == nil {
		r.opts.Warn = func(string) {}
	}
	r.t.failpoint = opts.failpoint
	if r.ns, err = CurrentNetns(); err != nil {
		return nil, err
	}
	defer func() {
		r.t.end(err)
		if err != nil {
			changes = nil
			forgetAllow(g.pinPath) // a rollback that failed leaves it unknown
			if g.created {
				// A first Apply that failed leaves no state behind.
				_ = g.removeIfUnused()
			}
		}
	}()

	// Everything that can be checked is checked before anything changes:
	// a bad name or value changes nothing.
	var links []netlink.Link
	if opts.Scope.Interfaces || opts.Scope.PruneInterfaces {
		if links, err = resolveInterfaces(want.Interfaces); err != nil {
			return nil, err
		}
	}
	var cfg Config
	if opts.Scope.Config {
		if cfg, err = normaliseConfig(want.Config); err != nil {
			return nil, err
		}
	}
	if opts.Scope.SampleRate && want.SampleRate > MaxSampleRate {
		return nil, fmt.Errorf("invalid sampling rate %d: give 0 (off) to %d samples per second per CPU", want.SampleRate, MaxSampleRate)
	}
	var plan *allowPlan
	switch {
	case opts.Scope.Allow && opts.Scope.AllowEdit:
		return nil, errors.New("apply: give the whole allow list or edits to it, not both")
	case opts.Scope.Allow:
		if plan, err = g.planAllow(want.Allow); err != nil {
			return nil, err
		}
	case opts.Scope.AllowEdit:
		if plan, err = g.planAllowEdit(want.AllowAdd, want.AllowDel); err != nil {
			return nil, err
		}
	}

	if plan != nil && len(plan.add) > 0 {
		if err := r.allowAdd(plan); err != nil {
			return nil, err
		}
	}
	if err := r.t.fail("allow-add"); err != nil {
		return nil, err
	}
	if opts.Scope.Config {
		if err := r.writeConfig(cfg); err != nil {
			return nil, err
		}
	}
	if err := r.t.fail("config"); err != nil {
		return nil, err
	}
	if opts.Scope.SampleRate {
		if err := r.writeSampleRate(want.SampleRate); err != nil {
			return nil, err
		}
	}
	if err := r.t.fail("sampling"); err != nil {
		return nil, err
	}
	if opts.Scope.Interfaces {
		for i, spec := range want.Interfaces {
			if err := r.ensureAttached(links[i], spec); err != nil {
				return nil, fmt.Errorf("attach %s: %w", spec.Name, err)
			}
		}
		if r.replaced {
			// Programs of another build wrote the fragment tables
			// alone (a release before the caches) or left the caches
			// behind a downgrade: a slot may hold an older verdict
			// than its table. Emptied, the caches only send lookups
			// to the tables until first fragments fill them again.
			if err := g.Maps.ClearFragCaches(); err != nil {
				return nil, err
			}
		}
	}
	if plan != nil && len(plan.del) > 0 {
		if err := r.allowDel(plan); err != nil {
			return nil, err
		}
	}
	if err := r.t.fail("allow-del"); err != nil {
		return nil, err
	}
	if opts.Scope.PruneInterfaces {
		if err := r.prune(want.Interfaces, links); err != nil {
			return nil, err
		}
	}
	if plan != nil {
		if err := r.writeAllowMeta(plan); err != nil {
			return nil, err
		}
	}
	if err := r.t.fail("end"); err != nil {
		return nil, err
	}
	g.created = false // the state now holds what was asked: it stays
	switch {
	case plan == nil:
	case plan.set != nil:
		cacheAllow(g.pinPath, plan.next, plan.set, true)
	case plan.edit:
		forgetAllow(g.pinPath)
	}
	return r.changes, nil
}

// applyRun is one Apply under way.
type applyRun struct {
	g       *Guard
	opts    ApplyOptions
	ns      uint64
	t       txn
	changes []Change
	// replaced is set when programs of another build were swapped out:
	// see clearFragCaches.
	replaced bool
}

func (r *applyRun) change(iface, what, detail string) {
	r.changes = append(r.changes, Change{Interface: iface, What: what, Detail: detail})
}

// resolveInterfaces checks the specs and finds their links, in order.
func resolveInterfaces(specs []InterfaceSpec) ([]netlink.Link, error) {
	seen := map[string]bool{}
	links := make([]netlink.Link, len(specs))
	for i, s := range specs {
		if s.Name == "" {
			return nil, errors.New("an interface without a name: give its name, as `ip link` shows it")
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("interface %q is listed twice: list it once", s.Name)
		}
		seen[s.Name] = true
		if s.Mode != "" {
			if _, err := ParseXDPMode(string(s.Mode)); err != nil {
				return nil, fmt.Errorf("interface %q: %w", s.Name, err)
			}
		}
		if s.TCBackend != "" {
			if _, err := ParseTCBackend(string(s.TCBackend)); err != nil {
				return nil, fmt.Errorf("interface %q: %w", s.Name, err)
			}
		}
		l, err := lookupLink(s.Name)
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", s.Name, err)
		}
		if _, err := entryPoints(l); err != nil {
			return nil, fmt.Errorf("attach %s: %w", s.Name, err)
		}
		links[i] = l
	}
	return links, nil
}

func (s InterfaceSpec) attachOptions(opts ApplyOptions) AttachOptions {
	o := AttachOptions{Mode: s.Mode, Egress: s.Egress, TCBackend: s.TCBackend, Force: opts.Force, Reload: opts.Reload, Warn: opts.Warn}
	if o.Mode == "" {
		o.Mode = XDPAuto
	}
	if o.TCBackend == "" {
		o.TCBackend = TCAuto
	}
	return o
}

// ensureAttached makes one listed interface protected by this binary's
// programs, recording what it changed and how to take it back.
func (r *applyRun) ensureAttached(l netlink.Link, spec InterfaceSpec) error {
	idx := l.Attrs().Index
	dir := r.g.ifaceDir(r.ns, idx)
	opts := spec.attachOptions(r.opts)
	if _, err := os.Stat(dir); err == nil {
		fresh, err := r.g.dropStale(dir, idx)
		if err != nil {
			return err
		}
		if !fresh {
			return r.reattach(l, dir, opts)
		}
	}
	res, err := r.g.attachNew(&r.t, l, dir, opts)
	if err != nil {
		return err
	}
	r.change(spec.Name, "attached", describe(res.Mode, res.Egress))
	return nil
}

func describe(mode XDPMode, egress string) string {
	if egress == "" {
		return fmt.Sprintf("xdp %s, no egress", mode)
	}
	return fmt.Sprintf("xdp %s, egress via %s", mode, egress)
}

// dropStale removes an entry of this namespace that protects nothing (an
// attach that crashed half-way, or a link whose interface went and whose
// ifindex came back) and reports whether it did, so the interface is
// attached afresh. A live entry whose program runs somewhere else is refused
// rather than unpinned, which would detach it there.
func (g *Guard) dropStale(dir string, ifindex int) (bool, error) {
	defunct, err := entryDefunct(dir)
	if err != nil {
		return false, err
	}
	if defunct {
		return true, removeDefunct(entry{ifindex: ifindex, dir: dir})
	}
	a, err := loadAttachment(dir, ifindex)
	if err != nil {
		return false, err
	}
	defer a.close()
	here, err := a.isHere()
	if err != nil {
		return false, err
	}
	if !here {
		return false, fmt.Errorf("%s holds an XDP link whose program is not the one attached at ifindex %d in this namespace (did the interface move to another namespace?): run `xdpguard detach --all` here to remove it", dir, ifindex)
	}
	return false, nil
}

// reattach handles an interface this namespace already protects: nothing to
// do, egress to add, or the programs to swap in place through the links (an
// upgrade, or opts.Reload).
func (r *applyRun) reattach(l netlink.Link, dir string, opts AttachOptions) error {
	name := l.Attrs().Name
	cur, err := loadAttachment(dir, l.Attrs().Index)
	if err != nil {
		return err
	}
	r.t.closeAtEnd(closerFunc(cur.close)) // rollback swaps back through it
	mode := xdpModeOf(l)
	if opts.Mode != XDPAuto && opts.Mode != mode {
		return fmt.Errorf("%w: %s is attached in %s mode: run `xdpguard detach %s` first to change it",
			ErrModeMismatch, name, mode, name)
	}
	kind, err := entryPoints(l)
	if err != nil {
		return err
	}
	egress := cur.egress()
	needTC := opts.Egress && egress == ""
	current := false
	if !opts.Reload {
		if current, err = cur.runsCurrentPrograms(l, kind); err != nil {
			return err
		}
	}
	if current && !needTC {
		return nil
	}

	// A fresh instance that keeps this interface's counters.
	dp, err := loadForLink(r.g.Maps, kind, cur.counters)
	if err != nil {
		return err
	}
	r.t.closeAtEnd(dp)
	// Attached by a release before sampling or before port directions:
	// the counters it lacks start here, pinned next to its counters (the
	// ones it has are kept: dp counts into them).
	made := dp.Counters()
	for _, c := range []struct {
		had, made *ebpf.Map
		pin       string
	}{
		{cur.counters.Stats2, made.Stats2, pinStats2},
		{cur.counters.SampleStats, made.SampleStats, pinSampleStats},
		{cur.counters.SampleStats2, made.SampleStats2, pinSampleStats2},
	} {
		if c.had != nil {
			continue
		}
		path := filepath.Join(dir, c.pin)
		if err := c.made.Pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", c.pin, err)
		}
		r.t.onFail(func() { os.Remove(path) })
	}
	xdpProg, tcProg := dp.Programs(kind)
	upgrade := opts.Reload
	if !current && !upgrade {
		// Compared by loading: the XDP program, then the egress one
		// (a change to the TC program alone is an upgrade too).
		if upgrade, err = cur.programsChanged(xdpProg); err != nil {
			return err
		}
		if !upgrade {
			if upgrade, err = cur.tcChanged(l, tcProg); err != nil {
				return err
			}
		}
	}
	if upgrade {
		if err := r.g.syncBlocks(); err != nil {
			return err
		}
		if err := r.swapPrograms(l, cur, xdpProg, tcProg); err != nil {
			return err
		}
		r.change(name, "replaced", describe(mode, egress))
		r.replaced = true
	}
	if needTC {
		backend, err := r.g.attachTC(l, dir, tcProg, opts.TCBackend, &r.t)
		if err != nil {
			return err
		}
		r.change(name, "egress added", string(backend))
	}
	return nil
}

// swapPrograms replaces the running programs with xdpProg and tcProg through the pinned
// links (or the cls_bpf filter): the kernel swaps each atomically, so no
// packet goes unfiltered. A rollback swaps the old ones back.
func (r *applyRun) swapPrograms(l netlink.Link, cur *attachment, xdpProg, tcProg *ebpf.Program) error {
	oldXDP, oldTC, err := cur.programs(l)
	if err != nil {
		return err
	}
	r.t.closeAtEnd(oldXDP)
	if oldTC != nil {
		r.t.closeAtEnd(oldTC)
	}
	if err := cur.xdp.Update(xdpProg); err != nil {
		return fmt.Errorf("replace XDP program: %w", err)
	}
	r.t.onFail(func() { cur.xdp.Update(oldXDP) })
	if err := r.t.fail("replace-xdp"); err != nil {
		return err
	}
	if err := cur.replaceTC(l, tcProg); err != nil {
		return err
	}
	if oldTC != nil {
		r.t.onFail(func() { cur.replaceTC(l, oldTC) })
	}
	return r.t.fail("replace-tc")
}

// prune detaches this namespace's attachments that are not listed, and
// takes egress off listed interfaces that no longer ask for it.
func (r *applyRun) prune(specs []InterfaceSpec, links []netlink.Link) error {
	listed := map[int]InterfaceSpec{}
	for i, l := range links {
		listed[l.Attrs().Index] = specs[i]
	}
	es, err := r.g.entriesIn(r.ns)
	if err != nil {
		return err
	}
	for _, e := range es {
		spec, ok := listed[e.ifindex]
		if !ok {
			if err := r.detachEntry(e); err != nil {
				return err
			}
			continue
		}
		if !spec.Egress {
			if err := r.removeEgress(e, spec); err != nil {
				return fmt.Errorf("remove egress from %s: %w", spec.Name, err)
			}
		}
	}
	return nil
}

// detachEntry detaches one of this namespace's attachments. Its interface
// may be gone (then so are its hooks, and only pins remain). A rollback
// attaches it again as it was.
func (r *applyRun) detachEntry(e entry) error {
	a, err := loadAttachment(e.dir, e.ifindex)
	if err != nil {
		// Half-made state (a crash mid-attach): remove what is there.
		if rmErr := os.RemoveAll(e.dir); rmErr != nil {
			return errors.Join(err, rmErr)
		}
		r.change(fmt.Sprintf("ifindex %d", e.ifindex), "removed", "half-made state")
		return nil
	}
	defer a.close()
	var l netlink.Link
	if here, err := a.isHere(); err != nil {
		return err
	} else if here {
		l, _ = netlink.LinkByIndex(e.ifindex)
	}
	name := fmt.Sprintf("(gone, ifindex %d)", e.ifindex)
	var again AttachOptions
	if l != nil {
		name = l.Attrs().Name
		again = AttachOptions{Mode: xdpModeOf(l), Egress: a.egress() != "", TCBackend: TCBackend(a.egress()), Warn: r.opts.Warn}
	}
	if err := r.t.fail("detach"); err != nil {
		return err
	}
	if err := a.detach(l); err != nil {
		return fmt.Errorf("detach %s: %w", name, err)
	}
	if err := os.RemoveAll(e.dir); err != nil {
		return fmt.Errorf("detach %s: remove %s: %w", name, e.dir, err)
	}
	if l != nil {
		r.t.onFail(func() {
			// Protected again, as before this Apply; its counters
			// start from zero.
			var t txn
			now, err := netlink.LinkByIndex(e.ifindex) // l's XDP state is stale
			if err == nil {
				_, err = r.g.attachNew(&t, now, e.dir, again)
				t.end(err)
			}
			if err != nil {
				r.opts.Warn(fmt.Sprintf("roll back the detach of %s: %v", name, err))
			}
		})
	}
	r.change(name, "detached", "")
	return nil
}

// removeEgress takes the TC egress program off a listed interface whose
// spec does not ask for it. A rollback attaches it again.
func (r *applyRun) removeEgress(e entry, spec InterfaceSpec) error {
	a, err := loadAttachment(e.dir, e.ifindex)
	if err != nil {
		return err
	}
	r.t.closeAtEnd(closerFunc(a.close))
	backend := a.egress()
	if backend == "" {
		return nil
	}
	l, err := lookupLink(spec.Name)
	if err != nil {
		return err
	}
	if err := r.t.fail("egress-remove"); err != nil {
		return err
	}
	if err := a.detachTC(l); err != nil {
		return err
	}
	r.t.onFail(func() {
		kind, err := entryPoints(l)
		var dp *Dataplane
		if err == nil {
			dp, err = loadForLink(r.g.Maps, kind, a.counters)
		}
		if err == nil {
			_, tcProg := dp.Programs(kind)
			var t txn
			_, err = r.g.attachTC(l, e.dir, tcProg, TCBackend(backend), &t)
			t.end(err)
			dp.Close()
		}
		if err != nil {
			r.opts.Warn(fmt.Sprintf("roll back the egress removal on %s: %v", spec.Name, err))
		}
	})
	r.change(spec.Name, "egress removed", backend)
	return nil
}

// normaliseConfig checks a config and sorts its ports without duplicates.
func normaliseConfig(c Config) (Config, error) {
	if c.Mode != ModeEnforce && c.Mode != ModeMonitor {
		return c, fmt.Errorf("invalid mode %d: use enforce or monitor", c.Mode)
	}
	if c.FragPolicy != FragTrack && c.FragPolicy != FragStrict {
		return c, fmt.Errorf("invalid fragment policy %d: use track or strict", c.FragPolicy)
	}
	ports, err := normalisePorts(c.Ports)
	if err != nil {
		return c, err
	}
	c.Ports = ports
	return c, nil
}

// writeConfig writes the config words in one map update if they differ.
func (r *applyRun) writeConfig(want Config) error {
	cur, err := r.g.Maps.ReadConfig()
	if err != nil {
		return err
	}
	var what []Change
	if cur.Mode != want.Mode {
		what = append(what, Change{What: "mode", Detail: fmt.Sprintf("%s -> %s", cur.Mode, want.Mode)})
	}
	if cur.FragPolicy != want.FragPolicy {
		what = append(what, Change{What: "fragments", Detail: fmt.Sprintf("%s -> %s", cur.FragPolicy, want.FragPolicy)})
	}
	if !slices.Equal(cur.Ports, want.Ports) {
		what = append(what, Change{What: "ports", Detail: fmt.Sprintf("%s -> %s", joinPorts(cur.Ports), joinPorts(want.Ports))})
	}
	if len(what) == 0 {
		return nil
	}
	if err := r.g.Maps.WriteConfig(want); err != nil {
		return err
	}
	r.t.onFail(func() { r.g.Maps.WriteConfig(cur) })
	r.changes = append(r.changes, what...)
	return nil
}

// writeSampleRate sets the sampling budget if it differs.
func (r *applyRun) writeSampleRate(rate uint32) error {
	cur, err := r.g.Maps.SampleRate()
	if err != nil {
		return err
	}
	if cur == rate {
		return nil
	}
	if err := r.g.Maps.SetSampleRate(rate); err != nil {
		return err
	}
	r.t.onFail(func() { r.g.Maps.SetSampleRate(cur) })
	r.changes = append(r.changes, Change{What: "sampling", Detail: fmt.Sprintf("%d -> %d per second per CPU", cur, rate)})
	return nil
}

// joinPorts spells ports as a change shows them: 53/response(30s),11211.
func joinPorts(ports []Port) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// closerFunc adapts a func() to io.Closer for txn.closeAtEnd.
type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

// programs opens the programs running on a's hooks, for a rollback to swap
// back to; tc is nil without egress.
func (a *attachment) programs(l netlink.Link) (xdp, tc *ebpf.Program, err error) {
	_, xdpID, err := linkIfindex(a.xdp)
	if err != nil {
		return nil, nil, err
	}
	if xdp, err = ebpf.NewProgramFromID(xdpID); err != nil {
		return nil, nil, fmt.Errorf("open attached XDP program %d: %w", xdpID, err)
	}
	var tcID ebpf.ProgramID
	switch {
	case a.tc != nil:
		info, err := a.tc.Info()
		if err != nil {
			xdp.Close()
			return nil, nil, fmt.Errorf("read TC link: %w", err)
		}
		tcID = info.Program
	case a.legacy:
		if tcID, err = legacyProgramID(l); err != nil {
			xdp.Close()
			return nil, nil, err
		}
	}
	if tcID != 0 {
		if tc, err = ebpf.NewProgramFromID(tcID); err != nil {
			xdp.Close()
			return nil, nil, fmt.Errorf("open attached TC program %d: %w", tcID, err)
		}
	}
	return xdp, tc, nil
}

// AttachedHere lists the interfaces attached in the calling thread's
// namespace as the specs that would keep them as they are (their XDP mode and
// egress), by ifindex. Interfaces that are gone are left out.
func (g *Guard) AttachedHere() ([]InterfaceSpec, error) {
	ns, err := CurrentNetns()
	if err != nil {
		return nil, err
	}
	es, err := g.entriesIn(ns)
	if err != nil {
		return nil, err
	}
	var out []InterfaceSpec
	for _, e := range es {
		a, err := loadAttachment(e.dir, e.ifindex)
		if err != nil {
			continue // half-made: not attached
		}
		here, err := a.isHere()
		egress := a.egress()
		a.close()
		if err != nil {
			return nil, err
		}
		if !here {
			continue
		}
		l, err := netlink.LinkByIndex(e.ifindex)
		if err != nil {
			continue
		}
		out = append(out, InterfaceSpec{Name: l.Attrs().Name, Mode: xdpModeOf(l), Egress: egress != "", TCBackend: TCBackend(egress)})
	}
	return out, nil
}

// Detach removes all that attach made for the named interfaces of the
// calling thread's namespace, as one Apply; when no namespace has an
// interface left, the shared maps and the pin directory go too.
func (g *Guard) Detach(names ...string) ([]Change, error) {
	have, err := g.AttachedHere()
	if err != nil {
		return nil, err
	}
	keep := slices.Clone(have)
	for _, n := range names {
		if _, err := lookupLink(n); err != nil {
			return nil, fmt.Errorf("detach: %w", err)
		}
		i := slices.IndexFunc(keep, func(s InterfaceSpec) bool { return s.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("detach %s: %w in this network namespace", n, ErrNotAttached)
		}
		keep = slices.Delete(keep, i, i+1)
	}
	changes, err := g.Apply(DesiredState{Interfaces: keep}, ApplyOptions{Scope: ApplyScope{PruneInterfaces: true}})
	if err != nil {
		return nil, err
	}
	return changes, g.removeIfUnused()
}

// DetachAll detaches every interface of the calling thread's namespace,
// including ones that no longer exist; other namespaces' attachments stay.
// When none is left anywhere, the shared state and the pin directory go
// too.
func (g *Guard) DetachAll() ([]Change, error) {
	changes, err := g.Apply(DesiredState{}, ApplyOptions{Scope: ApplyScope{PruneInterfaces: true}})
	if err != nil {
		return nil, err
	}
	return changes, g.removeIfUnused()
}

// DetachEverywhere detaches every interface of every network namespace
// under the pin path, and removes all state: for uninstalling. This
// namespace's go first, as one Apply; then each other namespace's (and any
// left in the layout before namespaces): their links are detached through
// their descriptors, which works from any namespace, and a cls_bpf filter
// is deleted in its namespace when that can be found. Unlike Apply it does
// not roll back: a detach in another namespace cannot be undone from here.
func (g *Guard) DetachEverywhere() ([]Change, error) {
	changes, err := g.Apply(DesiredState{}, ApplyOptions{Scope: ApplyScope{PruneInterfaces: true}})
	if err != nil {
		return nil, err
	}
	here, err := CurrentNetns()
	if err != nil {
		return changes, err
	}
	es, err := g.allEntries()
	if err != nil {
		return changes, err
	}
	var errs []error
	for _, e := range es {
		name := fmt.Sprintf("ifindex %d in netns %d", e.ifindex, e.netns)
		if e.netns == 0 {
			name = fmt.Sprintf("ifindex %d (namespace unknown)", e.ifindex)
		}
		a, err := loadAttachment(e.dir, e.ifindex)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err), os.RemoveAll(e.dir))
			continue
		}
		var l netlink.Link
		var h *netlink.Handle
		if a.legacy && e.netns != 0 {
			nsl := openNsLinks(e.netns, here)
			if nsl.h != nil {
				h = nsl.h
				l, _ = h.LinkByIndex(e.ifindex)
			}
			defer nsl.close()
		}
		if a.legacy && l == nil {
			errs = append(errs, fmt.Errorf("%s: its cls_bpf egress filter (priority %#x) is left in place: its namespace cannot be entered from here; delete it there with tc filter del dev IFACE egress prio %d", name, legacyTCPriority, legacyTCPriority))
		}
		if a.legacy && l != nil {
			if err := h.FilterDel(legacyFilter(e.ifindex, -1)); err != nil {
				errs = append(errs, fmt.Errorf("%s: delete cls_bpf filter: %w", name, err))
			}
			if a.clsact {
				if err := h.QdiscDel(clsact(l)); err != nil {
					errs = append(errs, fmt.Errorf("%s: delete clsact qdisc: %w", name, err))
				}
			}
			a.legacy = false
		}
		// Links detach through their descriptors from any namespace;
		// errors of a link whose interface is gone mean nothing.
		if err := a.detach(nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		a.close()
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, err)
		}
		changes = append(changes, Change{Interface: name, What: "detached"})
	}
	errs = append(errs, g.removeIfUnused())
	return changes, errors.Join(errs...)
}

// tcChanged reports whether the attached egress program differs from next,
// a freshly loaded instance, by kernel tag; false without egress.
func (a *attachment) tcChanged(l netlink.Link, next *ebpf.Program) (bool, error) {
	xdp, tc, err := a.programs(l)
	if err != nil {
		return false, err
	}
	xdp.Close()
	if tc == nil {
		return false, nil
	}
	defer tc.Close()
	cur, err := tc.Info()
	if err != nil {
		return false, fmt.Errorf("read attached TC program: %w", err)
	}
	want, err := next.Info()
	if err != nil {
		return false, fmt.Errorf("read loaded TC program: %w", err)
	}
	return cur.Tag != want.Tag, nil
}
