package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// attachment is what one interface's pins hold, opened.
type attachment struct {
	ifindex int
	stats   *ebpf.Map
	xdp     link.Link
	tc      link.Link // tcx; nil when legacy or no egress
	legacy  bool      // egress is our cls_bpf filter
	clsact  bool      // and we made its clsact qdisc
}

func loadAttachment(dir string, ifindex int) (*attachment, error) {
	a := &attachment{ifindex: ifindex}
	var err error
	if a.stats, err = ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil); err != nil {
		return nil, fmt.Errorf("open counters: %w", err)
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

func (a *attachment) close() {
	if a.stats != nil {
		a.stats.Close()
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

// detach takes away everything attach made for this interface. l is nil
// when the interface is gone (its hooks went with it).
func (a *attachment) detach(l netlink.Link) error {
	var errs []error
	if a.tc != nil {
		if err := a.tc.Unpin(); err != nil {
			errs = append(errs, err)
		}
		if err := a.tc.Detach(); err != nil && l != nil {
			errs = append(errs, fmt.Errorf("detach TC link: %w", err))
		}
	}
	if a.legacy && l != nil {
		if err := netlink.FilterDel(legacyFilter(l.Attrs().Index, -1)); err != nil {
			errs = append(errs, fmt.Errorf("delete cls_bpf filter: %w", err))
		}
		if a.clsact {
			errs = append(errs, delClsact(l))
		}
	}
	if err := a.xdp.Unpin(); err != nil {
		errs = append(errs, err)
	}
	if err := a.xdp.Detach(); err != nil && l != nil {
		errs = append(errs, fmt.Errorf("detach XDP link: %w", err))
	}
	return errors.Join(errs...)
}

// Detach removes all that attach made for the named interface; when no
// interface is left, the shared maps and the pin directory go too.
func (g *Guard) Detach(name string) error {
	l, err := lookupLink(name)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	if err := g.detachIndex(l.Attrs().Index, l); err != nil {
		return fmt.Errorf("detach %s: %w", name, err)
	}
	return g.removeIfUnused()
}

// DetachAll detaches every interface, including ones that no longer exist,
// and removes the pin directory.
func (g *Guard) DetachAll() error {
	ifs, err := g.attachedIfindexes()
	if err != nil {
		return err
	}
	var errs []error
	for _, idx := range ifs {
		l, _ := netlink.LinkByIndex(idx)
		if err := g.detachIndex(idx, l); err != nil {
			errs = append(errs, fmt.Errorf("detach ifindex %d: %w", idx, err))
		}
	}
	errs = append(errs, g.removeIfUnused())
	return errors.Join(errs...)
}

func (g *Guard) detachIndex(ifindex int, l netlink.Link) error {
	dir := g.ifaceDir(ifindex)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return ErrNotAttached
	}
	a, err := loadAttachment(dir, ifindex)
	if err != nil {
		// Half-made state (a crash mid-attach): remove what is there.
		return errors.Join(err, os.RemoveAll(dir))
	}
	defer a.close()
	if err := a.detach(l); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
