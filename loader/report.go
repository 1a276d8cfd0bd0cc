package loader

import (
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// Attachment is one program on one interface, as status shows it.
type Attachment struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Hook      string `json:"hook"` // "xdp" or "tc"
	Mode      string `json:"mode"` // xdp: native|generic; tc: tcx|legacy
	ProgramID uint32 `json:"program_id"`
}

// ifaceName names an ifindex, or says it is gone.
func ifaceName(ifindex int) (string, netlink.Link) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Sprintf("(gone, ifindex %d)", ifindex), nil
	}
	return l.Attrs().Name, l
}

// Attachments lists what is attached, by interface then hook.
func (g *Guard) Attachments() ([]Attachment, error) {
	ifs, err := g.attachedIfindexes()
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, idx := range ifs {
		name, l := ifaceName(idx)
		a, err := loadAttachment(g.ifaceDir(idx), idx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		x := Attachment{Interface: name, Ifindex: idx, Hook: HookXDP.String()}
		if info, err := a.xdp.Info(); err == nil {
			x.ProgramID = uint32(info.Program)
		}
		if l != nil {
			x.Mode = string(xdpModeOf(l))
		}
		out = append(out, x)
		switch {
		case a.tc != nil:
			t := Attachment{Interface: name, Ifindex: idx, Hook: HookTC.String(), Mode: string(TCX)}
			if info, err := a.tc.Info(); err == nil {
				t.ProgramID = uint32(info.Program)
			}
			out = append(out, t)
		case a.legacy:
			t := Attachment{Interface: name, Ifindex: idx, Hook: HookTC.String(), Mode: string(TCLegacy)}
			if l != nil {
				id, err := legacyProgramID(l)
				if err != nil {
					a.close()
					return nil, err
				}
				t.ProgramID = uint32(id)
			}
			out = append(out, t)
		}
		a.close()
	}
	return out, nil
}

// InterfaceStats are one interface's counters on one hook.
type InterfaceStats struct {
	Interface string             `json:"interface"`
	Ifindex   int                `json:"ifindex"`
	Hook      string             `json:"hook"`
	Counters  map[string]Counter `json:"counters"`
}

// Stats reads the counters of the named interfaces (all when none), per
// hook, summed over CPUs. The egress hook is listed only where attached.
func (g *Guard) Stats(names ...string) ([]InterfaceStats, error) {
	ifs, err := g.attachedIfindexes()
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		var want []int
		for _, n := range names {
			l, err := lookupLink(n)
			if err != nil {
				return nil, err
			}
			found := false
			for _, idx := range ifs {
				found = found || idx == l.Attrs().Index
			}
			if !found {
				return nil, fmt.Errorf("%s: %w: attach it first (xdpguard attach %s)", n, ErrNotAttached, n)
			}
			want = append(want, l.Attrs().Index)
		}
		ifs = want
	}
	var out []InterfaceStats
	for _, idx := range ifs {
		name, _ := ifaceName(idx)
		dir := g.ifaceDir(idx)
		a, err := loadAttachment(dir, idx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		egress := a.egress() != ""
		a.close()
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil)
		if err != nil {
			return nil, fmt.Errorf("%s: open counters: %w", name, err)
		}
		st, err := ReadStats(m)
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, h := range []Hook{HookXDP, HookTC} {
			if h == HookTC && !egress {
				continue
			}
			is := InterfaceStats{Interface: name, Ifindex: idx, Hook: h.String(), Counters: map[string]Counter{}}
			for r, c := range st[h] {
				is.Counters[Reason(r).String()] = c
			}
			out = append(out, is)
		}
	}
	return out, nil
}
