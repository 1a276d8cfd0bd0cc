package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/xdpguard/xdpguard/internal/profiles"
)

func TestPortsProfilesList(t *testing.T) {
	code, out, errb := runCLI("ports", "profiles")
	if code != exitOK {
		t.Fatalf("ports profiles: exit %d: %s", code, errb)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "PROFILE") {
		t.Errorf("ports profiles: no header: %q", lines[0])
	}
	for _, p := range profiles.All() {
		found := false
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) > 2 && f[0] == p.Name && f[2] == string(p.Direction) && strings.Contains(l, p.Factor.Text) && strings.HasSuffix(l, p.Source) {
				found = true
			}
		}
		if !found {
			t.Errorf("ports profiles: no line for %s %s %s %s:\n%s", p.Name, p.Direction, p.Factor, p.Source, out)
		}
	}

	code, out, errb = runCLI("ports", "profiles", "--json")
	if code != exitOK {
		t.Fatalf("ports profiles --json: exit %d: %s", code, errb)
	}
	var doc struct {
		Profiles []profileJSON `json:"profiles"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("ports profiles --json: %v\n%s", err, out)
	}
	if len(doc.Profiles) != len(profiles.All()) {
		t.Fatalf("ports profiles --json: %d profiles, want %d", len(doc.Profiles), len(profiles.All()))
	}
	dns := doc.Profiles[slices.IndexFunc(doc.Profiles, func(p profileJSON) bool { return p.Name == "dns" })]
	if !slices.Equal(dns.Ports, []uint16{53}) || dns.Direction != "response" || dns.FactorMin != 28 || dns.FactorMax != 54 ||
		dns.Factor != "28 to 54" || !strings.HasPrefix(dns.Source, "https://") {
		t.Errorf("ports profiles --json: dns is %+v", dns)
	}
}
