package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpguard/xdpguard/loader"
)

// errFatal marks a reconcile that could not even open the pinned state:
// nothing can be protected until the host is fixed.
var errFatal = errors.New("cannot open xdpguard's pinned state")

// errUnprotected marks a reconcile that left a wanted interface
// unprotected; each such interface is logged on its own.
var errUnprotected = errors.New("wanted interfaces unprotected")

// plan is what one reconcile wants: the interfaces the config matches and,
// for the log, why each interface is or is not wanted.
type plan struct {
	specs []loader.InterfaceSpec
	links map[int]string    // ifindex -> name, every interface now
	why   map[string]string // interface name -> why, for log lines
}

// makePlan lists the interfaces and matches them against the config.
func (a *Agent) makePlan() (*plan, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	in := a.cfg.Interfaces
	p := &plan{links: map[int]string{}, why: map[string]string{}}
	for _, l := range ls {
		name, idx := l.Attrs().Name, l.Attrs().Index
		p.links[idx] = name
		ok, why := in.Match(name)
		prev, known := a.links[idx]
		switch {
		case a.links == nil:
			p.why[name] = fmt.Sprintf("interface %s %s", name, why)
		case !known:
			p.why[name] = fmt.Sprintf("interface %s appeared and %s", name, why)
		case prev != name:
			p.why[name] = fmt.Sprintf("interface %s was renamed %s and %s", prev, name, why)
		default:
			p.why[name] = fmt.Sprintf("interface %s %s", name, why)
		}
		if ok && !ethernet(l) {
			// The programs parse Ethernet frames; on a device without
			// them (tun, wireguard, ipip) every field would be read
			// at the wrong offset.
			if !a.nonEtherLogged[name] {
				a.log.Warn("interface matches but is not an Ethernet device: not protected", "interface", name,
					"encap", l.Attrs().EncapType, "why", p.why[name])
				a.nonEtherLogged[name] = true
			}
			continue
		}
		delete(a.nonEtherLogged, name)
		if ok {
			p.specs = append(p.specs, loader.InterfaceSpec{
				Name: name, Mode: in.XDPMode, Egress: in.Egress, TCBackend: in.TCBackend,
			})
		}
	}
	a.noteAbsent(p.links)
	for idx, name := range a.links {
		if _, ok := p.links[idx]; !ok {
			p.why[gone(idx)] = fmt.Sprintf("interface %s (ifindex %d) is gone", name, idx)
		}
	}
	return p, nil
}

// noteAbsent logs, once each, the interfaces include names literally that do
// not exist: not an error (a bond or VLAN may come later, and is protected
// when it does), but a typo would otherwise go unseen.
func (a *Agent) noteAbsent(links map[int]string) {
	present := map[string]bool{}
	for _, n := range links {
		present[n] = true
	}
	for _, pat := range a.cfg.Interfaces.Include {
		if strings.ContainsAny(pat, `*?[\`) || present[pat] {
			delete(a.absentLogged, pat)
			continue
		}
		if !a.absentLogged[pat] {
			a.log.Warn("an interface include names does not exist; it is protected when it appears", "interface", pat)
			a.absentLogged[pat] = true
		}
	}
}

// ethernet reports whether l's frames carry an Ethernet header, as the
// programs expect: Ethernet devices, and loopback (which frames its packets
// with an all-zero Ethernet header).
func ethernet(l netlink.Link) bool {
	switch l.Attrs().EncapType {
	case "ether", "loopback":
		return true
	}
	return false
}

// gone is how the loader names an interface that no longer exists.
func gone(ifindex int) string { return fmt.Sprintf("(gone, ifindex %d)", ifindex) }

// reconcile makes the kernel match the config in force: the interfaces
// always, the config words and the allow list when full. why says what
// triggered it. Interfaces are applied together, as one transaction; if
// that fails, one by one, so that one interface that cannot be protected
// (another XDP program on it, a driver that refuses) leaves the others
// protected.
func (a *Agent) reconcile(full bool, why string) error {
	p, err := a.makePlan()
	if err != nil {
		return a.reconciled(why, err)
	}
	if !full && a.clean && maps.Equal(p.links, a.links) {
		// A link event that changed no interface's name or index (a
		// carrier change, an address): nothing to do.
		return nil
	}
	g, err := loader.Open(a.cfg.PinPath, true)
	if err != nil {
		return a.reconciled(why, fmt.Errorf("%w: %w", errFatal, err))
	}
	defer func() { g.Close() }()

	want := loader.DesiredState{Interfaces: p.specs, Config: a.cfg.LoaderConfig(), Allow: a.cfg.Allow.All}
	scope := loader.ApplyScope{Interfaces: true, PruneInterfaces: true, Config: full, Allow: full}
	start := time.Now()
	var (
		changes []loader.Change
		failed  = map[string]error{}
		later   [][]loader.InterfaceSpec
	)
	if fresh, ok := a.onlyNew(full, p); ok {
		// Interfaces only came: attach them and touch nothing else, so
		// that a new interface is protected in the time its own attach
		// takes, however many are protected already.
		later = batches(fresh)
	} else {
		// Many new interfaces at once (a burst of containers' veths) are
		// attached in batches after the rest, each its own transaction:
		// a failure takes back one batch, not hundreds of attaches, and
		// the agent can stop between batches.
		first := want
		if before, err := g.AttachedHere(); err == nil {
			first.Interfaces, later = splitNew(p.specs, before)
		}
		changes, err = g.Apply(first, a.applyOptions(scope))
		if err != nil {
			if msg := err.Error(); msg != a.lastApplyErr {
				a.log.Warn("applying all interfaces at once failed, and changed nothing; applying them one by one", "why", why, "error", msg)
				a.lastApplyErr = msg
			}
			// A failed first Apply takes back the shared state its
			// Guard created (the pinned maps): open it afresh.
			g.Close()
			if g, err = loader.Open(a.cfg.PinPath, true); err != nil {
				return a.reconciled(why, fmt.Errorf("%w: %w", errFatal, err))
			}
			changes, failed, err = a.applyEach(g, want, scope)
			later = nil
		} else {
			a.lastApplyErr = ""
		}
	}
	for _, batch := range later {
		if a.stopping() {
			break
		}
		cs, berr := g.Apply(loader.DesiredState{Interfaces: batch}, a.applyOptions(loader.ApplyScope{Interfaces: true}))
		if berr == nil {
			changes = append(changes, cs...)
			continue
		}
		a.log.Warn("attaching new interfaces failed, and changed nothing; attaching them one by one", "why", why, "error", berr)
		for _, s := range batch {
			cs, ferr := a.applyOne(g, s)
			changes = append(changes, cs...)
			if ferr != nil && !errors.Is(ferr, errGone) {
				failed[s.Name] = ferr
			}
		}
	}
	for _, c := range changes {
		a.logChange(c, why, p)
	}
	a.links = p.links
	if err != nil {
		return a.reconciled(why, err)
	}

	// What is protected, read back from the kernel: readiness reports
	// what is there, not what was meant.
	here, err := g.AttachedHere()
	if err != nil {
		return a.reconciled(why, fmt.Errorf("read back what is attached: %w", err))
	}
	attached := map[string]loader.InterfaceSpec{}
	for _, s := range here {
		attached[s.Name] = s
	}
	var wanted, protected []string
	unprotected := map[string]string{}
	for _, s := range p.specs {
		got, ok := attached[s.Name]
		if !ok && failed[s.Name] == nil {
			if _, err := netlink.LinkByName(s.Name); err != nil {
				// Deleted since it was listed: its link event
				// brings the next reconcile, which cleans up.
				continue
			}
		}
		wanted = append(wanted, s.Name)
		switch {
		case failed[s.Name] != nil:
			unprotected[s.Name] = failed[s.Name].Error()
		case !ok:
			unprotected[s.Name] = "not attached"
		case s.Egress && !got.Egress:
			unprotected[s.Name] = "egress not attached"
		default:
			protected = append(protected, s.Name)
		}
	}
	for name, msg := range unprotected {
		if a.failedLogged[name] != msg {
			a.log.Error("interface unprotected", "interface", name, "why", p.why[name], "error", msg)
			a.failedLogged[name] = msg
		}
	}
	for name := range a.failedLogged {
		if _, still := unprotected[name]; !still {
			if slices.Contains(protected, name) {
				a.log.Info("interface protected again", "interface", name)
			}
			delete(a.failedLogged, name)
		}
	}
	a.log.Debug("reconciled", "why", why, "full", full, "wanted", len(wanted), "protected", len(protected),
		"changes", len(changes), "took", time.Since(start))
	a.obs.SetInterfaces(len(wanted), len(protected))
	a.updateStatus(func(s *Status) {
		s.Wanted, s.Protected = wanted, protected
		s.Unprotected = nil
		if len(unprotected) > 0 {
			s.Unprotected = unprotected
		}
	})
	var rerr error
	if len(unprotected) > 0 {
		rerr = fmt.Errorf("%d of %d %w", len(unprotected), len(wanted), errUnprotected)
	}
	a.clean = rerr == nil
	return a.reconciled(why, rerr)
}

// reconciled records the end of a reconcile for the status and observer.
// A reconcile that left some interfaces unprotected did its work (each such
// interface is logged, and counted by SetInterfaces); one that failed
// changed nothing, and is an error.
func (a *Agent) reconciled(why string, err error) error {
	failed := err
	if errors.Is(err, errUnprotected) {
		failed = nil
	}
	if err != nil {
		a.clean = false
	}
	if failed != nil {
		a.log.Error("reconcile failed; the previous state stays in force", "why", why, "error", err)
	}
	a.updateStatus(func(s *Status) {
		s.Reconciles++
		if failed != nil {
			s.Errors++
		}
		s.Last = time.Now()
		if err != nil && s.Unprotected == nil && len(s.Wanted) > 0 {
			// Nothing known about any interface: none is vouched for.
			s.Unprotected = map[string]string{}
			for _, n := range s.Wanted {
				s.Unprotected[n] = "reconcile failed: " + err.Error()
			}
		}
	})
	a.obs.Reconciled(why, failed)
	return err
}

func (a *Agent) applyOptions(scope loader.ApplyScope) loader.ApplyOptions {
	return loader.ApplyOptions{
		Scope: scope,
		Force: a.cfg.Interfaces.Force,
		Warn:  func(msg string) { a.log.Warn(msg) },
	}
}

// applyEach applies want one part at a time after the whole failed: the
// shared config and allow list first (an error there fails the reconcile:
// it is not any one interface's fault), then each interface alone, then the
// clean-up of interfaces no longer wanted. An interface that fails is left
// as it was: if it was protected, it stays protected by what runs there.
func (a *Agent) applyEach(g *loader.Guard, want loader.DesiredState, scope loader.ApplyScope) ([]loader.Change, map[string]error, error) {
	var changes []loader.Change
	failed := map[string]error{}
	if scope.Config || scope.Allow {
		shared := loader.ApplyScope{Config: scope.Config, Allow: scope.Allow}
		cs, err := g.Apply(loader.DesiredState{Config: want.Config, Allow: want.Allow}, a.applyOptions(shared))
		if err != nil {
			return nil, nil, fmt.Errorf("apply config and allow list: %w", err)
		}
		changes = append(changes, cs...)
	}
	before, err := g.AttachedHere()
	if err != nil {
		return changes, nil, fmt.Errorf("read what is attached: %w", err)
	}
	var keep []loader.InterfaceSpec
	for _, s := range want.Interfaces {
		cs, err := a.applyOne(g, s)
		changes = append(changes, cs...)
		if err == nil {
			keep = append(keep, s)
			continue
		}
		if errors.Is(err, errGone) {
			continue
		}
		failed[s.Name] = err
		// Leave it as it is: its current spec keeps it through the prune.
		if i := slices.IndexFunc(before, func(b loader.InterfaceSpec) bool { return b.Name == s.Name }); i >= 0 {
			keep = append(keep, before[i])
		}
	}
	if scope.PruneInterfaces {
		cs, err := g.Apply(loader.DesiredState{Interfaces: keep}, a.applyOptions(loader.ApplyScope{PruneInterfaces: true}))
		if err != nil {
			return changes, failed, fmt.Errorf("detach interfaces no longer wanted: %w", err)
		}
		changes = append(changes, cs...)
	}
	return changes, failed, nil
}

// applyOne attaches (or keeps, or upgrades) one interface on its own. An
// interface gone since it was listed is no failure: the link event that
// says so brings the next reconcile.
func (a *Agent) applyOne(g *loader.Guard, s loader.InterfaceSpec) ([]loader.Change, error) {
	cs, err := g.Apply(loader.DesiredState{Interfaces: []loader.InterfaceSpec{s}}, a.applyOptions(loader.ApplyScope{Interfaces: true}))
	if err == nil {
		return cs, nil
	}
	if _, lerr := netlink.LinkByName(s.Name); lerr != nil {
		return nil, errGone
	}
	return nil, err
}

// errGone marks an interface deleted while it was being applied.
var errGone = errors.New("interface gone")

// newBatch is how many new interfaces one transaction attaches when more
// than that come at once (about 0.2 s each on a small machine).
const newBatch = 16

// onlyNew reports whether a links-only reconcile after a clean one finds
// interfaces that only came (none gone, none renamed), and returns the new
// ones the config wants.
func (a *Agent) onlyNew(full bool, p *plan) ([]loader.InterfaceSpec, bool) {
	if full || !a.clean || a.links == nil {
		return nil, false
	}
	for idx, name := range a.links {
		if p.links[idx] != name {
			return nil, false
		}
	}
	old := map[string]bool{}
	for _, name := range a.links {
		old[name] = true
	}
	var fresh []loader.InterfaceSpec
	for _, s := range p.specs {
		if !old[s.Name] {
			fresh = append(fresh, s)
		}
	}
	return fresh, true
}

// batches cuts specs into transactions of newBatch.
func batches(specs []loader.InterfaceSpec) [][]loader.InterfaceSpec {
	var out [][]loader.InterfaceSpec
	for len(specs) > 0 {
		n := min(newBatch, len(specs))
		out = append(out, specs[:n:n])
		specs = specs[n:]
	}
	return out
}

// splitNew splits the wanted interfaces into those to apply first (all of
// them, when few are new) and batches of new ones.
func splitNew(specs, attached []loader.InterfaceSpec) ([]loader.InterfaceSpec, [][]loader.InterfaceSpec) {
	have := map[string]bool{}
	for _, s := range attached {
		have[s.Name] = true
	}
	var old, fresh []loader.InterfaceSpec
	for _, s := range specs {
		if have[s.Name] {
			old = append(old, s)
		} else {
			fresh = append(fresh, s)
		}
	}
	if len(fresh) <= newBatch {
		return specs, nil
	}
	return old, batches(fresh)
}

// logChange logs one change the loader made: what, where, and why.
func (a *Agent) logChange(c loader.Change, trigger string, p *plan) {
	why := trigger
	if c.Interface != "" && p != nil {
		if w, ok := p.why[c.Interface]; ok {
			why = w
		}
	}
	attrs := []any{"what", c.What}
	if c.Interface != "" {
		attrs = append(attrs, "interface", c.Interface)
	}
	if c.Detail != "" {
		attrs = append(attrs, "detail", c.Detail)
	}
	attrs = append(attrs, "why", why)
	if why != trigger {
		attrs = append(attrs, "trigger", trigger)
	}
	a.log.Info(c.String(), attrs...)
}
