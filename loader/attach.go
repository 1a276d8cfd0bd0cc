package loader

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// XDPMode is how the XDP program is attached.
type XDPMode string

const (
	XDPAuto    XDPMode = "auto"    // native, else generic with a warning
	XDPNative  XDPMode = "native"  // in the driver: the fast path
	XDPGeneric XDPMode = "generic" // after skb allocation: any driver, slower
)

// ParseXDPMode parses auto, native or generic.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(strings.ToLower(s)); m {
	case XDPAuto, XDPNative, XDPGeneric:
		return m, nil
	}
	return "", fmt.Errorf("invalid XDP mode %q: use auto, native or generic", s)
}

// TCBackend is how the egress program is attached.
type TCBackend string

const (
	TCAuto   TCBackend = "auto"   // tcx where the kernel has it, else legacy
	TCX      TCBackend = "tcx"    // bpf_link on the tcx egress hook (Linux 6.6+)
	TCLegacy TCBackend = "legacy" // clsact qdisc + cls_bpf filter via netlink
)

// ParseTCBackend parses auto, tcx or legacy.
func ParseTCBackend(s string) (TCBackend, error) {
	switch b := TCBackend(strings.ToLower(s)); b {
	case TCAuto, TCX, TCLegacy:
		return b, nil
	}
	return "", fmt.Errorf("invalid TC backend %q: use auto, tcx or legacy", s)
}

// AttachOptions say how Attach attaches.
type AttachOptions struct {
	Mode      XDPMode
	Egress    bool      // also attach the TC egress program
	TCBackend TCBackend // how, when Egress
	// Force replaces an XDP program that is not xdpguard's.
	Force bool
	// Reload loads the programs anew and swaps them in even when the
	// attached ones are identical (an upgrade does so by itself).
	Reload bool
	// Warn receives warnings (a fallback to generic mode, say).
	Warn func(string)

	failpoint func(step string) error // see ApplyOptions
}

// Errors callers branch on.
var (
	ErrUnknownInterface = errors.New("unknown interface")
	ErrNotAttached      = errors.New("not attached")
	ErrForeignProgram   = errors.New("another XDP program is attached")
	ErrModeMismatch     = errors.New("attached in another mode")
)

// AttachResult says what Attach did.
type AttachResult struct {
	Interface string
	Ifindex   int
	Mode      XDPMode // the XDP mode in force
	Egress    string  // "", "tcx" or "legacy"
	Action    string  // "attached", "unchanged" or "replaced"
}

// txn is a multi-step change: what to take back if it fails, and the
// descriptors to close when it is over. One end step does both, in that
// order: a rollback detaches links through descriptors still open.
type txn struct {
	undo    []func()
	closers []io.Closer
	// failpoint, when set, fails the change at a named step: tests prove
	// rollback with it.
	failpoint func(step string) error
}

// onFail registers a step that takes back one thing the change made.
func (t *txn) onFail(f func()) { t.undo = append(t.undo, f) }

// closeAtEnd registers a descriptor to close once the change is over; pins
// and links hold in the kernel what must live on.
func (t *txn) closeAtEnd(c io.Closer) { t.closers = append(t.closers, c) }

// fail is the failpoint at step: nil unless a test injects a failure.
func (t *txn) fail(step string) error {
	if t.failpoint == nil {
		return nil
	}
	return t.failpoint(step)
}

// end takes everything back, newest first, if err is set, then closes.
func (t *txn) end(err error) {
	if err != nil {
		for i := len(t.undo) - 1; i >= 0; i-- {
			t.undo[i]()
		}
	}
	for _, c := range t.closers {
		c.Close()
	}
}

func lookupLink(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("interface %q: %w: check the name with `ip link`", name, ErrUnknownInterface)
		}
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	return l, nil
}

// Attach protects one interface of the calling thread's namespace: Apply
// with that one interface in scope. Attaching an attached interface again is
// idempotent; if the programs changed (an upgrade) or opts.Reload is set,
// the new ones replace the old atomically through the pinned links, so no
// packet goes unfiltered. A failure takes back everything it made.
func (g *Guard) Attach(name string, opts AttachOptions) (AttachResult, error) {
	spec := InterfaceSpec{Name: name, Mode: opts.Mode, Egress: opts.Egress, TCBackend: opts.TCBackend}
	changes, err := g.Apply(DesiredState{Interfaces: []InterfaceSpec{spec}}, ApplyOptions{
		Scope: ApplyScope{Interfaces: true}, Force: opts.Force, Reload: opts.Reload, Warn: opts.Warn, failpoint: opts.failpoint,
	})
	res := AttachResult{Interface: name, Action: "unchanged"}
	if err != nil {
		return res, err
	}
	for _, c := range changes {
		switch {
		case c.What == "egress added" && res.Action != "unchanged":
		default:
			res.Action = c.What
		}
	}
	l, err := lookupLink(name)
	if err != nil {
		return res, err
	}
	res.Ifindex = l.Attrs().Index
	res.Mode = xdpModeOf(l)
	ns, err := CurrentNetns()
	if err != nil {
		return res, err
	}
	if a, err := loadAttachment(g.ifaceDir(ns, res.Ifindex), res.Ifindex); err == nil {
		res.Egress = a.egress()
		a.close()
	}
	return res, nil
}

// attachNew attaches this binary's programs to an interface that has none
// of ours, pinning what holds them under dir, as part of the change t.
func (g *Guard) attachNew(t *txn, l netlink.Link, dir string, opts AttachOptions) (res AttachResult, err error) {
	res = AttachResult{Interface: l.Attrs().Name, Ifindex: l.Attrs().Index}
	kind, err := entryPoints(l)
	if err != nil {
		return res, err
	}
	if err := refuseForeign(t, l, opts); err != nil {
		return res, err
	}
	if err := os.MkdirAll(dir, sharedPinMode); err != nil {
		return res, fmt.Errorf("create %s: %w", dir, err)
	}
	t.onFail(func() { os.RemoveAll(dir) })

	dp, err := loadForLink(g.Maps, kind, Counters{})
	if err != nil {
		return res, err
	}
	t.closeAtEnd(dp)

	if err := dp.Stats.Pin(filepath.Join(dir, pinStats)); err != nil {
		return res, fmt.Errorf("pin counters: %w", err)
	}
	if err := dp.Stats2.Pin(filepath.Join(dir, pinStats2)); err != nil {
		return res, fmt.Errorf("pin counters: %w", err)
	}
	if err := dp.SampleStats.Pin(filepath.Join(dir, pinSampleStats)); err != nil {
		return res, fmt.Errorf("pin sample counters: %w", err)
	}
	if err := dp.SampleStats2.Pin(filepath.Join(dir, pinSampleStats2)); err != nil {
		return res, fmt.Errorf("pin sample counters: %w", err)
	}
	if err := t.fail("stats"); err != nil {
		return res, err
	}

	xdpProg, tcProg := dp.Programs(kind)
	xl, mode, err := attachXDP(l, xdpProg, opts)
	if err != nil {
		return res, err
	}
	t.closeAtEnd(xl)
	// Detach, not only close: the kernel frees a closed link later, from
	// a work queue, and a rollback must be over when it returns.
	t.onFail(func() { xl.Detach() })
	res.Mode = mode
	if err := xl.Pin(filepath.Join(dir, pinXDPLink)); err != nil {
		return res, fmt.Errorf("pin XDP link: %w", err)
	}
	t.onFail(func() { xl.Unpin() })
	if err := t.fail("xdp"); err != nil {
		return res, err
	}

	if opts.Egress {
		backend, err := g.attachTC(l, dir, tcProg, opts.TCBackend, t)
		if err != nil {
			return res, err
		}
		res.Egress = string(backend)
	}
	if err := t.fail("done"); err != nil {
		return res, err
	}
	res.Action = "attached"
	return res, nil
}

// refuseForeign refuses an interface that has an XDP program of someone
// else's, unless forced, in which case that program is detached first.
//
// A program set through netlink comes back if the change t fails; one held
// by another tool's bpf_link cannot (the link was its owner's), and stays
// detached.
func refuseForeign(t *txn, l netlink.Link, opts AttachOptions) error {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return nil
	}
	progName := "?"
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		if info, err := p.Info(); err == nil {
			progName = info.Name
		}
		p.Close()
	}
	if !opts.Force {
		return fmt.Errorf("%w on %s: program id %d, name %q: remove it (ip link set dev %s xdp off) or attach with --force to replace it",
			ErrForeignProgram, l.Attrs().Name, x.ProgId, progName, l.Attrs().Name)
	}
	// Set through netlink (most tools): netlink removes it. Held by a
	// bpf_link: the kernel refuses that (EBUSY), and the link must be
	// detached. Links name an ifindex but no namespace, and ifindexes
	// repeat across namespaces, so a link counts only if it holds this
	// very program too.
	flags := 0
	switch x.AttachMode {
	case nl.XDP_ATTACHED_SKB:
		flags = unix.XDP_FLAGS_SKB_MODE
	case nl.XDP_ATTACHED_DRV:
		flags = unix.XDP_FLAGS_DRV_MODE
	}
	prev, openErr := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if openErr == nil {
		t.closeAtEnd(prev)
	}
	err := netlink.LinkSetXdpFdWithFlags(l, -1, flags)
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("remove XDP program %d: %w", x.ProgId, err)
	}
	if err == nil && openErr == nil {
		t.onFail(func() { netlink.LinkSetXdpFdWithFlags(l, prev.FD(), flags) })
	}
	if err != nil {
		if err := detachLinkOf(ebpf.ProgramID(x.ProgId), l.Attrs().Index); err != nil {
			return err
		}
	}
	now, err := netlink.LinkByIndex(l.Attrs().Index)
	if err != nil {
		return fmt.Errorf("re-read %s: %w", l.Attrs().Name, err)
	}
	if x := now.Attrs().Xdp; x != nil && x.Attached {
		return fmt.Errorf("XDP program %d is still attached to %s after removal: remove it by hand", x.ProgId, l.Attrs().Name)
	}
	return nil
}

// detachLinkOf detaches the XDP bpf_link holding prog on ifindex. Link
// info names no namespace, so if several links hold prog on that ifindex
// (one program linked in several namespaces), the one that is ours cannot
// be told apart, and nothing is detached.
func detachLinkOf(prog ebpf.ProgramID, ifindex int) error {
	it := new(link.Iterator)
	defer it.Close()
	var found []link.Link
	defer func() {
		for _, lk := range found {
			lk.Close()
		}
	}()
	for it.Next() {
		lk := it.Take()
		info, err := lk.Info()
		if err == nil && info.Type == link.XDPType && info.Program == prog &&
			info.XDP() != nil && int(info.XDP().Ifindex) == ifindex {
			found = append(found, lk)
			continue
		}
		lk.Close()
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list BPF links: %w", err)
	}
	switch len(found) {
	case 0:
		return fmt.Errorf("no BPF link holds XDP program %d on ifindex %d", prog, ifindex)
	case 1:
		if err := found[0].Detach(); err != nil {
			return fmt.Errorf("detach the XDP link holding program %d: %w", prog, err)
		}
		return nil
	}
	var ids []string
	for _, lk := range found {
		if info, err := lk.Info(); err == nil {
			ids = append(ids, fmt.Sprint(info.ID))
		}
	}
	return fmt.Errorf("%w: program %d is held by %d BPF links on ifindex %d in different namespaces (link ids %s) and xdpguard cannot tell which is this one's: detach it with its owner, or bpftool link detach id ID",
		ErrForeignProgram, prog, len(found), ifindex, strings.Join(ids, ", "))
}

func attachXDP(l netlink.Link, prog *ebpf.Program, opts AttachOptions) (link.Link, XDPMode, error) {
	try := func(flags link.XDPAttachFlags) (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: flags})
	}
	switch opts.Mode {
	case XDPNative:
		xl, err := try(link.XDPDriverMode)
		if err != nil {
			return nil, "", fmt.Errorf("native XDP on driver %s: %w: use --mode generic (or auto)", driverName(l.Attrs().Name), xdpLinkError(err))
		}
		return xl, XDPNative, nil
	case XDPGeneric:
		xl, err := try(link.XDPGenericMode)
		if err != nil {
			return nil, "", fmt.Errorf("generic XDP: %w", xdpLinkError(err))
		}
		return xl, XDPGeneric, nil
	}
	xl, err := try(link.XDPDriverMode)
	if err == nil {
		return xl, XDPNative, nil
	}
	nativeErr := err
	xl, err = try(link.XDPGenericMode)
	if err != nil {
		return nil, "", fmt.Errorf("native XDP: %v; generic XDP: %w", nativeErr, xdpLinkError(err))
	}
	opts.Warn(fmt.Sprintf("driver %s of %s has no native XDP (%v): attached in generic mode, after skb allocation, at a higher cost per packet",
		driverName(l.Attrs().Name), l.Attrs().Name, nativeErr))
	return xl, XDPGeneric, nil
}

func xdpLinkError(err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: this kernel has no BPF links for XDP (Linux 5.9 or later needed)", err)
	}
	return err
}

// driverName names an interface's driver, as ethtool -i does.
func driverName(ifname string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "?"
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return "?"
	}
	return unix.ByteSliceToString(info.Driver[:])
}

func xdpModeOf(l netlink.Link) XDPMode {
	if x := l.Attrs().Xdp; x != nil && x.AttachMode == nl.XDP_ATTACHED_SKB {
		return XDPGeneric
	}
	return XDPNative
}
