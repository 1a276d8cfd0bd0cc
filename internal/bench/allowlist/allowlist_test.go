package allowlist

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/xdpguard/xdpguard/loader"
)

func TestRandomPrefixes(t *testing.T) {
	avoid := netip.MustParseAddr("198.51.100.7")
	ps := RandomPrefixes(20000, 7, avoid)
	if len(ps) != 20000 {
		t.Fatalf("got %d prefixes, want 20000", len(ps))
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range ps {
		if seen[p] {
			t.Fatalf("%s twice", p)
		}
		seen[p] = true
		if p.Contains(avoid) {
			t.Fatalf("%s covers the address to avoid", p)
		}
		if p != p.Masked() || !p.Addr().Is4() || p.Bits() < 16 {
			t.Fatalf("%s: not a masked IPv4 prefix of /16 or longer", p)
		}
	}
	if again := RandomPrefixes(20000, 7, avoid); !slices.Equal(ps, again) {
		t.Fatal("the same seed gave a different list")
	}
}

// The file WriteFile writes is what `xdpguard allow load` parses, exactly.
func TestWriteFileRoundTrip(t *testing.T) {
	ps := RandomPrefixes(500, 1, netip.MustParseAddr("192.0.2.1"))
	path := filepath.Join(t.TempDir(), "allow.txt")
	if err := WriteFile(path, ps); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := loader.ParsePrefixes(strings.NewReader(string(b)), path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, ps) {
		t.Fatal("allow file did not parse back to the same prefixes")
	}
}
