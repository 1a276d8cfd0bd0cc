package loader

import (
	"testing"

	"github.com/cilium/ebpf"
)

func TestLoadSmoke(t *testing.T) {
	m, err := NewMaps(MapSizes{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dp, err := LoadDataplane(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	// eth + ipv4 + udp to 11211
	frame := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00,
		0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0x30, 0x39, 0x2b, 0xcb, 0, 8, 0, 0}
	for _, p := range []*ebpf.Program{dp.XDP, dp.TC} {
		ret, err := p.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v ret=%d", p, ret)
	}
	st, err := ReadStats(dp.Stats)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
}
