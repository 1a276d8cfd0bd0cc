package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Attachment is one program on one interface, as status shows it.
type Attachment struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	// Netns is the inode of the interface's network namespace (as
	// `ls -i /proc/PID/ns/net` or `lsns -t net` show it); 0 for state pinned
	// by a release before namespaces were told apart, not yet upgraded by an
	// attach in its namespace.
	Netns uint64 `json:"netns"`
	// Here says whether that is the namespace status ran in.
	Here      bool   `json:"here"`
	Hook      string `json:"hook"` // "xdp" or "tc"
	Mode      string `json:"mode"` // xdp: native|generic; tc: tcx|legacy
	ProgramID uint32 `json:"program_id"`
}

// nsLinks reads links in one namespace: the caller's, or another found by
// its inode among /run/netns and the processes' namespaces.
type nsLinks struct {
	h     *netlink.Handle // nil: the namespace could not be entered
	close func()
}

func openNsLinks(netns, here uint64) nsLinks {
	if netns == here {
		return nsLinks{h: &netlink.Handle{}, close: func() {}}
	}
	if netns == 0 {
		return nsLinks{close: func() {}}
	}
	var paths []string
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			paths = append(paths, filepath.Join("/run/netns", e.Name()))
		}
	}
	if procs, err := filepath.Glob("/proc/[0-9]*/ns/net"); err == nil {
		paths = append(paths, procs...)
	}
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Ino != netns {
			continue
		}
		ns, err := vnetns.GetFromPath(p)
		if err != nil {
			continue
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			continue
		}
		return nsLinks{h: h, close: h.Close}
	}
	return nsLinks{close: func() {}}
}

// Attachments lists what is attached in every network namespace, by
// namespace, interface and hook. Interfaces of other namespaces are named
// when their namespace can be found (a /run/netns name or a process in it).
//
// It takes no lock, so a writer may be attaching or detaching meanwhile: an
// entry whose counters or XDP link are not pinned (yet, or any more) is
// being made or removed and is left out, as is the egress of a legacy
// attachment whose clsact qdisc a detach has just removed. What is listed
// was attached at the moment it was read.
func (g *Guard) Attachments() ([]Attachment, error) {
	here, err := CurrentNetns()
	if err != nil {
		return nil, err
	}
	es, err := g.allEntries()
	if err != nil {
		return nil, err
	}
	handles := map[uint64]nsLinks{}
	defer func() {
		for _, h := range handles {
			h.close()
		}
	}()
	var out []Attachment
	for _, e := range es {
		nl, ok := handles[e.netns]
		if !ok {
			nl = openNsLinks(e.netns, here)
			handles[e.netns] = nl
		}
		name := fmt.Sprintf("(ifindex %d)", e.ifindex)
		var l netlink.Link
		if nl.h != nil {
			if l, err = nl.h.LinkByIndex(e.ifindex); err == nil {
				name = l.Attrs().Name
			} else {
				name, l = fmt.Sprintf("(gone, ifindex %d)", e.ifindex), nil
			}
		}
		a, err := loadAttachment(e.dir, e.ifindex)
		if errors.Is(err, os.ErrNotExist) {
			continue // being attached or detached: see above
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		x := Attachment{Interface: name, Ifindex: e.ifindex, Netns: e.netns, Here: e.netns == here, Hook: HookXDP.String()}
		if info, err := a.xdp.Info(); err == nil {
			x.ProgramID = uint32(info.Program)
		}
		if l != nil {
			x.Mode = string(xdpModeOf(l))
		}
		out = append(out, x)
		t := x
		t.Hook, t.ProgramID = HookTC.String(), 0
		switch {
		case a.tc != nil:
			t.Mode = string(TCX)
			if info, err := a.tc.Info(); err == nil {
				t.ProgramID = uint32(info.Program)
			}
			out = append(out, t)
		case a.legacy:
			t.Mode = string(TCLegacy)
			if l != nil {
				id, gone, err := legacyProgramIDReading(nl.h, l)
				if err != nil {
					a.close()
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				if gone {
					break // a detach removed the filter and its qdisc
				}
				t.ProgramID = uint32(id)
			}
			out = append(out, t)
		}
		a.close()
	}
	return out, nil
}

// legacyProgramIDReading is legacyProgramIDAt for a reader, which may race a
// detach: once the detach has deleted the clsact qdisc it made, there is no
// filter list to read, and gone says so instead of an error.
func legacyProgramIDReading(h *netlink.Handle, l netlink.Link) (id ebpf.ProgramID, gone bool, err error) {
	id, err = legacyProgramIDAt(h, l)
	if err == nil {
		return id, false, nil
	}
	qdiscs, qerr := h.QdiscList(l)
	if qerr != nil {
		return 0, false, err
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			return 0, false, err
		}
	}
	return 0, true, nil
}

// InterfaceStats are one interface's counters on one hook.
type InterfaceStats struct {
	Interface string             `json:"interface"`
	Ifindex   int                `json:"ifindex"`
	Hook      string             `json:"hook"`
	Counters  map[string]Counter `json:"counters"`
	// Samples are the drop counters' split into sampled and suppressed,
	// for the reasons that drop (would_drop included); absent where the
	// interface was attached by a release before sampling and not
	// upgraded yet.
	Samples map[string]SampleCounter `json:"samples,omitempty"`
}

// Stats reads the counters of the named interfaces (all when none) of the
// calling thread's network namespace, per hook, summed over CPUs. The egress
// hook is listed only where attached.
//
// Like Attachments it takes no lock: an entry whose counters or XDP link are
// not pinned is being attached or detached; it is left out of the listing of
// all interfaces, and a named one is ErrNotAttached, as it is at that moment.
func (g *Guard) Stats(names ...string) ([]InterfaceStats, error) {
	es, err := g.entriesHere()
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		byIndex := map[int]entry{}
		for _, e := range es {
			byIndex[e.ifindex] = e
		}
		var want []entry
		for _, n := range names {
			l, err := lookupLink(n)
			if err != nil {
				return nil, err
			}
			e, found := byIndex[l.Attrs().Index]
			if !found {
				return nil, fmt.Errorf("%s: %w: attach it first (xdpguard attach %s)", n, ErrNotAttached, n)
			}
			want = append(want, e)
		}
		es = want
	}
	var out []InterfaceStats
	for _, e := range es {
		name := fmt.Sprintf("(gone, ifindex %d)", e.ifindex)
		if l, err := netlink.LinkByIndex(e.ifindex); err == nil {
			name = l.Attrs().Name
		}
		a, err := loadAttachment(e.dir, e.ifindex)
		if errors.Is(err, os.ErrNotExist) {
			if len(names) > 0 {
				return nil, fmt.Errorf("%s: %w (another xdpguard is attaching or detaching it): attach it first (xdpguard attach %s)", name, ErrNotAttached, name)
			}
			continue // being attached or detached: see above
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		egress := a.egress() != ""
		st, err := ReadStats(a.counters.Stats, a.counters.Stats2)
		var sst map[Hook]HookSampleCounters
		if err == nil && a.counters.SampleStats != nil {
			sst, err = ReadSampleStats(a.counters.SampleStats, a.counters.SampleStats2)
		}
		a.close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, h := range []Hook{HookXDP, HookTC} {
			if h == HookTC && !egress {
				continue
			}
			is := InterfaceStats{Interface: name, Ifindex: e.ifindex, Hook: h.String(), Counters: map[string]Counter{}}
			for r, c := range st[h] {
				is.Counters[Reason(r).String()] = c
			}
			if sst != nil {
				is.Samples = map[string]SampleCounter{}
				for r, c := range sst[h] {
					if Reason(r).Dropped() || Reason(r) == ReasonWouldDrop {
						is.Samples[Reason(r).String()] = c
					}
				}
			}
			out = append(out, is)
		}
	}
	return out, nil
}

// entriesHere lists the calling thread's namespace's interfaces with state,
// by ifindex, including entries of the layout before namespaces that are
// this namespace's but not moved yet (a reader, which moves nothing, sees
// them before the first change upgrades them).
func (g *Guard) entriesHere() ([]entry, error) {
	ns, err := CurrentNetns()
	if err != nil {
		return nil, err
	}
	es, err := g.entriesIn(ns)
	if err != nil {
		return nil, err
	}
	old, err := listIfindexes(filepath.Join(g.pinPath, oldIfacesDir))
	if err != nil {
		return nil, err
	}
	for _, idx := range old {
		dir := filepath.Join(g.pinPath, oldIfacesDir, strconv.Itoa(idx))
		a, err := loadAttachment(dir, idx)
		if err != nil {
			continue // half-made, or another namespace's
		}
		here, err := a.isHere()
		a.close()
		if err == nil && here && !slices.ContainsFunc(es, func(e entry) bool { return e.ifindex == idx }) {
			es = append(es, entry{ifindex: idx, dir: dir})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return a.ifindex - b.ifindex })
	return es, nil
}
