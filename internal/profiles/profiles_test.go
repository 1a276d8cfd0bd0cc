package profiles

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestTableInvariants(t *testing.T) {
	all := All()
	if len(all) == 0 {
		t.Fatal("no profiles")
	}
	seen := map[string]bool{}
	for _, p := range all {
		if p.Name == "" || p.Name != strings.ToLower(p.Name) || strings.ContainsAny(p.Name, ", \t") {
			t.Errorf("profile %q: names are lower case, without commas or spaces", p.Name)
		}
		if seen[p.Name] {
			t.Errorf("profile %q listed twice", p.Name)
		}
		seen[p.Name] = true
		if p.Protocol == "" || p.Why == "" || p.SourceTitle == "" {
			t.Errorf("profile %q: protocol, source title and the reason for its direction must be given", p.Name)
		}
		if len(p.Ports) == 0 {
			t.Errorf("profile %q: no port", p.Name)
		}
		for _, port := range p.Ports {
			if port == 0 {
				t.Errorf("profile %q: port 0 is not a valid UDP port", p.Name)
			}
		}
		if !slices.Contains(Directions, p.Direction) {
			t.Errorf("profile %q: direction %q is none of %v", p.Name, p.Direction, Directions)
		}
		f := p.Factor
		if f.Min <= 1 || f.Max < f.Min || f.Text == "" {
			t.Errorf("profile %q: factor %+v: want 1 < min <= max and the source's text", p.Name, f)
		}
		u, err := url.Parse(p.Source)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			t.Errorf("profile %q: source %q is not an https URL", p.Name, p.Source)
		}
	}
}

// The factors and directions the issue names: a slip in the table (a typo in
// a figure, a default that would cut a host off from its resolver) fails here.
func TestKnownEntries(t *testing.T) {
	cases := []struct {
		name     string
		port     uint16
		dir      Direction
		min, max float64
	}{
		{"dns", 53, Response, 28, 54},
		{"ntp", 123, Response, 556.9, 556.9},
		{"snmp", 161, Response, 6.3, 6.3},
		{"netbios", 137, Response, 3.8, 3.8},
		{"ssdp", 1900, Response, 30.8, 30.8},
		{"chargen", 19, Both, 358.8, 358.8},
		{"qotd", 17, Both, 140.3, 140.3},
		{"mdns", 5353, Response, 2, 10},
		{"ripv1", 520, Both, 131.24, 131.24},
		{"portmap", 111, Response, 7, 28},
		{"cldap", 389, Response, 56, 70},
		{"tftp", 69, Request, 60, 60},
		{"memcached", 11211, Both, 10000, 51000},
	}
	for _, c := range cases {
		p, err := Lookup(c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !slices.Equal(p.Ports, []uint16{c.port}) || p.Direction != c.dir || p.Factor.Min != c.min || p.Factor.Max != c.max {
			t.Errorf("%s: got ports %v %s factor %v-%v, want [%d] %s %v-%v", c.name, p.Ports, p.Direction, p.Factor.Min, p.Factor.Max, c.port, c.dir, c.min, c.max)
		}
	}
}

func TestLookupIgnoresCase(t *testing.T) {
	for _, name := range []string{"DNS", "Dns", " dns ", "dns"} {
		p, err := Lookup(name)
		if err != nil || p.Name != "dns" {
			t.Errorf("Lookup(%q) = %q, %v; want dns", name, p.Name, err)
		}
	}
}

func TestUnknownNameListsValidOnes(t *testing.T) {
	_, err := Lookup("dnss")
	if err == nil {
		t.Fatal("Lookup(dnss) succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, `"dnss"`) {
		t.Errorf("error %q does not name the bad input", msg)
	}
	for _, n := range Names() {
		if !strings.Contains(msg, n) {
			t.Errorf("error %q does not list %q", msg, n)
		}
	}
}

func TestLookupList(t *testing.T) {
	ps, err := LookupList("dns,NTP,dns")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	if !slices.Equal(names, []string{"dns", "ntp"}) {
		t.Errorf("LookupList(dns,NTP,dns) = %v, want [dns ntp]", names)
	}
	for _, bad := range []string{"", "dns,", "dns,nope", ",ntp"} {
		if ps, err := LookupList(bad); err == nil {
			t.Errorf("LookupList(%q) = %v, want an error", bad, ps)
		}
	}
}

// All hands out copies: a caller cannot change the built-in table.
func TestAllIsACopy(t *testing.T) {
	a := All()
	a[0].Ports[0] = 1
	a[0].Name = "x"
	if b := All(); b[0].Ports[0] == 1 || b[0].Name == "x" {
		t.Error("All returned the table itself")
	}
	p, _ := Lookup("dns")
	p.Ports[0] = 1
	if q, _ := Lookup("dns"); q.Ports[0] != 53 {
		t.Error("Lookup returned the table's own ports slice")
	}
}
