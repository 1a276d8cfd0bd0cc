package loader

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelTC is the egress backend an attach with TCAuto gets on this kernel,
// probed once: tests expect what the kernel has (tcx on 6.6 and later, a
// clsact qdisc and cls_bpf before), never a version guess.
var kernelTC = sync.OnceValues(probeKernelTC)

// probeKernelTC asks for a tcx egress link on ifindex 0, which attaches
// nothing anywhere: a kernel with tcx answers ENODEV, one without it makes
// cilium/ebpf report ErrNotSupported, as attachTC sees it.
func probeKernelTC() (TCBackend, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return "", fmt.Errorf("probe tcx: load a program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 0, Program: prog, Attach: ebpf.AttachTCXEgress})
	switch {
	case err == nil:
		l.Close()
		return "", errors.New("probe tcx: a link on ifindex 0 was made")
	case errors.Is(err, ebpf.ErrNotSupported):
		return TCLegacy, nil
	case errors.Is(err, unix.ENODEV):
		return TCX, nil
	}
	return "", fmt.Errorf("probe tcx: %w", err)
}

// kernelEgress is kernelTC, failing t if the probe failed.
func kernelEgress(t *testing.T) TCBackend {
	t.Helper()
	b, err := kernelTC()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// egressCount is how many programs sit on the host interface's egress:
// tcx programs where the kernel has tcx, plus cls_bpf filters on a clsact
// qdisc's egress, so one count holds for either backend.
func (r *rig) egressCount(t *testing.T) int {
	t.Helper()
	l := r.hostLink(t)
	var n int
	if kernelEgress(t) == TCX {
		err := r.host.Do(func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXEgress})
			if err == nil {
				n = len(res.Programs)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	h := r.host.Handle()
	qdiscs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qdiscs {
		if q.Type() != "clsact" {
			continue
		}
		filters, err := h.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range filters {
			if _, ok := f.(*netlink.BpfFilter); ok {
				n++
			}
		}
	}
	return n
}

// TestKernelTCProbe: the probe agrees with what attach really does on this
// kernel, so the tests that rely on it expect the right backend.
func TestKernelTCProbe(t *testing.T) {
	r := newRig(t)
	res := r.attach(t, AttachOptions{Egress: true})
	if want := kernelEgress(t); res.Egress != string(want) {
		t.Fatalf("attach chose egress %q; the probe says this kernel gives %q", res.Egress, want)
	}
	if n := r.egressCount(t); n != 1 {
		t.Fatalf("%d egress programs after attach, want 1", n)
	}
}
