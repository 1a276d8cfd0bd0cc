package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("pin_path: "+filepath.Join(dir, "never")+"\ninterfaces:\n  include: [\"eth*\"]\n  egress: true\nports: [11211, 53]\nallow:\n  prefixes: [192.0.2.0/24]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI("agent", "--check-config", good)
	if code != exitOK || !strings.Contains(out, good+": valid") || !strings.Contains(out, "53,11211") ||
		!strings.Contains(out, "egress via auto") || !strings.Contains(out, "1 prefixes (1 inline, 0 files)") ||
		!strings.Contains(out, "at 1000 drops/s for 2s, ended after 10s below, updates every 10s") {
		t.Fatalf("valid config: exit %d\n%s%s", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); !os.IsNotExist(err) {
		t.Errorf("--check-config created the pin path")
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("interfaces:\n  include: [eth0]\n  xdp_mode: fast\nmode: drop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI("agent", "--check-config", bad)
	for _, want := range []string{bad + ":3: interfaces.xdp_mode: invalid XDP mode \"fast\"", bad + ":4: mode: invalid mode \"drop\""} {
		if code != exitFailed || !strings.Contains(stderr, want) {
			t.Errorf("invalid config: exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
		}
	}
	code, _, stderr = runCLI("agent", "--check-config", filepath.Join(dir, "absent.yaml"))
	if code != exitFailed || !strings.Contains(stderr, "absent.yaml: no such file") {
		t.Errorf("missing config: exit %d, %q", code, stderr)
	}
}

func TestAgentUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "extra"}, "takes no arguments"},
		{[]string{"agent", "--check-config"}, "flag needs an argument"},
		{[]string{"agent", "--check-config="}, "--check-config needs a file"},
		{[]string{"agent", "--log-format", "xml", "--config", "/nonexistent"}, `invalid --log-format "xml"`},
		{[]string{"agent", "--log-level", "loud", "--config", "/nonexistent"}, `invalid --log-level "loud"`},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("xdpguard %v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	// A missing config file fails the start with exit 1, naming it.
	code, _, stderr := runCLI("agent", "--config", "/nonexistent/xdpguard.yaml")
	if code != exitFailed || !strings.Contains(stderr, "/nonexistent/xdpguard.yaml") {
		t.Errorf("agent with a missing config: exit %d, %q", code, stderr)
	}
}
