package loader

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// The steps every fixture that rebuilds an older main's pinned state shares
// (attachV1 before issue 14, attachV2 before port directions).

// pinOldMaps makes the maps of spec that files names (map name -> pin
// file), pins them under pin as an older release did, and returns them;
// release closes them (the pins live on).
func pinOldMaps(spec *ebpf.CollectionSpec, pin string, files map[string]string) (repl map[string]*ebpf.Map, release func(), err error) {
	repl = map[string]*ebpf.Map{}
	release = func() {
		for _, m := range repl {
			m.Close()
		}
	}
	for name, file := range files {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("create %s: %w", name, err)
		}
		repl[name] = m
		if err := m.Pin(filepath.Join(pin, file)); err != nil {
			release()
			return nil, nil, fmt.Errorf("pin %s: %w", name, err)
		}
	}
	return repl, release, nil
}

// pinOldAllowMeta pins the allow-list record those versions kept for allow.
func pinOldAllowMeta(pin string, allow []netip.Prefix) error {
	meta, err := ebpf.NewMap(allowMetaSpec)
	if err != nil {
		return err
	}
	defer meta.Close()
	set := sortedSet(slices.Clone(allow))
	rec := allowMeta{Version: allowMetaVersion, Known: 1, Epoch: 1}
	rec.IPv4, rec.IPv6 = countFamilies(set)
	_, rec.SetSum = allowDigest(set)
	rec.InputLen, rec.InputSum = allowDigest(allow)
	if err := meta.Put(uint32(0), &rec); err != nil {
		return err
	}
	return meta.Pin(filepath.Join(pin, pinMeta))
}

// attachOld loads an older object on the shared maps repl and leaves what its
// attach left under netns/<inode>/<ifindex>/: the per-interface maps named in
// perIface (map name -> pin file), the pinned XDP link, and egress as that
// release attached it (tcx, else clsact + cls_bpf).
func attachOld(spec *ebpf.CollectionSpec, repl map[string]*ebpf.Map, l netlink.Link, pin string, inode uint64,
	egress TCBackend, perIface map[string]string) error {
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return verifierError(err)
	}
	defer coll.Close()
	dir := filepath.Join(pin, netnsDir, strconv.FormatUint(inode, 10), strconv.Itoa(l.Attrs().Index))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, file := range perIface {
		if err := coll.Maps[name].Pin(filepath.Join(dir, file)); err != nil {
			return err
		}
	}
	xl, err := link.AttachXDP(link.XDPOptions{Program: coll.Programs["xdpguard_xdp"], Interface: l.Attrs().Index, Flags: link.XDPDriverMode})
	if err != nil {
		return err
	}
	defer xl.Close()
	if err := xl.Pin(filepath.Join(dir, pinXDPLink)); err != nil {
		return err
	}
	return v0Egress(l, dir, coll.Programs["xdpguard_tc"], egress)
}
