package loader

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "192.0.2.0/24", want: "192.0.2.0/24"},
		{in: " 10.0.0.0/8 ", want: "10.0.0.0/8"},
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "::ffff:192.0.2.1", want: "192.0.2.1/32"},
		{in: "10.1.2.3/8", err: `host bits set; did you mean 10.0.0.0/8?`},
		{in: "2001:db8::1/32", err: "did you mean 2001:db8::/32?"},
		{in: "10.0.0.0/33", err: `invalid CIDR "10.0.0.0/33"`},
		{in: "example.com", err: `invalid CIDR "example.com"`},
		{in: "", err: `invalid CIDR ""`},
		{in: "::ffff:192.0.2.0/120", err: "IPv4-mapped"},
		{in: "fe80::1%eth0/128", err: "invalid CIDR"},
	} {
		p, err := ParsePrefix(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePrefix(%q) = %v, %v; want error containing %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

func TestParsePrefixesNamesTheLine(t *testing.T) {
	in := "# trusted peers\n192.0.2.0/24\n\n2001:db8::/48 # lab\n10.1.2.3/8\n"
	_, err := ParsePrefixes(strings.NewReader(in), "allow.txt")
	if err == nil || !strings.Contains(err.Error(), "allow.txt:5:") {
		t.Fatalf("error %v does not name allow.txt:5", err)
	}
	ps, err := ParsePrefixes(strings.NewReader(in[:strings.Index(in, "10.1")]), "allow.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/48")}
	if !slices.Equal(ps, want) {
		t.Fatalf("got %v, want %v", ps, want)
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]uint16{"11211": 11211, "1": 1, "65535": 65535} {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "65536", "-1", "memcache", "", "11211/udp"} {
		if _, err := ParsePort(in); err == nil || !strings.Contains(err.Error(), "1 to 65535") {
			t.Errorf("ParsePort(%q) = %v, want an error naming the range", in, err)
		}
	}
}

func TestParseModesAndPolicies(t *testing.T) {
	if m, err := ParseMode("MONITOR"); err != nil || m != ModeMonitor {
		t.Errorf("ParseMode(MONITOR) = %v, %v", m, err)
	}
	if _, err := ParseMode("drop"); err == nil || !strings.Contains(err.Error(), "enforce or monitor") {
		t.Errorf("ParseMode(drop) = %v", err)
	}
	if f, err := ParseFragPolicy("strict"); err != nil || f != FragStrict {
		t.Errorf("ParseFragPolicy(strict) = %v, %v", f, err)
	}
	if _, err := ParseFragPolicy("drop"); err == nil {
		t.Error("ParseFragPolicy(drop) accepted")
	}
	if m, err := ParseXDPMode("generic"); err != nil || m != XDPGeneric {
		t.Errorf("ParseXDPMode(generic) = %v, %v", m, err)
	}
	if _, err := ParseXDPMode("offload"); err == nil {
		t.Error("ParseXDPMode(offload) accepted")
	}
	if _, err := ParseTCBackend("ingress"); err == nil {
		t.Error("ParseTCBackend(ingress) accepted")
	}
}

func TestPortBitmapRoundTrip(t *testing.T) {
	ports := []Port{
		{Number: 1, Direction: DirBoth}, {Number: 53, Direction: DirResponse, Expiry: 10 * time.Second},
		{Number: 63, Direction: DirRequest}, {Number: 64, Direction: DirResponse, Expiry: DefaultSolicitExpiry},
		{Number: 11211, Direction: DirBoth}, {Number: 65535, Direction: DirRequest},
	}
	req, resp := portBitmaps(ports)
	expiry := func(p uint16) time.Duration {
		if p == 53 {
			return 10 * time.Second
		}
		return 0
	}
	if got := portsFromBitmaps(&req, &resp, expiry); !slices.Equal(got, ports) {
		t.Fatalf("round trip: %v, want %v", got, ports)
	}
	// Where the C reads them: both has both bits, request only the
	// request bit, response only the response bit.
	bit := func(bm *portBits, p uint16) bool { return bm[p/64]&(1<<(p%64)) != 0 }
	for _, c := range []struct {
		port      uint16
		req, resp bool
	}{{11211, true, true}, {63, true, false}, {53, false, true}, {2, false, false}} {
		if bit(&req, c.port) != c.req || bit(&resp, c.port) != c.resp {
			t.Errorf("port %d: request bit %t, response bit %t; want %t, %t", c.port, bit(&req, c.port), bit(&resp, c.port), c.req, c.resp)
		}
	}
}

func TestParseDirectionAndExpiry(t *testing.T) {
	for in, want := range map[string]Direction{"both": DirBoth, "request": DirRequest, "Response": DirResponse} {
		if got, err := ParseDirection(in); err != nil || got != want {
			t.Errorf("ParseDirection(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseDirection("reply"); err == nil || !strings.Contains(err.Error(), `"reply"`) ||
		!strings.Contains(err.Error(), "both, request or response") {
		t.Errorf("ParseDirection(reply): %v, want an error naming the input and the valid values", err)
	}
	for _, bad := range []string{"0s", "500ms", "2h", "1.5s", "soon", "-3s"} {
		if _, err := ParseExpiry(bad); err == nil || !strings.Contains(err.Error(), "1s") {
			t.Errorf("ParseExpiry(%q): %v, want an error giving the range", bad, err)
		}
	}
	if d, err := ParseExpiry("2m"); err != nil || d != 2*time.Minute {
		t.Errorf("ParseExpiry(2m) = %v, %v", d, err)
	}
	// normalisePorts: defaults filled, sorted, an expiry only for
	// response ports, one number given two ways refused.
	got, err := normalisePorts([]Port{{Number: 53, Direction: DirResponse}, {Number: 11211}, {Number: 53, Direction: DirResponse, Expiry: DefaultSolicitExpiry}})
	want := []Port{{Number: 53, Direction: DirResponse, Expiry: DefaultSolicitExpiry}, {Number: 11211, Direction: DirBoth}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("normalisePorts = %v, %v; want %v", got, err, want)
	}
	for _, bad := range [][]Port{
		{{Number: 53, Direction: DirBoth, Expiry: time.Minute}},
		{{Number: 53, Direction: DirResponse}, {Number: 53, Direction: DirBoth}},
		{{Number: 0}},
		{{Number: 53, Direction: "sideways"}},
	} {
		if _, err := normalisePorts(bad); err == nil {
			t.Errorf("normalisePorts(%v) accepted", bad)
		}
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		name := r.String()
		if strings.HasPrefix(name, "reason(") || seen[name] {
			t.Errorf("reason %d has no unique name: %q", r, name)
		}
		seen[name] = true
	}
	if len(seen) != ReasonCount {
		t.Fatalf("%d names for %d reasons", len(seen), ReasonCount)
	}
}

func TestCountersMapLayout(t *testing.T) {
	_, s, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.XdpguardStats.MaxEntries, uint32(int(hookCount)*statsReasons); got != want {
		t.Fatalf("counters map has %d slots, Go expects hookCount*statsReasons = %d: enum hook and loader.Hook disagree", got, want)
	}
	if got, want := s.XdpguardStats2.MaxEntries, uint32(int(hookCount)*(ReasonCount-statsReasons)); got != want {
		t.Fatalf("second counters map has %d slots, Go expects %d", got, want)
	}
	// The first map keeps the layout of the releases before directions
	// (9 reasons per hook), so that their counters carry on.
	if statsReasons != 9 || s.XdpguardSstats.MaxEntries != s.XdpguardStats.MaxEntries || s.XdpguardSstat2.MaxEntries != s.XdpguardStats2.MaxEntries {
		t.Fatalf("counters layout moved: %d reasons in the first map, sample maps %d and %d slots", statsReasons, s.XdpguardSstats.MaxEntries, s.XdpguardSstat2.MaxEntries)
	}
}

// AllowAdd inserts in this order: by address, a covering prefix before the
// prefixes it covers, IPv4 before IPv6.
func TestComparePrefixOrder(t *testing.T) {
	in := []string{"2001:db8::/32", "10.1.0.0/16", "10.0.0.0/8", "10.0.0.0/24", "9.255.255.255/32", "::/0"}
	want := []string{"9.255.255.255/32", "10.0.0.0/8", "10.0.0.0/24", "10.1.0.0/16", "::/0", "2001:db8::/32"}
	ps := make([]netip.Prefix, len(in))
	for i, s := range in {
		ps[i] = netip.MustParsePrefix(s)
	}
	slices.SortFunc(ps, comparePrefix)
	got := make([]string, len(ps))
	for i, p := range ps {
		got[i] = p.String()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sorted = %v, want %v", got, want)
	}
}

// Files from elsewhere: CRLF line ends, no final newline, a comment-only line.
func TestParsePrefixesCRLF(t *testing.T) {
	ps, err := ParsePrefixes(strings.NewReader("192.0.2.0/24\r\n#x\r\n198.51.100.1"), "crlf.txt")
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.1/32")}
	if err != nil || !slices.Equal(ps, want) {
		t.Fatalf("got %v, %v; want %v", ps, err, want)
	}
	if _, err := ParsePrefixes(strings.NewReader("192.0.2.0/24\r\nbad\r\n"), "crlf.txt"); err == nil || !strings.Contains(err.Error(), "crlf.txt:2:") {
		t.Fatalf("error %v does not name crlf.txt:2", err)
	}
}
