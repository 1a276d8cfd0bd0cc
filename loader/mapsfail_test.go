package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpguard/xdpguard/internal/nstest"
)

// TestCreateMapsFailureIsAnError: a map the kernel refuses (5.10 refused
// them under RLIMIT_MEMLOCK; here a fragment table too large to exist) is an
// error naming the map, not a panic: on f67e802 createMaps closed its
// named result after a failing return had set it to nil.
func TestCreateMapsFailureIsAnError(t *testing.T) {
	nstest.RequireRoot(t)
	m, err := NewMaps(MapSizes{FragEntries: 1 << 31})
	if err == nil {
		m.Close()
		t.Fatal("NewMaps with a fragment table of 2^31 entries succeeded; the test needs the kernel to refuse it")
	}
	if m != nil || !strings.Contains(err.Error(), "xdpguard_frags") {
		t.Fatalf("NewMaps refused: %v, %v; want no maps and an error naming xdpguard_frags", m, err)
	}
}

// TestCreateMapsOpenFailureClosesWhatItOpened: when opening a pinned map
// fails part way, createMaps returns that error and closes the maps it had
// already (the first two, opened by the same func), leaking no descriptor.
func TestCreateMapsOpenFailureClosesWhatItOpened(t *testing.T) {
	nstest.RequireRoot(t)
	if err := removeMemlock(); err != nil {
		t.Fatal(err)
	}
	_, s, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected open failure")
	var opened []*ebpf.Map
	m, err := createMaps(s, func(spec *ebpf.MapSpec) (*ebpf.Map, error) {
		if len(opened) == 2 {
			return nil, injected
		}
		mp, err := ebpf.NewMap(spec)
		if err != nil {
			return nil, err
		}
		opened = append(opened, mp)
		return mp, nil
	})
	if !errors.Is(err, injected) || m != nil {
		t.Fatalf("createMaps: %v, %v; want the injected failure and no maps", m, err)
	}
	for i, mp := range opened {
		if mp.FD() >= 0 {
			t.Errorf("map %d (%v), opened before the failure, left open", i, mp)
			mp.Close()
		}
	}
}
