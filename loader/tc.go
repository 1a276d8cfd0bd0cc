package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The legacy egress filter's place on the clsact egress hook: a fixed
// priority and handle, so detach and upgrade find exactly our filter.
const (
	legacyTCPriority = 0xc0de
	legacyTCHandle   = 1
	legacyTCName     = "xdpguard_tc"
)

// attachTC attaches the egress program and pins what holds it, as part of
// the change t.
func (g *Guard) attachTC(l netlink.Link, dir string, prog *ebpf.Program, backend TCBackend, t *txn) (TCBackend, error) {
	if backend != TCLegacy {
		tl, err := link.AttachTCX(link.TCXOptions{
			Interface: l.Attrs().Index,
			Program:   prog,
			Attach:    ebpf.AttachTCXEgress,
		})
		if err == nil {
			t.closeAtEnd(tl)
			t.onFail(func() { tl.Detach() }) // synchronous, unlike Close
			if err := tl.Pin(filepath.Join(dir, pinTCLink)); err != nil {
				return "", fmt.Errorf("pin TC link: %w", err)
			}
			t.onFail(func() { tl.Unpin() })
			if err := t.fail("tc"); err != nil {
				return "", err
			}
			return TCX, nil
		}
		if backend == TCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return "", fmt.Errorf("attach tcx egress: %w", err)
		}
	}
	made, err := addClsact(l)
	if err != nil {
		return "", err
	}
	if made {
		t.onFail(func() { delClsact(l) })
	}
	if err := netlink.FilterReplace(legacyFilter(l.Attrs().Index, prog.FD())); err != nil {
		return "", fmt.Errorf("add cls_bpf egress filter: %w", err)
	}
	t.onFail(func() { netlink.FilterDel(legacyFilter(l.Attrs().Index, -1)) })
	legacy := filepath.Join(dir, tcLegacyDir)
	if err := os.Mkdir(legacy, sharedPinMode); err != nil {
		return "", fmt.Errorf("record legacy TC: %w", err)
	}
	// A change that fails later takes the record back with the filter,
	// or the entry would claim an egress filter that is gone.
	t.onFail(func() { os.RemoveAll(legacy) })
	if made {
		if err := os.Mkdir(filepath.Join(legacy, clsactMadeDir), sharedPinMode); err != nil {
			return "", fmt.Errorf("record legacy TC: %w", err)
		}
	}
	if err := t.fail("tc"); err != nil {
		return "", err
	}
	return TCLegacy, nil
}

func clsact(l netlink.Link) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
}

// addClsact adds a clsact qdisc unless one exists; it reports whether it
// made one, so detach removes only what attach created.
func addClsact(l netlink.Link) (bool, error) {
	err := netlink.QdiscAdd(clsact(l))
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("add clsact qdisc: %w", err)
	}
	return true, nil
}

func delClsact(l netlink.Link) error {
	if err := netlink.QdiscDel(clsact(l)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}

func legacyFilter(ifindex, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_EGRESS,
			Handle:    legacyTCHandle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  legacyTCPriority,
		},
		Fd:           fd,
		Name:         legacyTCName,
		DirectAction: true,
	}
}

// legacyProgramID finds the program of our cls_bpf filter, 0 if none.
func legacyProgramID(l netlink.Link) (ebpf.ProgramID, error) {
	return legacyProgramIDAt(&netlink.Handle{}, l)
}

// legacyProgramIDAt is legacyProgramID through h, in h's namespace.
func legacyProgramIDAt(h *netlink.Handle, l netlink.Link) (ebpf.ProgramID, error) {
	filters, err := h.FilterList(l, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		return 0, fmt.Errorf("list egress filters: %w", err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Priority == legacyTCPriority && bf.Handle == legacyTCHandle {
			return ebpf.ProgramID(bf.Id), nil
		}
	}
	return 0, nil
}
