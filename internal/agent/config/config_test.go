package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpguard/xdpguard/loader"
)

// write puts a config (and optional side files) in a fresh directory and
// returns the config's path.
func write(t *testing.T, body string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "xdpguard.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFull(t *testing.T) {
	path := write(t, `
pin_path: /sys/fs/bpf/xg-test/
interfaces:
  include: ["eth*", bond0]
  exclude: ["docker*"]
  xdp_mode: native
  egress: true
  tc_backend: legacy
  force: true
ports: [11211, "11212", 11211]
mode: monitor
fragments: strict
allow:
  prefixes: ["192.0.2.0/24", "2001:db8::/48", 198.51.100.7]
  files: [peers.txt, /ABS/more.txt]
metrics:
  listen: "[::1]:9999"
on_stop: detach
resync_interval: 30s
attacks:
  threshold_pps: 250
  min_duration: 1s
  quiet_period: 1m
  update_every: 5s
`, map[string]string{"peers.txt": "# peers\n203.0.113.0/24\n192.0.2.0/24\n", "more.txt": "2001:db8:1::/48\n"})
	dir := filepath.Dir(path)
	// An absolute path given in the file: point it at the temp dir.
	body, _ := os.ReadFile(path)
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(body), "/ABS", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path:    path,
		PinPath: "/sys/fs/bpf/xg-test",
		Interfaces: Interfaces{
			Include: []string{"eth*", "bond0"}, Exclude: []string{"docker*"},
			XDPMode: loader.XDPNative, Egress: true, TCBackend: loader.TCLegacy, Force: true,
		},
		Ports:     loader.BothPorts(11211, 11212),
		Mode:      loader.ModeMonitor,
		Fragments: loader.FragStrict,
		Allow: Allow{
			Prefixes: []netip.Prefix{
				netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/48"), netip.MustParsePrefix("198.51.100.7/32"),
			},
			Files: []string{filepath.Join(dir, "peers.txt"), filepath.Join(dir, "more.txt")},
			All: []netip.Prefix{
				netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32"),
				netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/48"),
				netip.MustParsePrefix("2001:db8:1::/48"),
			},
		},
		MetricsListen:  "[::1]:9999",
		OnStop:         OnStopDetach,
		ResyncInterval: 30 * time.Second,
		Attacks:        Attacks{ThresholdPPS: 250, MinDuration: time.Second, QuietPeriod: time.Minute, UpdateEvery: 5 * time.Second},
	}
	want.Digest = c.Digest // TestDigest checks it
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if got := c.WatchedFiles(); !reflect.DeepEqual(got, []string{path, want.Allow.Files[0], want.Allow.Files[1]}) {
		t.Errorf("WatchedFiles = %v", got)
	}
	if lc := c.LoaderConfig(); lc.Mode != loader.ModeMonitor || lc.FragPolicy != loader.FragStrict || !reflect.DeepEqual(lc.Ports, loader.BothPorts(11211, 11212)) {
		t.Errorf("LoaderConfig = %+v", lc)
	}
}

// TestPortDirections: a port is a number (both directions) or a mapping
// with its direction and, for a response port, its expiry; the loader gets
// them sorted by number, each once.
func TestPortDirections(t *testing.T) {
	path := write(t, `
interfaces:
  include: [eth0]
  egress: true
ports:
  - 11211
  - {port: 53, direction: response}
  - port: 123
    direction: response
    expiry: 2m
  - {port: 1900, direction: request}
  - {port: 11211, direction: both}
`, nil)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []loader.Port{
		{Number: 53, Direction: loader.DirResponse, Expiry: loader.DefaultSolicitExpiry},
		{Number: 123, Direction: loader.DirResponse, Expiry: 2 * time.Minute},
		{Number: 1900, Direction: loader.DirRequest},
		{Number: 11211, Direction: loader.DirBoth},
	}
	if !reflect.DeepEqual(c.Ports, want) || !reflect.DeepEqual(c.LoaderConfig().Ports, want) {
		t.Fatalf("ports %+v, want %+v", c.Ports, want)
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(write(t, "interfaces:\n  include: [\"*\"]\n", nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.PinPath != loader.DefaultPinPath || c.Interfaces.XDPMode != loader.XDPAuto || c.Interfaces.Egress ||
		c.Interfaces.TCBackend != loader.TCAuto || c.Interfaces.Force || len(c.Interfaces.Exclude) != 0 ||
		!reflect.DeepEqual(c.Ports, loader.BothPorts(loader.DefaultPort)) || c.Mode != loader.ModeEnforce ||
		c.Fragments != loader.FragTrack || len(c.Allow.All) != 0 || c.MetricsListen != DefaultMetricsListen ||
		c.OnStop != OnStopKeep || c.ResyncInterval != DefaultResyncInterval ||
		c.Attacks != (Attacks{ThresholdPPS: 1000, MinDuration: 2 * time.Second, QuietPeriod: 10 * time.Second, UpdateEvery: 10 * time.Second}) {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = Load(write(t, "interfaces:\n  include: []\nmetrics:\n  listen: \"\"\nresync_interval: 0\n", nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen != "" || c.ResyncInterval != 0 || len(c.Interfaces.Include) != 0 {
		t.Fatalf(`listen "" and resync 0 turn them off: %+v`, c)
	}
	c, err = Load(write(t, "interfaces:\n  include: [eth0]\nattacks:\n  threshold_pps: 0\n  min_duration: 0\n  quiet_period: 3s\n  update_every: 0\n", nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Attacks != (Attacks{QuietPeriod: 3 * time.Second}) {
		t.Fatalf("attacks: threshold 0, min_duration 0, update_every 0: %+v", c.Attacks)
	}
}

// TestErrorsNameFileLineField: each bad config fails with FILE:LINE: FIELD:
// and a message that says what to write instead.
func TestErrorsNameFileLineField(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		line       int
		field      string
		msg        string
	}{
		{"unknown top key", "interfaces:\n  include: [eth0]\nport: [1]\n", 3, "port", "did you mean ports?"},
		{"unknown nested key", "interfaces:\n  include: [eth0]\n  xdp-mode: native\n", 3, "interfaces.xdp-mode", "did you mean interfaces.xdp_mode?"},
		{"unknown key far off", "interfaces:\n  include: [eth0]\nfrobnicate: 1\n", 3, "frobnicate", "known here: allow, attacks, fragments, interfaces"},
		{"duplicate key", "interfaces:\n  include: [eth0]\nmode: enforce\nmode: monitor\n", 4, "mode", "given twice (first on line 3)"},
		{"missing include", "ports: [11211]\n", 1, "interfaces.include", "missing"},
		{"bad port", "interfaces:\n  include: [eth0]\nports:\n  - 11211\n  - 70000\n", 5, "ports[1]", `invalid port "70000"`},
		{"port zero", "interfaces:\n  include: [eth0]\nports: [0]\n", 3, "ports[0]", `invalid port "0"`},
		{"no ports", "interfaces:\n  include: [eth0]\nports: []\n", 3, "ports", "name at least one UDP port"},
		{"ports not a list", "interfaces:\n  include: [eth0]\nports: 11211\n", 3, "ports", "needs a list of UDP ports"},
		{"bad direction", "interfaces:\n  include: [eth0]\nports:\n  - 11211\n  - {port: 53, direction: inbound}\n", 5, "ports[1].direction", `invalid direction "inbound": use both, request or response`},
		{"bad expiry", "interfaces:\n  include: [eth0]\nports:\n  - port: 53\n    direction: response\n    expiry: 2h\n", 6, "ports[0].expiry", "give whole seconds from 1s to 1h"},
		{"expiry of a both port", "interfaces:\n  include: [eth0]\nports:\n  - {port: 53, expiry: 10s}\n", 4, "ports[0]", "expiry is for response ports only"},
		{"port mapping without port", "interfaces:\n  include: [eth0]\nports:\n  - {direction: response}\n", 4, "ports[0]", "no port: give its number"},
		{"unknown port key", "interfaces:\n  include: [eth0]\nports:\n  - {port: 53, dir: response}\n", 4, "ports[0].dir", "unknown key"},
		{"bad port in a mapping", "interfaces:\n  include: [eth0]\nports:\n  - {port: 99999}\n", 4, "ports[0].port", `invalid port "99999"`},
		{"one port two ways", "interfaces:\n  include: [eth0]\nports:\n  - 53\n  - {port: 53, direction: response}\n", 5, "ports[1]", "given twice with different settings"},
		{"bad mode", "interfaces:\n  include: [eth0]\nmode: drop\n", 3, "mode", `invalid mode "drop": use enforce or monitor`},
		{"bad fragments", "interfaces:\n  include: [eth0]\nfragments: maybe\n", 3, "fragments", `invalid fragment policy "maybe"`},
		{"bad xdp mode", "interfaces:\n  include: [eth0]\n  xdp_mode: offload\n", 3, "interfaces.xdp_mode", `invalid XDP mode "offload"`},
		{"bad tc backend", "interfaces:\n  include: [eth0]\n  tc_backend: x\n", 3, "interfaces.tc_backend", `invalid TC backend "x"`},
		{"yes is not a bool", "interfaces:\n  include: [eth0]\n  egress: yes\n", 3, "interfaces.egress", `needs true or false, not "yes"`},
		{"bad glob", "interfaces:\n  include: [\"eth[\"]\n", 2, "interfaces.include[0]", "not a valid glob"},
		{"slash in name", "interfaces:\n  include: [eth0]\n  exclude: [a, \"b/c\"]\n", 3, "interfaces.exclude[1]", "cannot match an interface name"},
		{"name too long", "interfaces:\n  include: [abcdefghijklmnop]\n", 2, "interfaces.include[0]", "longer than an interface name"},
		{"include a string", "interfaces:\n  include: eth0\n", 2, "interfaces.include", "needs a list"},
		{"host bits", "interfaces:\n  include: [eth0]\nallow:\n  prefixes: [\"10.1.2.3/8\"]\n", 4, "allow.prefixes[0]", "did you mean 10.0.0.0/8?"},
		{"bad prefix", "interfaces:\n  include: [eth0]\nallow:\n  prefixes:\n    - 192.0.2.0/24\n    - bogus\n", 6, "allow.prefixes[1]", `invalid CIDR "bogus"`},
		{"missing allow file", "interfaces:\n  include: [eth0]\nallow:\n  files: [nothere.txt]\n", 4, "allow.files[0]", "no such file"},
		{"bad on_stop", "interfaces:\n  include: [eth0]\non_stop: forget\n", 3, "on_stop", `invalid on_stop "forget"`},
		{"relative pin path", "interfaces:\n  include: [eth0]\npin_path: xdpguard\n", 3, "pin_path", "not absolute"},
		{"bad listen", "interfaces:\n  include: [eth0]\nmetrics:\n  listen: 9477\n", 4, "metrics.listen", "not HOST:PORT"},
		{"bad listen port", "interfaces:\n  include: [eth0]\nmetrics:\n  listen: \"127.0.0.1:99999\"\n", 4, "metrics.listen", `port "99999"`},
		{"bad duration", "interfaces:\n  include: [eth0]\nresync_interval: soon\n", 3, "resync_interval", "not a duration"},
		{"attack threshold a word", "interfaces:\n  include: [eth0]\nattacks:\n  threshold_pps: lots\n", 4, "attacks.threshold_pps", "not a whole number"},
		{"attack threshold negative", "interfaces:\n  include: [eth0]\nattacks:\n  threshold_pps: -5\n", 4, "attacks.threshold_pps", "not a whole number"},
		{"attack quiet 0", "interfaces:\n  include: [eth0]\nattacks:\n  quiet_period: 0\n", 4, "attacks.quiet_period", `at least "1s"`},
		{"attack update too often", "interfaces:\n  include: [eth0]\nattacks:\n  update_every: 100ms\n", 4, "attacks.update_every", "too often"},
		{"attack unknown key", "interfaces:\n  include: [eth0]\nattacks:\n  threshold: 5\n", 4, "attacks.threshold", "known here: min_duration, quiet_period, threshold_pps, update_every"},
		{"interfaces a list", "interfaces: [eth0]\n", 1, "interfaces", "must be a mapping"},
		{"null value", "interfaces:\n  include: [eth0]\nmode:\n", 3, "mode", "needs a value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.body, nil)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("config accepted:\n%s", tc.body)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *config.Error", err)
			}
			prefix := path + ":" + strconv.Itoa(tc.line) + ": " + tc.field + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error:\n  %v\nwant it to start with %q and contain %q", err, prefix, tc.msg)
			}
		})
	}
}

// TestEveryErrorReported: several mistakes are all reported, each with its
// own line, so an operator fixes the file in one go.
func TestEveryErrorReported(t *testing.T) {
	path := write(t, "interfaces:\n  include: [eth0]\n  egress: 1\nports: [0]\nmode: x\n", nil)
	_, err := Load(path)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{":3: interfaces.egress:", ":4: ports[0]:", ":5: mode:"} {
		if !strings.Contains(err.Error(), path+want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestAllowFileErrorNamesBothFiles(t *testing.T) {
	path := write(t, "interfaces:\n  include: [eth0]\nallow:\n  files:\n    - peers.txt\n",
		map[string]string{"peers.txt": "192.0.2.0/24\n\n# comment\n10.1.2.3/8\n"})
	_, err := Load(path)
	peers := filepath.Join(filepath.Dir(path), "peers.txt")
	want := path + ":5: allow.files[0]: " + peers + ":4: invalid CIDR"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %v, want it to start with %q", err, want)
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"interfaces:\n  include: a: b\n", ":2: invalid YAML: mapping values are not allowed"},
		{"interfaces:\n  include: [*]\n", `quote globs`},
		{"", "empty"},
		{"# only a comment\n", "empty"},
		{"- a\n- b\n", ":1: the config must be a mapping"},
		{"interfaces:\n  include: [eth0]\n---\nports: [1]\n", "a second YAML document"},
	} {
		path := write(t, tc.body, nil)
		_, err := Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %s... %q", tc.body, err, path, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	in := Interfaces{Include: []string{"eth*", "bond0", "veth?"}, Exclude: []string{"eth9*", "docker*"}}
	all := Interfaces{Include: []string{"*"}}
	withLo := Interfaces{Include: []string{"*", "lo"}}
	loExcluded := Interfaces{Include: []string{"lo"}, Exclude: []string{"l*"}}
	for _, tc := range []struct {
		in   Interfaces
		name string
		ok   bool
		why  string
	}{
		{in, "eth0", true, "matches eth*"},
		{in, "eth10", true, "matches eth*"},
		{in, "eth9", false, "is excluded by eth9*"},
		{in, "eth99", false, "is excluded by eth9*"},
		{in, "bond0", true, "matches bond0"},
		{in, "bond1", false, "matches no include pattern"},
		{in, "veth1", true, "matches veth?"},
		{in, "veth12", false, "matches no include pattern"},
		{in, "docker0", false, "is excluded by docker*"},
		{all, "docker0", true, "matches *"},
		{all, "lo", false, `is loopback, protected only when include names "lo"`},
		{withLo, "lo", true, "matches lo"},
		{loExcluded, "lo", false, "is excluded by l*"},
		{Interfaces{}, "eth0", false, "matches no include pattern"},
	} {
		ok, why := tc.in.Match(tc.name)
		if ok != tc.ok || why != tc.why {
			t.Errorf("%+v.Match(%q) = %v, %q; want %v, %q", tc.in, tc.name, ok, why, tc.ok, tc.why)
		}
	}
}

// TestShippedExample: deploy/xdpguard.yaml, the commented example `make
// install` puts in /etc/xdpguard, is a valid config with every key set,
// and deploy/allow.txt is a valid allow list.
func TestShippedExample(t *testing.T) {
	root := filepath.Join("..", "..", "..", "deploy")
	body, err := os.ReadFile(filepath.Join(root, "xdpguard.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	allow, err := os.ReadFile(filepath.Join(root, "allow.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "allow.txt"), allow, 0o600); err != nil {
		t.Fatal(err)
	}
	const installed = "/etc/xdpguard/allow.txt"
	if !strings.Contains(string(body), installed) {
		t.Fatalf("example does not name %s", installed)
	}
	c, err := Parse(filepath.Join(dir, "xdpguard.yaml"), []byte(strings.ReplaceAll(string(body), installed, filepath.Join(dir, "allow.txt"))))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"pin_path:", "include:", "exclude:", "xdp_mode:", "egress:", "tc_backend:", "force:",
		"ports:", "mode:", "fragments:", "prefixes:", "files:", "listen:", "on_stop:", "resync_interval:",
		"threshold_pps:", "min_duration:", "quiet_period:", "update_every:"} {
		if !strings.Contains(string(body), "\n"+key) && !strings.Contains(string(body), " "+key) {
			t.Errorf("example lacks %s", key)
		}
	}
	if c.OnStop != OnStopKeep || c.MetricsListen != DefaultMetricsListen {
		t.Errorf("example should show the defaults for on_stop and metrics.listen: %+v", c)
	}
}

// TestDigest: the digest changes with the config file and with an allow-list
// file, and only then.
func TestDigest(t *testing.T) {
	path := write(t, "interfaces:\n  include: [eth0]\nallow:\n  files: [a.txt]\n", map[string]string{"a.txt": "192.0.2.0/24\n"})
	load := func() [32]byte {
		t.Helper()
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return c.Digest
	}
	d0 := load()
	if load() != d0 {
		t.Fatal("same files, different digest")
	}
	allow := filepath.Join(filepath.Dir(path), "a.txt")
	if err := os.WriteFile(allow, []byte("192.0.2.0/24\n# a comment\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d1 := load()
	if d1 == d0 {
		t.Fatal("allow-list file changed, digest did not")
	}
	if err := os.WriteFile(path, []byte("interfaces:\n  include: [eth0]\nallow:\n  files: [a.txt]\nmode: enforce\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if load() == d1 {
		t.Fatal("config changed, digest did not")
	}
}
