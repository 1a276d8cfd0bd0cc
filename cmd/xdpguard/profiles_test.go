package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/xdpguard/xdpguard/internal/nstest"
	"github.com/xdpguard/xdpguard/internal/profiles"
	"github.com/xdpguard/xdpguard/loader"
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

// Bad input is a usage error that names it, and changes nothing: the pin
// path is never created.
func TestPortsProfileUsageErrors(t *testing.T) {
	pin := filepath.Join(t.TempDir(), "never-created")
	for _, tc := range []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"ports", "add", "--profile", "dns,nope"}, append([]string{`"nope"`}, profiles.Names()...)},
		{[]string{"ports", "add", "--profile", "dns,"}, []string{"empty profile name"}},
		{[]string{"ports", "add", "--profile", "dns", "53"}, []string{"takes no PORT arguments"}},
		{[]string{"ports", "list", "--profile", "dns"}, []string{"--profile goes with ports add"}},
		{[]string{"ports", "profiles", "dns"}, []string{"takes no arguments"}},
		{[]string{"ports", "add", "--profile", "dns", "--direction", "sideways"}, []string{`"sideways"`}},
		{[]string{"ports", "add", "--profile", "chargen", "--expiry", "10s"}, []string{"--expiry is for response ports only"}},
	} {
		code, _, errb := runCLI(append([]string{"--pin-path", pin}, tc.args...)...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d: %s", tc.args, code, exitUsage, errb)
		}
		for _, w := range tc.want {
			if !strings.Contains(errb, w) {
				t.Errorf("%v: stderr does not say %q: %s", tc.args, w, errb)
			}
		}
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%v: created %s", tc.args, pin)
		}
	}
}

// ports add --profile, as root, on real pinned state: each profile's ports
// with its direction; --direction overrides; a bad name afterwards changes
// nothing.
func TestPortsAddProfile(t *testing.T) {
	nstest.RequireRoot(t)
	var r [4]byte
	_, _ = rand.Read(r[:])
	pin := filepath.Join("/sys/fs/bpf", "xgprof-"+hex.EncodeToString(r[:]))
	t.Cleanup(func() { _ = os.RemoveAll(pin) })
	cli := func(args ...string) (int, string, string) {
		return runCLI(append([]string{"--pin-path", pin}, args...)...)
	}
	ports := func() []loader.Port {
		t.Helper()
		g, err := loader.OpenReadOnly(pin)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		cfg, err := g.Maps.ReadConfig()
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Ports
	}
	resp := func(n uint16) loader.Port {
		return loader.Port{Number: n, Direction: loader.DirResponse, Expiry: loader.DefaultSolicitExpiry}
	}
	both := func(n uint16) loader.Port { return loader.Port{Number: n, Direction: loader.DirBoth} }

	code, out, errb := cli("ports", "add", "--profile", "DNS,ntp")
	if code != exitOK || !strings.Contains(out, "dns (53 response)") || !strings.Contains(out, "3 port(s) protected") {
		t.Fatalf("ports add --profile DNS,ntp: exit %d: %s%s", code, out, errb)
	}
	want := []loader.Port{resp(53), resp(123), both(loader.DefaultPort)}
	if got := ports(); !slices.Equal(got, want) {
		t.Fatalf("after --profile dns,ntp: ports %v, want %v", got, want)
	}

	code, out, errb = cli("ports", "add", "--profile", "chargen,qotd,tftp")
	if code != exitOK {
		t.Fatalf("ports add --profile chargen,qotd,tftp: exit %d: %s%s", code, out, errb)
	}
	want = []loader.Port{both(17), both(19), resp(53), {Number: 69, Direction: loader.DirRequest}, resp(123), both(loader.DefaultPort)}
	if got := ports(); !slices.Equal(got, want) {
		t.Fatalf("after chargen,qotd,tftp: ports %v, want %v", got, want)
	}

	// --direction overrides the profile's own; memcached's port becomes a
	// response port with the expiry given.
	code, out, errb = cli("ports", "add", "--profile", "memcached", "--direction", "response", "--expiry", "10s")
	if code != exitOK {
		t.Fatalf("ports add --profile memcached --direction response: exit %d: %s%s", code, out, errb)
	}
	want[len(want)-1] = loader.Port{Number: loader.DefaultPort, Direction: loader.DirResponse, Expiry: 10e9}
	if got := ports(); !slices.Equal(got, want) {
		t.Fatalf("after the override: ports %v, want %v", got, want)
	}

	// A bad name among good ones: usage error, nothing added.
	code, _, errb = cli("ports", "add", "--profile", "snmp,bogus")
	if code != exitUsage || !strings.Contains(errb, `"bogus"`) || !strings.Contains(errb, "snmp") {
		t.Fatalf("ports add --profile snmp,bogus: exit %d: %s", code, errb)
	}
	if got := ports(); !slices.Equal(got, want) {
		t.Fatalf("a failed --profile changed the ports: %v, want %v", got, want)
	}
}

// Response ports added by profile on an interface attached without egress:
// the same warning as ports add, since their replies would all be dropped.
func TestPortsAddProfileWarnsWithoutEgress(t *testing.T) {
	nstest.RequireRoot(t)
	peer, host := nstest.New(t, "xgpp"), nstest.New(t, "xgph")
	nstest.Veth(t, peer, "xg0", host, "xg1", 0)
	pin := filepath.Join("/sys/fs/bpf", "xgprofw-"+host.Name())
	cli := func(args ...string) (code int, out, errb string) {
		if err := host.Do(func() error {
			code, out, errb = runCLI(append([]string{"--pin-path", pin}, args...)...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return code, out, errb
	}
	t.Cleanup(func() {
		cli("detach", "--all")
		_ = os.RemoveAll(pin)
	})
	if code, _, errb := cli("attach", "xg1"); code != exitOK {
		t.Fatalf("attach xg1: exit %d: %s", code, errb)
	}
	code, _, errb := cli("ports", "add", "--profile", "ntp")
	if code != exitOK || !strings.Contains(errb, "warning: response port(s) 123") || !strings.Contains(errb, "--egress") {
		t.Fatalf("ports add --profile ntp without egress: exit %d, stderr %q: want the egress warning", code, errb)
	}
	if code, _, errb := cli("attach", "xg1", "--egress"); code != exitOK {
		t.Fatalf("attach xg1 --egress: exit %d: %s", code, errb)
	}
	if code, _, errb := cli("ports", "add", "--profile", "dns"); code != exitOK || strings.Contains(errb, "warning") {
		t.Fatalf("ports add --profile dns with egress: exit %d, stderr %q: want no warning", code, errb)
	}
}

// The agent's config names profiles as ports entries: --check-config shows
// their ports with their directions, and names a bad profile by line.
func TestAgentCheckConfigProfiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("pin_path: "+filepath.Join(dir, "never")+"\ninterfaces:\n  include: [eth0]\n  egress: true\nports: [11211, {profile: dns}, {profile: ntp, expiry: 10s}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI("agent", "--check-config", good)
	if code != exitOK || !strings.Contains(out, "53/response(30s),123/response(10s),11211") {
		t.Fatalf("config with profiles: exit %d\n%s%s", code, out, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("interfaces:\n  include: [eth0]\nports:\n  - 11211\n  - profile: ntpd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI("agent", "--check-config", bad)
	if want := bad + `:5: ports[1].profile: unknown reflection profile "ntpd"`; code != exitFailed || !strings.Contains(stderr, want) || !strings.Contains(stderr, "ntp,") {
		t.Fatalf("bad profile: exit %d, stderr %q; want exit 1, %q and the valid names", code, stderr, want)
	}
}
