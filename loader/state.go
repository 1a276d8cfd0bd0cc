package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// attachment is what one interface's pins hold, opened.
type attachment struct {
	dir     string
	ifindex int
	// Its counters; the sample counters are nil where attached by a
	// release before sampling, Stats2 and SampleStats2 where attached by
	// one before port directions (the reasons they count then read 0).
	counters Counters
	xdp      link.Link
	tc       link.Link // tcx; nil when legacy or no egress
	legacy   bool      // egress is our cls_bpf filter
	clsact   bool      // and we made its clsact qdisc
}

func loadAttachment(dir string, ifindex int) (*attachment, error) {
	a := &attachment{dir: dir, ifindex: ifindex}
	var err error
	if a.counters.Stats, err = ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil); err != nil {
		return nil, fmt.Errorf("open counters: %w", err)
	}
	for _, opt := range a.optionalCounters() {
		*opt.m, err = ebpf.LoadPinnedMap(filepath.Join(dir, opt.pin), nil)
		if errors.Is(err, os.ErrNotExist) {
			*opt.m = nil
		} else if err != nil {
			a.close()
			return nil, fmt.Errorf("open %s: %w", opt.pin, err)
		}
	}
	if a.xdp, err = link.LoadPinnedLink(filepath.Join(dir, pinXDPLink), nil); err != nil {
		a.close()
		return nil, fmt.Errorf("open XDP link: %w", err)
	}
	a.tc, err = link.LoadPinnedLink(filepath.Join(dir, pinTCLink), nil)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		a.close()
		return nil, fmt.Errorf("open TC link: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, tcLegacyDir)); err == nil {
		a.legacy = true
		_, err := os.Stat(filepath.Join(dir, tcLegacyDir, clsactMadeDir))
		a.clsact = err == nil
	}
	return a, nil
}

// optionalCounters are the counter maps an interface attached by an
// older release may lack, each with its pin name.
func (a *attachment) optionalCounters() []struct {
	m   **ebpf.Map
	pin string
} {
	return []struct {
		m   **ebpf.Map
		pin string
	}{
		{&a.counters.Stats2, pinStats2},
		{&a.counters.SampleStats, pinSampleStats},
		{&a.counters.SampleStats2, pinSampleStats2},
	}
}

func (a *attachment) close() {
	for _, m := range []*ebpf.Map{a.counters.Stats, a.counters.Stats2, a.counters.SampleStats, a.counters.SampleStats2} {
		if m != nil {
			m.Close()
		}
	}
	if a.xdp != nil {
		a.xdp.Close()
	}
	if a.tc != nil {
		a.tc.Close()
	}
}

func (a *attachment) egress() string {
	switch {
	case a.tc != nil:
		return string(TCX)
	case a.legacy:
		return string(TCLegacy)
	}
	return ""
}

// runsCurrentPrograms reports whether every program attached through a is
// one this binary carries, comparing kernel tags with the compiled specs
// (ProgramSpec.Compatible) without loading anything: an Apply that changes
// nothing stays cheap. false may also mean the tags could not be matched
// (a kernel computing them otherwise); the caller then loads the programs and
// compares as programsChanged does, so false never skips an upgrade.
func (a *attachment) runsCurrentPrograms(l netlink.Link, kind linkKind) (bool, error) {
	spec, err := compiledSpec()
	if err != nil {
		return false, err
	}
	_, xdpID, err := linkIfindex(a.xdp)
	if err != nil {
		return false, err
	}
	xdpName, tcName := programNames(kind)
	ids := []ebpf.ProgramID{xdpID}
	names := []string{xdpName}
	switch {
	case a.tc != nil:
		info, err := a.tc.Info()
		if err != nil {
			return false, fmt.Errorf("read TC link: %w", err)
		}
		ids = append(ids, info.Program)
		names = append(names, tcName)
	case a.legacy && l != nil:
		id, err := legacyProgramID(l)
		if err != nil {
			return false, err
		}
		ids = append(ids, id)
		names = append(names, tcName)
	}
	for i, id := range ids {
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			return false, fmt.Errorf("open attached program %d: %w", id, err)
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			return false, fmt.Errorf("read attached program %d: %w", id, err)
		}
		if !matchesSpec(spec, names[i], info) {
			return false, nil
		}
	}
	return true, nil
}

// compiledSpec is the embedded object parsed once, for reading only (to
// compare tags): parsing it takes a millisecond, and a no-op Apply on every
// link event would pay that per interface.
var compiledSpec = sync.OnceValues(loadXdpguard)

// matchesSpec reports whether a loaded program is spec's program called name
// (the entry point the link's kind needs: an Ethernet program left on a link
// whose type changed is not current): same type, same name (the kernel keeps
// 15 bytes of it), same kernel tag.
func matchesSpec(spec *ebpf.CollectionSpec, name string, info *ebpf.ProgramInfo) bool {
	ps, ok := spec.Programs[name]
	if !ok {
		return false
	}
	short := ps.Name[:min(len(ps.Name), unix.BPF_OBJ_NAME_LEN-1)]
	return ps.Type == info.Type && short == info.Name && ps.Compatible(info) == nil
}

// programsChanged reports whether the attached XDP program differs from
// next, a freshly loaded instance of the one this binary carries for the
// link's kind: then attach is an upgrade. Both tags are the kernel's,
// computed the same way.
func (a *attachment) programsChanged(next *ebpf.Program) (bool, error) {
	info, err := a.xdp.Info()
	if err != nil {
		return false, fmt.Errorf("read XDP link: %w", err)
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return false, fmt.Errorf("open attached program %d: %w", info.Program, err)
	}
	defer prog.Close()
	cur, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("read attached program %d: %w", info.Program, err)
	}
	want, err := next.Info()
	if err != nil {
		return false, fmt.Errorf("read loaded program: %w", err)
	}
	return cur.Tag != want.Tag, nil
}

// replaceTC swaps the egress program in place, if there is one.
func (a *attachment) replaceTC(l netlink.Link, prog *ebpf.Program) error {
	switch {
	case a.tc != nil:
		if err := a.tc.Update(prog); err != nil {
			return fmt.Errorf("replace TC program: %w", err)
		}
	case a.legacy:
		// Same parent, priority and handle: the kernel swaps the
		// filter's program atomically.
		if err := netlink.FilterReplace(legacyFilter(l.Attrs().Index, prog.FD())); err != nil {
			return fmt.Errorf("replace cls_bpf filter: %w", err)
		}
	}
	return nil
}

// detachTC takes the egress program away and its pins or records. l is
// nil when the interface is gone (its hooks went with it).
func (a *attachment) detachTC(l netlink.Link) error {
	var errs []error
	if a.tc != nil {
		if err := a.tc.Unpin(); err != nil {
			errs = append(errs, err)
		}
		if err := a.tc.Detach(); err != nil && l != nil {
			errs = append(errs, fmt.Errorf("detach TC link: %w", err))
		}
		a.tc.Close()
		a.tc = nil
	}
	if a.legacy {
		if l != nil {
			if err := netlink.FilterDel(legacyFilter(l.Attrs().Index, -1)); err != nil {
				errs = append(errs, fmt.Errorf("delete cls_bpf filter: %w", err))
			}
			if a.clsact {
				errs = append(errs, delClsact(l))
			}
		}
		if err := os.RemoveAll(filepath.Join(a.dir, tcLegacyDir)); err != nil {
			errs = append(errs, err)
		}
		a.legacy, a.clsact = false, false
	}
	return errors.Join(errs...)
}

// detach takes away everything attach made for this interface. l is nil
// when the interface is gone (its hooks went with it).
func (a *attachment) detach(l netlink.Link) error {
	errs := []error{a.detachTC(l)}
	if err := a.xdp.Unpin(); err != nil {
		errs = append(errs, err)
	}
	if err := a.xdp.Detach(); err != nil && l != nil {
		errs = append(errs, fmt.Errorf("detach XDP link: %w", err))
	}
	return errors.Join(errs...)
}

// linkIfindex is the ifindex an XDP link holds its program on; 0 when the
// link is defunct (its interface, or that interface's namespace, is gone).
func linkIfindex(xl link.Link) (int, ebpf.ProgramID, error) {
	info, err := xl.Info()
	if err != nil {
		return 0, 0, fmt.Errorf("read XDP link: %w", err)
	}
	x := info.XDP()
	if x == nil {
		return 0, 0, fmt.Errorf("pinned XDP link %d is a %v link", info.ID, info.Type)
	}
	return int(x.Ifindex), info.Program, nil
}

// entryDefunct reports whether an entry protects nothing: its XDP link is
// defunct, or missing (an attach that crashed half-way).
func entryDefunct(dir string) (bool, error) {
	xl, err := link.LoadPinnedLink(filepath.Join(dir, pinXDPLink), nil)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("open XDP link in %s: %w", dir, err)
	}
	defer xl.Close()
	idx, _, err := linkIfindex(xl)
	if err != nil {
		return false, err
	}
	return idx == 0, nil
}

// removeDefunct removes the pins of an entry that protects nothing.
func removeDefunct(e entry) error {
	if a, err := loadAttachment(e.dir, e.ifindex); err == nil {
		a.detach(nil)
		a.close()
	}
	if err := os.RemoveAll(e.dir); err != nil {
		return fmt.Errorf("remove defunct state %s: %w", e.dir, err)
	}
	return nil
}

// isHere reports whether a's XDP link holds the program that is attached at
// its ifindex in the calling thread's namespace: links name an ifindex but no
// namespace, and ifindexes repeat across namespaces, but each attach loads a
// program of its own, so a program id names one attachment.
func (a *attachment) isHere() (bool, error) {
	idx, prog, err := linkIfindex(a.xdp)
	if err != nil || idx == 0 {
		return false, err
	}
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return false, nil
		}
		return false, fmt.Errorf("read ifindex %d: %w", idx, err)
	}
	x := l.Attrs().Xdp
	return x != nil && x.Attached && ebpf.ProgramID(x.ProgId) == prog, nil
}

// migrateOldLayout moves the entries of the layout before netns/
// (<pin>/ifaces/<ifindex>) that belong to the calling thread's namespace into
// <pin>/netns/<inode>/<ifindex>. A rename moves pins, not what they hold:
// the links stay attached throughout, so an upgrade has no gap. Entries of
// other namespaces stay where they are until xdpguard runs there (status
// lists them with netns 0); defunct ones are removed.
func (g *Guard) migrateOldLayout() error {
	old, err := listIfindexes(filepath.Join(g.pinPath, oldIfacesDir))
	if err != nil || len(old) == 0 {
		return err
	}
	ns, err := CurrentNetns()
	if err != nil {
		return err
	}
	for _, idx := range old {
		e := entry{ifindex: idx, dir: filepath.Join(g.pinPath, oldIfacesDir, strconv.Itoa(idx))}
		if defunct, err := entryDefunct(e.dir); err != nil {
			return fmt.Errorf("upgrade %s: %w", e.dir, err)
		} else if defunct {
			if err := removeDefunct(e); err != nil {
				return err
			}
			continue
		}
		a, err := loadAttachment(e.dir, idx)
		if err != nil {
			return fmt.Errorf("upgrade %s: %w", e.dir, err)
		}
		here, err := a.isHere()
		a.close()
		if err != nil {
			return fmt.Errorf("upgrade %s: %w", e.dir, err)
		}
		if !here {
			continue
		}
		if err := os.MkdirAll(g.netnsPath(ns), sharedPinMode); err != nil {
			return fmt.Errorf("upgrade %s: %w", e.dir, err)
		}
		if err := os.Rename(e.dir, g.ifaceDir(ns, idx)); err != nil {
			return fmt.Errorf("upgrade %s: move it to %s: %w", e.dir, g.ifaceDir(ns, idx), err)
		}
	}
	// Gone once the last namespace has upgraded; kept while others have not.
	if err := os.Remove(filepath.Join(g.pinPath, oldIfacesDir)); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("upgrade: remove %s: %w", oldIfacesDir, err)
	}
	return nil
}
